/**
 * One I/O measurement, whatever the mode: a small host with a device-under-test guest (and a peer
 * for network workloads), its devices reached one way, one workload; a window of counters taken
 * from every runtime, and a row in the documented JSON shape (docs/benchmarks.md) built from their differences.
 *
 * Modes (how the guest reaches the device):
 *   native           a virtual function with the IOMMU in pass-through: the driver and the device,
 *                    nothing of virtualization on the path (the bare-metal baseline)
 *   emulated         a Lance / an ATA disk modelled in dom0; every port access traps (Xen HVM, QEMU)
 *   emulated-hosted  the same models in a VMApp beside the guest, with the VMM's optimisations on
 *                    for the NIC (VMware Workstation, Sugerman et al.)
 *   pv               Xen split drivers through dom0 (grant copies and maps, dom0's drivers)
 *   direct           a virtual function behind the IOMMU (every DMA translated)
 *   svio             a VIF of the self-virtualizing device
 *
 * CPU per operation, per runtime, is real in both transports. threads: each runtime is a thread,
 * and its figure is its event loop's busy time (hwsim's includes its SV-IO cores' threads; a
 * hosted VMApp's thread counts as `vmapp`). ws: each runtime is a process, and its figure is the
 * process's CPU time (dom0 is this process).
 */
import type { GuestStats } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';
import type { DeviceModeConfig } from '../toolstack/config.js';
import { IO_MODES as IO_MODE_DESCRIPTORS, type IoModeDescriptor } from '../toolstack/attach/modes.js';
import { DEVICE_KINDS, type DeviceKind } from '../toolstack/device-kinds.js';

export type IoMode = 'native' | 'emulated' | 'emulated-hosted' | 'pv' | 'direct' | 'svio';
export type BenchTransport = 'threads' | 'ws';
export const IO_MODES: IoMode[] = ['native', 'emulated', 'emulated-hosted', 'pv', 'direct', 'svio'];

/**
 * Each bench mode as a guest config reaches it: its I/O mode (whose descriptor says how its
 * notifications and copies are counted) and the config keys that make it this variant, for every
 * kind and per kind. The one place that says what a bench mode is.
 */
export const BENCH_MODES: Readonly<Record<IoMode, { io: DeviceModeConfig; keys?: Readonly<Record<string, unknown>>; kindKeys?: Readonly<Partial<Record<DeviceKind, Record<string, unknown>>>> }>> = {
  native: { io: 'direct', keys: { iommu: 'passthrough' } },
  emulated: { io: 'emulated' },
  'emulated-hosted': { io: 'emulated', keys: { placement: 'hosted' }, kindKeys: { vif: { vmmIo: true, sendCombining: true } } },
  pv: { io: 'pv' },
  direct: { io: 'direct' },
  svio: { io: 'svio' },
};

/** The descriptor of the I/O mode a bench mode runs in. */
export const ioModeOf = (mode: IoMode): IoModeDescriptor => IO_MODE_DESCRIPTORS[BENCH_MODES[mode].io];

/** A device of `type` reached in `mode` (config form; a device in its kind's default mode says no mode). */
export function deviceIn(mode: IoMode, type: 'vif' | 'vbd', sizeMiB = 16): Record<string, unknown> {
  const m = BENCH_MODES[mode];
  const kind = DEVICE_KINDS[type];
  return { type, ...(kind.ownKeys.includes('sizeMiB') ? { sizeMiB } : {}), ...(m.io === kind.defaultMode ? {} : { mode: m.io }), ...m.keys, ...m.kindKeys?.[type] };
}

/**
 * The notifications and suppressed ones a device of `mode` counted in a window, as its I/O
 * mode's descriptor says to count them: `device(counter)` is the guest device counter's change,
 * `backends` dom0's backends' changes (added for a split driver, whose two ends both signal).
 */
export function notificationsIn(mode: IoMode, device: (counter: string) => number, backends: { notifications: number; suppressed: number }): { notifications: number; suppressed: number } {
  const n = ioModeOf(mode).notifications;
  const sum = (counters: readonly string[]) => counters.reduce((s, k) => s + device(k), 0);
  return { notifications: sum(n.sent) + (n.backendsToo ? backends.notifications : 0), suppressed: sum(n.suppressed) + (n.backendsToo ? backends.suppressed : 0) };
}

/** The rows a target judges: those of the mode it names. */
export function rowsIn<R extends { mode: string }>(rows: readonly R[], mode: R['mode']): R[] {
  return rows.filter((r) => r.mode === mode);
}

export interface HostSample {
  t: number;
  /** CPU ms so far: dom0 (this thread, or this process over ws), the hardware (its thread and SV-IO cores, or its process). */
  dom0CpuMs: number;
  hwsimCpuMs: number;
  /** Hosted VMApps' threads (threads transport; over ws they are threads of the guest's process). */
  vmappCpuMs: number;
  guests: GuestStats[];
  /** dom0's grant operations (maps, unmaps, copies) and bytes it grant-copied. */
  grantOps: number;
  grantBytes: number;
  /** PV backends' notifications sent and suppressed (for the DUT's devices). */
  backendNotifications: number;
  backendSuppressed: number;
  /** Emulated devices: bytes the models moved by DMA and through VMNet. */
  modelBytes: number;
  /** IOMMU page translations (direct I/O). */
  iommuPages: number;
  /** Bytes the SV-IO engine moved for the DUT's VIFs (copied out of or into its memory). */
  svioBytes: number;
  /** Every VIF's QoS scheduler counters, by bound domain (turns, and turns that left the round). */
  svioSched: Array<{ domid: number; turns: number; idle: number; blocked: number }>;
}

/** Counters of every runtime on `host`, for the DUT guest `dutDomid`. */
export async function sampleHost(host: Host, transport: BenchTransport, dutDomid: number): Promise<HostSample> {
  const guests = (await host.guestStats()).filter((g): g is GuestStats => Boolean(g));
  const hw = await host.readHardwareStats();
  const backends = [...host.netBackends(), ...host.blkBackends()].filter((b) => b.frontDomid === dutDomid);
  const g = host.hv.grants.counters.get(0);
  const platform = host.platformOf(dutDomid);
  await platform?.refresh();
  const p = platform?.stats();
  const cpu = process.cpuUsage();
  return {
    t: performance.now(),
    dom0CpuMs: transport === 'ws' ? (cpu.user + cpu.system) / 1000 : performance.eventLoopUtilization().active,
    hwsimCpuMs: hw.processCpuMs ?? hw.busyMs + (hw.svio?.coreBusyMs ?? []).reduce((a, x) => a + x, 0),
    vmappCpuMs: transport === 'threads' ? (p?.busyMs ?? 0) : 0,
    guests,
    grantOps: g ? g.maps + g.unmaps + g.copies : 0,
    grantBytes: g ? g.bytesCopied : 0,
    backendNotifications: backends.reduce((a, b) => a + b.counters.notifications, 0),
    backendSuppressed: backends.reduce((a, b) => a + b.counters.suppressed, 0),
    modelBytes: p ? p.dma.bytesRead + p.dma.bytesWritten + (p.vmnet ? p.vmnet.bytesOut + p.vmnet.bytesIn : 0) : 0,
    iommuPages: hw.sriov.iommu.pagesTranslated,
    svioBytes: (hw.svio?.vifs ?? []).filter((v) => v.domid === dutDomid).reduce((a, v) => a + (v.stats?.counters.bytes ?? 0), 0),
    svioSched: (hw.svio?.vifs ?? []).map((v) => ({ domid: v.domid, turns: v.stats?.sched.turns ?? 0, idle: v.stats?.sched.idle ?? 0, blocked: v.stats?.sched.blocked ?? 0 })),
  };
}

/** One of a benchmark's targets (docs/benchmarks.md), judged from this run's ratios (met: null — not measured in it). */
export interface BenchTarget {
  name: string;
  met: boolean | null;
  detail: string;
}

/** A guest's CPU ms so far: its process's (ws) or its thread's (threads). */
export function guestCpuMs(g: GuestStats | undefined): number {
  return g ? (g.processCpuMs ?? g.busyMs ?? 0) : 0;
}

/** Jain's fairness index over per-guest throughputs: 1 = all equal, 1/n = one takes everything. */
export function jain(xs: number[]): number {
  const sum = xs.reduce((a, x) => a + x, 0);
  const sq = xs.reduce((a, x) => a + x * x, 0);
  return xs.length === 0 || sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
}

/** The round whose throughput is the median of `rs` (a real run, not an average), with the spread of all. */
export function medianRound<T extends { opsPerSec: number }>(rs: T[]): T & { rounds: { n: number; minOpsPerSec: number; maxOpsPerSec: number } } {
  const m = median(rs.map((r) => r.opsPerSec));
  const pick = [...rs].sort((x, y) => Math.abs(x.opsPerSec - m) - Math.abs(y.opsPerSec - m))[0];
  return { ...pick, rounds: { n: rs.length, minOpsPerSec: Math.min(...rs.map((r) => r.opsPerSec)), maxOpsPerSec: Math.max(...rs.map((r) => r.opsPerSec)) } };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
