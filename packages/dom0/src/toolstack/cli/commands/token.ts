import { deriveReadToken } from '@ringvisor/shared';
import { operatorSecret, parseCommandArgs } from '../args.js';

/** `ringvisor token`: the read token for dashboards and read-only views (derived from the cluster secret). */
export async function token(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('token', { args: argv, options: { 'secret-file': { type: 'string' } } });
  const secret = await operatorSecret('token', values['secret-file']);
  process.stdout.write(deriveReadToken(secret) + '\n');
  return 0;
}
