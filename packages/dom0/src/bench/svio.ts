/**
 * What SV-IO costs, measured against the host-centric path (PV split drivers through dom0): the
 * same workloads on the same simulated hardware, the device reached two ways —
 *
 *   svio   VIFs of the self-virtualizing device: two message queues per VIF in the guest's memory,
 *          processed by the device's own cores (worker threads of the hardware simulator)
 *   pv     netfront/netback and blkfront/blkback through dom0 (the paper's "host-centric" path)
 *
 * Workloads: `net-echo` (two guests, one datagram in flight: round trips and their latency),
 * `net-tx` (a 1 KiB stream to the peer's sink), `blk-4k` (4 KiB random blocks, half reads, queue
 * depth 8). Then **scaling**: 1, 2, 4, 8 guests each with a block VIF (or a PV vbd) running the
 * block workload at once — aggregate throughput, and Jain's fairness over the guests — and the
 * SV-IO engine with 1 and 2 cores.
 *
 * Per op: CPU µs of the hardware simulator (its thread plus the engine's cores), dom0 and the
 * guests; notifications (PV: both ends' event sends; SV-IO: the VIF driver's doorbells plus the
 * interrupts it took); grant operations. Each row is the median of interleaved rounds.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestStats } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';
import { normalizeConfig } from '../toolstack/config.js';
import { sampleWindow } from './window.js';
import { deviceIn, ioModeOf, notificationsIn } from './measure.js';

export type SvioMode = 'svio' | 'pv';
export type SvioWorkload = 'net-echo' | 'net-tx' | 'blk-4k';
const PAYLOAD = 1024;
const QUEUE_DEPTH = 8;

export interface SvioRow {
  device: 'net' | 'blk';
  mode: SvioMode;
  transport: 'threads';
  variant: string;
  opsPerSec: number;
  bytesPerSec: number;
  latencyUs: { p50: number | null; p99: number | null };
  cpuUsPerOp: { hwsim: number; dom0: number; guest: number };
  perOp: { traps: number; worldSwitches: number; notifications: number; suppressed: number; bytesCopied: number; grantOps: number };
  /** Scaling rows. */
  guests?: number;
  cores?: number;
  fairness?: number;
  ops: number;
}

export interface SvioBenchResult {
  /** The workload rows, then the scaling rows (those carry `guests`, `cores` and `fairness`). */
  rows: SvioRow[];
  /** svio / pv per workload (ops/s) and dom0 CPU per op. */
  ratios: Record<string, { opsPerSec: number; dom0CpuPerOp: number }>;
  setup: { windowSec: number; warmupSec: number; rounds: number };
}

interface Sample {
  t: number;
  dom0BusyMs: number;
  hwBusyMs: number;
  guests: GuestStats[];
  backendNotifications: number;
  backendSuppressed: number;
  grantOps: number;
  grantBytes: number;
}

async function sample(host: Host): Promise<Sample> {
  const guests = (await host.guestStats()).filter(Boolean);
  const hw = await host.readHardwareStats();
  const backends = [...host.netBackends(), ...host.blkBackends()];
  const g = host.hv.grants.counters.get(0);
  return {
    t: performance.now(),
    dom0BusyMs: performance.eventLoopUtilization().active,
    hwBusyMs: hw.busyMs + (hw.svio?.coreBusyMs ?? []).reduce((a, x) => a + x, 0),
    guests,
    backendNotifications: backends.reduce((a, b) => a + b.counters.notifications, 0),
    backendSuppressed: backends.reduce((a, b) => a + b.counters.suppressed, 0),
    grantOps: g ? g.maps + g.unmaps + g.copies : 0,
    grantBytes: g ? g.bytesCopied : 0,
  };
}

const dev = (mode: SvioMode, type: 'vif' | 'vbd') => deviceIn(mode, type, 4);

/** Σ over guests of a device counter's change between two samples. */
function delta(a: Sample, b: Sample, type: 'vif' | 'vbd', pick: (d: GuestStats['devices'][number]) => number, only?: string): number {
  let sum = 0;
  for (const g of b.guests) {
    if (only && g.name !== only) continue;
    const before = a.guests.find((x) => x.name === g.name)?.devices.find((d) => d.type === type);
    const after = g.devices.find((d) => d.type === type);
    if (after) sum += pick(after) - (before ? pick(before) : 0);
  }
  return sum;
}

function row(mode: SvioMode, variant: string, device: 'net' | 'blk', a: Sample, b: Sample, ops: number, bytes: number, latency: { p50: number | null; p99: number | null }, extra: Partial<SvioRow> = {}): SvioRow {
  const sec = (b.t - a.t) / 1000;
  const per = (x: number) => (ops > 0 ? x / ops : 0);
  const type = device === 'net' ? 'vif' : 'vbd';
  const k = (name: string) => delta(a, b, type, (d) => d.detail[name] ?? 0);
  const guestBusy = b.guests.reduce((s, g) => s + (g.busyMs ?? 0) - (a.guests.find((x) => x.name === g.name)?.busyMs ?? 0), 0);
  const { notifications, suppressed } = notificationsIn(mode, k, { notifications: b.backendNotifications - a.backendNotifications, suppressed: b.backendSuppressed - a.backendSuppressed });
  return {
    device,
    mode,
    transport: 'threads',
    variant,
    opsPerSec: ops / sec,
    bytesPerSec: bytes / sec,
    latencyUs: latency,
    cpuUsPerOp: { hwsim: per((b.hwBusyMs - a.hwBusyMs) * 1000), dom0: per((b.dom0BusyMs - a.dom0BusyMs) * 1000), guest: per(guestBusy * 1000) },
    perOp: {
      traps: 0,
      worldSwitches: 0,
      notifications: per(notifications),
      suppressed: per(suppressed),
      bytesCopied: per(b.grantBytes - a.grantBytes),
      grantOps: per(b.grantOps - a.grantOps),
    },
    ops,
    ...extra,
  };
}

async function runOne(mode: SvioMode, workload: SvioWorkload, windowSec: number, warmupSec: number, dir: string): Promise<SvioRow> {
  const net = workload !== 'blk-4k';
  const guests = net
    ? [
        { name: 'dut', memoryMiB: 16, devices: [dev(mode, 'vif')], workloads: { udp: workload === 'net-tx' ? { peers: ['peer'], mode: 'stream', ratePps: 0, window: 64, payloadBytes: PAYLOAD } : { peers: ['peer'], window: 1, payloadBytes: PAYLOAD } } },
        { name: 'peer', memoryMiB: 16, devices: [dev(mode, 'vif')], workloads: {} },
      ]
    : [{ name: 'dut', memoryMiB: 16, devices: [dev(mode, 'vbd')], workloads: { block: { blocks: 256, queueDepth: QUEUE_DEPTH } } }];
  const config = normalizeConfig({ seed: 3, hosts: [{ disk: { path: join(dir, `disk-${process.pid}.img`), sizeMiB: 32 }, guests }] }).hosts[0];
  const [a, b] = await sampleWindow(config, { seed: 3, warmupSec, windowSec }, sample);
  const dut = b.guests.find((g) => g.name === 'dut')!;
  if (workload === 'net-tx') return row(mode, `tx ${PAYLOAD} B`, 'net', a, b, delta(a, b, 'vif', (d) => d.detail.txPackets ?? 0, 'dut'), delta(a, b, 'vif', (d) => d.detail.txBytes ?? 0, 'dut'), { p50: null, p99: null });
  if (workload === 'net-echo') {
    const ops = dut.udp.echoed - a.guests.find((g) => g.name === 'dut')!.udp.echoed;
    return row(mode, `echo ${PAYLOAD} B`, 'net', a, b, ops, ops * PAYLOAD, { p50: dut.udp.rttP50Us ?? null, p99: dut.udp.rttP99Us ?? null });
  }
  return row(mode, `4 KiB random, qd ${QUEUE_DEPTH}`, 'blk', a, b, delta(a, b, 'vbd', (d) => d.ops), delta(a, b, 'vbd', (d) => d.bytes), { p50: dut.block?.latencyP50Us ?? null, p99: dut.block?.latencyP99Us ?? null });
}

/** n guests each running the block workload on its own VIF (or vbd) at once. */
async function runScaling(mode: SvioMode, n: number, cores: number, windowSec: number, warmupSec: number, dir: string): Promise<SvioRow> {
  const guests = Array.from({ length: n }, (_, i) => ({ name: `g${i + 1}`, memoryMiB: 8, devices: [dev(mode, 'vbd')], workloads: { block: { blocks: 128, queueDepth: 4 } } }));
  const config = normalizeConfig({ seed: 4, hosts: [{ disk: { path: join(dir, `scale-${process.pid}.img`), sizeMiB: 4 * n + 8 }, svio: { cores }, guests }] }).hosts[0];
  const [a, b] = await sampleWindow(config, { seed: 4, warmupSec, windowSec, dut: 'g1' }, sample);
  const per = b.guests.map((g) => delta(a, b, 'vbd', (d) => d.ops, g.name));
  const sum = per.reduce((x, y) => x + y, 0);
  const sq = per.reduce((x, y) => x + y * y, 0);
  const fairness = sq > 0 ? (sum * sum) / (per.length * sq) : 0;
  // Only a mode served by the device's own cores has cores to count.
  const onCores = ioModeOf(mode).runsOnDeviceCores === true;
  return row(mode, `${n} guest${n > 1 ? 's' : ''}${onCores ? `, ${cores} core${cores > 1 ? 's' : ''}` : ''}`, 'blk', a, b, sum, delta(a, b, 'vbd', (d) => d.bytes), { p50: null, p99: null }, { guests: n, cores: onCores ? cores : 0, fairness });
}

export async function runSvioBench(o: { seconds?: number; rounds?: number; log: (line: string) => void; workloads?: SvioWorkload[]; scaling?: number[] }): Promise<SvioBenchResult> {
  const windowSec = o.seconds ?? 2;
  const rounds = o.rounds ?? 3;
  const warmupSec = 1;
  process.env.LOG_LEVEL ??= 'warn';
  const dir = mkdtempSync(join(tmpdir(), 'rv-bench-svio-'));
  const rows: SvioRow[] = [];
  const scaling: SvioRow[] = [];
  const median = (rs: SvioRow[]) => [...rs].sort((x, y) => x.opsPerSec - y.opsPerSec)[Math.floor((rs.length - 1) / 2)];
  try {
    for (const w of o.workloads ?? (['net-echo', 'net-tx', 'blk-4k'] as SvioWorkload[])) {
      const runs: Record<SvioMode, SvioRow[]> = { svio: [], pv: [] };
      for (let r = 0; r < rounds; r++)
        for (const m of ['svio', 'pv'] as SvioMode[]) {
          const x = await runOne(m, w, windowSec, warmupSec, dir);
          o.log(`${w} ${m} (round ${r + 1}/${rounds}): ${Math.round(x.opsPerSec)} ops/s, dom0 ${x.cpuUsPerOp.dom0.toFixed(1)} µs/op`);
          runs[m].push(x);
        }
      rows.push(median(runs.svio), median(runs.pv));
    }
    for (const n of o.scaling ?? [1, 2, 4, 8])
      for (const [m, cores] of [
        ['svio', 1],
        ['svio', 2],
        ['pv', 0],
      ] as Array<[SvioMode, number]>) {
        const x = await runScaling(m, n, Math.max(cores, 1), windowSec, warmupSec, dir);
        o.log(`scaling ${x.variant} ${m}: ${Math.round(x.opsPerSec)} ops/s, fairness ${x.fairness!.toFixed(3)}`);
        scaling.push(x);
      }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const ratios: SvioBenchResult['ratios'] = {};
  for (let i = 0; i < rows.length; i += 2) {
    const [s, p] = [rows[i], rows[i + 1]];
    ratios[s.variant] = { opsPerSec: p.opsPerSec > 0 ? s.opsPerSec / p.opsPerSec : NaN, dom0CpuPerOp: p.cpuUsPerOp.dom0 > 0 ? s.cpuUsPerOp.dom0 / p.cpuUsPerOp.dom0 : NaN };
  }
  return { rows: [...rows, ...scaling], ratios, setup: { windowSec, warmupSec, rounds } };
}
