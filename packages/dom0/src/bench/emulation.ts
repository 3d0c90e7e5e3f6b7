/**
 * What full emulation costs, measured: one guest (the device under test) talks UDP to a PV peer
 * through dom0's bridge, its NIC reached each way in turn —
 *
 *   pv                 Xen split driver (netfront ↔ netback, grant copies): the baseline
 *   emulated           Lance model in dom0 (Xen HVM / QEMU): every port access a trap
 *   emulated-hosted    Lance model in a VMApp behind a VMM in the guest's world (VMware
 *                      Workstation), with Sugerman et al.'s optimisations off, then vmmIo, then
 *                      vmmIo + sendCombining — the paper's ablation
 *
 * and four traffic shapes: `tx` (the guest streams one way to the peer as fast as its NIC takes
 * frames), `rx` (the peer streams to the guest: interrupts coalesce, one covers many frames),
 * `rx-paced` (the peer sends a hundred frames a second: one interrupt per frame, the
 * uncoalesced receive cost), `echo` (one datagram in flight: a round trip at a time). Every mode runs in
 * the same process run, interleaved by shape, and rows report ratios to pv.
 *
 * Per op (a frame for tx/rx, a round trip for echo): traps and world switches (the guest's vCPU
 * counters), notifications and suppressed ones (PV: both ends' event sends; emulated: the vCPU's
 * kicks of the device model and the device's interrupts), bytes copied (grant copies; DMA and
 * VMNet copies), grant operations, and CPU per op of dom0 (this thread), the guest, the peer and
 * the VMApp (event-loop busy time). Frames between guests of one host never reach the hardware
 * simulator, so its CPU is not part of these paths (reported as 0).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestStats } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';
import { normalizeConfig } from '../toolstack/config.js';
import { sampleWindow } from './window.js';
import { ioModeOf, notificationsIn, rowsIn } from './measure.js';
import { vifsOf } from '../toolstack/device-kinds.js';

export type EmulationDirection = 'tx' | 'rx' | 'rx-paced' | 'echo';

/** rx-paced: the peer sends this many frames a second, few enough that each gets its own interrupt. */
const PACED_PPS = 100;

interface ModeSpec {
  mode: 'pv' | 'emulated' | 'emulated-hosted';
  variant: string;
  device: Record<string, unknown>;
}

const MODES: ModeSpec[] = [
  { mode: 'pv', variant: 'split driver', device: { type: 'vif' } },
  { mode: 'emulated', variant: 'model in dom0', device: { type: 'vif', mode: 'emulated' } },
  { mode: 'emulated-hosted', variant: 'no optimisations', device: { type: 'vif', mode: 'emulated', placement: 'hosted' } },
  { mode: 'emulated-hosted', variant: 'vmmIo', device: { type: 'vif', mode: 'emulated', placement: 'hosted', vmmIo: true } },
  { mode: 'emulated-hosted', variant: 'vmmIo+sendCombining', device: { type: 'vif', mode: 'emulated', placement: 'hosted', vmmIo: true, sendCombining: true } },
];

export interface EmulationRow {
  device: 'net';
  mode: ModeSpec['mode'];
  transport: 'threads';
  variant: string;
  direction: EmulationDirection;
  payloadBytes: number;
  opsPerSec: number;
  bytesPerSec: number;
  latencyUs: { p50: number | null; p99: number | null };
  cpuUsPerOp: { hwsim: number; dom0: number; guest: number; peer: number; vmapp: number };
  perOp: { traps: number; worldSwitches: number; notifications: number; suppressed: number; bytesCopied: number; grantOps: number };
  /** opsPerSec and CPU per op relative to pv in the same direction (pv = 1). */
  vsPv: { opsPerSec: number; cpuPerOp: number };
  ops: number;
}

export interface EmulationBenchResult {
  rows: EmulationRow[];
  setup: { windowSec: number; warmupSec: number; payloadBytes: number };
}

const PAYLOAD = 512;

/** The counters one sample takes, from the guests' own stats and dom0's. */
interface Sample {
  t: number;
  dom0BusyMs: number;
  dut: GuestStats;
  peer: GuestStats;
  backendNotifications: number;
  backendSuppressed: number;
  grantCopies: number;
  grantBytes: number;
  dmaBytes: number;
  vmnetBytes: number;
  vmappBusyMs: number;
}

async function sample(host: Host, dutDomid: number): Promise<Sample> {
  const stats = await host.guestStats();
  const dut = stats.find((g) => g?.name === 'dut')!;
  const peer = stats.find((g) => g?.name === 'peer')!;
  const back = host.netBackends().filter((b) => b.frontDomid === dutDomid);
  const platform = host.platformOf(dutDomid);
  await platform?.refresh();
  const p = platform?.stats();
  return {
    t: performance.now(),
    dom0BusyMs: performance.eventLoopUtilization().active,
    dut,
    peer,
    backendNotifications: back.reduce((a, b) => a + b.counters.notifications, 0),
    backendSuppressed: back.reduce((a, b) => a + b.counters.suppressed, 0),
    grantCopies: back.reduce((a, b) => a + b.counters.grantCopies, 0),
    grantBytes: back.reduce((a, b) => a + b.counters.bytesCopied, 0),
    dmaBytes: p ? p.dma.bytesRead + p.dma.bytesWritten : 0,
    vmnetBytes: p?.vmnet ? p.vmnet.bytesOut + p.vmnet.bytesIn : 0,
    vmappBusyMs: p?.busyMs ?? 0,
  };
}

function nic(g: GuestStats): Record<string, number> {
  return vifsOf(g.devices)[0]?.detail ?? {};
}

async function runOne(m: ModeSpec, direction: EmulationDirection, windowSec: number, warmupSec: number, dir: string): Promise<Omit<EmulationRow, 'vsPv'>> {
  const stream = { mode: 'stream', ratePps: 0, window: 64, payloadBytes: PAYLOAD };
  const config = normalizeConfig({
    seed: 5,
    hosts: [
      {
        disk: { path: join(dir, `disk-${process.pid}.img`), sizeMiB: 8 },
        guests: [
          {
            name: 'dut',
            memoryMiB: 16,
            devices: [m.device],
            workloads: direction === 'tx' ? { udp: { peers: ['peer'], ...stream } } : direction === 'echo' ? { udp: { peers: ['peer'], window: 1, payloadBytes: PAYLOAD } } : {},
          },
          {
            name: 'peer',
            memoryMiB: 16,
            devices: [{ type: 'vif' }],
            workloads: direction === 'rx' ? { udp: { peers: ['dut'], ...stream } } : direction === 'rx-paced' ? { udp: { peers: ['dut'], ...stream, ratePps: PACED_PPS, window: 1 } } : {},
          },
        ],
      },
    ],
  }).hosts[0];
  const [a, b] = await sampleWindow(config, { seed: 5, warmupSec, windowSec }, sample);
  const sec = (b.t - a.t) / 1000;
  const na = nic(a.dut);
  const nb = nic(b.dut);
  const d = (k: string) => (nb[k] ?? 0) - (na[k] ?? 0);
  const rx = direction === 'rx' || direction === 'rx-paced';
  const ops = direction === 'tx' ? d('txPackets') : rx ? d('rxPackets') : b.dut.udp.echoed - a.dut.udp.echoed;
  const bytes = direction === 'tx' ? d('txBytes') : rx ? d('rxBytes') : ops * PAYLOAD;
  const per = (x: number) => (ops > 0 ? x / ops : 0);
  // As the mode counts them: PV, the frontend's event sends plus the backend's; emulated, the
  // vCPU's kicks of the model plus the interrupts the guest took.
  const { notifications, suppressed } = notificationsIn(m.mode, d, { notifications: b.backendNotifications - a.backendNotifications, suppressed: b.backendSuppressed - a.backendSuppressed });
  // Grant copies (PV) or the model's DMA and VMNet copies (emulated); this bench samples no other copier.
  const copied = { grants: b.grantBytes - a.grantBytes, models: b.dmaBytes - a.dmaBytes + (b.vmnetBytes - a.vmnetBytes), engine: 0, nobody: 0 }[ioModeOf(m.mode).copiedBy];
  return {
    device: 'net',
    mode: m.mode,
    transport: 'threads',
    variant: m.variant,
    direction,
    payloadBytes: PAYLOAD,
    opsPerSec: ops / sec,
    bytesPerSec: bytes / sec,
    latencyUs: direction === 'echo' ? { p50: b.dut.udp.rttP50Us ?? null, p99: b.dut.udp.rttP99Us ?? null } : { p50: null, p99: null },
    cpuUsPerOp: {
      hwsim: 0,
      dom0: per((b.dom0BusyMs - a.dom0BusyMs) * 1000),
      guest: per(((b.dut.busyMs ?? 0) - (a.dut.busyMs ?? 0)) * 1000),
      peer: per(((b.peer.busyMs ?? 0) - (a.peer.busyMs ?? 0)) * 1000),
      vmapp: per((b.vmappBusyMs - a.vmappBusyMs) * 1000),
    },
    perOp: {
      traps: per(d('traps')),
      worldSwitches: per(d('worldSwitches')),
      notifications: per(notifications),
      suppressed: per(suppressed),
      bytesCopied: per(copied),
      grantOps: per(b.grantCopies - a.grantCopies),
    },
    ops,
  };
}

export async function runEmulationBench(o: { seconds?: number; log: (line: string) => void; directions?: EmulationDirection[]; modes?: number[] }): Promise<EmulationBenchResult> {
  const windowSec = o.seconds ?? 2;
  const warmupSec = 1;
  process.env.LOG_LEVEL ??= 'warn';
  const dir = mkdtempSync(join(tmpdir(), 'rv-bench-emu-'));
  const rows: EmulationRow[] = [];
  try {
    for (const direction of o.directions ?? (['tx', 'rx', 'rx-paced', 'echo'] as EmulationDirection[])) {
      const got: Array<Omit<EmulationRow, 'vsPv'>> = [];
      for (const i of o.modes ?? MODES.map((_, k) => k)) {
        const m = MODES[i];
        const r = await runOne(m, direction, windowSec, warmupSec, dir);
        o.log(`${direction} ${m.mode} (${m.variant}): ${Math.round(r.opsPerSec)} ops/s, ${r.perOp.traps.toFixed(1)} traps/op, ${r.perOp.worldSwitches.toFixed(1)} switches/op`);
        got.push(r);
      }
      const base = rowsIn(got, 'pv')[0];
      const cpu = (r: Omit<EmulationRow, 'vsPv'>) => r.cpuUsPerOp.dom0 + r.cpuUsPerOp.guest + r.cpuUsPerOp.vmapp;
      for (const r of got)
        rows.push({ ...r, vsPv: { opsPerSec: base && base.opsPerSec > 0 ? r.opsPerSec / base.opsPerSec : NaN, cpuPerOp: base && cpu(base) > 0 ? cpu(r) / cpu(base) : NaN } });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { rows, setup: { windowSec, warmupSec, payloadBytes: PAYLOAD } };
}
