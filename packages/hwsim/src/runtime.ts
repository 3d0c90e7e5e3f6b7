/**
 * HardwareSimulator — the physical machine as one runtime: DMA engine, one disk, one NIC on a
 * local LAN segment, and interrupt delivery, driven by dom0 over the control RPC.
 *
 * Event wiring. The simulator is the pseudo-domain DOMID_HW. For each device the hypervisor binds
 * an interdomain event channel dom0 ↔ DOMID_HW and tells the simulator its end (`port`). An event
 * from dom0 on that port is the doorbell (the driver's MMIO write to the queue's kick register);
 * `gate.send(port)` is the device raising its interrupt line.
 *
 * Control RPC: HardwareContract (shared/src/contracts/hardware.ts) defines every method dom0
 * calls — wire name, params, result, error codes — and serve() answers all of them; params are
 * checked against the contract before a handler runs.
 * The queue pages must have been initialised by the driver (initSharedRing) before attach;
 * attaching again replaces the earlier queue (a driver restart) and resumes from the page.
 */
import { MessagePort } from 'node:worker_threads';
import {
  errorFields,
  HardwareContract,
  serveContract,
  serveTraceForwarding,
  ClosedError,
  PAGE_SIZE,
  PortState,
  type EventRouting,
  ConfigError,
  DOMID_HW,
  DeviceError,
  GuestMemory,
  InvalidArgumentError,
  NR_EVENT_PORTS,
  SECTOR_SIZE,
  createLogger,
  type EventCounters,
  EventChannelGate,
  type Logger,
  type CreditLimit,
  parseRate,
  processCpuMs,
  SplitMix32,
  type MachineFrame,
  type RpcPeer,
  validateDiskFaultRules,
  type DiskFaultRule,
  type DiskFaultStats,
  type MachineLinkEnd,
  InterruptFaults,
  parseInterruptFault,
  sumInterruptFaultCounts,
  type InterruptFault,
  type InterruptFaultCounts,
} from '@ringvisor/shared';
import type { FrameFaultCounters, FrameFaults } from './lan/faults.js';
import { DmaEngine, type DmaCounters, type DmaFault } from './dma/dma-engine.js';
import { PhysicalDisk, type PhysicalDiskOptions, type WriteCacheStats } from './devices/disk/device.js';
import { DiskFaultTable } from './devices/disk/faults.js';
import { copyDiskMetrics, newDiskMetrics, type DiskMetrics } from './devices/disk/metrics.js';
import { DiskQueue } from './devices/disk/queue.js';
import { PhysicalNic, type NicStats } from './devices/nic/device.js';
import type { QueueStats } from './devices/queue-service.js';
import { connectLanPorts, type LanPort } from './lan/lan-port.js';
import type { UplinkState } from './lan/remote.js';
import { LanSegment, type LanSegmentStats } from './lan/segment.js';
import { Iommu, formatRequesterId, type IommuCounters, type IommuFault } from './iommu/iommu.js';
import { FunctionPool, type FunctionStats, type ReclaimReport } from './sriov/pool.js';
import type { VirtualFunction } from './sriov/function.js';
import { SvioEngine, type VifSpec } from './svio/engine.js';

/**
 * Wire names by method.
 * @deprecated use contractClient(HardwareContract, peer) — kept for call sites not converted yet.
 */
export const HW_RPC = Object.fromEntries(Object.entries(HardwareContract.methods).map(([k, m]) => [k, m.wire])) as { readonly [K in keyof typeof HardwareContract.methods]: string };

export interface HardwareSimulatorOptions {
  /** The host's event memory (createEventMemory()), shared with dom0. */
  eventMemory: SharedArrayBuffer;
  /** Host name, used in logs and LAN port names. */
  host: string;
  disk: PhysicalDiskOptions;
  nic: { mac: string; rxBacklog?: number };
  /** The LAN segment the NIC is plugged into (default: a private segment owned by the simulator). */
  lan?: LanSegment;
  logger?: Logger;
  /** Across a process boundary: how doorbells/IRQs travel (see MachineLinkEnd). */
  eventRouting?: EventRouting;
  /** Cores (worker threads) of the SV-IO engine, started when the first VIF is created (default 2). */
  svioCores?: number;
}

export interface AttachMemoryParams {
  domid: number;
  buffer: SharedArrayBuffer;
}
export interface DiskAttachParams {
  queue: MachineFrame;
  port: number;
}
export interface DiskAttachResult {
  sectors: number;
  sectorSize: 512;
}
export interface DiskFaultsParams {
  rules: DiskFaultRule[];
}
export interface NicAttachParams {
  tx: MachineFrame;
  rx: MachineFrame;
  port: number;
}
export interface NicAttachResult {
  mac: string;
}

export interface DiskStats extends DiskMetrics {
  path: string;
  sectors: number;
  sectorSize: number;
  closed: boolean;
  /** The drive's write cache: its mode, dirty sectors, write-backs, flushes, what a power loss wrote and lost. */
  writeCache: WriteCacheStats;
  queue: (QueueStats & { stopped: boolean; stopReason: string | null; port: number }) | null;
  /** The installed fault rules (hw.disk.faults), in order, with their hits. */
  faults: DiskFaultStats[];
}

export interface HwStats {
  host: string;
  /** The cable to the LAN switch, when this host has one. */
  uplink?: UplinkState;
  disk: DiskStats;
  nic: NicStats & { port: number | null };
  dma: DmaCounters & { attachedDomains: number[]; lastFault: DmaFault | null };
  lan: LanSegmentStats;
  events: EventCounters & { irqFailures: number; doorbellFailures: number };
  /** Direct I/O: the virtual functions and the IOMMU (the last fault records). */
  sriov: { functions: FunctionStats[]; iommu: IommuCounters & { recentFaults: IommuFault[] } };
  /** Milliseconds the simulator's event loop was busy since it started (CPU per op in benchmarks). */
  busyMs: number;
  /** Its own process (ws): the process's CPU time, SV-IO cores included. Absent for a thread. */
  processCpuMs?: number;
}


/** A credit limit in netback's `bytes,usec` syntax; a bad one is the caller's mistake, named. */
function rateOf(rate: string, wire: string): CreditLimit {
  try {
    return parseRate(rate);
  } catch (e) {
    throw new InvalidArgumentError(`${wire}.rate: ${(e as Error).message}`);
  }
}

export class HardwareSimulator {
  readonly host: string;
  readonly gate: EventChannelGate;
  readonly dma = new DmaEngine();
  readonly lan: LanSegment;
  readonly disk: PhysicalDisk;
  readonly diskMetrics: DiskMetrics = newDiskMetrics();
  /** The disk's fault rules; they outlive queue re-attaches (a driver restart keeps the faults). */
  readonly diskFaults = new DiskFaultTable();
  readonly nic: PhysicalNic;
  readonly iommu = new Iommu();
  /** Virtual functions of the NIC and the disk for direct I/O. */
  readonly functions: FunctionPool;
  readonly logger: Logger;
  /** Each assigned function's interrupt target (domid:port) → the hardware's end of that channel. */
  private readonly msiPorts = new Map<string, number>();
  /** The hardware's event ports that are a function's doorbell. */
  private readonly vfPorts = new Map<string, number>();
  /** ws: a function by its owner's end of its channel (`domid:port`), for doorbells on a direct link. */
  private readonly vfByGuestPort = new Map<string, VirtualFunction>();
  /** The SV-IO engine (started with the first VIF). */
  private svioEngine: SvioEngine | undefined;
  private readonly svioCores: number;
  private readonly diskSpec: PhysicalDiskOptions;
  /** ws: guests linked to the hardware directly (sriov/direct-link.ts), by domid. */
  private readonly directLinks = new Map<number, MachineLinkEnd>();
  private diskQueue: { queue: DiskQueue; port: number } | undefined;
  private nicPort: number | undefined;
  private rpc: RpcPeer | undefined;
  private shutDown = false;
  private irqFailures = 0;
  private doorbellFailures = 0;

  constructor(options: HardwareSimulatorOptions) {
    this.host = options.host;
    this.logger = options.logger ?? createLogger('hwsim', { host: options.host });
    this.gate = new EventChannelGate(options.eventMemory, DOMID_HW, options.eventRouting);
    this.gate.traceHost = options.host;
    this.dma.traceHost = options.host;
    this.lan = options.lan ?? new LanSegment({ name: `${options.host}-lan` });
    this.disk = PhysicalDisk.open(options.disk);
    // The SV-IO cores open the image themselves and write through (their VIFs' partitions are theirs).
    this.diskSpec = { path: options.disk.path, sizeBytes: options.disk.sizeBytes };
    this.svioCores = options.svioCores ?? 2;
    this.nic = new PhysicalNic({ mac: options.nic.mac, dma: this.dma, name: 'nic0', rxBacklog: options.nic.rxBacklog, logger: this.logger });
    this.nic.connect(this.lan.attach(`${options.host}:nic0`));
    this.iommu.traceHost = options.host;
    this.functions = new FunctionPool({
      dma: this.dma,
      iommu: this.iommu,
      lan: this.lan,
      disk: this.disk,
      diskFaults: this.diskFaults,
      host: options.host,
      nicLinkUp: () => this.nic.linkUp,
      deliverMsi: (domid, port) => this.deliverMsi(domid, port),
      logger: this.logger,
    });
    this.logger.info({ disk: this.disk.path, sectors: this.disk.sectors, created: this.disk.created, mac: this.nic.mac }, 'hardware ready');
  }

  get closed(): boolean {
    return this.shutDown;
  }

  /** Start delivering doorbells (the gate's upcall loop). */
  start(): this {
    this.live();
    this.gate.start();
    // A doorbell lost across a restart or a race costs at most this long, never a stalled queue.
    this.gate.startMissedEventPoll(500);
    return this;
  }

  /** Answer dom0's control calls on `rpc`; the simulator shuts down if the link closes. */
  serve(rpc: RpcPeer): this {
    serveTraceForwarding(rpc);
    this.rpc = rpc;
    serveContract(rpc, HardwareContract, {
      attachMemory: (p) => {
        // Across a process boundary there is no shared buffer: keep a local copy of `frames` frames,
        // kept current by streaming DMA mappings (MachineLinkEnd).
        this.attachMemory(p.domid, 'buffer' in p ? p.buffer : new SharedArrayBuffer(p.frames * PAGE_SIZE));
      },
      detachMemory: (p) => this.detachMemory(p.domid),
      diskAttach: (p) => this.attachDisk(p),
      diskPowerLoss: (p) => {
        const rng = new SplitMix32(p.seed || 1);
        // No more DMA after this: the queue stops before the drive goes.
        this.diskQueue?.queue.stop('power lost');
        const r = this.disk.powerLoss(p.writeProbability, () => rng.next());
        this.logger.warn({ ...r }, 'power lost: unflushed cache torn');
        return r;
      },
      diskFaults: async (p) => {
        let rules: DiskFaultRule[];
        try {
          rules = validateDiskFaultRules(p.rules);
        } catch (e) {
          if (e instanceof InvalidArgumentError) throw new InvalidArgumentError(`${HardwareContract.methods.diskFaults.wire}: ${e.message}`);
          throw e;
        }
        const stats = this.setDiskFaults({ rules });
        await this.svioRulesInPlace;
        return stats;
      },
      irqFaults: (p) => this.setIrqFault(p.domid, parseInterruptFault(p.fault, `${HardwareContract.methods.irqFaults.wire}.fault`)),
      lanFaults: (p) => this.setLanFaults(p.faults ?? undefined),
      nicAttach: (p) => this.attachNic(p),
      nicLink: (p) => {
        this.live();
        this.nic.setLink(p.up);
        return { link: this.nic.linkUp ? 'up' : 'down' };
      },
      vfAssign: (p) => this.assignFunction(p),
      vfReclaim: (p) => this.reclaimFunction(p.rid),
      vfList: () => this.functions.stats(),
      iommuFaults: (p) => ({ faults: p.drain === true ? this.iommu.drainFaults() : this.iommu.faults(), counters: { ...this.iommu.counters } }),
      svioCreate: (p) => {
        const { rate, ...spec } = p;
        return this.createVif({ ...spec, ...(rate !== undefined ? { rate: rateOf(rate, HardwareContract.methods.svioCreate.wire) } : {}) });
      },
      svioDestroy: (p) => this.svioWith(p.vif).destroy(p.vif),
      svioQos: (p) => this.svioWith(p.vif).setQos(p.vif, { weight: p.weight, ...(p.rate !== undefined ? { rate: rateOf(p.rate, HardwareContract.methods.svioQos.wire) } : {}) }),
      svioList: () => (this.svioEngine ? this.svioEngine.list() : { vifs: [], coreBusyMs: [] }),
      // With VIFs, their counters come from the engine's cores (asynchronously).
      stats: async () => (this.svioEngine ? { ...this.stats(), svio: await this.svioEngine.list() } : this.stats()),
      freeze: (p) => {
        // Reply first, then really stop: no DMA, no completions, no interrupts until thawed.
        setImmediate(() => Atomics.wait(new Int32Array(p.word), 0, 0, Math.min(p.maxMs, 120_000)));
        return true;
      },
      shutdown: () => this.shutdown(),
    });
    rpc.link.onClose((reason) => {
      if (!this.shutDown) {
        this.logger.warn({ reason }, 'control link closed: shutting down');
        this.shutdown();
      }
    });
    return this;
  }

  attachMemory(domid: number, buffer: SharedArrayBuffer): void {
    this.live();
    this.dma.attachMemory(domid, new GuestMemory(domid, buffer));
  }

  /** Detach a domain's memory; a queue whose page lives there stops (the device would fault on it). */
  detachMemory(domid: number): void {
    this.live();
    // A dying domain's functions are reclaimed first: no DMA may reach memory about to go away.
    for (const f of this.functions.ownedBy(domid)) this.reclaimFunction(formatRequesterId(f.rid));
    for (const v of this.svioEngine?.boundTo(domid) ?? []) this.svioEngine!.destroy(v);
    this.dma.detachMemory(domid);
    if (this.diskQueue && this.diskQueue.queue.ringFrame.domid === domid) this.diskQueue.queue.stop(`memory of domain ${domid} detached`);
    if (this.nic.queuesIn(domid)) this.nic.detachQueues(`memory of domain ${domid} detached`);
  }

  attachDisk(params: DiskAttachParams): DiskAttachResult {
    this.live();
    this.checkPort(params.port, 'disk');
    if (params.port === this.nicPort) throw new InvalidArgumentError(`event port ${params.port} is already the NIC's`);
    const queue = new DiskQueue({
      disk: this.disk,
      dma: this.dma,
      ring: params.queue,
      irq: () => this.raise(params.port),
      metrics: this.diskMetrics,
      faults: this.diskFaults,
      logger: this.logger,
    });
    if (this.diskQueue) {
      this.diskQueue.queue.stop('replaced');
      this.gate.off(this.diskQueue.port);
    }
    this.diskQueue = { queue, port: params.port };
    this.gate.on(params.port, () => this.doorbell('disk', () => queue.kick()));
    queue.kick(); // requests already on a resumed ring
    return { sectors: this.disk.sectors, sectorSize: SECTOR_SIZE as 512 };
  }

  /**
   * Assign a virtual function to a guest (the toolstack bound event channel `port` of the
   * hardware to the guest's `guestPort`): the function's doorbell is that port, its interrupt is
   * remapped to the guest's end.
   */
  assignFunction(req: { kind: 'nic' | 'disk'; rid?: string; domid: number; frames: number; port: number; guestPort: number; mac?: string; partition?: { start: number; sectors: number }; passthrough?: boolean }): {
    rid: string;
    index: number;
    vector: number;
    bar?: SharedArrayBuffer;
  } {
    this.live();
    this.checkPort(req.port, 'virtual function');
    if (!this.dma.isAttached(req.domid)) throw new DeviceError(`domain ${req.domid} has no memory attached`);
    // The I/O address space cannot be larger than the memory behind it.
    if (req.frames > this.dma.framesOf(req.domid)) throw new InvalidArgumentError(`domain ${req.domid} has ${this.dma.framesOf(req.domid)} frames, not ${req.frames}`);
    const a = this.functions.assign(req);
    this.msiPorts.set(`${req.domid}:${req.guestPort}`, req.port);
    this.vfPorts.set(a.rid, req.port);
    const fn = a.fn;
    this.vfByGuestPort.set(`${req.domid}:${req.guestPort}`, fn);
    this.gate.on(req.port, () => this.doorbell(a.rid, () => fn.doorbell()));
    const direct = this.directLinks.get(req.domid);
    if (direct) {
      // Assigned to a guest already linked (hot-plug): its copy of the page starts from ours.
      fn.regs.sync = direct.ringSync(fn.rid, fn.regs.page, DOMID_HW);
      direct.wrote(DOMID_HW, fn.rid, 0, fn.regs.page.byteLength);
    }
    // Across a process boundary the guest keeps its own copy of the register page.
    return { rid: a.rid, index: a.index, vector: a.vector, ...(this.gate.routing.forward ? {} : { bar: fn.bar }) };
  }

  reclaimFunction(rid: string): ReclaimReport {
    this.live();
    const fn = this.functions.byRid(rid);
    const owner = fn?.owner;
    const report = this.functions.reclaim(rid);
    // The reset's register stores went to the old owner (its driver sees GEN move); no more after.
    if (fn && owner !== null && owner !== undefined) this.directLinks.get(owner)?.mirror.flush();
    if (fn) fn.regs.sync = undefined;
    const port = this.vfPorts.get(rid);
    if (port !== undefined) this.gate.off(port);
    this.vfPorts.delete(rid);
    for (const [k, v] of this.msiPorts)
      if (v === port && k.startsWith(`${owner}:`)) {
        this.msiPorts.delete(k);
        this.vfByGuestPort.delete(k);
      }
    return report;
  }

  /** The SV-IO engine, started on first use. */
  private svio(): SvioEngine {
    this.live();
    if (!this.svioEngine) {
      this.svioEngine = new SvioEngine({ cores: this.svioCores, eventMemory: this.gate.mem.buffer, gate: this.gate, lan: this.lan, disk: this.diskSpec, host: this.host, logger: this.logger, linkUp: () => this.nic.linkUp });
      for (const [domid, link] of this.directLinks) this.svioEngine.attachLink(domid, link);
    }
    return this.svioEngine;
  }

  /** The engine holding VIF `vif` (an unknown VIF does not start the engine's cores). */
  private svioWith(vif: number): SvioEngine {
    this.live();
    if (!this.svioEngine) throw new InvalidArgumentError(`no VIF ${vif}`);
    return this.svioEngine;
  }

  /** An SV-IO VIF bound to a guest whose memory is attached (threads: the cores share it). */
  createVif(spec: Omit<VifSpec, 'memory'>): { vif: number; core: number; page?: SharedArrayBuffer } {
    this.live();
    this.checkPort(spec.port, 'VIF');
    const memory = this.dma.memoryOf(spec.domid);
    if (!memory) throw new DeviceError(`domain ${spec.domid} has no memory attached`);
    // Across processes the guest reaches its VIFs over its direct link, which names its own port.
    if (this.gate.routing.forward && spec.guestPort === undefined) throw new InvalidArgumentError(`${HardwareContract.methods.svioCreate.wire}: across processes a VIF needs guestPort (the guest's end of its channel, used on the guest's direct link)`);
    const made = this.svio().create({ ...spec, memory });
    // Threads: the guest maps the register page itself; ws: it arrives over the direct link.
    return this.gate.routing.forward ? { vif: made.vif, core: made.core } : made;
  }

  /** VIFs bound to a domain (a direct link is admitted for a domain with functions or VIFs). */
  vifsBoundTo(domid: number): number[] {
    return this.svioEngine?.boundTo(domid) ?? [];
  }

  /** ws: a VIF register page a domain's direct link may mirror. */
  vifRegisterPage(domid: number, vif: number): Uint8Array | undefined {
    return this.svioEngine?.registerPage(domid, vif);
  }

  /** Fault plans' interrupt faults of the functions this thread raises (and, over ws, the VIFs'). */
  readonly irqFaults = new InterruptFaults();

  /**
   * Lose or delay a domain's device interrupts (or clear that); answers what the fault did since
   * it was set — here, and on the SV-IO cores that raise their VIFs' interrupts themselves.
   */
  async setIrqFault(domid: number, fault: InterruptFault | undefined): Promise<InterruptFaultCounts> {
    this.irqFaults.set(domid, fault);
    const mine = this.irqFaults.countsOf(domid);
    return this.svioEngine ? sumInterruptFaultCounts(mine, await this.svioEngine.setIrqFault(domid, fault)) : mine;
  }

  /** A function's interrupt, after remapping: to the owner's port, over its direct link or the event channel. */
  private deliverMsi(domid: number, port: number): void {
    this.irqFaults.deliver(domid, () => this.raiseMsi(domid, port));
  }

  private raiseMsi(domid: number, port: number): void {
    const direct = this.directLinks.get(domid);
    if (direct) {
      direct.sendEvent(port);
      return;
    }
    const hwPort = this.msiPorts.get(`${domid}:${port}`);
    if (hwPort !== undefined) this.raise(hwPort);
  }

  /**
   * ws: a guest linked to the hardware directly. Its memory here is kept current by that link, and
   * so are the register pages of its functions; their interrupts go out on it.
   */
  attachDirectLink(domid: number, link: MachineLinkEnd): void {
    this.live();
    this.directLinks.set(domid, link);
    this.svioEngine?.attachLink(domid, link);
    this.dma.directLinks.set(domid, {
      wrote: (d, pfn, offset, length) => link.wrote(d, pfn, offset, length),
      ringSync: (frame, page, lateWake) => {
        const sync = link.ringSync(frame.pfn, page, frame.domid);
        sync.lateWake = lateWake;
        return sync;
      },
    });
    for (const f of this.functions.ownedBy(domid)) f.regs.sync = link.ringSync(f.rid, f.regs.page, DOMID_HW);
  }

  detachDirectLink(domid: number, link: MachineLinkEnd): void {
    if (this.directLinks.get(domid) !== link) return;
    this.directLinks.delete(domid);
    this.svioEngine?.detachLink(domid, link);
    this.dma.directLinks.delete(domid);
    for (const f of this.functions.ownedBy(domid)) f.regs.sync = undefined;
  }

  /** ws: a doorbell over a guest's direct link, naming the guest's end of the function's channel. */
  directDoorbell(domid: number, guestPort: number): void {
    const fn = this.vfByGuestPort.get(`${domid}:${guestPort}`);
    if (!fn && this.svioEngine?.linkDoorbell(domid, guestPort)) return;
    if (!fn || fn.owner !== domid) {
      this.doorbellFailures++;
      return;
    }
    this.doorbell(fn.name, () => fn.doorbell());
  }

  /** Replace the disk's fault rules (validated; `[]` clears). Returns the new rules' stats. */
  /** Resolves when the SV-IO cores hold the rules setDiskFaults installed last. */
  private svioRulesInPlace: Promise<void> | undefined;

  setDiskFaults(params: DiskFaultsParams): DiskFaultStats[] {
    this.live();
    this.diskFaults.set(params.rules);
    // SV-IO block VIFs reach the same media from the engine's cores: each core gets the rules.
    this.svioRulesInPlace = this.svioEngine?.setDiskFaults(params.rules);
    this.logger.info({ rules: params.rules.map((r) => r.id) }, params.rules.length > 0 ? 'disk fault rules installed' : 'disk fault rules cleared');
    return this.diskFaults.stats();
  }

  attachNic(params: NicAttachParams): NicAttachResult {
    this.live();
    this.checkPort(params.port, 'nic');
    if (params.port === this.diskQueue?.port) throw new InvalidArgumentError(`event port ${params.port} is already the disk's`);
    const port = params.port;
    this.nic.attachQueues({ tx: params.tx, rx: params.rx }, () => this.raise(port));
    if (this.nicPort !== undefined) this.gate.off(this.nicPort);
    this.nicPort = port;
    this.gate.on(port, () => this.doorbell('nic', () => this.nic.kick()));
    this.nic.kick();
    return { mac: this.nic.mac };
  }

  /**
   * Patch an external LanPort (e.g. a port on another host's or a switch runtime's segment) into
   * this host's LAN: frames flow both ways. Returns the local port used for it.
   */
  uplink(external: LanPort & { readonly state?: UplinkState; setFrameFaults?: (f: FrameFaults | undefined) => void; readonly frameFaults?: FrameFaultCounters }, localName = `uplink:${external.name}`): LanPort {
    const local = this.lan.attach(localName);
    connectLanPorts(local, external);
    this.uplinkPort = external;
    return local;
  }

  private uplinkPort?: LanPort & { readonly state?: UplinkState; setFrameFaults?: (f: FrameFaults | undefined) => void; readonly frameFaults?: FrameFaultCounters };

  /** Frame faults on this host's uplink to the LAN switch (drop, duplicate, reorder, corrupt). */
  setLanFaults(f: FrameFaults | undefined): FrameFaultCounters {
    const port = this.uplinkPort;
    if (!port?.setFrameFaults || !port.frameFaults) throw new DeviceError('this host has no LAN uplink (single-host runs have no switch)');
    port.setFrameFaults(f);
    return { ...port.frameFaults };
  }

  stats(): HwStats {
    const q = this.diskQueue;
    return {
      host: this.host,
      ...(this.uplinkPort?.state ? { uplink: this.uplinkPort.state } : {}),
      disk: {
        ...copyDiskMetrics(this.diskMetrics),
        path: this.disk.path,
        sectors: this.disk.sectors,
        sectorSize: SECTOR_SIZE,
        closed: this.disk.closed,
        writeCache: this.disk.writeCache,
        queue: q ? { ...q.queue.stats(), port: q.port } : null,
        faults: this.diskFaults.stats(),
      },
      nic: { ...this.nic.stats(), port: this.nicPort ?? null },
      dma: this.dma.stats(),
      lan: this.lan.stats(),
      events: { ...this.gate.counters, irqFailures: this.irqFailures, doorbellFailures: this.doorbellFailures },
      sriov: { functions: this.functions.stats(), iommu: { ...this.iommu.counters, recentFaults: this.iommu.faults().slice(-16) } },
      busyMs: performance.eventLoopUtilization().active,
      ...(processCpuMs() !== undefined ? { processCpuMs: processCpuMs() } : {}),
    };
  }

  /**
   * Power off: stop the queues, fsync and close the disk, stop the gate, and close the control
   * link (after the reply to hw.shutdown has been sent). Idempotent.
   */
  shutdown(): void {
    if (this.shutDown) return;
    this.shutDown = true;
    if (this.diskQueue) {
      this.diskQueue.queue.stop('shutdown');
      this.gate.off(this.diskQueue.port);
    }
    if (this.nicPort !== undefined) this.gate.off(this.nicPort);
    this.nic.detachQueues('shutdown');
    this.nic.disconnect();
    void this.svioEngine?.shutdown();
    try {
      this.disk.close();
    } finally {
      this.gate.stop();
      const rpc = this.rpc;
      // The RpcPeer sends our reply once this handler returns; close the port after that.
      if (rpc) setImmediate(() => rpc.close(HardwareContract.methods.shutdown.wire));
      this.logger.info('hardware powered off');
    }
  }

  private live(): void {
    if (this.shutDown) throw new ClosedError(`hwsim ${this.host} is shut down`);
  }

  private checkPort(port: number, device: string): void {
    if (!Number.isInteger(port) || port <= 0 || port >= NR_EVENT_PORTS) throw new InvalidArgumentError(`${device}: invalid event port ${port}`);
    // Across a link the hypervisor holds the port table and validates every send itself.
    if (!this.gate.routing.forward && this.gate.mem.state(DOMID_HW, port) !== PortState.Interdomain)
      throw new DeviceError(`${device}: event port ${port} of the hardware domain is not bound to a driver`);
  }

  private raise(port: number): void {
    try {
      this.gate.send(port);
    } catch (e) {
      this.irqFailures++;
      this.logger.warn({ port, err: errorFields(e) }, 'interrupt not delivered');
    }
  }

  /** A doorbell handler must never throw into the gate's upcall loop. */
  private doorbell(device: string, kick: () => void): void {
    try {
      kick();
    } catch (e) {
      this.doorbellFailures++;
      this.logger.error({ device, err: errorFields(e) }, 'device failed handling a doorbell');
    }
  }
}

/** workerData of the hwsim worker (hwsim.worker.ts); the control port is transferred. */
export interface HwsimWorkerData {
  control: MessagePort;
  eventMemory: SharedArrayBuffer;
  host: string;
  disk: { path: string; sizeBytes: number; cache?: 'writethrough' | 'writeback' };
  nic: { mac: string };
  /** SV-IO engine cores (default 2). */
  svioCores?: number;
}

export function parseWorkerData(data: unknown): HwsimWorkerData {
  const d = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
  const disk = (d.disk ?? {}) as Record<string, unknown>;
  const nic = (d.nic ?? {}) as Record<string, unknown>;
  if (!(d.control instanceof MessagePort)) throw new ConfigError('hwsim workerData.control must be a transferred MessagePort');
  if (!(d.eventMemory instanceof SharedArrayBuffer)) throw new ConfigError('hwsim workerData.eventMemory must be a SharedArrayBuffer');
  if (typeof d.host !== 'string' || d.host.length === 0) throw new ConfigError('hwsim workerData.host must be a non-empty string');
  if (typeof disk.path !== 'string' || typeof disk.sizeBytes !== 'number') throw new ConfigError('hwsim workerData.disk must be { path: string, sizeBytes: number }');
  if (typeof nic.mac !== 'string') throw new ConfigError('hwsim workerData.nic must be { mac: string }');
  const cores = typeof d.svioCores === 'number' && Number.isInteger(d.svioCores) && d.svioCores >= 1 && d.svioCores <= 16 ? { svioCores: d.svioCores } : {};
  if (disk.cache !== undefined && disk.cache !== 'writethrough' && disk.cache !== 'writeback') throw new ConfigError('hwsim workerData.disk.cache must be writethrough or writeback');
  const cache = disk.cache === 'writeback' ? { cache: 'writeback' as const } : {};
  return { control: d.control, eventMemory: d.eventMemory, host: d.host, disk: { path: disk.path, sizeBytes: disk.sizeBytes, ...cache }, nic: { mac: nic.mac }, ...cores };
}
