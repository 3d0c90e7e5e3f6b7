import { readSecretFile, secretFromEnv } from '@ringvisor/shared';
import { loadConfigFile } from '../../config.js';
import { claimState, configStateLocation } from '../../state.js';
import { runHost } from '../../cluster.js';
import { DEFAULT_OBSERVE, UsageError, parseListen } from '../endpoint.js';
import { parseCommandArgs, sayState } from '../args.js';

/** `ringvisor dom0`: this host's dom0 and hardware as a service; guests are started elsewhere. */
export async function dom0(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('dom0', {
    args: argv,
    options: {
      config: { type: 'string' },
      listen: { type: 'string' },
      lan: { type: 'string' },
      json: { type: 'string' },
      'secret-file': { type: 'string' },
      duration: { type: 'string' },
      observe: { type: 'string' },
      pcap: { type: 'string' },
    },
  });
  const configPath = values.config ?? process.env.RINGVISOR_CONFIG;
  if (!configPath) throw new UsageError('ringvisor dom0: --config FILE (or RINGVISOR_CONFIG) is required');
  const listenAt = values.listen ?? process.env.RINGVISOR_LISTEN ?? '127.0.0.1:7000';
  const m = /^(.+):(\d+)$/.exec(listenAt);
  if (!m) throw new UsageError(`--listen must be HOST:PORT (e.g. 0.0.0.0:7000), got ${JSON.stringify(listenAt)}`);
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds`);
  const lanUrl = values.lan ?? process.env.RINGVISOR_LAN_URL;
  const state = configStateLocation(configPath);
  const config = loadConfigFile(configPath, { diskDir: state.dir });
  const claim = claimState(state, config, sayState('ringvisor'));
  const code = await runHost({
    config,
    durationSec,
    transport: 'ws',
    secret,
    observe: parseListen('--observe', values.observe ?? process.env.RINGVISOR_OBSERVE ?? DEFAULT_OBSERVE),
    ...(values.pcap ? { pcap: values.pcap } : {}),
    ws: { secret, host: m[1], port: Number(m[2]), spawn: false },
    ...(lanUrl ? { lan: { url: lanUrl, secret } } : {}),
    ...(values.json ? { json: values.json } : {}),
  });
  claim.release();
  return code;
}
