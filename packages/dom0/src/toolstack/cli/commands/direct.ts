/** `ringvisor direct list | faults | reclaim | assign` (functions, IOMMU fault records; admin). */
import { parseArgs } from 'node:util';
import type { ClusterSnapshot } from '../../../observe/model.js';
import { UsageError, getJson, postAction } from '../endpoint.js';
import { COMMON, creds, parse, table } from '../view-support.js';
import { ioMode } from '../../attach/modes.js';

/**
 * `ringvisor direct list`: every direct device and its function (requester id, state, doorbells,
 * interrupts, DMA the IOMMU blocked). `ringvisor direct reclaim|assign DOMAIN DEVICE`: take a
 * function back the VFIO way (bus master off, FLR, IOMMU context torn down) or assign one again.
 */
export async function direct(argv: string[]): Promise<number> {
  const { values, positionals } = parse('direct', () => parseArgs({ args: argv, options: COMMON, strict: true, allowPositionals: true }));
  const [action, domain, device] = positionals;
  const c = await creds(values);
  if (action === 'list' && positionals.length === 1) {
    const snap = await getJson<ClusterSnapshot>(c, '/api/snapshot');
    const rows = snap.domains.flatMap((d) => d.devices.filter((x) => ioMode(x.mode)?.assignsFunctions === true).map((x) => ({ host: d.host, domain: d.name, ...x })));
    if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
    else
      process.stdout.write(
        table(
          ['HOST', 'DOMAIN', 'DEVICE', 'RID', 'STATE', 'DOORBELLS', 'IRQS', 'DMA_BLOCKED'],
          rows.map((r) => [r.host, r.domain, r.name, r.rid ?? '-', r.backendState, String(r.events), String(r.interrupts ?? 0), String(r.dmaFaults ?? 0)]),
          [1, 2, 3, 4],
        ),
      );
    return 0;
  }
  if (action === 'faults' && positionals.length === 1) {
    const hosts = await getJson<Array<{ host: string; faults: Array<{ seq: number; t: number; rid: number; address: number; write: boolean; reason: string; domid?: number }> }>>(c, '/api/direct/faults');
    if (values.json) process.stdout.write(JSON.stringify(hosts) + '\n');
    else {
      const rid = (r: number) => `${((r >> 8) & 0xff).toString(16).padStart(2, '0')}:${((r >> 3) & 0x1f).toString(16).padStart(2, '0')}.${r & 7}`;
      const rows = hosts.flatMap((h) => h.faults.map((f) => [h.host, String(f.seq), rid(f.rid), f.domid === undefined ? '-' : String(f.domid), `0x${f.address.toString(16)}`, f.write ? 'write' : 'read', f.reason]));
      process.stdout.write(table(['HOST', 'SEQ', 'RID', 'DOMID', 'ADDRESS', 'ACCESS', 'REASON'], rows, [2, 4, 5, 6]));
    }
    return 0;
  }
  if ((action !== 'reclaim' && action !== 'assign') || !domain || !device || positionals.length !== 3)
    throw new UsageError('usage: ringvisor direct list | faults | reclaim|assign DOMAIN DEVICE   (e.g. ringvisor direct reclaim direct1 vif0)');
  const r = await postAction<{ rid: string; steps?: string[] }>(c, `/api/direct/${action}`, { domain, device });
  process.stdout.write(action === 'reclaim' ? `${domain}/${device}: function ${r.rid} reclaimed (${(r.steps ?? []).join(', ')})\n` : `${domain}/${device}: function ${r.rid} assigned\n`);
  return 0;
}
