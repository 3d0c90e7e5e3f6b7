/**
 * SV-IO virtual interfaces (after Raj & Schwan, HPDC 2007): the device-side processing of one VIF
 * — a network, block or camera interface bound to one guest, with exactly two message queues in
 * that guest's memory: outgoing (guest → device; this end consumes) and incoming (device → guest;
 * this end produces). Layouts: shared/src/svio/queue.ts and messages.ts.
 *
 * A processor is plain logic over its two queues, so the SV-IO engine can run it on whichever of
 * its cores (worker threads) it places the VIF. One `kick` (the guest's doorbell, or the incoming
 * queue freeing up) runs a pass:
 *   - take at most one queue's worth of outgoing messages, each copied out once and validated;
 *   - answer each on the incoming queue; when the incoming queue is full, stop taking (the
 *     answers wait in a small per-VIF backlog, bounded by the queue size) and ask to be told when
 *     the guest frees a slot — back-pressure instead of unbounded buffering;
 *   - push, notify the guest only if it asked, release the outgoing slots (notify the guest if it
 *     waits for room), final-check both queues; more work is scheduled, never looped on.
 * A guest whose indices are impossible (RogueRingError) has its VIF stopped. The engine reaches
 * only the bound guest's memory: every address is one of its frames, checked.
 */
import { locateBit, readPiece, writePiece, type DiskFaultHit, type DiskFaultTable } from '../devices/disk/faults.js';
import {
  QueueConsumer,
  QueueProducer,
  RogueRingError,
  PAGE_SIZE,
  SECTOR_SIZE,
  VIF_BLK_MAX_SEGMENTS,
  VIF_DONE,
  VIF_EIO,
  VIF_ENOTSUP,
  VIF_FLUSH,
  VIF_OK,
  VIF_READ,
  VIF_RX,
  VIF_RX_POST,
  VIF_TX,
  VIF_TX_DONE,
  VIF_WRITE,
  VIF_CAM_BUF,
  VIF_CAM_FRAME,
  VIF_CAM_STREAM,
  ETH_MAX_FRAME,
  ETH_MIN_FRAME,
  vifCodec,
  vifMessage,
  loadRecord,
  saveRecord,
  StateError,
  StateRecordError,
  QUEUE_CONS,
  QUEUE_PROD,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type GuestMemory,
  type PageSync,
  type VifMessage,
} from '@ringvisor/shared';
import type { PhysicalDisk } from '../devices/disk/device.js';
import type { TurnEnd } from './scheduler.js';
import { CameraDevice, type CameraOptions } from '../devices/camera/device.js';
import { blkVifLayout, camVifLayout, netVifLayout, type VifState } from './state.js';

export type VifKind = 'net' | 'blk' | 'cam';

export interface VifCounters {
  passes: number;
  messagesIn: number;
  messagesOut: number;
  /** Outgoing messages refused with an error status (malformed, outside the guest's memory). */
  refused: number;
  /** Passes that stopped taking because the incoming queue was full (back-pressure). */
  backpressured: number;
  notifications: number;
  bytes: number;
}

export interface VifEnv {
  /** The bound guest's memory (the only memory this VIF reaches). */
  memory: GuestMemory;
  /** Guest frame numbers of the two queue pages. */
  outPfn: number;
  inPfn: number;
  /** Raise the VIF's interrupt to the guest. */
  notify: () => void;
  /** The drive's fault rules (hw.disk.faults), as this core holds them: a block VIF's partition is the same media. */
  diskFaults?: DiskFaultTable;
  /** The core's QoS scheduler; absent, the VIF runs each kick at once. */
  scheduler?: {
    wake(id: number): void;
    /** The VIF's QoS state, for its saved record, and back (scheduler.ts). */
    saveQos?(id: number): { deficit: number; credit: number | null } | undefined;
    restoreQos?(id: number, s: { deficit: number; credit: number | null }): void;
  };
  /** The VIF was stopped for a rogue queue (the engine tells its driver, in STATUS). */
  rogue?: (reason: string) => void;
  /**
   * Across a process boundary (ws) the guest has its own copy of its memory: the queue pages'
   * PageSync, and every other byte the device writes (received frames, read data, camera frames)
   * reported, so they reach the guest before the interrupt that announces them (ring/mirror.ts).
   */
  queueSync?: (pfn: number) => PageSync;
  wrote?: (gfn: number, offset: number, length: number) => void;
}

/** The least a message costs in QoS terms: one queue slot's worth of bytes. */
export const VIF_MIN_COST = 64;

function encodeMessage(m: VifMessage): Uint8Array {
  const bytes = new Uint8Array(vifCodec.size);
  vifCodec.encode(new DataView(bytes.buffer), 0, m);
  return bytes;
}

function decodeMessage(bytes: Uint8Array): VifMessage {
  return vifCodec.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
}

const INCOMING_TYPES: ReadonlySet<number> = new Set([VIF_TX_DONE, VIF_RX, VIF_DONE, VIF_CAM_FRAME]);

/**
 * Persistence (Device, state.ts): quiesce() stops taking work — a kick, or a turn its core's
 * scheduler offers, is remembered — and cancels its scheduled turn; a VIF's data moves are
 * synchronous within a turn, so nothing is half done. save() writes the record; a fresh processor
 * built with the same constructor arguments restores it (`NetVif.restore`, …) and stays still
 * until attach() or resume(), which serves what was remembered.
 */
export abstract class VifProcessor implements Device {
  readonly counters: VifCounters = { passes: 0, messagesIn: 0, messagesOut: 0, refused: 0, backpressured: 0, notifications: 0, bytes: 0 };
  protected readonly out: QueueConsumer<VifMessage>;
  protected readonly in: QueueProducer<VifMessage>;
  /** Answers waiting for room on the incoming queue (at most one queue's worth). */
  private readonly backlog: VifMessage[] = [];
  private scheduled: NodeJS.Immediate | undefined;
  private held: VifMessage | undefined;
  stopReason: string | undefined;
  /** Between quiesce() and resume(): nothing taken, nothing done. */
  protected quiesced = false;
  private kickPending = false;

  protected constructor(
    readonly id: number,
    readonly kind: VifKind,
    protected readonly env: VifEnv,
  ) {
    this.out = new QueueConsumer(env.memory.page(env.outPfn), vifCodec, env.queueSync?.(env.outPfn));
    this.in = new QueueProducer(env.memory.page(env.inPfn), vifCodec, env.queueSync?.(env.inPfn));
  }

  /**
   * The doorbell, or room freed on the incoming queue. Safe at any time; never throws. On a core,
   * the VIF joins the core's QoS round (scheduler.ts); alone (tests), it runs a turn now.
   */
  kick(): void {
    if (this.quiesced) {
      this.kickPending = true;
      return;
    }
    if (this.env.scheduler) {
      this.env.scheduler.wake(this.id);
      return;
    }
    if (this.turn(() => true) !== 'budget' || this.scheduled) return;
    this.scheduled = setImmediate(() => {
      this.scheduled = undefined;
      this.kick();
    });
  }

  /**
   * One turn: take outgoing messages while `admit` lets each one's cost in (scheduler.ts), answer
   * them, publish. Returns what the turn ended on; a rogue ring stops the VIF.
   */
  turn(admit: (cost: number) => boolean): TurnEnd {
    if (this.stopReason !== undefined) return 'idle';
    if (this.quiesced) {
      this.kickPending = true;
      return 'idle';
    }
    try {
      return this.pass(admit);
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.halt(e.message);
      this.env.rogue?.(e.message);
      return 'idle';
    }
  }

  /** Stop for good (replaced, closed, rogue): nothing more is taken. */
  halt(reason: string): void {
    this.stopReason ??= reason;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }

  // ---- Device ----

  get identity(): DeviceIdentity {
    return { kind: this.kind, mode: 'svio', side: 'hardware', type: `${this.kind}-vif`, devid: this.id };
  }

  /** The engine opened the VIF (the processor exists); a restored one starts serving here. */
  async attach(): Promise<void> {
    if (this.quiesced) this.resume();
  }

  async stop(reason: string): Promise<void> {
    this.quiesced = false;
    this.halt(reason);
  }

  abstract metrics(): DeviceMetrics;

  async quiesce(): Promise<void> {
    this.quiesced = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    this.pause();
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.unpause();
    const kick = this.kickPending;
    this.kickPending = false;
    if (kick || this.held || this.backlog.length > 0) this.kick();
  }

  abstract save(): DeviceStateRecord;

  /** What the kind stops while quiesced (a camera's stream) and starts again. */
  protected pause(): void {}
  protected unpause(): void {}

  protected requireQuiesced(): void {
    if (!this.quiesced) throw new StateError(`VIF ${this.id}: save() needs it quiesced first`);
  }

  protected get instanceName(): string {
    return `hw/svio/${this.id}`;
  }

  protected saveVif(): VifState {
    return {
      outCons: this.out.page.load(QUEUE_CONS),
      inProd: this.in.page.load(QUEUE_PROD),
      held: this.held ? encodeMessage(this.held) : null,
      backlog: this.backlog.map(encodeMessage),
      stopReason: this.stopReason ?? null,
      kickPending: this.kickPending,
      qos: this.env.scheduler?.saveQos?.(this.id) ?? null,
      counters: { ...this.counters },
    };
  }

  /**
   * Takes a checked record's common state into this fresh processor, which stays quiesced. The
   * queue indices must be the ones the guest's queue pages show (else the record is not of this
   * memory), and every answer waiting must be an incoming message.
   */
  protected restoreVif(s: VifState): void {
    const outCons = this.out.page.load(QUEUE_CONS);
    const inProd = this.in.page.load(QUEUE_PROD);
    if (s.outCons !== outCons) throw new StateRecordError(`VIF ${this.id}: the record consumed ${s.outCons} outgoing messages, the queue shows ${outCons}`);
    if (s.inProd !== inProd) throw new StateRecordError(`VIF ${this.id}: the record produced ${s.inProd} incoming messages, the queue shows ${inProd}`);
    const backlog = s.backlog.map(decodeMessage);
    if (backlog.some((m) => !INCOMING_TYPES.has(m.type))) throw new StateRecordError(`VIF ${this.id}: an answer waiting in the record is not an incoming message`);
    this.quiesced = true;
    this.held = s.held ? decodeMessage(s.held) : undefined;
    this.backlog.push(...backlog);
    this.stopReason = s.stopReason ?? undefined;
    this.kickPending = s.kickPending;
    Object.assign(this.counters, s.counters);
    if (s.qos) this.env.scheduler?.restoreQos?.(this.id, s.qos);
  }

  /** Answer one outgoing message (its private copy): the incoming message, or none. */
  protected abstract handle(m: VifMessage): VifMessage | undefined;

  /** What a message costs the VIF's QoS share: the bytes it moves, at least one queue slot. */
  protected cost(m: VifMessage): number {
    void m;
    return VIF_MIN_COST;
  }

  /** Queue a message the device originates (a received frame): false if the guest has no room. */
  protected emit(m: VifMessage): boolean {
    if (this.backlog.length > 0 || !this.in.put(m)) return false;
    this.counters.messagesOut++;
    if (this.in.push()) this.raise();
    return true;
  }

  private pass(admit: (cost: number) => boolean): TurnEnd {
    this.counters.passes++;
    let taken = 0;
    let refused = false;
    // Earlier answers first, in order.
    while (this.backlog.length > 0 && this.in.put(this.backlog[0])) {
      this.backlog.shift();
      this.counters.messagesOut++;
    }
    while (this.backlog.length === 0 && taken < this.out.size) {
      // A message its turn could not afford is kept (its private copy) and goes first next turn.
      const m = this.held ?? this.out.take();
      if (!m) break;
      if (!admit(this.cost(m))) {
        this.held = m;
        refused = true;
        break;
      }
      this.held = undefined;
      taken++;
      this.counters.messagesIn++;
      const answer = this.handle(m);
      if (!answer) continue;
      if (this.in.put(answer)) this.counters.messagesOut++;
      else this.backlog.push(answer);
    }
    if (this.in.push()) this.raise();
    if (this.out.release()) this.raise();
    if (refused) return 'budget';
    if (this.backlog.length > 0) {
      this.counters.backpressured++;
      // Told when the guest frees a slot; if it already has, go on.
      return this.in.finalCheckForSpace() ? 'budget' : 'blocked';
    }
    return this.out.finalCheck() ? 'budget' : 'idle';
  }

  private raise(): void {
    this.counters.notifications++;
    this.env.notify();
  }

  /** The device wrote these bytes of guest memory (ws: they go to the guest's copy). */
  protected wroteGuest(gfn: number, offset: number, length: number): void {
    this.env.wrote?.(gfn, offset, length);
  }

  /** A window of the bound guest's memory, or undefined if it is not all the guest's. */
  protected window(gfn: number, offset: number, len: number): Uint8Array | undefined {
    const mem = this.env.memory;
    if (!mem.hasFrame(gfn) || offset < 0 || len < 0 || offset + len > PAGE_SIZE) return undefined;
    return mem.page(gfn).subarray(offset, offset + len);
  }
}

/** A network VIF: frames out to the wire, frames from the wire into buffers the guest posted. */
export class NetVif extends VifProcessor {
  /** Buffers the guest posted, oldest first (bounded: a guest cannot make the device hold more). */
  private readonly posted: VifMessage[] = [];
  static readonly MAX_POSTED = 256;
  readonly net = { txFrames: 0, rxFrames: 0, rxMissed: 0 };

  constructor(
    id: number,
    env: VifEnv,
    private readonly wire: (frame: Uint8Array) => void,
  ) {
    super(id, 'net', env);
  }

  /** A fresh network VIF from `args` (the constructor's) carrying on the saved one's I/O. */
  static restore(args: ConstructorParameters<typeof NetVif>, record: unknown): NetVif {
    const s = loadRecord(netVifLayout, record);
    const vif = new NetVif(...args);
    const posted = s.posted.map(decodeMessage);
    for (const b of posted)
      if (b.type !== VIF_RX_POST || b.len < ETH_MIN_FRAME || !vif.window(b.gfn, b.offset, b.len))
        throw new StateRecordError(`VIF ${vif.id}: a posted receive buffer in the record is not one of the guest's (id ${b.id})`);
    vif.restoreVif(s);
    vif.posted.push(...posted);
    Object.assign(vif.net, s.net);
    return vif;
  }

  save(): DeviceStateRecord {
    this.requireQuiesced();
    return saveRecord(netVifLayout, this.instanceName, { ...this.saveVif(), posted: this.posted.map(encodeMessage), net: { ...this.net } });
  }

  metrics(): DeviceMetrics {
    return { ops: this.net.txFrames + this.net.rxFrames, bytes: this.counters.bytes, errors: this.counters.refused, detail: { ...this.counters, ...this.net } };
  }

  protected override cost(m: VifMessage): number {
    return m.type === VIF_TX ? Math.max(VIF_MIN_COST, Math.min(m.len, ETH_MAX_FRAME)) : VIF_MIN_COST;
  }

  protected handle(m: VifMessage): VifMessage | undefined {
    if (m.type === VIF_TX) {
      const w = m.len >= ETH_MIN_FRAME && m.len <= ETH_MAX_FRAME ? this.window(m.gfn, m.offset, m.len) : undefined;
      if (!w) {
        this.counters.refused++;
        return vifMessage({ type: VIF_TX_DONE, id: m.id, status: VIF_EIO });
      }
      this.wire(w.slice());
      this.net.txFrames++;
      this.counters.bytes += m.len;
      return vifMessage({ type: VIF_TX_DONE, id: m.id, status: VIF_OK });
    }
    if (m.type === VIF_RX_POST) {
      if (!this.window(m.gfn, m.offset, m.len) || m.len < ETH_MIN_FRAME || this.posted.length >= NetVif.MAX_POSTED) {
        this.counters.refused++;
        return vifMessage({ type: VIF_RX, id: m.id, status: VIF_EIO });
      }
      this.posted.push(m);
      return undefined;
    }
    this.counters.refused++;
    return vifMessage({ type: VIF_TX_DONE, id: m.id, status: VIF_ENOTSUP });
  }

  /** A frame from the wire: into the oldest posted buffer that holds it, announced on the incoming queue. */
  receive(frame: Uint8Array): void {
    if (this.stopReason !== undefined) return;
    // A quiesced VIF is a paused device: what the wire brings meanwhile is missed.
    if (this.quiesced) {
      this.net.rxMissed++;
      return;
    }
    const b = this.posted[0];
    if (!b || b.len < frame.byteLength) {
      this.net.rxMissed++;
      return;
    }
    // Announce only if the guest has room to hear it; otherwise the frame is missed, the buffer kept.
    const w = this.window(b.gfn, b.offset, frame.byteLength)!;
    w.set(frame);
    this.wroteGuest(b.gfn, b.offset, frame.byteLength);
    if (!this.emit(vifMessage({ type: VIF_RX, id: b.id, status: frame.byteLength }))) {
      this.net.rxMissed++;
      return;
    }
    this.posted.shift();
    this.net.rxFrames++;
    this.counters.bytes += frame.byteLength;
  }
}

/** A block VIF: a partition of the physical disk, read and written straight from guest pages. */
export class BlkVif extends VifProcessor {
  readonly blk = { reads: 0, writes: 0, flushes: 0, injected: 0 };

  constructor(
    id: number,
    env: VifEnv,
    private readonly disk: PhysicalDisk,
    readonly partition: { start: number; sectors: number },
  ) {
    super(id, 'blk', env);
  }

  /** A fresh block VIF from `args` (the constructor's) carrying on the saved one's I/O. */
  static restore(args: ConstructorParameters<typeof BlkVif>, record: unknown): BlkVif {
    const s = loadRecord(blkVifLayout, record);
    const vif = new BlkVif(...args);
    vif.restoreVif(s);
    Object.assign(vif.blk, s.blk);
    return vif;
  }

  save(): DeviceStateRecord {
    this.requireQuiesced();
    return saveRecord(blkVifLayout, this.instanceName, { ...this.saveVif(), blk: { ...this.blk } });
  }

  metrics(): DeviceMetrics {
    const b = this.blk;
    return { ops: b.reads + b.writes + b.flushes, bytes: this.counters.bytes, errors: this.counters.refused, detail: { ...this.counters, ...b } };
  }

  protected override cost(m: VifMessage): number {
    if (m.type !== VIF_READ && m.type !== VIF_WRITE) return VIF_MIN_COST;
    let sectors = 0;
    // A malformed segment moves nothing (it is refused): it costs the minimum.
    for (const s of m.segments) if (s.first <= s.last && s.last < PAGE_SIZE / SECTOR_SIZE) sectors += s.last - s.first + 1;
    return Math.max(VIF_MIN_COST, sectors * SECTOR_SIZE);
  }

  protected handle(m: VifMessage): VifMessage | undefined {
    const done = (status: number) => vifMessage({ type: VIF_DONE, id: m.id, status });
    if (m.type === VIF_FLUSH) {
      if (m.nseg !== 0) return this.refuse(done);
      if (this.faultFor('flush', 0, 0)?.error === 'eio') return done(VIF_EIO);
      this.disk.flush();
      this.blk.flushes++;
      return done(VIF_OK);
    }
    if (m.type !== VIF_READ && m.type !== VIF_WRITE) return this.refuse(() => done(VIF_ENOTSUP));
    // The u64 sector is exact (bigint); once within the partition it is a safe number.
    if (m.nseg < 1 || m.nseg > VIF_BLK_MAX_SEGMENTS || m.sector >= this.partition.sectors) return this.refuse(done);
    const first = Number(m.sector);
    // Validate the whole private copy before a byte moves.
    const pieces: Array<{ view: Uint8Array; sector: number; gfn: number; offset: number }> = [];
    let sector = first;
    for (const s of m.segments) {
      if (s.first > s.last || s.last >= PAGE_SIZE / SECTOR_SIZE) return this.refuse(done);
      const view = this.window(s.gfn, s.first * SECTOR_SIZE, (s.last - s.first + 1) * SECTOR_SIZE);
      if (!view) return this.refuse(done);
      pieces.push({ view, sector, gfn: s.gfn, offset: s.first * SECTOR_SIZE });
      sector += s.last - s.first + 1;
    }
    if (sector > this.partition.sectors) return this.refuse(done);
    // The drive's fault rules, on the image's sectors, decided before any data moves.
    const fault = this.faultFor(m.type === VIF_READ ? 'read' : 'write', this.partition.start + first, sector - first);
    if (fault?.error === 'eio') return done(VIF_EIO);
    const flip = fault?.error === 'bitflip' ? locateBit(pieces.map((p) => p.view.byteLength), fault.bit) : undefined;
    try {
      pieces.forEach((p, i) => {
        const bit = flip?.index === i ? flip.bit : undefined;
        if (m.type === VIF_READ) {
          readPiece(this.disk, this.partition.start + p.sector, p.view, bit);
          this.wroteGuest(p.gfn, p.offset, p.view.byteLength);
        } else writePiece(this.disk, this.partition.start + p.sector, p.view, bit);
        this.counters.bytes += p.view.byteLength;
      });
    } catch {
      return done(VIF_EIO);
    }
    if (m.type === VIF_READ) this.blk.reads++;
    else this.blk.writes++;
    return done(VIF_OK);
  }

  private faultFor(op: 'read' | 'write' | 'flush', sector: number, sectors: number): DiskFaultHit | undefined {
    const t = this.env.diskFaults;
    const hit = t?.match(op, sector, sectors);
    if (hit) this.blk.injected++;
    return hit;
  }

  private refuse(answer: (status: number) => VifMessage): VifMessage {
    this.counters.refused++;
    return answer(VIF_EIO);
  }
}

/**
 * A camera VIF: the camera's frames rendered straight into buffers the guest queued (CAM_BUF:
 * consecutive frames of its memory), announced with CAM_FRAME (buffer, seq, used size,
 * timestamp). The camera keeps its own rate: with no buffer queued, or no room on the incoming
 * queue to announce one, the frame is dropped and the guest sees the gap in seq.
 */
export class CamVif extends VifProcessor {
  readonly camera: CameraDevice;
  /** Buffers queued by the guest, oldest first: index, and its view of guest memory. */
  private readonly queued: Array<{ id: number; gfn: number; view: Uint8Array }> = [];
  static readonly MAX_QUEUED = 64;
  private current: { id: number; gfn: number; view: Uint8Array } | undefined;

  /** The stream was on when quiesced (restarted on resume). */
  private streamOnResume = false;

  constructor(id: number, env: VifEnv, camera: Omit<CameraOptions, 'clockUs'> & { clockUs?: () => number }) {
    super(id, 'cam', env);
    this.camera = new CameraDevice(camera);
  }

  /** A fresh camera VIF from `args` (the constructor's) carrying on the saved one's stream. */
  static restore(args: ConstructorParameters<typeof CamVif>, record: unknown): CamVif {
    const s = loadRecord(camVifLayout, record);
    const vif = new CamVif(...args);
    const mem = vif.env.memory;
    for (const q of s.queued) {
      const fits = mem.hasFrame(q.gfn) && mem.hasFrame(q.gfn + q.pages - 1) && q.pages * PAGE_SIZE >= vif.camera.frameSize;
      const overQueues = [vif.env.outPfn, vif.env.inPfn].some((p) => p >= q.gfn && p < q.gfn + q.pages);
      if (!fits || overQueues) throw new StateRecordError(`VIF ${vif.id}: frame buffer ${q.id} of the record is not the guest's to fill`);
    }
    vif.restoreVif(s);
    for (const q of s.queued) vif.queued.push({ id: q.id, gfn: q.gfn, view: new Uint8Array(mem.buffer, q.gfn * PAGE_SIZE, q.pages * PAGE_SIZE) });
    vif.camera.continueFrom(s.camera.seq, s.camera.lastTimestampUs === null ? undefined : BigInt(s.camera.lastTimestampUs));
    Object.assign(vif.camera.metrics, s.camera.metrics);
    vif.streamOnResume = s.camera.streaming;
    return vif;
  }

  save(): DeviceStateRecord {
    this.requireQuiesced();
    const last = this.camera.lastTimestampUs;
    return saveRecord(camVifLayout, this.instanceName, {
      ...this.saveVif(),
      queued: this.queued.map((q) => ({ id: q.id, gfn: q.gfn, pages: q.view.byteLength / PAGE_SIZE })),
      camera: { seq: this.camera.sequence, streaming: this.streamOnResume, lastTimestampUs: last === undefined ? null : last.toString(), metrics: { ...this.camera.metrics } },
    });
  }

  metrics(): DeviceMetrics {
    const c = this.camera.metrics;
    return { ops: c.delivered, bytes: this.counters.bytes, errors: this.counters.refused, detail: { ...this.counters, ...c } };
  }

  protected override pause(): void {
    this.streamOnResume = this.camera.streaming;
    this.camera.stop();
  }

  protected override unpause(): void {
    if (this.streamOnResume && this.stopReason === undefined) this.startStream();
    this.streamOnResume = false;
  }

  private startStream(): void {
    this.camera.start({ buffer: () => this.nextBuffer(), filled: (seq, used, ts) => this.filled(seq, used, ts) });
  }

  protected handle(m: VifMessage): VifMessage | undefined {
    const refuse = () => {
      this.counters.refused++;
      return vifMessage({ type: VIF_CAM_FRAME, id: m.id, status: VIF_EIO });
    };
    if (m.type === VIF_CAM_BUF) {
      const mem = this.env.memory;
      const pages = m.len;
      // Consecutive frames of the guest's memory, enough for one frame, none of them the queues.
      if (pages < 1 || !mem.hasFrame(m.gfn) || !mem.hasFrame(m.gfn + pages - 1) || pages * PAGE_SIZE < this.camera.frameSize || this.queued.length >= CamVif.MAX_QUEUED) return refuse();
      for (const q of [this.env.outPfn, this.env.inPfn]) if (q >= m.gfn && q < m.gfn + pages) return refuse();
      this.queued.push({ id: m.id, gfn: m.gfn, view: new Uint8Array(mem.buffer, m.gfn * PAGE_SIZE, pages * PAGE_SIZE) });
      return undefined;
    }
    if (m.type === VIF_CAM_STREAM) {
      if (m.len === 1) this.startStream();
      else this.camera.stop();
      return undefined;
    }
    return refuse();
  }

  override halt(reason: string): void {
    this.camera.stop();
    super.halt(reason);
  }

  /** Take a frame now (tests; the stream does this on the camera's clock). */
  capture(): void {
    this.camera.capture({ buffer: () => this.nextBuffer(), filled: (seq, used, ts) => this.filled(seq, used, ts) });
  }

  private nextBuffer(): Uint8Array | undefined {
    if (this.stopReason !== undefined) return undefined;
    this.current = this.queued.shift();
    return this.current?.view;
  }

  private filled(seq: number, used: number, timestampUs: bigint): void {
    const b = this.current!;
    this.current = undefined;
    for (let at = 0; at < used; at += PAGE_SIZE) this.wroteGuest(b.gfn + at / PAGE_SIZE, 0, Math.min(PAGE_SIZE, used - at));
    if (this.emit(vifMessage({ type: VIF_CAM_FRAME, id: b.id, seq, used, timestampUs }))) {
      this.counters.bytes += used;
      return;
    }
    // No room to announce it: the frame is lost (a gap the guest will see); the buffer stays queued.
    this.queued.unshift(b);
    this.camera.metrics.dropped++;
    this.camera.metrics.delivered--;
  }
}
