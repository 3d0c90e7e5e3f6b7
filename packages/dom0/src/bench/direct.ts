/**
 * What direct I/O costs, measured: the same workloads on the same simulated hardware, the device
 * reached three ways —
 *
 *   native   the guest drives a virtual function with the IOMMU in pass-through (VT-d's
 *            pass-through translation type, Linux iommu=pt): no translation, no permission
 *            check, no virtualization layer on the path at all — the bare-metal baseline
 *   direct   the same function behind the IOMMU: every DMA translated and checked under the
 *            function's requester id, every interrupt remapped (the textbook's direct I/O)
 *   pv       Xen split drivers: netfront/netback with grant copies through dom0's bridge,
 *            blkfront/blkback with grant maps and dom0's physical disk driver
 *
 * net: two guests whose NICs are reached the same way, `tx` (one streams datagrams to the other's
 * discard sink as fast as its NIC takes them: frames/s) and `echo` (one datagram in flight: round
 * trips/s and their latency). blk: one guest's block verifier, 4 KiB blocks at random, half
 * reads, queue depth 8 (ops/s and per-op latency).
 *
 * Per op: CPU µs of each runtime (event-loop busy time: the hardware simulator's thread, dom0's,
 * the guest's), notifications (PV: both ends' event sends; direct/native: the driver's doorbells
 * plus the interrupts it took), suppressed ones, bytes dom0 copied, grant operations, and IOMMU
 * page translations. Every mode runs in the same process run, interleaved by workload; ratios
 * are to native.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestStats } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';
import { normalizeConfig } from '../toolstack/config.js';
import { sampleWindow } from './window.js';
import { deviceIn, medianRound, notificationsIn, rowsIn } from './measure.js';

export type DirectMode = 'native' | 'direct' | 'pv';
export type DirectWorkload = 'net-tx' | 'net-echo' | 'blk-4k';

const MODES: DirectMode[] = ['native', 'direct', 'pv'];
const WORKLOADS: DirectWorkload[] = ['net-tx', 'net-echo', 'blk-4k'];
const PAYLOAD = 1024;
const QUEUE_DEPTH = 8;

export interface DirectRow {
  device: 'net' | 'blk';
  mode: DirectMode;
  transport: 'threads';
  variant: string;
  workload: DirectWorkload;
  opsPerSec: number;
  bytesPerSec: number;
  latencyUs: { p50: number | null; p99: number | null };
  cpuUsPerOp: { hwsim: number; dom0: number; guest: number; peer: number };
  perOp: { traps: number; worldSwitches: number; notifications: number; suppressed: number; bytesCopied: number; grantOps: number; iommuPages: number };
  /** opsPerSec and total CPU per op relative to native for the same workload (native = 1). */
  vsNative: { opsPerSec: number; cpuPerOp: number };
  ops: number;
  /** The row is the median round's; the spread of opsPerSec over all rounds. */
  rounds: { n: number; minOpsPerSec: number; maxOpsPerSec: number };
}

export interface DirectBenchResult {
  rows: DirectRow[];
  setup: { windowSec: number; warmupSec: number; payloadBytes: number; queueDepth: number; rounds: number };
  /** direct ≥ 90% of native throughput, for every workload (docs/benchmarks.md). */
  targets: { directVsNative: number; met: boolean };
}

interface Sample {
  t: number;
  dom0BusyMs: number;
  hwsimBusyMs: number;
  iommuPages: number;
  dut: GuestStats;
  peer?: GuestStats;
  backendNotifications: number;
  backendSuppressed: number;
  grantOps: number;
  grantBytes: number;
}

async function sample(host: Host, dutDomid: number): Promise<Sample> {
  const stats = await host.guestStats();
  const hw = await host.readHardwareStats();
  const backends = [...host.netBackends(), ...host.blkBackends()].filter((b) => b.frontDomid === dutDomid);
  // Grant operations are counted by the domain that performs them: dom0's, for every guest on the path.
  const g = host.hv.grants.counters.get(0);
  return {
    t: performance.now(),
    dom0BusyMs: performance.eventLoopUtilization().active,
    hwsimBusyMs: hw.busyMs,
    iommuPages: hw.sriov.iommu.pagesTranslated,
    dut: stats.find((s) => s?.name === 'dut')!,
    ...(stats.find((s) => s?.name === 'peer') ? { peer: stats.find((s) => s?.name === 'peer')! } : {}),
    backendNotifications: backends.reduce((a, b) => a + b.counters.notifications, 0),
    backendSuppressed: backends.reduce((a, b) => a + b.counters.suppressed, 0),
    grantOps: g ? g.maps + g.unmaps + g.copies : 0,
    grantBytes: g ? g.bytesCopied : 0,
  };
}

const device = (mode: DirectMode, type: 'vif' | 'vbd'): Record<string, unknown> => deviceIn(mode, type, 8);

async function runOne(mode: DirectMode, workload: DirectWorkload, windowSec: number, warmupSec: number, dir: string): Promise<Omit<DirectRow, 'vsNative' | 'rounds'>> {
  const net = workload !== 'blk-4k';
  const guests = net
    ? [
        {
          name: 'dut',
          memoryMiB: 16,
          devices: [device(mode, 'vif')],
          workloads: { udp: workload === 'net-tx' ? { peers: ['peer'], mode: 'stream', ratePps: 0, window: 64, payloadBytes: PAYLOAD } : { peers: ['peer'], window: 1, payloadBytes: PAYLOAD } },
        },
        { name: 'peer', memoryMiB: 16, devices: [device(mode, 'vif')], workloads: {} },
      ]
    : [{ name: 'dut', memoryMiB: 16, devices: [device(mode, 'vbd')], workloads: { block: { blocks: 512, queueDepth: QUEUE_DEPTH } } }];
  const config = normalizeConfig({ seed: 3, hosts: [{ disk: { path: join(dir, `disk-${process.pid}.img`), sizeMiB: 32 }, guests }] }).hosts[0];
  const [a, b] = await sampleWindow(config, { seed: 3, warmupSec, windowSec }, sample);
  const sec = (b.t - a.t) / 1000;
  const devOf = (s: GuestStats) => s.devices.find((d) => d.type === (net ? 'vif' : 'vbd'))!;
  const da = devOf(a.dut);
  const db = devOf(b.dut);
  const d = (k: string) => (db.detail[k] ?? 0) - (da.detail[k] ?? 0);
  const ops = workload === 'net-tx' ? d('txPackets') : workload === 'net-echo' ? b.dut.udp.echoed - a.dut.udp.echoed : db.ops - da.ops;
  const bytes = workload === 'net-tx' ? d('txBytes') : workload === 'net-echo' ? ops * PAYLOAD : db.bytes - da.bytes;
  const per = (x: number) => (ops > 0 ? x / ops : 0);
  const { notifications, suppressed } = notificationsIn(mode, d, { notifications: b.backendNotifications - a.backendNotifications, suppressed: b.backendSuppressed - a.backendSuppressed });
  const latency = net ? { p50: b.dut.udp.rttP50Us ?? null, p99: b.dut.udp.rttP99Us ?? null } : { p50: b.dut.block?.latencyP50Us ?? null, p99: b.dut.block?.latencyP99Us ?? null };
  return {
    device: net ? 'net' : 'blk',
    mode,
    transport: 'threads',
    variant: net ? (workload === 'net-tx' ? `tx ${PAYLOAD} B` : `echo ${PAYLOAD} B`) : `4 KiB random, qd ${QUEUE_DEPTH}`,
    workload,
    opsPerSec: ops / sec,
    bytesPerSec: bytes / sec,
    latencyUs: workload === 'net-tx' ? { p50: null, p99: null } : latency,
    cpuUsPerOp: {
      hwsim: per((b.hwsimBusyMs - a.hwsimBusyMs) * 1000),
      dom0: per((b.dom0BusyMs - a.dom0BusyMs) * 1000),
      guest: per(((b.dut.busyMs ?? 0) - (a.dut.busyMs ?? 0)) * 1000),
      peer: b.peer && a.peer ? per(((b.peer.busyMs ?? 0) - (a.peer.busyMs ?? 0)) * 1000) : 0,
    },
    perOp: {
      traps: 0,
      worldSwitches: 0,
      notifications: per(notifications),
      suppressed: per(suppressed),
      bytesCopied: per(b.grantBytes - a.grantBytes),
      grantOps: per(b.grantOps - a.grantOps),
      iommuPages: per(b.iommuPages - a.iommuPages),
    },
    ops,
  };
}

export async function runDirectBench(o: { seconds?: number; rounds?: number; log: (line: string) => void; workloads?: DirectWorkload[]; modes?: DirectMode[] }): Promise<DirectBenchResult> {
  const windowSec = o.seconds ?? 2;
  const rounds = o.rounds ?? 3;
  const warmupSec = 1;
  process.env.LOG_LEVEL ??= 'warn';
  const dir = mkdtempSync(join(tmpdir(), 'rv-bench-direct-'));
  const rows: DirectRow[] = [];
  try {
    for (const workload of o.workloads ?? WORKLOADS) {
      // Rounds interleave the modes, so a disturbance on this 2-core machine hits them alike; each
      // mode's row is its median round.
      const runs = new Map<DirectMode, Array<Omit<DirectRow, 'vsNative' | 'rounds'>>>();
      for (let round = 0; round < rounds; round++)
        for (const mode of o.modes ?? MODES) {
          const r = await runOne(mode, workload, windowSec, warmupSec, dir);
          o.log(`${workload} ${mode} (round ${round + 1}/${rounds}): ${Math.round(r.opsPerSec)} ops/s, dom0 ${r.cpuUsPerOp.dom0.toFixed(1)} µs/op, ${r.perOp.iommuPages.toFixed(2)} IOMMU pages/op`);
          runs.set(mode, [...(runs.get(mode) ?? []), r]);
        }
      const got: Array<Omit<DirectRow, 'vsNative'>> = [...runs.values()].map((rs) => medianRound(rs));
      const base = got.find((r) => r.mode === 'native');
      const cpu = (r: Omit<DirectRow, 'vsNative'>) => r.cpuUsPerOp.hwsim + r.cpuUsPerOp.dom0 + r.cpuUsPerOp.guest + r.cpuUsPerOp.peer;
      for (const r of got)
        rows.push({ ...r, vsNative: { opsPerSec: base && base.opsPerSec > 0 ? r.opsPerSec / base.opsPerSec : NaN, cpuPerOp: base && cpu(base) > 0 ? cpu(r) / cpu(base) : NaN } });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const directRatios = rowsIn(rows, 'direct').map((r) => r.vsNative.opsPerSec);
  return {
    rows,
    setup: { windowSec, warmupSec, payloadBytes: PAYLOAD, queueDepth: QUEUE_DEPTH, rounds },
    targets: { directVsNative: 0.9, met: directRatios.length > 0 && directRatios.every((x) => x >= 0.9) },
  };
}
