/** `ringvisor top` (xentop). */
import { parseArgs } from 'node:util';
import type { ClusterSnapshot, RingRow } from '../../../observe/model.js';
import { UsageError, getJson } from '../endpoint.js';
import { COMMON, creds, parse, table } from '../view-support.js';
import { ioMode } from '../../attach/modes.js';

/** Emulated devices, one line each: where the model runs, its state, ports, traps and interrupts (none when no guest has any). */
function renderEmulatedDevices(s: ClusterSnapshot): string {
  const rows = s.domains.flatMap((d) =>
    d.devices
      .filter((x) => ioMode(x.mode)?.trapsToDeviceModel === true)
      .map((x) => [
        `${d.host}/${d.name}/${x.name}`,
        x.type,
        x.placement ?? 'dom0',
        x.backendState,
        (x.ports ?? []).join(','),
        String(x.traps ?? 0),
        String(x.trapsPerSec ?? 0),
        String(x.interrupts ?? 0),
        String(x.interruptsPerSec ?? 0),
      ]),
  );
  if (rows.length === 0) return '';
  return '\nemulated devices (every register access traps to the device model)\n' + table(['DEVICE', 'TYPE', 'MODEL_IN', 'STATE', 'PORTS', 'TRAPS', 'TRAP/s', 'IRQS', 'IRQ/s'], rows, [1, 2, 3, 4]);
}

/** A domain's I/O modes for `top`: one mode when all its devices share it ("pv"), else each device type's ("vbd:direct,vif:svio"). */
function modesColumn(d: ClusterSnapshot['domains'][number]): string {
  const modes = new Set(d.devices.map((x) => x.mode));
  if (modes.size <= 1) return [...modes][0] ?? '-';
  return [...new Set(d.devices.map((x) => `${x.type}:${x.mode}`))].join(',');
}

export function renderTopTable(s: ClusterSnapshot): string {
  const rings = new Map<string, RingRow[]>();
  for (const r of s.rings) rings.set(`${r.host}/${r.domid}`, [...(rings.get(`${r.host}/${r.domid}`) ?? []), r]);
  const head = `ringvisor top — ${new Date(s.time).toISOString()} — up ${s.uptimeSec}s — ${s.domains.length} domains on ${s.hosts.length} hosts (${s.transport})`;
  const hostLine = s.hosts
    .map(
      (h) =>
        `${h.name}: events/s ${h.eventsPerSec}  notify/s ${h.notificationsPerSec}  suppressed/s ${h.suppressedPerSec}  traps/s ${h.trapsPerSec}  world switches/s ${h.worldSwitchesPerSec}  grant ops/s ${h.grantOpsPerSec}`,
    )
    .join('\n');
  return (
    `${head}\n${hostLine}\n` +
    table(
      ['NAME', 'STATE', 'MODES', 'CPU(%)', 'MEM(k)', 'NETTX(k)', 'NETRX(k)', 'VBD_RD', 'VBD_WR', 'VBD_RSECT', 'VBD_WSECT', 'RING_OCC', 'REQ/s', 'EVT/s', 'TRAP/s', 'HOST'],
      s.domains.map((d) => {
        const rs = rings.get(`${d.host}/${d.domid}`) ?? [];
        return [
          d.name,
          d.state,
          modesColumn(d),
          d.cpuPct.toFixed(1),
          String(d.memKiB),
          String(Math.round(d.netTxBytes / 1024)),
          String(Math.round(d.netRxBytes / 1024)),
          String(d.vbdReads),
          String(d.vbdWrites),
          String(d.vbdSectorsRead),
          String(d.vbdSectorsWritten),
          rs.map((r) => `${r.occupancy}/${r.size}`).join(',') || '-',
          String(rs.reduce((a, r) => a + r.requestsPerSec, 0)),
          String(d.eventsPerSec),
          d.trapsPerSec === undefined ? '-' : String(d.trapsPerSec),
          d.host,
        ];
      }),
      [2],
    ) +
    renderEmulatedDevices(s)
  );
}

/** `ringvisor top`: xentop. Interactive by default; `-b` prints `-n` iterations for scripts. */
export async function top(argv: string[]): Promise<number> {
  const { values } = parse('top', () =>
    parseArgs({ args: argv, options: { ...COMMON, batch: { type: 'boolean', short: 'b' }, iterations: { type: 'string', short: 'n' }, delay: { type: 'string', short: 'd' } }, strict: true }),
  );
  const n = values.iterations === undefined ? (values.batch ? 1 : Infinity) : Number(values.iterations);
  if (!(n >= 1) || (Number.isFinite(n) && !Number.isInteger(n))) throw new UsageError(`-n must be a positive whole number of iterations, got ${JSON.stringify(values.iterations)}`);
  const delaySec = values.delay === undefined ? 1 : Number(values.delay);
  if (!(delaySec > 0)) throw new UsageError(`-d must be a positive number of seconds, got ${JSON.stringify(values.delay)}`);
  const c = await creds(values);
  const tty = process.stdout.isTTY === true && !values.batch;
  for (let i = 0; i < n; i++) {
    const s = await getJson<ClusterSnapshot>(c, '/api/snapshot');
    if (values.json) process.stdout.write(JSON.stringify({ time: s.time, hosts: s.hosts, domains: s.domains, rings: s.rings }) + '\n');
    else process.stdout.write((tty ? '\x1b[H\x1b[2J' : '') + renderTopTable(s) + (tty ? '' : '\n'));
    if (i + 1 < n) await new Promise((r) => setTimeout(r, delaySec * 1000));
  }
  return 0;
}
