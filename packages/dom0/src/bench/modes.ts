/**
 * The comparison: every I/O design measured the same way, side by side — native,
 * emulated (models in dom0, and hosted in a VMApp), para-virtualized, direct and SV-IO — for net
 * and block, in both transports. Each row is one workload on a fresh small host (bench/measure.ts):
 *
 *   net   tx     the DUT streams UDP to its peer's discard sink as fast as its NIC takes frames
 *                (packets/s and Gbit/s), at a small and a large frame
 *         echo   one datagram in flight to the peer's echo port: round trips/s, latency p50/p99/p99.9
 *   blk   io     the DUT's fio-like load (workloads/block-load.ts): 4 KiB random and 64 KiB
 *                sequential, read and write, at queue depths 1 and 8 (IOPS, MB/s, latency)
 *
 * Every figure is the median of `rounds` runs, interleaved (round 1 of every mode, then round 2…),
 * with the spread; ratios are to native in the same run. Nothing is tuned per mode: every mode gets
 * the same guest, the same memory and the same workload. An emulated disk is one ATA channel: it
 * has no queue, so its queue depth is 1 whatever the row says (the row says so).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestStats } from '@ringvisor/shared';
import { normalizeConfig } from '../toolstack/config.js';
import { sampleWindow } from './window.js';
import { IO_MODES, deviceIn, guestCpuMs, ioModeOf, medianRound, notificationsIn, rowsIn, sampleHost, type BenchTransport, type BenchTarget, type HostSample, type IoMode } from './measure.js';

export type ModesWorkload =
  | { device: 'net'; kind: 'tx'; payloadBytes: number }
  | { device: 'net'; kind: 'echo'; payloadBytes: number }
  | { device: 'blk'; op: 'read' | 'write'; pattern: 'random' | 'sequential'; blockKiB: number; queueDepth: number };

export interface ModesRow {
  device: 'net' | 'blk';
  mode: IoMode;
  transport: BenchTransport;
  /** The workload (same for every mode: rows compare on it). */
  workload: string;
  /** The workload as this mode ran it (an emulated disk says its queue depth was 1). */
  variant: string;
  opsPerSec: number;
  bytesPerSec: number;
  /** Ethernet frame bytes per second × 8 (net), or payload bytes (blk) × 8. */
  gbitPerSec: number;
  latencyUs: { p50: number | null; p99: number | null; p999: number | null };
  cpuUsPerOp: { hwsim: number; dom0: number; guest: number; peer: number; vmapp: number };
  perOp: { traps: number; worldSwitches: number; notifications: number; suppressed: number; bytesCopied: number; grantOps: number; dmaTranslations: number };
  /** Ratios to native for the same workload and transport (native = 1). */
  vsNative: { opsPerSec: number; cpuPerOp: number };
  ops: number;
  rounds: { n: number; minOpsPerSec: number; maxOpsPerSec: number };
}

export interface ModesBenchResult {
  rows: ModesRow[];
  setup: { windowSec: number; warmupSec: number; rounds: number; transports: BenchTransport[]; modes: IoMode[] };
  /** The comparison's targets (docs/benchmarks.md), each measured as a ratio in this run; `met` per target, and the figures. */
  targets: BenchTarget[];
}

/** The fewest operations a window may hold (it is extended until it does, or gives up). */
const MIN_OPS = 30;

/** Ethernet + IPv4 + UDP headers around a datagram's payload (our stack sends no VLAN tags). */
const FRAME_OVERHEAD = 14 + 20 + 8;

export function variantOf(w: ModesWorkload): string {
  if (w.device === 'net') return `${w.kind} ${w.payloadBytes + FRAME_OVERHEAD} B frames`;
  return `${w.blockKiB} KiB ${w.pattern} ${w.op}, qd ${w.queueDepth}`;
}

/** The full matrix, and the quick one (`--quick`): fewer shapes, one transport's worth less. */
export function workloads(quick: boolean): ModesWorkload[] {
  const net: ModesWorkload[] = [
    { device: 'net', kind: 'tx', payloadBytes: 64 },
    { device: 'net', kind: 'tx', payloadBytes: 1400 },
    { device: 'net', kind: 'echo', payloadBytes: 64 },
  ];
  const blk: ModesWorkload[] = quick
    ? [
        { device: 'blk', op: 'read', pattern: 'random', blockKiB: 4, queueDepth: 8 },
        { device: 'blk', op: 'write', pattern: 'sequential', blockKiB: 64, queueDepth: 8 },
      ]
    : [
        { device: 'blk', op: 'read', pattern: 'random', blockKiB: 4, queueDepth: 1 },
        { device: 'blk', op: 'read', pattern: 'random', blockKiB: 4, queueDepth: 8 },
        { device: 'blk', op: 'write', pattern: 'random', blockKiB: 4, queueDepth: 8 },
        { device: 'blk', op: 'read', pattern: 'sequential', blockKiB: 64, queueDepth: 8 },
        { device: 'blk', op: 'write', pattern: 'sequential', blockKiB: 64, queueDepth: 8 },
      ];
  return [...net, ...blk];
}

type Measured = Omit<ModesRow, 'vsNative' | 'rounds'>;

function deviceOf(g: GuestStats, type: 'vif' | 'vbd'): GuestStats['devices'][number] | undefined {
  return g.devices.find((d) => d.type === type);
}

export async function measureMode(mode: IoMode, w: ModesWorkload, transport: BenchTransport, windowSec: number, warmupSec: number, dir: string): Promise<Measured> {
  const net = w.device === 'net';
  const guests = net
    ? [
        {
          name: 'dut',
          memoryMiB: 16,
          devices: [deviceIn(mode, 'vif')],
          workloads: { udp: w.kind === 'tx' ? { peers: ['peer'], mode: 'stream', ratePps: 0, window: 64, payloadBytes: w.payloadBytes } : { peers: ['peer'], window: 1, payloadBytes: w.payloadBytes } },
        },
        { name: 'peer', memoryMiB: 16, devices: [deviceIn(mode, 'vif')], workloads: {} },
      ]
    : [{ name: 'dut', memoryMiB: 16, devices: [deviceIn(mode, 'vbd', 16)], workloads: { io: { op: w.op, pattern: w.pattern, blockKiB: w.blockKiB, queueDepth: w.queueDepth, regionMiB: 16 } } }];
  const config = normalizeConfig({ seed: 9, hosts: [{ disk: { path: join(dir, `disk-${process.pid}.img`), sizeMiB: 40 }, guests }] }).hosts[0];
  const [a, b] = await sampleWindow<HostSample>(
    config,
    // At least MIN_OPS operations in the window (every mode alike), for at most max(4 s, 2 windows).
    { seed: 9, warmupSec, windowSec, transport, enough: (x, y) => rowOf(mode, w, transport, x, y).ops >= MIN_OPS, maxWindowSec: Math.max(4, windowSec * 2) },
    (host, domid) => sampleHost(host, transport, domid),
  );
  return rowOf(mode, w, transport, a, b);
}

export function rowOf(mode: IoMode, w: ModesWorkload, transport: BenchTransport, a: HostSample, b: HostSample): Measured {
  const net = w.device === 'net';
  const sec = (b.t - a.t) / 1000;
  const find = (s: HostSample, n: string) => s.guests.find((g) => g.name === n);
  const dutA = find(a, 'dut')!;
  const dutB = find(b, 'dut')!;
  const da = deviceOf(dutA, net ? 'vif' : 'vbd')!;
  const db = deviceOf(dutB, net ? 'vif' : 'vbd')!;
  const d = (k: string) => (db.detail[k] ?? 0) - (da.detail[k] ?? 0);
  let ops: number;
  let bytes: number;
  if (net) {
    ops = w.kind === 'tx' ? d('txPackets') : dutB.udp.echoed - dutA.udp.echoed;
    bytes = ops * (w.payloadBytes + FRAME_OVERHEAD) * (w.kind === 'echo' ? 2 : 1);
  } else {
    ops = (dutB.io?.ops ?? 0) - (dutA.io?.ops ?? 0);
    bytes = (dutB.io?.bytes ?? 0) - (dutA.io?.bytes ?? 0);
  }
  const per = (x: number) => (ops > 0 ? x / ops : 0);
  const io = ioModeOf(mode);
  // Notifications each design sends, as its mode counts them: PV, both ends' event sends;
  // emulated, the vCPU's kicks of the model plus the interrupts the guest took; direct, native
  // and SV-IO, the driver's doorbells plus the interrupts it took.
  const { notifications, suppressed } = notificationsIn(mode, d, { notifications: b.backendNotifications - a.backendNotifications, suppressed: b.backendSuppressed - a.backendSuppressed });
  // Bytes the virtualization layer copied: dom0's grant copies, the device models' DMA and VMNet,
  // the SV-IO engine's copies; a function DMAs into the guest's own buffers (none).
  const copied = { grants: b.grantBytes - a.grantBytes, models: b.modelBytes - a.modelBytes, engine: b.svioBytes - a.svioBytes, nobody: 0 }[io.copiedBy];
  // A disk without a queue runs at its own depth, whatever the workload asks (the row says so).
  const queueLimit = net ? undefined : io.diskQueueLimit;
  const lat = net
    ? w.kind === 'echo'
      ? { p50: dutB.udp.rttP50Us ?? null, p99: dutB.udp.rttP99Us ?? null, p999: dutB.udp.rttP999Us ?? null }
      : { p50: null, p99: null, p999: null }
    : { p50: dutB.io?.latencyUs?.p50 ?? null, p99: dutB.io?.latencyUs?.p99 ?? null, p999: dutB.io?.latencyUs?.p999 ?? null };
  const cpu = (x: number) => per(x * 1000);
  return {
    device: w.device,
    mode,
    transport,
    workload: variantOf(w),
    variant: variantOf(w) + (queueLimit && !net && w.queueDepth > queueLimit.depth ? ` (${queueLimit.label}: qd ${queueLimit.depth})` : ''),
    opsPerSec: ops / sec,
    bytesPerSec: bytes / sec,
    gbitPerSec: (bytes * 8) / sec / 1e9,
    latencyUs: lat,
    cpuUsPerOp: {
      hwsim: cpu(b.hwsimCpuMs - a.hwsimCpuMs),
      dom0: cpu(b.dom0CpuMs - a.dom0CpuMs),
      guest: cpu(guestCpuMs(dutB) - guestCpuMs(dutA)),
      peer: net ? cpu(guestCpuMs(find(b, 'peer')) - guestCpuMs(find(a, 'peer'))) : 0,
      vmapp: cpu(b.vmappCpuMs - a.vmappCpuMs),
    },
    perOp: {
      traps: per(d('traps')),
      worldSwitches: per(d('worldSwitches')),
      notifications: per(notifications),
      suppressed: per(suppressed),
      bytesCopied: per(copied),
      grantOps: per(b.grantOps - a.grantOps),
      dmaTranslations: per(b.iommuPages - a.iommuPages),
    },
    ops,
  };
}

const totalCpu = (r: { cpuUsPerOp: ModesRow['cpuUsPerOp'] }) => r.cpuUsPerOp.hwsim + r.cpuUsPerOp.dom0 + r.cpuUsPerOp.guest + r.cpuUsPerOp.peer + r.cpuUsPerOp.vmapp;

/** Median round per (mode, workload, transport), its spread, and ratios to native. */
export function aggregate(all: Measured[][]): ModesRow[] {
  const key = (r: Measured) => `${r.transport}|${r.workload}|${r.mode}`;
  const groups = new Map<string, Measured[]>();
  for (const round of all) for (const r of round) groups.set(key(r), [...(groups.get(key(r)) ?? []), r]);
  const rows: Array<Omit<ModesRow, 'vsNative'>> = [...groups.values()].map((rs) => medianRound(rs));
  return rows.map((r) => {
    const base = rows.find((x) => x.mode === 'native' && x.transport === r.transport && x.workload === r.workload);
    return {
      ...r,
      vsNative: {
        opsPerSec: base && base.opsPerSec > 0 ? r.opsPerSec / base.opsPerSec : NaN,
        cpuPerOp: base && totalCpu(base) > 0 ? totalCpu(r) / totalCpu(base) : NaN,
      },
    };
  });
}

/** The comparison's targets (docs/benchmarks.md), as ratios in this run (null: the rows to judge it are not in this run). */
export function judgeTargets(rows: ModesRow[]): ModesBenchResult['targets'] {
  const t: ModesBenchResult['targets'] = [];
  const of = (mode: IoMode, pred: (r: ModesRow) => boolean) => rows.filter((r) => r.mode === mode && pred(r));
  const ratios = (mode: IoMode, pred: (r: ModesRow) => boolean) => of(mode, pred).map((r) => ({ r, x: r.vsNative.opsPerSec }));
  const check = (name: string, got: Array<{ r: ModesRow; x: number }>, ok: (x: number) => boolean) => {
    if (got.length === 0) return t.push({ name, met: null, detail: 'not measured in this run' });
    t.push({ name, met: got.every((g) => ok(g.x)), detail: got.map((g) => `${g.r.transport} ${g.r.variant}: ${g.x.toFixed(2)}×`).join('; ') });
  };
  check('direct ≥ 90% of native', ratios('direct', () => true), (x) => x >= 0.9);
  check('PV ≥ 70% of native, 64 KiB sequential block I/O and large frames', ratios('pv', (r) => /64 KiB sequential|tx 1442 B/.test(r.variant)), (x) => x >= 0.7);
  const emu = of('emulated', (r) => r.device === 'net');
  const pvFor = (r: ModesRow) => rowsIn(rows, 'pv').find((x) => x.transport === r.transport && x.workload === r.workload);
  if (emu.length === 0) t.push({ name: 'emulated well below PV', met: null, detail: 'not measured in this run' });
  else
    t.push({
      name: 'emulated well below PV (net)',
      met: emu.every((r) => (pvFor(r)?.opsPerSec ?? 0) > 2 * r.opsPerSec),
      detail: emu.map((r) => `${r.transport} ${r.variant}: ${(r.opsPerSec / (pvFor(r)?.opsPerSec ?? NaN)).toFixed(2)}× PV, ${r.perOp.traps.toFixed(1)} traps/op`).join('; '),
    });
  const dom0 = (mode: IoMode) => of(mode, () => true);
  const pv = dom0('pv');
  const direct = dom0('direct');
  if (pv.length === 0 || direct.length === 0) t.push({ name: 'dom0 CPU per op: PV > direct ≈ 0', met: null, detail: 'not measured in this run' });
  else
    t.push({
      name: 'dom0 CPU per op: PV > direct ≈ 0',
      met: direct.every((r) => r.cpuUsPerOp.dom0 < 0.1 * (pvFor(r) ?? pv[0]).cpuUsPerOp.dom0 + 2),
      detail: `PV ${Math.min(...pv.map((r) => r.cpuUsPerOp.dom0)).toFixed(1)}–${Math.max(...pv.map((r) => r.cpuUsPerOp.dom0)).toFixed(1)} µs, direct ${Math.min(...direct.map((r) => r.cpuUsPerOp.dom0)).toFixed(1)}–${Math.max(...direct.map((r) => r.cpuUsPerOp.dom0)).toFixed(1)} µs`,
    });
  return t;
}

export async function runModesBench(o: {
  seconds?: number;
  quick?: boolean;
  rounds?: number;
  transports?: BenchTransport[];
  modes?: IoMode[];
  only?: ModesWorkload[];
  log: (line: string) => void;
}): Promise<ModesBenchResult> {
  const quick = o.quick === true;
  const windowSec = o.seconds ?? (quick ? 0.6 : 2);
  const warmupSec = quick ? 0.4 : 1;
  // A process per runtime (ws) takes longer to settle: its links connect, its code warms up.
  const warm = (t: BenchTransport) => (t === 'ws' ? warmupSec + 1 : warmupSec);
  const rounds = o.rounds ?? (quick ? 1 : 3);
  const transports = o.transports ?? ['threads', 'ws'];
  const modes = o.modes ?? IO_MODES;
  process.env.LOG_LEVEL ??= 'warn';
  const dir = mkdtempSync(join(tmpdir(), 'rv-bench-modes-'));
  const all: Measured[][] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      const got: Measured[] = [];
      for (const transport of transports) {
        // ws runs fewer shapes: a process per runtime costs seconds per host.
        const ws = (o.only ?? workloads(quick)).filter((w) => transport === 'threads' || !quick || (w.device === 'net' ? w.kind !== 'tx' || w.payloadBytes > 64 : w.pattern === 'random'));
        for (const w of ws)
          for (const mode of modes) {
            const r = await measureMode(mode, w, transport, transport === 'ws' ? Math.max(1, windowSec) : windowSec, warm(transport), dir);
            o.log(`${transport} ${r.device} ${mode} (${r.variant}${rounds > 1 ? `, round ${round}/${rounds}` : ''}): ${Math.round(r.opsPerSec)} ops/s, dom0 ${r.cpuUsPerOp.dom0.toFixed(1)} µs/op`);
            got.push(r);
          }
      }
      all.push(got);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = aggregate(all);
  return { rows, setup: { windowSec, warmupSec, rounds, transports, modes }, targets: judgeTargets(rows) };
}
