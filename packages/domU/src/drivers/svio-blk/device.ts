/**
 * SvioBlkDriver — the guest's VIF driver for an SV-IO block interface (a partition of the disk).
 * READ/WRITE/FLUSH go out on the outgoing queue (at most 4 segments — 16 KiB — per message), DONE
 * comes in. Data moves through DMA buffers in the guest's own memory (one copy, counted); the
 * engine's core reads and writes the image straight from them. At most 32 requests are in flight
 * (the outgoing queue's size); the rest wait in a backlog.
 */
import {
  DeviceError,
  PAGE_SIZE,
  SECTOR_SIZE,
  VIF_BLK_MAX_SEGMENTS,
  VIF_DONE,
  VIF_FLUSH,
  VIF_OK,
  VIF_READ,
  VIF_WRITE,
  vifMessage,
  vifCodec,
  loadRecord,
  saveRecord,
  QUEUE_CONS,
  QUEUE_PROD,
  StateError,
  StateRecordError,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type FrameAllocator,
  type GuestMemory,
  type VifMessage,
} from '@ringvisor/shared';
import { VifDriver, drainIncoming, pushOutgoing, type OpenVif } from '../../kernel/svio.js';
import type { BlockDevice } from '../../workloads/block-verifier.js';
import { newVifBlkMetrics, type VifBlkMetrics } from './metrics.js';
import { svioBlkDriverLayout, type SvioBlkDriverState, type SvioBlkRequestState } from './state.js';

const MAX_BYTES = VIF_BLK_MAX_SEGMENTS * PAGE_SIZE;
const MAX_IN_FLIGHT = 32;

interface Pending {
  msg: VifMessage;
  frames: number[];
  into?: Uint8Array;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** A request a restored driver carries on: its completion (a read's data), handed out anew. */
export interface RestoredVifRequest {
  type: number;
  sector: bigint;
  completion: Promise<Uint8Array | undefined>;
}

function encodeMessage(m: VifMessage): Uint8Array {
  const bytes = new Uint8Array(vifCodec.size);
  vifCodec.encode(new DataView(bytes.buffer), 0, m);
  return bytes;
}

/**
 * Persistence (Device, state.ts): quiesce() stops the driver acting — answers wait on the
 * incoming queue, new requests in the backlog; save() writes the record; `SvioBlkDriver.restore`
 * builds a fresh driver on the same arguments, which attach() starts.
 */
export class SvioBlkDriver extends VifDriver implements BlockDevice, Device {
  readonly counters: VifBlkMetrics = newVifBlkMetrics();
  readonly sectors: number;
  private nextId = 1;
  private readonly inflight = new Map<number, Pending>();
  private readonly backlog: Pending[] = [];
  private restored: RestoredVifRequest[] = [];
  private stoppedReason: string | undefined;

  constructor(
    vif: OpenVif,
    private readonly memory: GuestMemory,
    private readonly frames: FrameAllocator,
  ) {
    super(vif);
    const sectors = vif.regs.sectors; // u64, exact
    // A byte offset must stay a safe number: no real disk comes near 2^53 sectors.
    if (sectors > Number.MAX_SAFE_INTEGER) throw new DeviceError(`block VIF ${vif.spec.vif} claims ${sectors} sectors`);
    this.sectors = Number(sectors);
  }

  /**
   * The block VIF was created again (a device reset, a hardware restart): every request the old
   * VIF had not answered is resubmitted on the new one, oldest first, with fresh ids — the old
   * device forgot them, and an answer from it can no longer arrive — so none completes twice.
   */
  reattach(vif: OpenVif): void {
    this.attachVif(vif);
    const pending = [...this.inflight.values()].sort((a, b) => a.msg.id - b.msg.id);
    this.inflight.clear();
    this.backlog.unshift(...pending);
    this.counters.resubmitted += pending.length;
    this.counters.recoveries++;
    this.pump();
  }

  get identity(): DeviceIdentity {
    return { kind: 'blk', mode: 'svio', side: 'guest', type: 'svio-blk-driver', devid: this.vif.spec.devid };
  }

  /** The requests a restored driver carries on, each with its completion (empty otherwise). */
  restoredRequests(): readonly RestoredVifRequest[] {
    return this.restored;
  }

  /** The VIF is open when the driver is built; a restored driver starts here. */
  async attach(): Promise<void> {
    if (!this.quiesced) return;
    this.resume();
    // The device may sleep on an event index set before the save: ring once for what is outstanding.
    if (this.inflight.size > 0) this.vif.doorbell();
  }

  async stop(reason: string): Promise<void> {
    this.quiesced = false;
    this.stoppedReason = reason;
    const all = [...this.inflight.values(), ...this.backlog.splice(0)];
    this.inflight.clear();
    for (const p of all) {
      for (const f of p.frames) this.frames.release(f);
      p.reject(new DeviceError(`VIF ${this.vif.spec.vif}: ${reason}`));
    }
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.responses,
      bytes: (m.sectorsRead + m.sectorsWritten) * SECTOR_SIZE,
      errors: m.errors + m.unexpected,
      detail: { ...m, bytesRead: m.sectorsRead * SECTOR_SIZE, bytesWritten: m.sectorsWritten * SECTOR_SIZE, inFlight: this.inFlight },
    };
  }

  /** Its copies are synchronous: nothing runs outside its state, it only stops acting. */
  async quiesce(): Promise<void> {
    this.quiesced = true;
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.interrupt();
    this.pump();
  }

  save(): DeviceStateRecord {
    if (!this.quiesced) throw new StateError(`VIF ${this.vif.spec.vif}: save() needs the driver quiesced first`);
    const request = (p: Pending): SvioBlkRequestState => ({ message: encodeMessage(p.msg), frames: [...p.frames], readBytes: p.into?.byteLength ?? 0 });
    const state: SvioBlkDriverState = {
      outProd: this.vif.out.page.load(QUEUE_PROD),
      inCons: this.vif.inq.page.load(QUEUE_CONS),
      nextId: this.nextId,
      inflight: [...this.inflight.values()].map(request),
      backlog: this.backlog.map(request),
      counters: { ...this.counters },
    };
    return saveRecord(svioBlkDriverLayout, `dom/svio-vbd/${this.vif.spec.devid}`, state);
  }

  /**
   * A fresh driver on `args` (the constructor's) carrying on the saved one's requests; attach()
   * starts it. Throws StateRecordError for a record that does not check or whose queues are not
   * these — before the VIF's interrupt is bound.
   */
  static restore(args: ConstructorParameters<typeof SvioBlkDriver>, record: unknown): SvioBlkDriver {
    const s = loadRecord(svioBlkDriverLayout, record);
    const [vif, memory] = args;
    const outProd = vif.out.page.load(QUEUE_PROD);
    const inCons = vif.inq.page.load(QUEUE_CONS);
    if (outProd !== s.outProd || inCons !== s.inCons)
      throw new StateRecordError(`VIF ${vif.spec.vif}: the record's queue indices (prod ${s.outProd}, cons ${s.inCons}) are not the queues' (${outProd}, ${inCons})`);
    for (const r of [...s.inflight, ...s.backlog]) for (const f of r.frames) if (!memory.hasFrame(f)) throw new StateRecordError(`VIF ${vif.spec.vif}: frame ${f} of the record is not the guest's`);
    const d = new SvioBlkDriver(...args);
    d.quiesced = true;
    d.nextId = s.nextId;
    Object.assign(d.counters, s.counters);
    const pending = (r: SvioBlkRequestState): Pending => {
      const msg = vifCodec.decode(new DataView(r.message.buffer, r.message.byteOffset, r.message.byteLength), 0);
      const into = r.readBytes > 0 ? new Uint8Array(r.readBytes) : undefined;
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      d.restored.push({ type: msg.type, sector: msg.type === VIF_FLUSH ? 0n : msg.sector, completion: done.then(() => into) });
      return { msg, frames: [...r.frames], ...(into ? { into } : {}), resolve, reject };
    };
    for (const r of s.inflight) {
      const p = pending(r);
      d.inflight.set(p.msg.id, p);
    }
    d.backlog.push(...s.backlog.map(pending));
    return d;
  }

  get inFlight(): number {
    return this.inflight.size + this.backlog.length;
  }

  read(sector: number, buf: Uint8Array): Promise<void> {
    return this.transfer(VIF_READ, sector, buf);
  }

  write(sector: number, buf: Uint8Array): Promise<void> {
    return this.transfer(VIF_WRITE, sector, buf);
  }

  flush(): Promise<void> {
    return this.submit({ msg: vifMessage({ type: VIF_FLUSH }), frames: [] });
  }

  private async transfer(type: number, sector: number, buf: Uint8Array): Promise<void> {
    if (buf.byteLength === 0 || buf.byteLength % SECTOR_SIZE !== 0) throw new DeviceError(`transfer of ${buf.byteLength} bytes: not whole sectors`);
    if (sector < 0 || sector + buf.byteLength / SECTOR_SIZE > this.sectors) throw new DeviceError(`sectors ${sector}+${buf.byteLength / SECTOR_SIZE} outside the ${this.sectors}-sector disk`);
    const parts: Array<Promise<void>> = [];
    for (let at = 0; at < buf.byteLength; at += MAX_BYTES) parts.push(this.transferOne(type, sector + at / SECTOR_SIZE, buf.subarray(at, Math.min(buf.byteLength, at + MAX_BYTES))));
    await Promise.all(parts);
  }

  private transferOne(type: number, sector: number, buf: Uint8Array): Promise<void> {
    const pfns: number[] = [];
    const segments = [];
    for (let at = 0; at < buf.byteLength; at += PAGE_SIZE) {
      const n = Math.min(PAGE_SIZE, buf.byteLength - at);
      const pfn = this.frames.alloc();
      pfns.push(pfn);
      if (type === VIF_WRITE) {
        this.memory.page(pfn).set(buf.subarray(at, at + n));
        this.counters.bytesCopied += n;
      }
      segments.push({ gfn: pfn, first: 0, last: n / SECTOR_SIZE - 1 });
    }
    return this.submit({ msg: vifMessage({ type, sector: BigInt(sector), segments }), frames: pfns, ...(type === VIF_READ ? { into: buf } : {}) });
  }

  private submit(p: Omit<Pending, 'resolve' | 'reject'>): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.stoppedReason !== undefined) {
        for (const f of p.frames) this.frames.release(f);
        reject(new DeviceError(`VIF ${this.vif.spec.vif}: ${this.stoppedReason}`));
        return;
      }
      this.backlog.push({ ...p, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    if (this.quiesced) return;
    const { out } = this.vif;
    let n = 0;
    while (this.backlog.length > 0 && this.inflight.size < MAX_IN_FLIGHT && out.free() > 0) {
      const p = this.backlog.shift()!;
      p.msg.id = this.nextId;
      // Ids stay below 2^31: the top half is a hostile driver's (kernel/svio-misbehave.ts).
      this.nextId = (this.nextId + 1) & 0x7fffffff || 1;
      this.inflight.set(p.msg.id, p);
      // The device reads a write's data when it takes the message: hand it over now — and again
      // on a resubmission, since a restarted hardware (ws) holds no copy of it.
      if (p.msg.type === VIF_WRITE) for (const g of p.msg.segments) if (g.last >= g.first) this.vif.toDevice(g.gfn, g.first * SECTOR_SIZE, (g.last - g.first + 1) * SECTOR_SIZE);
      out.put(p.msg);
      n++;
    }
    if (n === 0) return;
    this.counters.requests += n;
    pushOutgoing(this.vif, this.counters);
  }

  protected onInterrupt(): void {
    this.counters.interrupts++;
    drainIncoming(
      this.vif,
      (m) => {
        const p = m.type === VIF_DONE ? this.inflight.get(m.id) : undefined;
        if (!p) {
          this.counters.unexpected++;
          return;
        }
        this.inflight.delete(m.id);
        this.complete(p, m.status);
      },
      this.counters,
    );
    this.pump();
  }

  private complete(p: Pending, status: number): void {
    this.counters.responses++;
    if (status === VIF_OK) {
      if (p.msg.type === VIF_READ && p.into) {
        p.frames.forEach((pfn, i) => {
          const n = Math.min(PAGE_SIZE, p.into!.byteLength - i * PAGE_SIZE);
          p.into!.set(this.memory.page(pfn).subarray(0, n), i * PAGE_SIZE);
          this.counters.bytesCopied += n;
        });
        this.counters.reads++;
        this.counters.sectorsRead += p.into.byteLength / SECTOR_SIZE;
      } else if (p.msg.type === VIF_WRITE) {
        this.counters.writes++;
        this.counters.sectorsWritten += p.msg.segments.reduce((a, s) => a + s.last - s.first + 1, 0);
      } else this.counters.flushes++;
    } else this.counters.errors++;
    for (const f of p.frames) this.frames.release(f);
    if (status === VIF_OK) p.resolve();
    else p.reject(new DeviceError(`VIF ${this.vif.spec.vif}: request ${p.msg.id} failed with status ${status}`));
  }
}
