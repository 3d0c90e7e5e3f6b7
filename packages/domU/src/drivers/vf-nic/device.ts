/**
 * VfNicDriver — the guest's driver for a NIC virtual function it was assigned (direct I/O).
 *
 * Two queues on frames of the guest's own memory (hwnic tx and rx layouts, addresses are guest
 * frame numbers), DMA buffers of 2 KiB (two per frame), the doorbell rung straight at the
 * hardware and the interrupt coming straight from it. Nothing goes through dom0: frames leave by
 * the function's port on the NIC's embedded switch.
 *
 * TX: a frame is copied into a free buffer, described by one request, pushed; the doorbell rings
 * only if the push crossed the device's req_event. Frames find no free buffer wait in a bounded
 * queue (then are dropped, counted). RX: every buffer is kept posted; a response's buffer is
 * copied out, handed to the stack and posted again. One interrupt serves both queues, and the
 * handler final-checks both rings before it returns.
 */
import {
  DeviceError,
  ETH_MAX_FRAME,
  FrontRing,
  HW_STATUS_OK,
  PAGE_SIZE,
  VF_REG,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  hwNicRxProtocol,
  hwNicTxProtocol,
  initSharedRing,
  frameChannel,
  traceNow,
  type FrameAllocator,
  type GuestMemory,
  type HwNicBuffer,
  type HwStatusResponse,
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
} from '@ringvisor/shared';
import { awaitStatus, enableQueues, type DirectFunction } from '../../kernel/direct.js';
import { newVfNicMetrics, type VfNicMetrics } from './metrics.js';
import { vfNicDriverLayout, type VfNicDriverState } from './state.js';

const BUF_SIZE = 2048;
const BUFS_PER_PAGE = PAGE_SIZE / BUF_SIZE;
const TX_QUEUE_LIMIT = 256;

interface DmaBuffer {
  pfn: number;
  offset: number;
}

export interface VfNicOptions {
  fn: DirectFunction;
  memory: GuestMemory;
  frames: FrameAllocator;
  /** Buffers for each direction (default 128, at most the ring's 256). */
  buffers?: number;
  enableTimeoutMs?: number;
  /**
   * Frames in trace events (pcap): dom0 never sees a direct NIC's traffic, so the guest's driver
   * publishes it, as a capture inside the guest would (forwarded while a stream is open).
   */
  traceLabel?: { host: string; domid: number; device: string; iface: string };
}

/**
 * Persistence (Device, state.ts): quiesce() stops the driver acting — interrupts wait, frames to
 * send queue up; save() writes the record; `VfNicDriver.restore` builds a fresh driver on the same
 * options, which attach() starts: it binds the interrupt, collects what came meanwhile, goes on.
 */
export class VfNicDriver implements Device {
  readonly counters: VfNicMetrics = newVfNicMetrics();
  mac = '';
  private tx?: FrontRing<HwNicBuffer, HwStatusResponse>;
  private rx?: FrontRing<HwNicBuffer, HwStatusResponse>;
  private readonly txBufs: DmaBuffer[] = [];
  private readonly rxBufs: DmaBuffer[] = [];
  private readonly txFree: number[] = [];
  private readonly txQueue: Uint8Array[] = [];
  private receiver: (frame: Uint8Array) => void = () => {};
  private generation = 0;
  private lost: string | undefined;
  private ringPfns: number[] = [];
  /** The device showed its queues enabled under this generation (see onInterrupt). */
  private up = false;
  private readonly interruptBound = new WeakSet<DirectFunction>();
  private quiesced = false;
  private restoredFrom = false;

  constructor(private readonly o: VfNicOptions) {}

  get identity(): DeviceIdentity {
    return { kind: 'net', mode: 'direct', side: 'guest', type: 'vf-nic-driver', devid: this.o.fn.devid };
  }

  async attach(): Promise<void> {
    if (!this.restoredFrom) return this.open();
    this.restoredFrom = false;
    const fn = this.o.fn;
    if (!this.interruptBound.has(fn)) {
      this.interruptBound.add(fn);
      fn.onInterrupt(() => this.onInterrupt());
    }
    this.resume();
    // The device may sleep on event indices set before the save: ring once.
    if (this.tx) this.doorbell();
  }

  async stop(reason: string): Promise<void> {
    this.quiesced = false;
    this.detach(reason);
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return { ops: m.txPackets + m.rxPackets, bytes: m.txBytes + m.rxBytes, errors: m.txErrors + m.rxErrors + m.txDropped, detail: { ...m } };
  }

  /** Its copies are synchronous: nothing runs outside its state, it only stops acting. */
  async quiesce(): Promise<void> {
    this.quiesced = true;
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.onInterrupt(false);
    this.pumpTx();
  }

  save(): DeviceStateRecord {
    if (!this.quiesced) throw new StateError(`direct vif ${this.o.fn.devid}: save() needs the driver quiesced first`);
    const ring = (r: FrontRing<HwNicBuffer, HwStatusResponse> | undefined) => (r ? { reqProdPvt: r.reqProdPvt, rspCons: r.rspCons } : null);
    const state: VfNicDriverState = {
      ringPfns: [...this.ringPfns],
      tx: ring(this.tx),
      rx: ring(this.rx),
      txBufs: this.txBufs.map((b) => ({ pfn: b.pfn, offset: b.offset === 0 ? 0 : 2048 })),
      rxBufs: this.rxBufs.map((b) => ({ pfn: b.pfn, offset: b.offset === 0 ? 0 : 2048 })),
      txFree: [...this.txFree],
      txQueue: this.txQueue.map((f) => f.slice()),
      generation: this.generation,
      up: this.up,
      lost: this.lost ?? null,
      mac: this.mac,
      counters: { ...this.counters },
    };
    return saveRecord(vfNicDriverLayout, `dom/direct-vif/${this.o.fn.devid}`, state);
  }

  /**
   * A fresh driver on `options` (the constructor's) carrying on the saved one's queues; attach()
   * starts it. Throws StateRecordError for a record that does not check or whose rings do not
   * match the guest's memory.
   */
  static restore(options: ConstructorParameters<typeof VfNicDriver>[0], record: unknown): VfNicDriver {
    const s = loadRecord(vfNicDriverLayout, record);
    const { memory, fn } = options;
    for (const f of [...s.ringPfns, ...s.txBufs.map((b) => b.pfn), ...s.rxBufs.map((b) => b.pfn)])
      if (!memory.hasFrame(f)) throw new StateRecordError(`direct vif ${fn.devid}: frame ${f} of the record is not the guest's`);
    const d = new VfNicDriver(options);
    const ring = (pfn: number, protocol: typeof hwNicTxProtocol, r: { reqProdPvt: number; rspCons: number }, what: string) => {
      const ring = new FrontRing(memory.page(pfn), protocol, fn.ringSync(pfn, () => d.doorbell()));
      const reqProd = ring.page.load(REQ_PROD);
      const rspProd = ring.page.load(RSP_PROD);
      if (reqProd !== r.reqProdPvt || ((rspProd - r.rspCons) >>> 0) > ((r.reqProdPvt - r.rspCons) >>> 0))
        throw new StateRecordError(`direct vif ${fn.devid}: the ${what} ring shows req_prod ${reqProd}, rsp_prod ${rspProd}, not the record's ${r.reqProdPvt}/${r.rspCons}`);
      ring.reqProdPvt = r.reqProdPvt;
      ring.rspCons = r.rspCons;
      return ring;
    };
    if (s.tx && s.rx) {
      d.tx = ring(s.ringPfns[0], hwNicTxProtocol, s.tx, 'tx');
      d.rx = ring(s.ringPfns[1], hwNicRxProtocol, s.rx, 'rx');
    }
    d.ringPfns = [...s.ringPfns];
    d.txBufs.push(...s.txBufs.map((b) => ({ ...b })));
    d.rxBufs.push(...s.rxBufs.map((b) => ({ ...b })));
    d.txFree.push(...s.txFree);
    d.txQueue.push(...s.txQueue.map((f) => f.slice()));
    d.generation = s.generation;
    d.up = s.up;
    d.lost = s.lost ?? undefined;
    d.mac = s.mac;
    Object.assign(d.counters, s.counters);
    d.quiesced = true;
    d.restoredFrom = true;
    return d;
  }

  get fn(): DirectFunction {
    return this.o.fn;
  }

  onReceive(cb: (frame: Uint8Array) => void): void {
    this.receiver = cb;
  }

  async open(): Promise<void> {
    const { frames } = this.o;
    const count = Math.min(this.o.buffers ?? 128, 256);
    const buffers = (list: DmaBuffer[]): void => {
      for (let i = 0; i < count; i += BUFS_PER_PAGE) {
        const pfn = frames.alloc();
        for (let j = 0; j < BUFS_PER_PAGE && i + j < count; j++) list.push({ pfn, offset: j * BUF_SIZE });
      }
    };
    buffers(this.txBufs);
    buffers(this.rxBufs);
    this.ringPfns = [frames.alloc(), frames.alloc()];
    await this.start(this.o.fn);
  }

  /**
   * A function was assigned again after a reclaim (hot-plug): start over on it — fresh rings on
   * the same frames, every rx buffer posted again, frames queued meanwhile sent.
   */
  async reattach(fn: DirectFunction): Promise<void> {
    this.o.fn = fn;
    this.lost = undefined;
    await this.start(fn);
    this.pumpTx();
  }

  private async start(fn: DirectFunction): Promise<void> {
    const { memory } = this.o;
    this.up = false;
    await awaitStatus(fn, VF_STATUS_BUS_MASTER, 'is not bus master (not assigned to us yet)', this.o.enableTimeoutMs);
    if (fn.regs.kind !== 'nic') throw new DeviceError(`direct vif ${fn.devid}: function ${fn.rid} is not a NIC function`);
    this.mac = fn.regs.mac;
    this.generation = fn.regs.read(VF_REG.GEN);
    const ring = (pfn: number, protocol: typeof hwNicTxProtocol): FrontRing<HwNicBuffer, HwStatusResponse> => {
      const page = memory.page(pfn);
      const sync = fn.ringSync(pfn, () => this.doorbell());
      initSharedRing(page, sync);
      return new FrontRing(page, protocol, sync);
    };
    this.tx = ring(this.ringPfns[0], hwNicTxProtocol);
    this.rx = ring(this.ringPfns[1], hwNicRxProtocol);
    this.txFree.length = 0;
    for (let id = this.txBufs.length - 1; id >= 0; id--) this.txFree.push(id);
    this.rxBufs.forEach((b, id) => this.rx!.putRequest({ domid: 0, id, pfn: b.pfn, offset: b.offset, len: BUF_SIZE }));
    this.rx.pushRequests();
    if (!this.interruptBound.has(fn)) {
      this.interruptBound.add(fn);
      fn.onInterrupt(() => this.onInterrupt());
    }
    await enableQueues(fn, this.ringPfns[0], this.ringPfns[1], () => this.doorbell(), this.o.enableTimeoutMs);
    this.up = true;
  }

  /**
   * Queue a frame for transmission. False when it is too long (dropped) or the queue is full
   * (busy: backpressure from a slow function, not an error; the caller may try again later).
   */
  transmit(frame: Uint8Array): boolean {
    if (frame.byteLength > ETH_MAX_FRAME) {
      this.counters.txDropped++;
      return false;
    }
    if (this.txQueue.length >= TX_QUEUE_LIMIT) {
      this.counters.txBusy++;
      return false;
    }
    this.txQueue.push(frame);
    this.pumpTx();
    return true;
  }

  /**
   * Hostile-driver tests only (misbehave.ts): describe a frame at guest frame `pfn` as the driver
   * programs it, with no buffer of ours behind it. Resolves with the device's status, or
   * undefined if it was never sent (the function is gone). With the ring full (a busy guest's
   * traffic) it waits for a slot, ahead of the queued frames: a slow device delays the attempt,
   * it does not skip it.
   */
  transmitRaw(pfn: number, offset: number, len: number): Promise<number | undefined> {
    if (!this.tx || this.lost) return Promise.resolve(undefined);
    const sent = new Promise<number | undefined>((resolve) => this.rawQueue.push({ pfn, offset, len, resolve }));
    this.pumpTx();
    return sent;
  }

  /** The function is ours and its queues are set up (not reclaimed, or reattached since). */
  get attached(): boolean {
    return this.tx !== undefined && !this.lost;
  }

  /** transmitRaw's descriptors waiting for a tx slot. */
  private readonly rawQueue: Array<{ pfn: number; offset: number; len: number; resolve: (status: number | undefined) => void }> = [];

  private readonly rawWaiters = new Map<number, (status: number | undefined) => void>();

  /** The function was taken away: stop using it (its buffers stay ours, for a later reattach). */
  detach(reason: string): void {
    this.lost = reason;
    this.tx = undefined;
    this.rx = undefined;
    this.counters.txDropped += this.txQueue.length;
    this.txQueue.length = 0;
    for (const raw of this.rawQueue.splice(0)) raw.resolve(undefined);
  }

  private pumpTx(): void {
    const tx = this.tx;
    if (!tx || this.lost || this.quiesced) return;
    const { memory, fn } = this.o;
    let n = 0;
    while (this.rawQueue.length > 0 && this.txFree.length > 0 && !tx.isFull()) {
      const raw = this.rawQueue.shift()!;
      const id = this.txFree.pop()!;
      this.rawWaiters.set(id, raw.resolve);
      tx.putRequest({ domid: 0, id, pfn: raw.pfn, offset: raw.offset, len: raw.len });
      n++;
    }
    while (this.txQueue.length > 0 && this.txFree.length > 0 && !tx.isFull()) {
      const frame = this.txQueue.shift()!;
      const id = this.txFree.pop()!;
      const b = this.txBufs[id];
      memory.page(b.pfn).set(frame, b.offset);
      this.counters.bytesCopied += frame.byteLength;
      if (frameChannel.hasSubscribers) this.traceFrame('tx', frame);
      fn.toDevice(b.pfn, b.offset, frame.byteLength);
      tx.putRequest({ domid: 0, id, pfn: b.pfn, offset: b.offset, len: frame.byteLength });
      this.counters.txPackets++;
      this.counters.txBytes += frame.byteLength;
      n++;
    }
    if (n === 0) return;
    if (tx.pushRequests()) this.doorbell();
    else this.counters.suppressed++;
  }

  private traceFrame(dir: 'tx' | 'rx', frame: Uint8Array): void {
    const l = this.o.traceLabel;
    if (l) frameChannel.publish({ kind: 'frame', t: traceNow(), host: l.host, domid: l.domid, device: l.device, iface: l.iface, dir, len: frame.byteLength, frame: frame.slice() });
  }

  private doorbell(): void {
    if (this.lost) return;
    this.counters.doorbells++;
    this.o.fn.doorbell();
  }

  /**
   * What the register page says of the function: reset under us (GEN moved on, or the queues we
   * had up are gone), still starting (enable doorbell rung, STATUS.ENABLED not seen yet), or up.
   * "Not enabled yet" is no reset: the handler runs while we wait for the device to come up — the
   * missed-event poll runs every handler every 500 ms, whatever is pending — and taking it for a
   * reset detached the driver for good before it had started (a direct NIC that never sent a
   * frame, on a slow machine).
   */
  private functionState(): 'reset' | 'starting' | 'up' {
    const { regs } = this.o.fn;
    if (regs.read(VF_REG.GEN) !== this.generation) return 'reset';
    if ((regs.read(VF_REG.STATUS) & VF_STATUS_ENABLED) !== 0) return 'up';
    return this.up ? 'reset' : 'starting';
  }

  /** The interrupt handler (`counted`: a delivered interrupt; resume() runs it as a poll). */
  private onInterrupt(counted = true): void {
    const tx = this.tx;
    const rx = this.rx;
    if (!tx || !rx || this.lost || this.quiesced) return;
    if (counted) this.counters.interrupts++;
    const state = this.functionState();
    if (state === 'reset') {
      this.detach(`function ${this.o.fn.rid} was reset`);
      return;
    }
    // Nothing to look at before the device has its queues; start() ends once it has them.
    if (state === 'starting') return;
    let reposted = 0;
    do {
      for (let i = 0; i < tx.size; i++) {
        const r = tx.takeResponse();
        if (!r) break;
        if (r.id >= this.txBufs.length) continue;
        const raw = this.rawWaiters.get(r.id);
        if (raw) {
          this.rawWaiters.delete(r.id);
          raw(r.status);
        } else if (r.status !== HW_STATUS_OK) this.counters.txErrors++;
        this.txFree.push(r.id);
      }
      for (let i = 0; i < rx.size; i++) {
        const r = rx.takeResponse();
        if (!r) break;
        const b = this.rxBufs[r.id];
        if (!b) continue;
        if (r.status > 0 && r.status <= BUF_SIZE) {
          const frame = this.o.memory.page(b.pfn).slice(b.offset, b.offset + r.status);
          this.counters.rxPackets++;
          this.counters.rxBytes += r.status;
          this.counters.bytesCopied += r.status;
          if (frameChannel.hasSubscribers) this.traceFrame('rx', frame);
          this.receiver(frame);
        } else this.counters.rxErrors++;
        rx.putRequest({ domid: 0, id: r.id, pfn: b.pfn, offset: b.offset, len: BUF_SIZE });
        reposted++;
      }
    } while (tx.finalCheckForResponses() || rx.finalCheckForResponses());
    if (reposted > 0 && rx.pushRequests()) this.doorbell();
    this.pumpTx();
  }
}
