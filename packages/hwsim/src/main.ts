/**
 * Hardware-side runtimes as processes (ws transport, docker compose):
 *   ringvisor switch [--listen HOST:PORT]   the LAN switch joining hosts' physical NICs
 * The secret comes from RINGVISOR_SECRET (hex) or --secret-file FILE.
 */
import { parseArgs } from 'node:util';
import { createLogger, readSecretFile, secretFromEnv } from '@ringvisor/shared';
import { runSwitch } from './lan/remote.js';

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd !== 'switch') throw new Error(`unknown hardware runtime "${cmd}" (known: switch)`);
  const { values } = parseArgs({ args: rest, options: { listen: { type: 'string' }, 'secret-file': { type: 'string' } }, strict: true });
  const listenAt = values.listen ?? process.env.RINGVISOR_LISTEN ?? '127.0.0.1:7100';
  const m = /^(.+):(\d+)$/.exec(listenAt);
  if (!m) throw new Error(`--listen must be HOST:PORT (e.g. 0.0.0.0:7100), got ${JSON.stringify(listenAt)}`);
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const log = createLogger('switch');
  const sw = await runSwitch({ host: m[1], port: Number(m[2]), secret, log });
  log.info({ url: sw.server.url }, 'switch listening');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await sw.close();
  return 0;
}
