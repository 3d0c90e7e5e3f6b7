/**
 * Scaling: 1 → 64 guests on one host sharing its physical disk, each running the same
 * block load (4 KiB random reads, queue depth 4, over its own region) — aggregate throughput,
 * per-guest throughput and Jain's fairness index over the guests — for PV and SV-IO; then shares
 * under QoS: SV-IO guests with weights 100:200:300:400 on one engine core (does each get its
 * weight's share?), and PV guests with netback credit limits (does the limited one stay under its
 * limit while the others share the rest?).
 *
 * Each row is one host run (threads transport), the median of `rounds` interleaved runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestStats } from '@ringvisor/shared';
import { normalizeConfig } from '../toolstack/config.js';
import { sampleWindow } from './window.js';
import { vbdsOf } from '../toolstack/device-kinds.js';
import { deviceIn, guestCpuMs, jain, median, medianRound, notificationsIn, rowsIn, sampleHost, type BenchTarget, type HostSample } from './measure.js';

export interface ScalingRow {
  device: 'blk' | 'net';
  mode: 'pv' | 'svio';
  transport: 'threads';
  variant: string;
  guests: number;
  /** Aggregate over the guests. */
  opsPerSec: number;
  bytesPerSec: number;
  perGuestOpsPerSec: { min: number; median: number; max: number };
  fairness: number;
  latencyUs: { p50: number | null; p99: number | null };
  cpuUsPerOp: { hwsim: number; dom0: number; guest: number };
  perOp: { traps: number; worldSwitches: number; notifications: number; suppressed: number; bytesCopied: number; grantOps: number };
  /**
   * QoS rows: each guest's share of the total, the share its weight promises, and how often its
   * VIF left the scheduler's round in the window (nothing queued, or no room to answer): a VIF
   * that is not backlogged cannot claim its weight, and DRR gives its turns to the others.
   */
  shares?: Array<{ guest: string; share: number; want: number; turns: number; leftRound: number }>;
  rounds: { n: number; minOpsPerSec: number; maxOpsPerSec: number };
}

export interface ScalingBenchResult {
  rows: ScalingRow[];
  setup: { windowSec: number; warmupSec: number; rounds: number; guestCounts: number[] };
  targets: BenchTarget[];
}

const QD = 4;

interface Case {
  mode: 'pv' | 'svio';
  guests: number;
  weights?: number[];
  cores?: number;
  /** Requests in flight per guest, and their size (KiB). */
  qd?: number;
  blockKiB?: number;
}

function configOf(c: Case, dir: string, n: number) {
  const guests = Array.from({ length: c.guests }, (_, i) => ({
    name: `g${i + 1}`,
    memoryMiB: 8,
    devices: [{ ...deviceIn(c.mode, 'vbd', 2), ...(c.weights ? { weight: c.weights[i] } : {}) }],
    workloads: { io: { op: 'read', pattern: 'random', blockKiB: c.blockKiB ?? 4, queueDepth: c.qd ?? QD, regionMiB: 2 } },
  }));
  return normalizeConfig({ seed: 4, hosts: [{ disk: { path: join(dir, `disk-${process.pid}-${n}.img`), sizeMiB: Math.max(16, c.guests * 2 + 8) }, ...(c.cores ? { svio: { cores: c.cores } } : {}), guests }] }).hosts[0];
}

type Measured = Omit<ScalingRow, 'rounds'>;

function measuredOf(c: Case, a: HostSample, b: HostSample): Measured {
  const sec = (b.t - a.t) / 1000;
  const per = b.guests.map((g) => {
    const before = a.guests.find((x) => x.name === g.name);
    return { name: g.name, ops: (g.io?.ops ?? 0) - (before?.io?.ops ?? 0), bytes: (g.io?.bytes ?? 0) - (before?.io?.bytes ?? 0), g, before };
  });
  const ops = per.reduce((s, x) => s + x.ops, 0);
  const bytes = per.reduce((s, x) => s + x.bytes, 0);
  const rates = per.map((x) => x.ops / sec);
  const perOp = (x: number) => (ops > 0 ? x / ops : 0);
  const dev = (g: GuestStats | undefined, k: string) => (g ? vbdsOf(g.devices)[0]?.detail[k] : undefined) ?? 0;
  const sumDev = (k: string) => per.reduce((s, x) => s + dev(x.g, k) - dev(x.before, k), 0);
  const { notifications, suppressed } = notificationsIn(c.mode, sumDev, { notifications: b.backendNotifications - a.backendNotifications, suppressed: b.backendSuppressed - a.backendSuppressed });
  const W = c.weights?.reduce((s, x) => s + x, 0) ?? 0;
  return {
    device: 'blk',
    mode: c.mode,
    transport: 'threads',
    variant: `${c.guests} guest${c.guests > 1 ? 's' : ''}, ${c.blockKiB ?? 4} KiB random read, qd ${c.qd ?? QD}${c.weights ? `, weights ${c.weights.join(':')}` : ''}${c.cores ? `, ${c.cores} engine core${c.cores > 1 ? 's' : ''}` : ''}`,
    guests: c.guests,
    opsPerSec: ops / sec,
    bytesPerSec: bytes / sec,
    perGuestOpsPerSec: { min: Math.min(...rates), median: median(rates), max: Math.max(...rates) },
    fairness: jain(rates),
    latencyUs: { p50: median(per.map((x) => x.g.io?.latencyUs?.p50 ?? NaN).filter((x) => !Number.isNaN(x))) || null, p99: Math.max(...per.map((x) => x.g.io?.latencyUs?.p99 ?? 0)) || null },
    cpuUsPerOp: {
      hwsim: perOp((b.hwsimCpuMs - a.hwsimCpuMs) * 1000),
      dom0: perOp((b.dom0CpuMs - a.dom0CpuMs) * 1000),
      guest: perOp(per.reduce((s, x) => s + guestCpuMs(x.g) - guestCpuMs(x.before), 0) * 1000),
    },
    perOp: { traps: 0, worldSwitches: 0, notifications: perOp(notifications), suppressed: perOp(suppressed), bytesCopied: perOp(b.grantBytes - a.grantBytes), grantOps: perOp(b.grantOps - a.grantOps) },
    ...(c.weights
      ? {
          shares: per.map((x, i) => {
            const domid = x.g.domid;
            const s1 = b.svioSched.find((v) => v.domid === domid);
            const s0 = a.svioSched.find((v) => v.domid === domid);
            return { guest: x.name, share: ops > 0 ? x.ops / ops : 0, want: c.weights![i] / W, turns: (s1?.turns ?? 0) - (s0?.turns ?? 0), leftRound: (s1 ? s1.idle + s1.blocked : 0) - (s0 ? s0.idle + s0.blocked : 0) };
          }),
        }
      : {}),
  };
}

export async function runScalingBench(o: { seconds?: number; quick?: boolean; rounds?: number; guestCounts?: number[]; svioGuestCounts?: number[]; log: (line: string) => void }): Promise<ScalingBenchResult> {
  const quick = o.quick === true;
  const windowSec = o.seconds ?? (quick ? 1 : 2);
  const warmupSec = quick ? 0.8 : 1.5;
  const rounds = o.rounds ?? (quick ? 1 : 3);
  const guestCounts = o.guestCounts ?? (quick ? [1, 8, 64] : [1, 2, 4, 8, 16, 32, 64]);
  const cases: Case[] = [
    ...guestCounts.map((n) => ({ mode: 'pv' as const, guests: n })),
    ...(o.svioGuestCounts ?? guestCounts.filter((n) => n <= 16)).map((n) => ({ mode: 'svio' as const, guests: n })),
    // Weights decide only while every VIF is backlogged: a full queue of the largest requests each.
    { mode: 'svio', guests: 4, weights: [100, 200, 300, 400], cores: 1, qd: 32, blockKiB: 16 },
  ];
  process.env.LOG_LEVEL ??= 'warn';
  const dir = mkdtempSync(join(tmpdir(), 'rv-bench-scaling-'));
  const all: Measured[][] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      const got: Measured[] = [];
      for (const [n, c] of cases.entries()) {
        // Each case its own image (sizes differ with the guest count).
        const config = configOf(c, dir, n);
        // Many guests take a while to boot and settle: the warm-up grows with them.
        const [a, b] = await sampleWindow<HostSample>(config, { seed: 4, warmupSec: warmupSec + c.guests / 32, windowSec, dut: 'g1' }, (host, domid) => sampleHost(host, 'threads', domid));
        const r = measuredOf(c, a, b);
        o.log(`${r.mode} ${r.variant}${rounds > 1 ? ` (round ${round}/${rounds})` : ''}: ${Math.round(r.opsPerSec)} ops/s, fairness ${r.fairness.toFixed(3)}`);
        got.push(r);
      }
      all.push(got);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows: ScalingRow[] = all[0].map((_, i) => medianRound(all.map((round) => round[i])));
  const biggest = rowsIn(rows, 'pv').filter((r) => !r.shares).sort((x, y) => y.guests - x.guests)[0];
  const weighted = rows.find((r) => r.shares);
  const targets: ScalingBenchResult['targets'] = [
    biggest
      ? { name: `${biggest.guests} guests saturating one disk: Jain's fairness ≥ 0.95`, met: biggest.guests >= 64 ? biggest.fairness >= 0.95 : null, detail: `PV, ${biggest.guests} guests: ${biggest.fairness.toFixed(3)}` }
      : { name: "64 guests saturating one disk: Jain's fairness ≥ 0.95", met: null, detail: 'not measured in this run' },
    weighted
      ? {
          name: 'SV-IO weights: each guest within 10% of its share',
          met: weighted.shares!.every((s) => Math.abs(s.share - s.want) / s.want <= 0.1),
          detail: weighted.shares!.map((s) => `${s.guest} ${(100 * s.share).toFixed(1)}% (want ${(100 * s.want).toFixed(1)}%; left the round in ${s.leftRound} of ${s.turns} turns)`).join(', '),
        }
      : { name: 'SV-IO weights', met: null, detail: 'not measured in this run' },
  ];
  return { rows, setup: { windowSec, warmupSec, rounds, guestCounts }, targets };
}
