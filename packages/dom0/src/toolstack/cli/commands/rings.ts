/** `ringvisor rings` (xen-ringwatch). */
import { parseArgs } from 'node:util';
import type { ClusterSnapshot } from '../../../observe/model.js';
import { getJson } from '../endpoint.js';
import { COMMON, creds, parse, table } from '../view-support.js';

/** `ringvisor rings`: every ring's indices, occupancy and xen-ringwatch verdict. */
export async function rings(argv: string[]): Promise<number> {
  const { values } = parse('rings', () => parseArgs({ args: argv, options: { ...COMMON, domain: { type: 'string' } }, strict: true }));
  const s = await getJson<ClusterSnapshot>(await creds(values), '/api/snapshot');
  const rs = s.rings.filter((r) => !values.domain || r.domain === values.domain || String(r.domid) === values.domain);
  if (values.json) {
    process.stdout.write(JSON.stringify(rs) + '\n');
    return 0;
  }
  process.stdout.write(
    table(
      ['RING', 'MODE', 'SIZE', 'REQ_PROD', 'REQ_CONS', 'REQ_EVENT', 'RSP_PROD', 'RSP_EVENT', 'OCC', 'REQ/s', 'RSP/s', 'STATE'],
      rs.map((r) => [
        r.id,
        r.mode,
        String(r.size),
        String(r.reqProd),
        String(r.reqCons),
        String(r.reqEvent),
        String(r.rspProd),
        String(r.rspEvent),
        String(r.occupancy),
        String(r.requestsPerSec),
        String(r.responsesPerSec),
        r.verdict + (r.stuck ? ` (${r.stuck})` : '') + (r.paused ? ' paused' : ''),
      ]),
    ),
  );
  return 0;
}
