/** `ringvisor up`: start a cluster and run its workloads (for a duration, or until Ctrl-C). */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { generateSecretFile } from '@ringvisor/shared';
import { defaultConfig, loadConfigFile, type ClusterConfig } from '../../config.js';
import type { HostOptions } from '../../host.js';
import { claimState, configStateLocation, type StateLocation } from '../../state.js';
import { runHost } from '../../cluster.js';
import { DEFAULT_OBSERVE, UsageError, parseListen, stateDir, type ListenAt } from '../endpoint.js';
import { parseCommandArgs, parseTransport, sayState } from '../args.js';

interface UpArgs {
  config: ClusterConfig;
  durationSec: number;
  json?: string;
  transport: 'threads' | 'ws';
  secretFile: string;
  observe: ListenAt;
  pcap?: string;
  /** The config's own state directory (its disk images), claimed for the run. */
  state: StateLocation;
}

function parseUp(argv: string[]): UpArgs {
  const { values } = parseCommandArgs('up', {
    args: argv,
    options: {
      config: { type: 'string' },
      duration: { type: 'string' },
      json: { type: 'string' },
      seed: { type: 'string' },
      transport: { type: 'string' },
      'secret-file': { type: 'string' },
      observe: { type: 'string' },
      pcap: { type: 'string' },
    },
  });
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds, got ${JSON.stringify(values.duration)}`);
  const transport = parseTransport(values.transport);
  const state = configStateLocation(values.config);
  const config = values.config ? loadConfigFile(values.config, { diskDir: state.dir }) : defaultConfig({ transport, diskDir: state.dir });
  if (values.seed !== undefined) {
    const seed = Number(values.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a non-negative integer, got ${JSON.stringify(values.seed)}`);
    config.seed = seed;
  }
  return {
    config,
    durationSec,
    transport,
    state,
    secretFile: values['secret-file'] ?? join(stateDir(), 'secret'),
    observe: parseListen('--observe', values.observe ?? process.env.RINGVISOR_OBSERVE ?? DEFAULT_OBSERVE),
    ...(values.json ? { json: values.json } : {}),
    ...(values.pcap ? { pcap: values.pcap } : {}),
  };
}

export async function up(argv: string[]): Promise<number> {
  const { config, durationSec, json, transport, secretFile, observe, pcap, state } = parseUp(argv);
  // The cluster secret: authenticates runtimes (ws) and the control endpoint (both transports).
  mkdirSync(dirname(secretFile), { recursive: true });
  const secret = await generateSecretFile(secretFile);
  const ws: HostOptions['ws'] = transport === 'ws' ? { secret } : undefined;
  // Owned until the run ends; if it dies outright, its dead pid frees the state for the next run.
  const claim = claimState(state, config, sayState('ringvisor'));
  const code = await runHost({ config, durationSec, transport, secret, observe, ...(pcap ? { pcap } : {}), ...(json ? { json } : {}), ...(ws ? { ws } : {}) });
  claim.release();
  return code;
}
