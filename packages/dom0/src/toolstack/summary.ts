/**
 * The run summary `ringvisor up --json FILE` writes (a contract scripts read; README documents it),
 * and the xentop-style table shown while a cluster runs.
 */
import type { GuestStats } from '@ringvisor/shared';
import type { RuntimeCrash, RuntimeExit } from './host.js';
import { vbdsOf, vifsOf } from './device-kinds.js';

export interface RunSummary {
  transport: 'threads' | 'ws';
  durationSec: number;
  guests: Array<{
    name: string;
    host: string;
    domid: number;
    devices: Array<{ type: 'vbd' | 'vif' | 'cam'; devid: number; mode: string; ops: number; bytes: number; errors: number; detail: Record<string, number> }>;
    ops: number;
    bytes: number;
    errors: number;
    udp: GuestStats['udp'];
    /** "stopped" after an orderly end; "crashed" when its runtime died unplanned (then `exit` says how). */
    state: string;
    /** The guest's own process (ws transport). */
    pid?: number;
    exit?: RuntimeExit;
    error?: string;
  }>;
  integrity: { checked: number; failures: number; kinds: Record<string, number> };
  dom0: Record<string, unknown>;
  /** Runtimes that died unplanned during the run (not by a fault plan), and the recovery of each. */
  crashes: RuntimeCrash[];
  /**
   * What happened, matching the exit code (README "Exit codes"): clean (0), failed (1: a check
   * failed or the cluster did not run), recovered (3: a runtime crashed, the rest checked out),
   * forced (4: a second signal or an overlong drain; figures are the last ones polled).
   */
  outcome: 'clean' | 'failed' | 'recovered' | 'forced';
  exitCode: number;
}

export function summarize(
  transport: 'threads' | 'ws',
  durationSec: number,
  perHost: Array<{ host: string; guests: GuestStats[]; pids?: Map<string, number>; crashed?: Map<string, RuntimeExit> }>,
  dom0: Record<string, unknown>,
  crashes: RuntimeCrash[] = [],
  outcome: RunSummary['outcome'] = 'clean',
  exitCode = 0,
): RunSummary {
  const guests: RunSummary['guests'] = [];
  const integrity = { checked: 0, failures: 0, kinds: {} as Record<string, number> };
  for (const { host, guests: gs, pids, crashed } of perHost) {
    for (const g of gs) {
      if (!g) continue;
      const devices = g.devices.map((d) => ({ ...d }));
      guests.push({
        name: g.name,
        host,
        domid: g.domid,
        devices,
        ops: devices.reduce((a, d) => a + d.ops, 0),
        bytes: devices.reduce((a, d) => a + d.bytes, 0),
        errors: devices.reduce((a, d) => a + d.errors, 0),
        udp: g.udp,
        // A crashed guest's figures are the last ones dom0 polled before it died.
        state: crashed?.has(g.name) ? 'crashed' : g.state,
        ...(pids?.get(g.name) ? { pid: pids.get(g.name) } : {}),
        ...(crashed?.has(g.name) ? { exit: crashed.get(g.name) } : {}),
        ...(g.error ? { error: g.error } : {}),
      });
      integrity.checked += g.integrity.checked;
      integrity.failures += g.integrity.failures;
      for (const [k, v] of Object.entries(g.integrity.kinds)) integrity.kinds[k] = (integrity.kinds[k] ?? 0) + v;
    }
    // A guest that crashed before dom0 ever polled its figures still shows, with none.
    for (const [name, exit] of crashed ?? [])
      if (!guests.some((x) => x.host === host && x.name === name))
        guests.push({ name, host, domid: -1, devices: [], ops: 0, bytes: 0, errors: 0, udp: { sent: 0, echoed: 0, lost: 0, late: 0, duplicated: 0, reordered: 0, corrupted: 0 }, state: 'crashed', ...(pids?.get(name) ? { pid: pids.get(name) } : {}), exit });
  }
  return { transport, durationSec, guests, integrity, dom0, crashes, outcome, exitCode };
}

function fmtBytes(n: number): string {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + 'G';
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + 'M';
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + 'K';
  return String(n);
}

export interface TopRow {
  name: string;
  domid: number;
  state: string;
  memKiB: number;
  stats?: GuestStats;
  prev?: GuestStats;
}

/** A xentop-like table: per guest, state, memory, vbd ops and bytes, vif packets, rates per second. */
export function renderTop(host: string, uptimeSec: number, rows: TopRow[], intervalSec: number): string {
  const head = `ringvisor — host ${host} — up ${uptimeSec}s — ${rows.length} domains`;
  const cols = ['NAME', 'ID', 'STATE', 'MEM(K)', 'VBD_OPS', 'VBD_RD', 'VBD_WR', 'VBD/s', 'NET_TX', 'NET_RX', 'NET/s', 'CHECKED', 'FAIL'];
  const lines = [head, cols.map((c, i) => (i === 0 ? c.padEnd(10) : c.padStart(9))).join('')];
  for (const r of rows) {
    const vbd = vbdsOf(r.stats?.devices ?? []);
    const vif = vifsOf(r.stats?.devices ?? []);
    const pvbd = vbdsOf(r.prev?.devices ?? []);
    const pvif = vifsOf(r.prev?.devices ?? []);
    const sum = (ds: ReadonlyArray<{ ops: number; detail: Record<string, number> }>, k: string) => ds.reduce((a, d) => a + (k === 'ops' ? d.ops : (d.detail[k] ?? 0)), 0);
    const vals = [
      r.state,
      String(r.memKiB),
      String(sum(vbd, 'ops')),
      fmtBytes(sum(vbd, 'bytesRead')),
      fmtBytes(sum(vbd, 'bytesWritten')),
      String(Math.round((sum(vbd, 'ops') - sum(pvbd, 'ops')) / intervalSec)),
      String(sum(vif, 'txPackets')),
      String(sum(vif, 'rxPackets')),
      String(Math.round((sum(vif, 'ops') - sum(pvif, 'ops')) / intervalSec)),
      String(r.stats?.integrity.checked ?? 0),
      String(r.stats?.integrity.failures ?? 0),
    ];
    lines.push(r.name.slice(0, 10).padEnd(10) + String(r.domid).padStart(9) + vals.map((v) => v.padStart(9)).join(''));
  }
  return lines.join('\n');
}
