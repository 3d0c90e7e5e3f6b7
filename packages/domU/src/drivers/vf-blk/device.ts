/**
 * VfBlkDriver — the guest's driver for a disk virtual function it was assigned (direct I/O).
 *
 * The guest drives the function itself: one hwblk queue on a frame of its own memory, requests
 * naming its own frames by guest frame number (the function's I/O addresses; the IOMMU maps them
 * to machine memory), the doorbell rung straight at the hardware and completions interrupting the
 * guest straight from it. There is no grant, no backend and no copy in dom0: the only copy is the
 * driver's own, between the caller's buffer and a DMA buffer in guest memory (counted).
 *
 * Open: read the function's identity and size, initialise the ring, write Q0, set CTRL.ENABLE,
 * ring the doorbell, and wait for STATUS.ENABLED. Requests beyond the ring's free slots wait in
 * a backlog. A function reset under the driver (GEN changed, ENABLED dropped: it was reclaimed)
 * fails every outstanding request — the device has forgotten them — as does `detach`.
 */
import {
  DeviceError,
  FrontRing,
  HWBLK_MAX_SEGMENTS,
  HWBLK_OP_FLUSH,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_OK,
  PAGE_SIZE,
  SECTOR_SIZE,
  VF_REG,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  hwBlkProtocol,
  initSharedRing,
  loadRecord,
  saveRecord,
  REQ_PROD,
  RSP_PROD,
  StateError,
  StateRecordError,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type FrameAllocator,
  type GuestMemory,
  type HwBlkRequest,
  type HwStatusResponse,
} from '@ringvisor/shared';
import { awaitStatus, enableQueues, type DirectFunction } from '../../kernel/direct.js';
import type { BlockDevice } from '../../workloads/block-verifier.js';
import { newVfBlkMetrics, type VfBlkMetrics } from './metrics.js';
import { vfBlkDriverLayout, type VfBlkDriverState, type VfBlkRequestState } from './state.js';

const MAX_REQUEST_BYTES = HWBLK_MAX_SEGMENTS * PAGE_SIZE;

interface Pending {
  req: HwBlkRequest;
  frames: number[];
  /** Reads: where the data goes once the device has written the DMA buffers. */
  into?: Uint8Array;
  /** A raw request (misbehave.ts): told the status, counted apart from the driver's own I/O. */
  raw?: (status: number) => void;
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface VfBlkOptions {
  fn: DirectFunction;
  memory: GuestMemory;
  frames: FrameAllocator;
  /** How long open() waits for the function to report its queues enabled. */
  enableTimeoutMs?: number;
}

/** A request a restored driver carries on: its completion (a read's data), handed out anew. */
export interface RestoredRequest {
  op: number;
  sector: bigint;
  completion: Promise<Uint8Array | undefined>;
}

function encodeRequest(req: HwBlkRequest): Uint8Array {
  const bytes = new Uint8Array(hwBlkProtocol.request.size);
  hwBlkProtocol.request.encode(new DataView(bytes.buffer), 0, req);
  return bytes;
}

/**
 * Persistence (Device, state.ts): quiesce() stops the driver acting — interrupts and new
 * requests wait (requests in the backlog), save() writes the record, and `VfBlkDriver.restore`
 * builds a fresh driver on the same options that attach() starts: it binds the function's
 * interrupt, collects what the device answered meanwhile and goes on.
 */
export class VfBlkDriver implements BlockDevice, Device {
  readonly counters: VfBlkMetrics = newVfBlkMetrics();
  sectors = 0;
  private ring?: FrontRing<HwBlkRequest, HwStatusResponse>;
  private ringPfn = -1;
  private generation = 0;
  private nextId = 1;
  private readonly inflight = new Map<number, Pending>();
  private readonly backlog: Pending[] = [];
  private lostReason: string | undefined;
  /** The device showed its queue enabled under this generation (see resetUnderUs). */
  private up = false;
  private readonly interruptBound = new WeakSet<DirectFunction>();
  /** Between quiesce() and resume(): interrupts and new requests wait. */
  private quiesced = false;
  /** Built by restore(): attach() takes up the saved ring instead of opening a new one. */
  private restoredFrom = false;
  private restored: RestoredRequest[] = [];

  constructor(private readonly o: VfBlkOptions) {}

  get identity(): DeviceIdentity {
    return { kind: 'blk', mode: 'direct', side: 'guest', type: 'vf-blk-driver', devid: this.o.fn.devid };
  }

  /** The requests a restored driver carries on, each with its completion (empty otherwise). */
  restoredRequests(): readonly RestoredRequest[] {
    return this.restored;
  }

  async attach(): Promise<void> {
    if (!this.restoredFrom) return this.open();
    this.restoredFrom = false;
    const fn = this.o.fn;
    if (!this.interruptBound.has(fn)) {
      this.interruptBound.add(fn);
      fn.onInterrupt(() => this.onInterrupt());
    }
    this.quiesced = false;
    this.collect();
    // The device may have slept on an event index set before the save: ring once for what is on the ring.
    if (this.ring && this.inflight.size > 0) this.doorbell();
  }

  async stop(reason: string): Promise<void> {
    this.quiesced = false;
    this.detach(reason);
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.responses,
      bytes: (m.sectorsRead + m.sectorsWritten) * SECTOR_SIZE,
      errors: m.errors + m.aborted,
      detail: { ...m, bytesRead: m.sectorsRead * SECTOR_SIZE, bytesWritten: m.sectorsWritten * SECTOR_SIZE, inFlight: this.inFlight },
    };
  }

  /** Nothing the driver starts runs outside its state (its copies are synchronous): it only stops acting. */
  async quiesce(): Promise<void> {
    this.quiesced = true;
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.collect();
  }

  save(): DeviceStateRecord {
    if (!this.quiesced) throw new StateError(`direct vbd ${this.o.fn.devid}: save() needs the driver quiesced first`);
    const request = (p: Pending): VfBlkRequestState => ({ slot: encodeRequest(p.req), frames: [...p.frames], readBytes: p.into?.byteLength ?? 0, raw: p.raw !== undefined });
    const state: VfBlkDriverState = {
      ringPfn: this.ringPfn,
      ring: this.ring ? { reqProdPvt: this.ring.reqProdPvt, rspCons: this.ring.rspCons } : null,
      generation: this.generation,
      up: this.up,
      sectors: this.sectors,
      nextId: this.nextId,
      lostReason: this.lostReason ?? null,
      inflight: [...this.inflight.values()].map(request),
      backlog: this.backlog.map(request),
      counters: { ...this.counters },
    };
    return saveRecord(vfBlkDriverLayout, `dom/direct-vbd/${this.o.fn.devid}`, state);
  }

  /**
   * A fresh driver on `options` (the constructor's) carrying on the saved one's requests; attach()
   * starts it. Throws StateRecordError for a record that does not check, or whose ring does not
   * match the guest's memory.
   */
  static restore(options: ConstructorParameters<typeof VfBlkDriver>[0], record: unknown): VfBlkDriver {
    const s = loadRecord(vfBlkDriverLayout, record);
    const d = new VfBlkDriver(options);
    const { memory, fn } = options;
    for (const r of [...s.inflight, ...s.backlog]) for (const f of r.frames) if (!memory.hasFrame(f)) throw new StateRecordError(`direct vbd ${fn.devid}: frame ${f} of the record is not the guest's`);
    if (s.ring) {
      if (!memory.hasFrame(s.ringPfn)) throw new StateRecordError(`direct vbd ${fn.devid}: the ring's frame ${s.ringPfn} is not the guest's`);
      const sync = fn.ringSync(s.ringPfn, () => d.ring && d.doorbell());
      const ring = new FrontRing(memory.page(s.ringPfn), hwBlkProtocol, sync);
      const reqProd = ring.page.load(REQ_PROD);
      const rspProd = ring.page.load(RSP_PROD);
      if (reqProd !== s.ring.reqProdPvt) throw new StateRecordError(`direct vbd ${fn.devid}: the record produced ${s.ring.reqProdPvt} requests, the ring shows ${reqProd}`);
      if (((rspProd - s.ring.rspCons) >>> 0) > ((s.ring.reqProdPvt - s.ring.rspCons) >>> 0)) throw new StateRecordError(`direct vbd ${fn.devid}: the ring's ${rspProd} responses are not of the record's requests`);
      ring.reqProdPvt = s.ring.reqProdPvt;
      ring.rspCons = s.ring.rspCons;
      d.ring = ring;
    }
    d.ringPfn = s.ringPfn;
    d.generation = s.generation;
    d.up = s.up;
    d.sectors = s.sectors;
    d.nextId = s.nextId;
    d.lostReason = s.lostReason ?? undefined;
    Object.assign(d.counters, s.counters);
    const pending = (r: VfBlkRequestState): Pending => {
      const req = hwBlkProtocol.request.decode(new DataView(r.slot.buffer, r.slot.byteOffset, r.slot.byteLength), 0);
      const into = r.readBytes > 0 ? new Uint8Array(r.readBytes) : undefined;
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      d.restored.push({ op: req.op, sector: req.sector, completion: done.then(() => into) });
      return { req, frames: [...r.frames], ...(into ? { into } : {}), ...(r.raw ? { raw: () => {} } : {}), resolve, reject };
    };
    for (const r of s.inflight) {
      const p = pending(r);
      d.inflight.set(p.req.id, p);
    }
    d.backlog.push(...s.backlog.map(pending));
    d.quiesced = true;
    d.restoredFrom = true;
    return d;
  }

  get fn(): DirectFunction {
    return this.o.fn;
  }

  get inFlight(): number {
    return this.inflight.size + this.backlog.length;
  }

  async open(): Promise<void> {
    this.ringPfn = this.o.frames.alloc();
    await this.start(this.o.fn);
  }

  /**
   * A function was assigned again (hot-plug after a reclaim, or the hardware restarted): start over
   * on it with a fresh ring. Requests the old function never answered — none after a reclaim, which
   * failed them; possibly some after a hardware crash — are resubmitted in their order, as a
   * driver does after a controller reset (reads and writes of the same data are idempotent).
   */
  async reattach(fn: DirectFunction): Promise<void> {
    this.o.fn = fn;
    this.ring = undefined;
    await this.start(fn);
    const pending = [...this.inflight.values()].sort((a, b) => a.req.id - b.req.id);
    this.inflight.clear();
    this.backlog.unshift(...pending);
    this.counters.resubmitted += pending.length;
    this.lostReason = undefined;
    this.pump();
  }

  private async start(fn: DirectFunction): Promise<void> {
    const { memory } = this.o;
    this.up = false;
    await awaitStatus(fn, VF_STATUS_BUS_MASTER, 'is not bus master (not assigned to us yet)', this.o.enableTimeoutMs);
    if (fn.regs.kind !== 'disk') throw new DeviceError(`direct vbd ${fn.devid}: function ${fn.rid} is not a disk function`);
    const sectors = fn.regs.sectors; // u64, exact
    // A byte offset must stay a safe number: no real disk comes near 2^53 sectors.
    if (sectors > Number.MAX_SAFE_INTEGER) throw new DeviceError(`direct vbd ${fn.devid}: function ${fn.rid} claims ${sectors} sectors`);
    this.sectors = Number(sectors);
    this.generation = fn.regs.read(VF_REG.GEN);
    const page = memory.page(this.ringPfn);
    const sync = fn.ringSync(this.ringPfn, () => this.ring && this.doorbell());
    initSharedRing(page, sync);
    this.ring = new FrontRing(page, hwBlkProtocol, sync);
    if (!this.interruptBound.has(fn)) {
      this.interruptBound.add(fn);
      fn.onInterrupt(() => this.onInterrupt());
    }
    await enableQueues(fn, this.ringPfn, undefined, () => this.doorbell(), this.o.enableTimeoutMs);
    this.up = true;
  }

  read(sector: number, buf: Uint8Array): Promise<void> {
    return this.transfer(HWBLK_OP_READ, sector, buf);
  }

  write(sector: number, buf: Uint8Array): Promise<void> {
    return this.transfer(HWBLK_OP_WRITE, sector, buf);
  }

  flush(): Promise<void> {
    return this.submit({ req: { op: HWBLK_OP_FLUSH, id: 0, sector: 0n, segments: [] }, frames: [] });
  }

  /**
   * A request as the caller built it, segments and all — hostile-driver tests only (misbehave.ts):
   * resolves with the device's status instead of failing.
   */
  submitRaw(op: number, sector: bigint, segments: HwBlkRequest['segments']): Promise<number | undefined> {
    // undefined: the device never answered it (the function was away, or taken away meanwhile).
    let status: number | undefined;
    return this.submit({ req: { op, id: 0, sector, segments }, frames: [], raw: (s) => (status = s) }).then(
      () => status,
      () => status,
    );
  }

  /** The function is ours and its queue is set up (not reclaimed, or reattached since). */
  get attached(): boolean {
    return !this.lostReason && this.ring !== undefined;
  }

  /** The function was taken away (hot-unplug before reclaim): fail everything outstanding. */
  detach(reason: string): void {
    this.lostReason = reason;
    this.ring = undefined;
    this.abortAll(reason);
  }

  private async transfer(op: number, sector: number, buf: Uint8Array): Promise<void> {
    if (buf.byteLength === 0 || buf.byteLength % SECTOR_SIZE !== 0) throw new DeviceError(`transfer of ${buf.byteLength} bytes: not whole sectors`);
    if (sector < 0 || sector + buf.byteLength / SECTOR_SIZE > this.sectors) throw new DeviceError(`sectors ${sector}+${buf.byteLength / SECTOR_SIZE} outside the ${this.sectors}-sector disk`);
    const parts: Array<Promise<void>> = [];
    for (let at = 0; at < buf.byteLength; at += MAX_REQUEST_BYTES) {
      const piece = buf.subarray(at, Math.min(buf.byteLength, at + MAX_REQUEST_BYTES));
      parts.push(this.transferOne(op, sector + at / SECTOR_SIZE, piece));
    }
    await Promise.all(parts);
  }

  private transferOne(op: number, sector: number, buf: Uint8Array): Promise<void> {
    const { memory, frames } = this.o;
    const pfns: number[] = [];
    const segments: HwBlkRequest['segments'] = [];
    for (let at = 0; at < buf.byteLength; at += PAGE_SIZE) {
      const n = Math.min(PAGE_SIZE, buf.byteLength - at);
      const pfn = frames.alloc();
      pfns.push(pfn);
      if (op === HWBLK_OP_WRITE) {
        memory.page(pfn).set(buf.subarray(at, at + n));
        this.counters.bytesCopied += n;
      }
      // The domid of a function's segment is reserved: the IOMMU decides whose memory pfn is.
      segments.push({ domid: 0, pfn, firstSect: 0, lastSect: n / SECTOR_SIZE - 1 });
    }
    return this.submit({ req: { op, id: 0, sector: BigInt(sector), segments }, frames: pfns, ...(op === HWBLK_OP_READ ? { into: buf } : {}) });
  }

  private submit(p: Omit<Pending, 'resolve' | 'reject'>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.lostReason || !this.ring) {
        for (const f of p.frames) this.o.frames.release(f);
        reject(new DeviceError(`direct vbd ${this.o.fn.devid}: ${this.lostReason ?? 'not open'}`));
        return;
      }
      this.backlog.push({ ...p, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    const ring = this.ring;
    if (!ring || this.quiesced) return;
    let n = 0;
    while (this.backlog.length > 0 && !ring.isFull()) {
      const p = this.backlog.shift()!;
      p.req.id = this.nextId;
      this.nextId = (this.nextId + 1) >>> 0 || 1;
      this.inflight.set(p.req.id, p);
      // The device reads a write's data when it takes the request: hand it over now — and again
      // on a resubmission, since a restarted hardware (ws) holds no copy of it.
      if (p.req.op === HWBLK_OP_WRITE) for (const g of p.req.segments) if (g.lastSect >= g.firstSect) this.o.fn.toDevice(g.pfn, g.firstSect * SECTOR_SIZE, (g.lastSect - g.firstSect + 1) * SECTOR_SIZE);
      ring.putRequest(p.req);
      n++;
    }
    if (n === 0) return;
    this.counters.requests += n;
    if (ring.pushRequests()) this.doorbell();
    else this.counters.suppressed++;
  }

  private doorbell(): void {
    this.counters.doorbells++;
    this.o.fn.doorbell();
  }

  private onInterrupt(): void {
    if (this.quiesced || !this.ring || this.lostReason) return;
    this.counters.interrupts++;
    this.collect();
  }

  /** Take the device's answers (the interrupt handler's work, also run on resume). */
  private collect(): void {
    const ring = this.ring;
    if (!ring || this.lostReason || this.quiesced) return;
    if (this.resetUnderUs()) return;
    // Nothing to look at before the device has its queue; start() ends once it has it.
    if (!this.up && (this.o.fn.regs.read(VF_REG.STATUS) & VF_STATUS_ENABLED) === 0) return;
    do {
      for (let i = 0; i < ring.size; i++) {
        const rsp = ring.takeResponse();
        if (!rsp) break;
        const p = this.inflight.get(rsp.id);
        if (!p) continue;
        this.inflight.delete(rsp.id);
        this.complete(p, rsp.status);
      }
    } while (ring.finalCheckForResponses());
    this.pump();
  }

  private complete(p: Pending, status: number): void {
    const { memory, frames } = this.o;
    if (p.raw) {
      p.raw(status);
      p.resolve();
      return;
    }
    this.counters.responses++;
    if (status === HW_STATUS_OK) {
      if (p.req.op === HWBLK_OP_READ && p.into) {
        p.frames.forEach((pfn, i) => {
          const n = Math.min(PAGE_SIZE, p.into!.byteLength - i * PAGE_SIZE);
          p.into!.set(memory.page(pfn).subarray(0, n), i * PAGE_SIZE);
          this.counters.bytesCopied += n;
        });
        this.counters.sectorsRead += p.into.byteLength / SECTOR_SIZE;
        this.counters.reads++;
      } else if (p.req.op === HWBLK_OP_WRITE) {
        this.counters.sectorsWritten += p.req.segments.reduce((a, s) => a + s.lastSect - s.firstSect + 1, 0);
        this.counters.writes++;
      } else this.counters.flushes++;
    } else this.counters.errors++;
    for (const f of p.frames) frames.release(f);
    if (status === HW_STATUS_OK) p.resolve();
    else p.reject(new DeviceError(`direct vbd ${this.o.fn.devid}: request ${p.req.id} failed with status ${status}`));
  }

  /**
   * The function was reset (reclaimed) under us: its queue and every request on it are gone. GEN
   * moving on always says so; STATUS without ENABLED only once the queue was up — while we wait
   * for the device to come up after the enable doorbell the handler may run anyway (the
   * missed-event poll runs every handler), and that is no reset (vf-nic/device.ts says more).
   */
  private resetUnderUs(): boolean {
    const { regs } = this.o.fn;
    if (regs.read(VF_REG.GEN) === this.generation && (!this.up || (regs.read(VF_REG.STATUS) & VF_STATUS_ENABLED) !== 0)) return false;
    this.detach(`function ${this.o.fn.rid} was reset`);
    return true;
  }

  private abortAll(reason: string): void {
    const all = [...this.inflight.values(), ...this.backlog.splice(0)];
    this.inflight.clear();
    for (const p of all) {
      this.counters.aborted++;
      for (const f of p.frames) this.o.frames.release(f);
      p.reject(new DeviceError(`direct vbd ${this.o.fn.devid}: ${reason}`));
    }
  }
}
