/**
 * The contract between the toolstack (dom0) and a guest runtime (domU): what a guest is booted
 * with, and what it reports. Both sides import it from here; neither imports the other.
 */

import type { VmAppPlan } from '../trap/vmapp.js';
import type { DirectDeviceSpec } from '../hw/vf.js';

export interface GuestBootSpec {
  domid: number;
  name: string;
  /** The host (dom0) this guest runs on, for labels in trace events. */
  host?: string;
  seed: number;
  memoryFrames: number;
  /**
   * Shared memory from the hypervisor (threads transport). Absent when the guest runs across a
   * link without shared memory: it then allocates its own and talks through the domain link.
   */
  shared?: { memory: SharedArrayBuffer; grantTable: SharedArrayBuffer; eventMemory: SharedArrayBuffer };
  /** `mode` absent = pv. */
  vbds: Array<{ devid: number; mode?: DeviceMode }>;
  vifs: Array<{ devid: number; ip: string; mac: string; mode?: DeviceMode }>;
  /** Emulated devices (full emulation) and how to reach them; absent when the guest has none. */
  emulated?: EmulatedDeviceSpec;
  /** Device functions assigned to the guest (direct I/O); absent when it has none. */
  direct?: DirectDeviceSpec;
  /**
   * SV-IO VIFs bound to the guest: each one's id, the guest's end of its doorbell/interrupt
   * channel, and (threads) its access-API register page; (ws) where the guest's direct link to
   * the hardware connects instead.
   */
  svio?: { vifs: SvioVifSpec[]; hwUrl?: string };
  workloads: {
    /** volatileCache: the host's disk has a writeback cache (the ledger is flush-aware). */
    block?: { devid: number; blocks: number; queueDepth: number; volatileCache?: boolean };
    /** A benchmark's block load (domU/workloads/block-load.ts): measures, checks nothing. */
    io?: { devid: number; op: 'read' | 'write'; pattern: 'random' | 'sequential'; blockBytes: number; queueDepth: number; regionBytes: number };
    /**
     * `echo` (default): windowed flows to each peer's echo port, every datagram verified on its
     * way back. `stream`: one-way datagrams to each peer's discard port at `ratePps` (0: as fast
     * as the NIC takes them), verified by the peer's sink.
     */
    udp?: { peers: Array<{ name: string; ip: string }>; payloadBytes: number; window: number; mode?: 'echo' | 'stream'; ratePps?: number };
  };
}

/**
 * A guest's emulated platform, as its firmware would describe it: the vCPU's I/O request slot
 * and the event port that kicks the ioreq server, and each device's I/O ports and virtual IRQ
 * (an event port the device model raises). NIC addresses (ip/mac) are in `vifs` under the same
 * devid; the MAC is also in the NIC's APROM.
 */
export interface EmulatedDeviceSpec {
  /**
   * The vCPU's I/O request slot and the event port that kicks dom0's ioreq server (dom0
   * placement). Hosted: `port` is -1 (the VMApp sleeps on the slot's doorbell), and `slot` is
   * absent when the guest's process must create it along with its own VMApp (ws transport).
   */
  ioreq: { slot?: SharedArrayBuffer; port: number };
  /**
   * Hosted placement (VMware Workstation): the vCPU's accesses go through a VMM in the guest's
   * world (shared/trap/hosted-vmm.ts), which forwards to the guest's VMApp by the slot's doorbell.
   * `vmm` is absent, and `vmapp` present, when the guest's process starts the VMApp itself.
   */
  hosted?: { vmm?: SharedArrayBuffer; lances: Array<{ base: number; index: number; vmmIo: boolean; sendCombining: boolean }>; vmapp?: VmAppPlan };
  nics: Array<{ devid: number; base: number; irqPort: number }>;
  disks: Array<{ devid: number; commandBase: number; controlBase: number; irqPort: number }>;
}

export type DeviceMode = 'pv' | 'emulated' | 'direct' | 'svio';

export interface GuestDeviceStats {
  type: 'vbd' | 'vif' | 'cam';
  devid: number;
  mode: DeviceMode;
  ops: number;
  bytes: number;
  errors: number;
  /** Driver-specific counters (notifications, grants, …). */
  detail: Record<string, number>;
}

export interface GuestStats {
  name: string;
  domid: number;
  state: 'booting' | 'running' | 'stopping' | 'stopped' | 'failed';
  devices: GuestDeviceStats[];
  integrity: { checked: number; failures: number; kinds: Record<string, number> };
  /** `late`: echoes that came after their datagram's timeout (slow, not lost; not in `echoed`). */
  udp: { sent: number; echoed: number; lost: number; late: number; duplicated: number; reordered: number; corrupted: number; rttP50Us?: number; rttP99Us?: number; rttP999Us?: number };
  /** One-way UDP: what this guest streamed, and what its discard sink received and verified. */
  stream?: { sent: number; refused: number; received: number; bytesReceived: number; corrupted: number; gaps: number };
  /**
   * The block ledger alone (integrity mixes in datagrams): blocks read back and classified,
   * failures by class, and blocks left indeterminate by a failed write.
   */
  block?: { checked: number; failures: number; kinds: Record<string, number>; indeterminate: number; writeErrors: number; unflushed?: number; latencyP50Us?: number; latencyP99Us?: number; latencyP999Us?: number };
  /** The io workload's counters (a benchmark's block load). */
  io?: { ops: number; bytes: number; errors: number; latencyUs?: { p50: number; p99: number; p999: number; count: number } };
  /** Milliseconds the guest runtime's event loop was busy since it started (CPU% = Δbusy / Δt). */
  busyMs?: number;
  /**
   * A guest that is its own process (ws): the process's CPU time (user + system, every thread of
   * it) since it started. Absent for a guest thread (threads: busyMs is that thread's).
   */
  processCpuMs?: number;
  error?: string;
}

/** A guest process across a link asks dom0 for its GuestBootSpec (without shared memory). */
export const GUEST_BOOT = 'guest.boot';

/** RPC methods a guest runtime answers (called by the toolstack). */
export const GUEST_STATS = 'guest.stats';
export const GUEST_STOP = 'guest.stop';
/** Stop issuing work and drain (in-flight I/O, echoes in flight), but keep devices connected. */
/** Start the workloads (sent once every guest of the host is ready, so no flow starts towards a peer still booting). */
export const GUEST_START = 'guest.start';
export const GUEST_QUIESCE = 'guest.quiesce';
/**
 * Freeze the guest's runtime (threads transport; a process is SIGSTOPped instead): its thread
 * blocks in Atomics.wait on word 0 of `word` until dom0 stores 1 and notifies, or `maxMs`.
 */
export const GUEST_FREEZE = 'guest.freeze';
/**
 * Make one of the guest's frontends misbehave on purpose (fault plans' ring and grant kinds):
 * { device: "vbd51712", attack, count, seed } → { sent, outcomes }.
 */
export const GUEST_ATTACK = 'guest.attack';
/**
 * The toolstack took one of the guest's assigned functions away (reclaim, hot-unplug): the
 * driver stops using it. { kind: 'nic' | 'disk', devid } → null.
 */
export const GUEST_DIRECT_UNPLUG = 'guest.direct.unplug';
/**
 * A function was assigned to the guest again after a reclaim (hot-plug): the driver for that
 * device starts over on it. { function: DirectFunctionSpec } → null.
 */
export const GUEST_DIRECT_PLUG = 'guest.direct.plug';
/**
 * An SV-IO VIF of the guest's was created again (a device reset, a hardware restart): the driver
 * for that device opens the new VIF and starts over on it. { vif: SvioVifSpec } → null.
 */
export const GUEST_SVIO_PLUG = 'guest.svio.plug';
/**
 * The host's disk lost power with a volatile write cache (a crash of the hardware, a disk.torn
 * fault), told before the new hardware answers anything: the block ledger holds every write
 * issued so far and not yet durable in doubt for good. {} → null.
 */
export const GUEST_POWER_LOST = 'guest.disk.powerLost';

/** A VIF as the guest is told of it: kind and device, the VIF's id, its port, (threads) its page. */
export interface SvioVifSpec {
  kind: 'net' | 'blk' | 'cam';
  devid: number;
  vif: number;
  port: number;
  page?: SharedArrayBuffer;
}
/** Start a measurement window: the guest forgets its round-trip samples so far (benchmarks). */
export const GUEST_MARK = 'guest.mark';
/** Notification a guest sends once its devices are connected and workloads started. */
export const GUEST_READY = 'guest.ready';

/** Control endpoint: liveness and readiness of a dom0 (healthchecks, CLI views). */
export const CONTROL_PING = 'control.ping';
