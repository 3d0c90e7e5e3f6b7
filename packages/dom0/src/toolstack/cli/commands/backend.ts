/** `ringvisor backend pause|resume` (admin). */
import { parseArgs } from 'node:util';
import { UsageError, postAction } from '../endpoint.js';
import { COMMON, creds, parse } from '../view-support.js';

/** `ringvisor backend pause|resume DOMAIN DEVICE`: stop or restart a backend consuming its rings. */
export async function backend(argv: string[]): Promise<number> {
  const { values, positionals } = parse('backend', () => parseArgs({ args: argv, options: COMMON, strict: true, allowPositionals: true }));
  const [action, domain, device] = positionals;
  if ((action !== 'pause' && action !== 'resume') || !domain || !device || positionals.length !== 3)
    throw new UsageError('usage: ringvisor backend pause|resume DOMAIN DEVICE   (e.g. ringvisor backend pause guest1 vbd0)');
  const r = await postAction<{ paused: boolean }>(await creds(values), `/api/backend/${action}`, { domain, device });
  process.stdout.write(`${domain}/${device}: backend ${r.paused ? 'paused' : 'running'}\n`);
  return 0;
}
