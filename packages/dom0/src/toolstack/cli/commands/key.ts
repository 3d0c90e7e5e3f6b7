import { deriveDomainKey, formatDomainKey } from '@ringvisor/shared';
import { UsageError } from '../endpoint.js';
import { operatorSecret, parseCommandArgs } from '../args.js';

/**
 * `ringvisor key --host NAME --domain N`: guest N of host NAME's domain key (hex), the only
 * credential its process gets (RINGVISOR_DOMAIN_KEY). It opens that guest's own connections and
 * nothing else; see auth.ts for the derivation.
 */
export async function key(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('key', { args: argv, options: { host: { type: 'string' }, domain: { type: 'string' }, 'secret-file': { type: 'string' } } });
  const domid = Number(values.domain);
  if (values.host === undefined || values.domain === undefined || !Number.isInteger(domid))
    throw new UsageError('usage: ringvisor key --host NAME --domain N  (NAME: the host\'s name in the cluster config, host0 when unnamed; N: the guest\'s domain id, its 1-based position in the host\'s guests)');
  const secret = await operatorSecret('key', values['secret-file']);
  let domainKey;
  try {
    domainKey = deriveDomainKey(secret, values.host, domid);
  } catch (e) {
    throw new UsageError(`ringvisor key: ${(e as Error).message}`);
  }
  process.stdout.write(formatDomainKey(domainKey) + '\n');
  return 0;
}
