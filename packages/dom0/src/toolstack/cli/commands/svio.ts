/** `ringvisor svio list | qos` (the SV-IO engine's VIFs; QoS, admin). */
import { parseArgs } from 'node:util';
import { UsageError, getJson, postAction } from '../endpoint.js';
import { COMMON, creds, parse, table } from '../view-support.js';

/**
 * `ringvisor svio list`: every SV-IO VIF as the engine's management API lists it (bound guest and
 * device, core, weight, credit limit, queue state, messages and bytes, turns throttled).
 * `ringvisor svio qos DOMAIN DEVICE --weight N [--rate bytes,usec]`: set a VIF's share and
 * credit limit (no --rate: unlimited), as `xl sched-credit` sets a domain's weight and cap.
 */
export async function svio(argv: string[]): Promise<number> {
  const usage = 'usage: ringvisor svio list | qos DOMAIN DEVICE --weight 1..1000 [--rate BYTES,USEC]   (e.g. ringvisor svio qos svio1 vbd51712 --weight 400 --rate 1048576,10000)';
  const { values, positionals } = parse('svio', () => parseArgs({ args: argv, options: { ...COMMON, weight: { type: 'string' }, rate: { type: 'string' } }, strict: true, allowPositionals: true }));
  const [action, domain, device] = positionals;
  const c = await creds(values);
  if (action === 'list' && positionals.length === 1) {
    type Row = { host: string; domain: string; device: string; vif: number; kind: string; core: number; weight: number; rate?: { bytes: number; usec: number }; state: string; stats?: { counters: { messagesIn: number; messagesOut: number; bytes: number; refused: number }; sched: { throttled: number }; stopped: string | null } };
    const rows = await getJson<Row[]>(c, '/api/svio');
    if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
    else
      process.stdout.write(
        table(
          ['HOST', 'DOMAIN', 'DEVICE', 'VIF', 'KIND', 'CORE', 'WEIGHT', 'RATE', 'STATE', 'MSGS_IN', 'MSGS_OUT', 'BYTES', 'REFUSED', 'THROTTLED'],
          rows.map((r) => [
            r.host,
            r.domain,
            r.device,
            String(r.vif),
            r.kind,
            String(r.core),
            String(r.weight),
            r.rate ? `${r.rate.bytes},${r.rate.usec}` : '-',
            r.stats?.stopped ? `stopped (${r.stats.stopped})` : r.state,
            String(r.stats?.counters.messagesIn ?? 0),
            String(r.stats?.counters.messagesOut ?? 0),
            String(r.stats?.counters.bytes ?? 0),
            String(r.stats?.counters.refused ?? 0),
            String(r.stats?.sched.throttled ?? 0),
          ]),
          [1, 2, 4, 7, 8],
        ),
      );
    return 0;
  }
  if (action !== 'qos' || !domain || !device || positionals.length !== 3 || typeof values.weight !== 'string') throw new UsageError(usage);
  const weight = Number(values.weight);
  if (!Number.isInteger(weight) || weight < 1 || weight > 1000) throw new UsageError(`ringvisor svio qos: --weight must be an integer in 1..1000, got ${JSON.stringify(values.weight)}`);
  if (values.rate !== undefined && !/^\d+,\d+$/.test(values.rate)) throw new UsageError(`ringvisor svio qos: --rate must be BYTES,USEC (netback's syntax, e.g. 125000,10000 for 100 Mbit/s), got ${JSON.stringify(values.rate)}`);
  const r = await postAction<{ vif: number }>(c, '/api/svio/qos', { domain, device, weight, ...(values.rate !== undefined ? { rate: values.rate } : {}) });
  process.stdout.write(`${domain}/${device}: VIF ${r.vif} weight ${weight}, ${values.rate !== undefined ? `rate ${values.rate}` : 'no credit limit'}\n`);
  return 0;
}
