/**
 * VirtualFunction — the part every assignable function (SR-IOV VF) of the simulated hardware
 * shares: its requester id, its register page, its owner, bus mastering, DMA through the IOMMU,
 * MSI-style interrupts through interrupt remapping, and function-level reset.
 *
 * Life cycle (driven by dom0's toolstack, hwsim/src/sriov/pool.ts):
 *   idle ──assign(owner)──► assigned: bus master on, registers show the identity, the driver may
 *                           enable queues (CTRL.ENABLE + doorbell)
 *   assigned ──reclaim──►   bus master off (no new DMA) → FLR (queues, caches and commands the
 *                           function held are dropped, registers cleared, GEN bumped) → the
 *                           toolstack tears down the IOMMU context and the interrupt entry → idle
 *
 * DMA. Every access the function makes — ring pages when its queues are enabled, each buffer when
 * it moves data — is an I/O virtual address (the owner's guest-physical address) translated by
 * the IOMMU under this function's requester id, at the moment of the access. Nothing is cached
 * across a reset: that is what makes reclaim safe, and what `unsafeReclaim` (tests only) breaks
 * to show the hazard the textbook names. A function that is not bus master issues no DMA at all.
 */
import {
  errorFields,
  DmaBlockedError as DmaBlocked,
  DeviceError,
  PAGE_SIZE,
  StateError,
  StateRecordError,
  VF_CTRL_ENABLE,
  VF_KIND_DISK,
  VF_KIND_NIC,
  VF_REG,
  VF_REG_COUNT,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  VF_STATUS_ERROR,
  VfRegisters,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type Logger,
  type PageSync,
  type VfKind,
} from '@ringvisor/shared';
import type { DmaEngine } from '../dma/dma-engine.js';
import { formatRequesterId, type Iommu } from '../iommu/iommu.js';
import type { FunctionState, VfQueueState } from './state.js';

export interface FunctionCounters {
  doorbells: number;
  /** Times the driver enabled the queues (CTRL.ENABLE seen at a doorbell). */
  enables: number;
  /** Bytes moved by DMA: read from memory, written to memory. */
  dmaReads: number;
  dmaWrites: number;
  dmaBytesRead: number;
  dmaBytesWritten: number;
  /** DMA the IOMMU blocked (no byte moved), and DMA not even issued because bus mastering was off. */
  dmaFaults: number;
  dmaSuppressed: number;
  irqs: number;
  /** Interrupts the remapping table refused (no entry, or not this function's). */
  irqsBlocked: number;
  flrs: number;
  assigns: number;
  reclaims: number;
}

export function newFunctionCounters(): FunctionCounters {
  return {
    doorbells: 0,
    enables: 0,
    dmaReads: 0,
    dmaWrites: 0,
    dmaBytesRead: 0,
    dmaBytesWritten: 0,
    dmaFaults: 0,
    dmaSuppressed: 0,
    irqs: 0,
    irqsBlocked: 0,
    flrs: 0,
    assigns: 0,
    reclaims: 0,
  };
}

export interface FunctionEnv {
  dma: DmaEngine;
  iommu: Iommu;
  /** Deliver a remapped interrupt to (domid, port). */
  deliverMsi: (domid: number, port: number) => void;
  logger?: Logger;
  host: string;
}

export interface FunctionInfo {
  rid: string;
  kind: VfKind;
  index: number;
  owner: number | null;
  busMaster: boolean;
  enabled: boolean;
  error: string | null;
  generation: number;
  vector: number;
  counters: FunctionCounters;
}

/** Thrown inside a function's processing when a DMA cannot happen; the request fails, nothing moved. */
export { DmaBlocked };

/**
 * Persistence (Device, state.ts): quiesce() stops the function taking work — a doorbell is
 * remembered, not served; an interrupt it would raise is owed — and cancels its scheduled turns;
 * every request it holds stays in its state. save() writes the record; a fresh function built
 * with the same constructor arguments restores it (`DiskVf.restore`, `NicVf.restore`) and stays
 * still until attach() (or resume()), which serves what was remembered.
 */
export abstract class VirtualFunction implements Device {
  readonly counters: FunctionCounters = newFunctionCounters();
  /** The domain the function is assigned to (null: in the pool). */
  owner: number | null = null;
  busMaster = false;
  /** Why the queues stopped (rogue indices, unreachable ring), until the next enable or reset. */
  protected errorReason: string | undefined;
  private generation = 0;
  private vectorIndex = -1;
  /** DMA the IOMMU blocked since the last reset (the FAULTS register). */
  private faultsSinceReset = 0;
  private barBuffer: SharedArrayBuffer;
  private registers: VfRegisters;
  /** Between quiesce() and resume(): no work taken, none done. */
  protected quiesced = false;
  /** A doorbell that came while quiesced (served on resume). */
  private kickPending = false;
  /** An interrupt the function owed its driver while quiesced (raised on resume). */
  private irqPending = false;

  protected constructor(
    readonly kind: VfKind,
    readonly rid: number,
    readonly index: number,
    protected readonly env: FunctionEnv,
    /** The register page until the first assignment. */
    bar: SharedArrayBuffer = new SharedArrayBuffer(PAGE_SIZE),
  ) {
    this.barBuffer = bar;
    this.registers = new VfRegisters(new Uint8Array(bar));
    this.writeIdentity();
  }

  /**
   * The register page: shared with the owner's driver (threads) or mirrored to it (ws). Each
   * owner gets a fresh one (replaced on release), as a new owner gets a new mapping of the BAR: a
   * previous owner still holding its old page (threads: shared memory cannot be unmapped)
   * reaches nothing.
   */
  get bar(): SharedArrayBuffer {
    return this.barBuffer;
  }

  get regs(): VfRegisters {
    return this.registers;
  }

  get name(): string {
    return `${this.kind}vf${this.index}`;
  }

  get identity(): DeviceIdentity {
    return { kind: this.kind === 'nic' ? 'net' : 'blk', mode: 'direct', side: 'hardware', type: `${this.kind}-vf`, devid: this.index };
  }

  /** The interrupt remapping entry it raises (-1 while in the pool). */
  get vector(): number {
    return this.vectorIndex;
  }

  /**
   * The device's own state. The register page is memory the owner can write (shared in threads,
   * mirrored in ws): the device reads only the driver's registers from it, once per doorbell, and
   * keeps everything it decides itself here, publishing it to the page.
   */
  get enabled(): boolean {
    return this.queuesEnabled;
  }

  private queuesEnabled = false;

  /** The toolstack hands the function to `owner` (its IOMMU context is already programmed). */
  assign(owner: number, vector: number): void {
    this.owner = owner;
    this.vectorIndex = vector;
    this.busMaster = true;
    this.counters.assigns++;
    this.writeIdentity();
    this.regs.write(VF_REG.VECTOR, vector);
    this.setStatus();
  }

  /** Stop bus mastering: from now on the function issues no DMA (the first step of reclaim). */
  clearBusMaster(): void {
    this.busMaster = false;
    this.setStatus();
  }

  /**
   * Function-level reset: every queue, cached descriptor and queued command is dropped, the
   * registers are cleared (the driver's too), and GEN moves on. Bus mastering stays off.
   */
  flr(): void {
    this.counters.flrs++;
    this.resetQueues();
    this.errorReason = undefined;
    this.generation++;
    this.faultsSinceReset = 0;
    this.regs.clear();
    this.writeIdentity();
    this.setStatus(false); // the queues are gone
  }

  /** Back to the pool (after the toolstack tore down its IOMMU context and interrupt entry). */
  release(): void {
    this.owner = null;
    this.vectorIndex = -1;
    // A fresh register page for the next owner: the old owner keeps its page (it sees the reset
    // there), which no longer reaches the function — threads cannot unmap shared memory.
    this.barBuffer = new SharedArrayBuffer(PAGE_SIZE);
    this.registers = new VfRegisters(new Uint8Array(this.barBuffer));
    this.writeIdentity();
    this.setStatus();
    this.counters.reclaims++;
  }

  /** The owner's doorbell: act on CTRL, then serve the queues. Never throws. */
  doorbell(): void {
    this.counters.doorbells++;
    if (this.quiesced) {
      this.kickPending = true;
      return;
    }
    try {
      const want = (this.regs.read(VF_REG.CTRL) & VF_CTRL_ENABLE) !== 0;
      if (want && !this.enabled && this.owner !== null) this.enable();
      else if (!want && this.enabled) this.disable('driver cleared CTRL.ENABLE');
      if (this.enabled) this.kick();
    } catch (e) {
      this.env.logger?.warn({ vf: this.name, err: errorFields(e) }, 'virtual function failed handling a doorbell');
    }
  }

  info(): FunctionInfo {
    return {
      rid: formatRequesterId(this.rid),
      kind: this.kind,
      index: this.index,
      owner: this.owner,
      busMaster: this.busMaster,
      enabled: this.enabled,
      error: this.errorReason ?? null,
      generation: this.generation,
      vector: this.vectorIndex,
      counters: { ...this.counters },
    };
  }

  // ---- Device ----

  /** The function exists once built (the pool assigns it); a restored one starts serving here. */
  async attach(): Promise<void> {
    if (this.quiesced) this.resume();
  }

  /** No more I/O: queues dropped, bus mastering off (a reclaim's first two steps, without FLR). */
  async stop(reason: string): Promise<void> {
    this.quiesced = false;
    this.kickPending = this.irqPending = false;
    if (this.enabled) this.disable(reason);
    this.clearBusMaster();
  }

  abstract metrics(): DeviceMetrics;

  /**
   * Stop taking work. The function's data moves are synchronous (a command is executed whole in
   * one turn), so nothing is half done here: a scheduled turn is cancelled and its commands stay
   * held, in the record.
   */
  async quiesce(): Promise<void> {
    this.quiesced = true;
    this.cancelTurns();
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    const kick = this.kickPending;
    this.kickPending = false;
    if (this.irqPending) {
      this.irqPending = false;
      this.raise();
    }
    if (kick) this.doorbell();
    else if (this.enabled) this.serveHeld();
  }

  abstract save(): DeviceStateRecord;

  /** The instance name records carry. */
  protected get instanceName(): string {
    return `hw/${formatRequesterId(this.rid)}`;
  }

  protected requireQuiesced(): void {
    if (!this.quiesced) throw new StateError(`${this.name}: save() needs the function quiesced first`);
  }

  /** The state every function has (state.ts FunctionState). */
  protected saveFunction(): FunctionState {
    return {
      registers: Array.from({ length: VF_REG_COUNT }, (_, r) => this.regs.read(r)),
      owner: this.owner,
      busMaster: this.busMaster,
      enabled: this.queuesEnabled,
      error: this.errorReason ?? null,
      generation: this.generation,
      vector: this.vectorIndex,
      faultsSinceReset: this.faultsSinceReset,
      irqPending: this.irqPending,
      counters: { ...this.counters },
    };
  }

  /**
   * Takes a checked record's common state into this fresh function, which stays quiesced. Its
   * queues are attached by the kind (`restoreQueues`) before a register is written: a record the
   * environment refuses (a ring the IOMMU does not map, indices that are not the ring's) throws
   * StateRecordError and leaves `bar` — the owner's live page, maybe — as it was.
   */
  protected restoreFunction(s: FunctionState, restoreQueues: () => void, bar: SharedArrayBuffer | undefined): void {
    const id = s.registers[VF_REG.ID];
    if (id >>> 16 !== this.rid || ((id >>> 8) & 0xff) !== this.index)
      throw new StateRecordError(`${this.name}: the record is of function ${formatRequesterId(id >>> 16)} (index ${(id >>> 8) & 0xff}), not ${formatRequesterId(this.rid)}`);
    this.quiesced = true;
    this.owner = s.owner;
    this.busMaster = s.busMaster;
    this.errorReason = s.error ?? undefined;
    this.generation = s.generation;
    this.vectorIndex = s.vector;
    this.faultsSinceReset = s.faultsSinceReset;
    this.irqPending = s.irqPending;
    Object.assign(this.counters, s.counters);
    // The queues are found through the registers the record holds, on the scratch page first.
    s.registers.forEach((v, r) => this.regs.write(r, v));
    if (s.enabled) {
      try {
        restoreQueues();
      } catch (e) {
        this.resetQueues();
        if (e instanceof DmaBlocked) throw new StateRecordError(`${this.name}: the record's queues are not reachable here (${e.message})`);
        throw e;
      }
    }
    this.queuesEnabled = s.enabled;
    if (bar) {
      this.barBuffer = bar;
      this.registers = new VfRegisters(new Uint8Array(bar));
      s.registers.forEach((v, r) => this.regs.write(r, v));
    }
  }

  /** A queue's device-private indices, for the record. */
  protected static queueState(iovaPfn: number, ring: { size: number; reqCons: number; rspProdPvt: number }): VfQueueState {
    return { iovaPfn, size: ring.size, reqCons: ring.reqCons, rspProdPvt: ring.rspProdPvt };
  }

  /**
   * Puts a record's indices on a ring just attached, checking them against the ring's shared
   * indices: every response the function wrote it also published (rsp_prod = rsp_prod_pvt), and
   * it cannot have taken what the driver never produced.
   */
  protected static restoreIndices(ring: { size: number; reqCons: number; rspProdPvt: number; page: { load(w: number): number } }, q: VfQueueState, what: string): void {
    if (q.size !== ring.size) throw new StateRecordError(`${what}: a ring of ${q.size} in the record, of ${ring.size} here`);
    const rspProd = ring.page.load(2);
    const reqProd = ring.page.load(0);
    if (rspProd !== q.rspProdPvt) throw new StateRecordError(`${what}: the record published ${q.rspProdPvt} responses, the ring shows ${rspProd}`);
    if (((q.reqCons - q.rspProdPvt) >>> 0) > ((reqProd - q.rspProdPvt) >>> 0)) throw new StateRecordError(`${what}: the record took requests up to ${q.reqCons}, the driver produced ${reqProd}`);
    ring.reqCons = q.reqCons;
    ring.rspProdPvt = q.rspProdPvt;
  }

  // ---- for the kinds ----

  /** Cancel the turns the kind scheduled (quiesce); what they would have served stays held. */
  protected abstract cancelTurns(): void;
  /** Serve what the function holds (resume without a doorbell): held commands, ring work. */
  protected abstract serveHeld(): void;

  /** Attach the queues the driver described in Q0/Q1; throw DmaBlocked if a ring is unreachable. */
  protected abstract attachQueues(): void;
  /** Drop every queue and everything the function held for them (no DMA). */
  protected abstract resetQueues(): void;
  /** Serve the queues after a doorbell. */
  protected abstract kick(): void;

  private enable(): void {
    this.errorReason = undefined;
    try {
      this.attachQueues();
    } catch (e) {
      this.resetQueues();
      this.stopWithError((e as Error).message);
      return;
    }
    this.counters.enables++;
    this.setStatus(true);
  }

  protected disable(reason: string): void {
    this.resetQueues();
    this.env.logger?.debug({ vf: this.name, reason }, 'virtual function queues disabled');
    this.setStatus(false);
  }

  /** A queue cannot go on (rogue indices, a ring the IOMMU refused): stop, flag ERROR, interrupt. */
  protected stopWithError(reason: string): void {
    this.errorReason = reason;
    this.resetQueues();
    this.setStatus(false);
    this.env.logger?.warn({ vf: this.name, owner: this.owner, reason }, 'virtual function stopped');
    this.raise();
  }

  /**
   * A whole page the function keeps using (a ring), translated for read and write once, when the
   * queues are enabled (the device caches the translation until reset). Across a link, also the
   * page's mirror; `lateWake` interrupts the driver when it armed its event index behind what the
   * function already produced (ring/mirror.ts).
   */
  protected ringPage(iovaPfn: number): { page: Uint8Array; sync?: PageSync } {
    if (!this.busMaster) {
      this.counters.dmaSuppressed++;
      throw new DmaBlocked(`${this.name}: bus mastering is off`);
    }
    const t = this.env.iommu.translate(this.rid, iovaPfn * PAGE_SIZE, PAGE_SIZE, true);
    if (!t.ok) {
      this.countFault();
      throw new DmaBlocked(`${this.name}: ring at I/O page ${iovaPfn} blocked (${t.fault.reason})`, t.fault);
    }
    return this.env.dma.ringPage(t.segments[0].frame, () => this.raise());
  }

  /** DMA read of `len` bytes at I/O virtual address `iova` (memory → device): views, in order. */
  protected dmaRead(iova: number, len: number): Uint8Array[] {
    const views = this.translate(iova, len, false, 'read');
    this.counters.dmaReads++;
    this.counters.dmaBytesRead += len;
    return views;
  }

  /** DMA write of `data` at `iova` (device → memory). */
  protected dmaWrite(iova: number, data: Uint8Array): void {
    const views = this.dmaWriteViews(iova, data.byteLength);
    let at = 0;
    for (const v of views) {
      v.set(data.subarray(at, at + v.byteLength));
      at += v.byteLength;
    }
  }

  /** Views for the device to fill at `iova` (device → memory), e.g. straight from the disk image. */
  protected dmaWriteViews(iova: number, len: number): Uint8Array[] {
    const views = this.translate(iova, len, true, 'write');
    this.counters.dmaWrites++;
    this.counters.dmaBytesWritten += len;
    return views;
  }

  /** Raise the function's MSI: the IOMMU's interrupt remapping decides where it goes, if anywhere. */
  protected raise(): void {
    if (this.quiesced) {
      this.irqPending = true;
      return;
    }
    const r = this.env.iommu.remapInterrupt(this.rid, this.vectorIndex);
    if (!r.ok) {
      this.counters.irqsBlocked++;
      return;
    }
    this.counters.irqs++;
    this.env.deliverMsi(r.domid, r.port);
  }

  private translate(iova: number, len: number, write: boolean, access: 'read' | 'write'): Uint8Array[] {
    if (!this.busMaster) {
      this.counters.dmaSuppressed++;
      throw new DmaBlocked(`${this.name}: bus mastering is off`);
    }
    const t = this.env.iommu.translate(this.rid, iova, len, write);
    if (!t.ok) {
      this.countFault();
      throw new DmaBlocked(`${this.name}: DMA ${access} at 0x${iova.toString(16)} blocked (${t.fault.reason})`, t.fault);
    }
    try {
      return t.segments.map((s) => (access === 'read' ? this.env.dma.read(s.frame, s.offset, s.len) : this.env.dma.writeView(s.frame, s.offset, s.len)));
    } catch (e) {
      // The IOMMU mapped a frame the DMA engine cannot reach (memory detached, or a table larger
      // than the memory behind it): a failed transfer like any other — the request fails, the
      // queue goes on.
      if (!(e instanceof DeviceError)) throw e;
      this.counters.dmaFaults++;
      throw new DmaBlocked(`${this.name}: DMA ${access} at 0x${iova.toString(16)} failed (${e.message})`);
    }
  }

  private countFault(): void {
    this.counters.dmaFaults++;
    this.faultsSinceReset++;
    this.regs.write(VF_REG.FAULTS, Math.min(0x7fffffff, this.faultsSinceReset));
  }

  private writeIdentity(): void {
    this.regs.write(VF_REG.ID, (this.kind === 'nic' ? VF_KIND_NIC : VF_KIND_DISK) | (this.index << 8) | (this.rid << 16));
    this.regs.write(VF_REG.GEN, this.generation);
    this.describe();
  }

  /** Device-written identity registers of the kind (MAC, size). */
  protected abstract describe(): void;

  private setStatus(enabled = this.queuesEnabled): void {
    this.queuesEnabled = enabled;
    this.regs.write(VF_REG.STATUS, (enabled ? VF_STATUS_ENABLED : 0) | (this.busMaster ? VF_STATUS_BUS_MASTER : 0) | (this.errorReason ? VF_STATUS_ERROR : 0));
  }
}
