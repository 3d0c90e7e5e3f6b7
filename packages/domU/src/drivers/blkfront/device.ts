/**
 * blkfront — the guest's para-virtual block driver (Linux xen-blkfront's shape).
 *
 * Each request copies the caller's data through bounce frames that are granted to the backend
 * for the life of the request: read-only for WRITE (the backend only reads them), writable for
 * READ. Requests are tracked in a shadow table by id; a response whose id is not in flight is
 * ignored and counted, so no request completes twice. When the backend goes away and comes back
 * (its state leaves Connected), every request still in flight is re-granted and resubmitted on
 * the new ring, as blkif_recover does.
 *
 * Persistence (Device): quiesce() stops putting requests on the ring (new ones queue privately)
 * and stops collecting responses; save() writes the shadow table, the queue and the ring's private
 * indices (state.ts). BlkFront.restore builds a fresh frontend on the same kernel from that record:
 * the ring page, the bounce frames and the grants are still in guest memory, so requests the old
 * frontend put on the ring are answered on that same ring, each exactly once (the shadow is keyed
 * by id and forgets an id once answered).
 */
import {
  errorFields,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RSP_OKAY,
  DeviceError,
  FrontRing,
  StateRecordError,
  loadRecord,
  saveRecord,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  InvalidArgumentError,
  PAGE_SIZE,
  RogueRingError,
  SECTOR_SIZE,
  XenbusState,
  blkifProtocol,
  initSharedRing,
  inTransaction,
  type BlkifRequest,
  type BlkifResponse,
} from '@ringvisor/shared';
import type { GuestKernel } from '../../kernel/kernel.js';
import { XenbusFrontend } from '../../kernel/xenbus-frontend.js';
import type { BlockDevice } from '../../workloads/block-verifier.js';
import { newBlkfrontMetrics, type BlkfrontMetrics } from './metrics.js';
import { BlkMisbehaviour, type AttackOutcome, type BlkAttack } from './misbehave.js';
import { BLKFRONT_STATE, type BlkfrontSavedState } from './state.js';

const MAX_BYTES_PER_REQUEST = BLKIF_MAX_SEGMENTS_PER_REQUEST * PAGE_SIZE;

interface ShadowSegment {
  pfn: number;
  gref: number;
  sectors: number;
}

interface Shadow {
  /** The request's u64 id, exact (bigint): the shadow table's key. */
  id: bigint;
  operation: number;
  sector: number;
  segments: ShadowSegment[];
  /** Settles once, when the response is collected: READ data (in `readInto` or a fresh buffer), or undefined. */
  done: Promise<Uint8Array | undefined>;
  resolve: (data: Uint8Array | undefined) => void;
  reject: (e: Error) => void;
  /** For READ: where the data goes when it completes (absent after a restore: `done` carries it). */
  readInto?: Uint8Array;
}

/**
 * One request a frontend holds (on the ring or queued for it), as the layer above sees it.
 * `done` resolves exactly once when the backend answers: with the data for a READ, undefined
 * otherwise; it rejects with a DeviceError if the backend answers with an error.
 */
export interface BlkInFlight {
  /** The request's u64 id, in decimal. */
  readonly id: string;
  readonly operation: number;
  readonly sector: number;
  readonly sectors: number;
  readonly done: Promise<Uint8Array | undefined>;
}

function newShadow(id: bigint, operation: number, sector: number, segments: ShadowSegment[], readInto?: Uint8Array): Shadow {
  let resolve!: (data: Uint8Array | undefined) => void;
  let reject!: (e: Error) => void;
  const done = new Promise<Uint8Array | undefined>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Nobody may be waiting on a restored request; its failure is counted, not an unhandled rejection.
  done.catch(() => {});
  return { id, operation, sector, segments, done, resolve, reject, readInto };
}

export type BlkfrontState = 'init' | 'connecting' | 'connected' | 'recovering' | 'closing' | 'closed';

export class BlkFront implements BlockDevice, Device {
  readonly xb: XenbusFrontend;
  /** What this frontend counts; `metrics()` maps it onto ops/bytes/errors. */
  readonly counters: BlkfrontMetrics = newBlkfrontMetrics();
  readonly identity: DeviceIdentity;
  /** Set by quiesce(): nothing goes onto the ring and no response is collected until resume(). */
  private quiesced = false;
  state: BlkfrontState = 'init';
  sectors = 0;
  private ring?: FrontRing<BlkifRequest, BlkifResponse>;
  private ringPfn = -1;
  private ringRef = -1;
  private port = -1;
  private nextId = 1n;
  private readonly shadow = new Map<bigint, Shadow>();
  /** Requests waiting for ring space (or for reconnection). */
  private readonly waiting: Shadow[] = [];
  private readonly freeFrames: number[] = [];
  private unwatch?: () => Promise<void>;
  /** Resolved when nothing is in flight or waiting (an orderly disconnect waits for it). */
  private drainWaiters: Array<() => void> = [];

  constructor(
    readonly kernel: GuestKernel,
    readonly devid: number,
  ) {
    this.xb = new XenbusFrontend(kernel.store, kernel.domid, 'vbd', devid);
    this.identity = { kind: 'blk', mode: 'pv', side: 'guest', type: 'blkfront', devid };
  }

  /**
   * Every request this frontend holds — on the ring and queued — oldest id first. After a
   * restore this is how the layer above re-binds its waiters: the caller of read()/write() on
   * the saved frontend is gone (it lived with that instance), so the migration work takes
   * `restored.inFlight()` before `resume()`, and hands each `done` (READ data included) to
   * whoever re-issues the block operation's continuation on the destination. On a frontend that
   * was not restored, `done` settles alongside the promise read()/write() returned.
   */
  inFlight(): BlkInFlight[] {
    const all = [...this.shadow.values(), ...this.waiting].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return all.map((s) => ({ id: s.id.toString(), operation: s.operation, sector: s.sector, sectors: s.segments.reduce((a, g) => a + g.sectors, 0), done: s.done }));
  }

  /** The device's counters mapped onto ops/bytes/errors (what guest stats show for a pv vbd). */
  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.responses,
      bytes: (m.sectorsRead + m.sectorsWritten) * SECTOR_SIZE,
      errors: m.errors,
      detail: { ...m, bytesRead: m.sectorsRead * SECTOR_SIZE, bytesWritten: m.sectorsWritten * SECTOR_SIZE, inFlight: this.shadow.size, ...this.attackCounters() },
    };
  }

  attach(): Promise<void> {
    return this.connect();
  }

  stop(_reason: string): Promise<void> {
    return this.disconnect();
  }

  /** Attack outcomes as flat counters (attack.<kind>.<sent|answered|okay|errors|refused|revoked>) for stats. */
  attackCounters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, o] of this.misbehaviour?.outcomes ?? new Map<BlkAttack, AttackOutcome>()) for (const [f, v] of Object.entries(o) as [string, number][]) out[`attack.${k}.${f}`] = v;
    return out;
  }

  /** Published a corrupt index on purpose: publishes nothing until the backend is reset. */
  private wedged = false;

  /** Set once this frontend has been told to misbehave (fault plans); accounts for its attacks. */
  misbehaviour?: BlkMisbehaviour;

  /** Misbehave on purpose: `count` attacks of one kind on this frontend's own ring (misbehave.ts). */
  attack(kind: BlkAttack, count: number, seed: number): { sent: number; outcomes: Record<string, AttackOutcome> } {
    const ring = this.ring;
    if (this.state !== 'connected' || !ring) throw new DeviceError(`vbd ${this.devid} is not connected`);
    this.misbehaviour ??= new BlkMisbehaviour(seed);
    // A frontend that published a corrupt index publishes nothing sane after it: it stays
    // wedged until its backend is reset (recover() clears this).
    if (kind === 'corrupt-index') this.wedged = true;
    const sent = this.misbehaviour.run(
      {
        ring,
        grants: this.kernel.grants,
        backendId: this.xb.backendId,
        handle: this.devid,
        sectors: this.sectors,
        allocFrame: () => this.allocFrame(),
        freeFrame: (pfn) => this.freeFrames.push(pfn),
        kick: () => this.kick(),
        inFlightGrants: () => [...this.shadow.values()].flatMap((s) => s.segments.map((g) => g.gref)),
      },
      kind,
      count,
    );
    return { sent, outcomes: Object.fromEntries(this.misbehaviour.outcomes) };
  }

  /** The xenbus handshake; resolves when both ends are Connected. */
  async connect(): Promise<void> {
    this.state = 'connecting';
    await this.xb.probe();
    await this.handshake();
    this.unwatch = await this.xb.watchBackend((s) => this.onBackendState(s));
  }

  private async handshake(): Promise<void> {
    const { kernel, xb } = this;
    await xb.setState(XenbusState.Initialising);
    await xb.waitBackend((s) => s === XenbusState.InitWait);
    this.ringPfn = kernel.frames.alloc();
    const page = kernel.memory.page(this.ringPfn);
    page.fill(0);
    initSharedRing(page);
    this.ring = new FrontRing(page, blkifProtocol, kernel.ringSync(this.ringPfn, () => this.kick()));
    kernel.labelRing(this.ring, `vbd${this.devid}`, 'blk');
    this.ringRef = kernel.grants.grantAccess(xb.backendId, this.ringPfn, false);
    this.counters.grantOps++;
    this.port = await kernel.allocUnboundPort(xb.backendId);
    kernel.events.on(this.port, () => this.onEvent());
    await inTransaction(kernel.store, async (tx) => {
      await kernel.store.write(`${xb.dir}/ring-ref`, String(this.ringRef), tx);
      await kernel.store.write(`${xb.dir}/event-channel`, String(this.port), tx);
      await kernel.store.write(`${xb.dir}/protocol`, 'x86_64-abi', tx);
      await kernel.store.write(`${xb.dir}/state`, String(XenbusState.Initialised), tx);
    });
    await xb.waitBackend((s) => s === XenbusState.Connected);
    const sectors = Number(await xb.backendValue('sectors'));
    const sectorSize = Number(await xb.backendValue('sector-size'));
    if (!Number.isSafeInteger(sectors) || sectors <= 0 || sectorSize !== SECTOR_SIZE)
      throw new DeviceError(`vbd ${this.devid}: backend published sectors=${sectors} sector-size=${sectorSize}`);
    this.sectors = sectors;
    await xb.setState(XenbusState.Connected);
    this.state = 'connected';
    kernel.log.debug({ devid: this.devid, sectors }, 'blkfront connected');
    this.pump();
  }

  private onBackendState(s: XenbusState): void {
    if (this.state !== 'connected' || this.quiesced) return;
    if (s === XenbusState.Closing || s === XenbusState.Closed || s === XenbusState.InitWait || s === XenbusState.Initialising)
      void this.recover().catch((e) => this.kernel.log.error({ err: e, devid: this.devid }, 'blkfront recovery failed'));
  }

  /** blkif_recover: drain the old ring, release it, handshake again, resubmit what was in flight. */
  private async recover(): Promise<void> {
    this.state = 'recovering';
    this.wedged = false;
    this.counters.recoveries++;
    this.collectResponses();
    this.releaseRing();
    const replay = [...this.shadow.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const s of replay) {
      this.shadow.delete(s.id);
      this.endSegmentGrants(s);
    }
    this.waiting.unshift(...replay);
    this.counters.resubmitted += replay.length;
    await this.xb.setState(XenbusState.Closed);
    await this.xb.waitBackend((s) => s === XenbusState.InitWait, 60_000);
    await this.handshake();
  }

  private releaseRing(): void {
    if (this.port >= 0) {
      const port = this.port;
      this.port = -1;
      void this.kernel.closePort(port).catch(() => {});
    }
    if (this.ringRef >= 0) {
      if (!this.kernel.grants.endAccess(this.ringRef)) this.counters.leakedGrants++;
      this.ringRef = -1;
    }
    if (this.ringPfn >= 0) {
      this.kernel.frames.release(this.ringPfn);
      this.ringPfn = -1;
    }
    this.ring = undefined;
  }

  // ---- BlockDevice ---------------------------------------------------------------------------

  read(sector: number, buf: Uint8Array): Promise<void> {
    return this.transfer(BLKIF_OP_READ, sector, buf);
  }

  write(sector: number, buf: Uint8Array): Promise<void> {
    return this.transfer(BLKIF_OP_WRITE, sector, buf);
  }

  flush(): Promise<void> {
    return this.enqueue(BLKIF_OP_FLUSH_DISKCACHE, 0, []);
  }

  private async transfer(op: number, sector: number, buf: Uint8Array): Promise<void> {
    if (buf.byteLength === 0 || buf.byteLength % SECTOR_SIZE !== 0) throw new InvalidArgumentError('transfer length must be whole sectors');
    if (!Number.isSafeInteger(sector) || sector < 0 || sector + buf.byteLength / SECTOR_SIZE > this.sectors)
      throw new InvalidArgumentError(`sectors ${sector}+${buf.byteLength / SECTOR_SIZE} outside the ${this.sectors}-sector vbd`);
    const parts: Promise<void>[] = [];
    for (let off = 0; off < buf.byteLength; off += MAX_BYTES_PER_REQUEST) {
      const chunk = buf.subarray(off, Math.min(buf.byteLength, off + MAX_BYTES_PER_REQUEST));
      const segments: ShadowSegment[] = [];
      for (let p = 0; p < chunk.byteLength; p += PAGE_SIZE) {
        const len = Math.min(PAGE_SIZE, chunk.byteLength - p);
        const pfn = this.allocFrame();
        if (op === BLKIF_OP_WRITE) this.kernel.memory.page(pfn).set(chunk.subarray(p, p + len));
        segments.push({ pfn, gref: -1, sectors: len / SECTOR_SIZE });
      }
      parts.push(this.enqueue(op, sector + off / SECTOR_SIZE, segments, op === BLKIF_OP_READ ? chunk : undefined));
    }
    await Promise.all(parts);
  }

  private enqueue(operation: number, sector: number, segments: ShadowSegment[], readInto?: Uint8Array): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return Promise.reject(new DeviceError(`vbd ${this.devid} is closed`));
    const s = newShadow(this.nextId++, operation, sector, segments, readInto);
    this.waiting.push(s);
    this.pump();
    return s.done.then(() => undefined);
  }

  private allocFrame(): number {
    return this.freeFrames.pop() ?? this.kernel.frames.alloc();
  }

  /** Move waiting requests onto the ring while it has room, then publish and kick once. */
  private pump(): void {
    const ring = this.ring;
    if (this.state !== 'connected' || !ring || this.wedged || this.quiesced) return;
    let queued = 0;
    while (this.waiting.length > 0 && !ring.isFull()) {
      const s = this.waiting.shift()!;
      for (const seg of s.segments) {
        seg.gref = this.kernel.grants.grantAccess(this.xb.backendId, seg.pfn, s.operation === BLKIF_OP_WRITE);
        this.counters.grantOps++;
      }
      ring.putRequest({
        operation: s.operation,
        nrSegments: s.segments.length,
        handle: this.devid,
        id: s.id,
        sectorNumber: BigInt(s.sector),
        segments: s.segments.map((g) => ({ gref: g.gref, firstSect: 0, lastSect: g.sectors - 1 })),
      });
      this.shadow.set(s.id, s);
      queued++;
    }
    if (queued === 0) return;
    this.counters.requests += queued;
    if (ring.pushRequests()) this.kick();
    else this.counters.suppressed++;
  }

  private kick(): void {
    if (this.port < 0) return;
    if (this.kernel.notifyRemote(this.port)) this.counters.notifications++;
    else this.counters.lostNotifications++;
  }

  private onEvent(): void {
    this.counters.events++;
    if (this.state !== 'connected' || this.quiesced) return;
    this.collectResponses();
    this.pump();
  }

  /** Consume every response, then final-check so no response published meanwhile is missed. */
  private collectResponses(): void {
    const ring = this.ring;
    if (!ring) return;
    try {
      do {
        for (let i = 0; i < ring.size; i++) {
          const rsp = ring.takeResponse();
          if (!rsp) break;
          this.complete(rsp);
        }
      } while (ring.finalCheckForResponses());
      ring.traceConsumed();
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.counters.rogueResponses++;
      this.kernel.log.error({ devid: this.devid, err: errorFields(e) }, 'backend published impossible responses');
    }
  }

  private complete(rsp: BlkifResponse): void {
    if (this.misbehaviour?.takeResponse(rsp)) return;
    const s = this.shadow.get(rsp.id);
    if (!s || rsp.operation !== s.operation) {
      this.counters.unexpectedResponses++;
      return;
    }
    this.shadow.delete(rsp.id);
    this.endSegmentGrants(s);
    let data: Uint8Array | undefined;
    if (rsp.status === BLKIF_RSP_OKAY && s.operation === BLKIF_OP_READ) {
      data = s.readInto ?? new Uint8Array(s.segments.reduce((a, g) => a + g.sectors, 0) * SECTOR_SIZE);
      let off = 0;
      for (const seg of s.segments) {
        const len = seg.sectors * SECTOR_SIZE;
        data.set(this.kernel.memory.page(seg.pfn).subarray(0, len), off);
        off += len;
      }
    }
    for (const seg of s.segments) this.freeFrames.push(seg.pfn);
    this.counters.responses++;
    if (this.shadow.size === 0 && this.waiting.length === 0) for (const w of this.drainWaiters.splice(0)) w();
    if (rsp.status === BLKIF_RSP_OKAY) {
      if (s.operation === BLKIF_OP_READ) this.counters.sectorsRead += s.segments.reduce((a, g) => a + g.sectors, 0);
      if (s.operation === BLKIF_OP_WRITE) this.counters.sectorsWritten += s.segments.reduce((a, g) => a + g.sectors, 0);
      s.resolve(data);
    } else {
      this.counters.errors++;
      s.reject(new DeviceError(`vbd ${this.devid}: request ${rsp.id} (op ${s.operation}) failed with status ${rsp.status}`));
    }
  }

  private endSegmentGrants(s: Shadow): void {
    for (const seg of s.segments) {
      if (seg.gref < 0) continue;
      // A backend that still maps a segment after responding is buggy; keep the frame out of reuse.
      if (!this.kernel.grants.endAccess(seg.gref)) this.counters.leakedGrants++;
      this.counters.grantOps++;
      seg.gref = -1;
    }
  }

  // ---- persistence ---------------------------------------------------------------------------

  /**
   * Stop putting requests on the ring (new ones queue privately) and stop collecting responses.
   * A frontend has no backing I/O of its own to wait for: what it started is on the ring, in
   * guest memory, and stays there for the restored frontend (or for resume()).
   */
  async quiesce(): Promise<void> {
    if (this.state !== 'connected' || !this.ring) throw new DeviceError(`vbd ${this.devid}: only a connected frontend can be quiesced (state ${this.state})`);
    if (this.misbehaviour) throw new DeviceError(`vbd ${this.devid}: a frontend that sent attacks cannot be saved (its attack requests are not in the shadow)`);
    this.quiesced = true;
  }

  /** Carry on: collect what the backend answered meanwhile, then put what queued on the ring. */
  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    if (this.state !== 'connected') return;
    this.collectResponses();
    this.pump();
  }

  /** The record of a quiesced frontend (state.ts says what it holds and why). */
  save(): DeviceStateRecord {
    const ring = this.ring;
    if (!this.quiesced || !ring) throw new DeviceError(`vbd ${this.devid}: save() needs a quiesced, connected frontend`);
    const byId = (a: Shadow, b: Shadow): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const state: BlkfrontSavedState = {
      devid: this.devid,
      backendId: this.xb.backendId,
      backendDir: this.xb.backendDir,
      sectors: this.sectors,
      ring: { pfn: this.ringPfn, ref: this.ringRef, port: this.port, reqProdPvt: ring.reqProdPvt, rspCons: ring.rspCons },
      nextId: this.nextId.toString(),
      inFlight: [...this.shadow.values()].sort(byId).map((r) => ({
        id: r.id.toString(),
        operation: r.operation as 0 | 1 | 3,
        sector: r.sector,
        segments: r.segments.map((g) => ({ pfn: g.pfn, gref: g.gref, sectors: g.sectors })),
      })),
      queued: this.waiting.map((r) => ({ id: r.id.toString(), operation: r.operation as 0 | 1 | 3, sector: r.sector, segments: r.segments.map((g) => ({ pfn: g.pfn, sectors: g.sectors })) })),
      freeFrames: [...this.freeFrames],
      counters: { ...this.counters },
    };
    return saveRecord(BLKFRONT_STATE, `dom${this.kernel.domid}/vbd/${this.devid}`, state);
  }

  /**
   * A fresh frontend from a saved record, on the same kernel (memory, grant table, event channels,
   * store) as the saved one. The record is checked completely before anything is built: a bad
   * one throws StateRecordError and nothing changed. The frontend comes back quiesced: take
   * `inFlight()` to re-bind waiters, then `resume()`. The saved instance must be dropped (see
   * `abandon()`): both would otherwise answer to the same port.
   */
  static async restore(args: ConstructorParameters<typeof BlkFront>, record: unknown): Promise<BlkFront> {
    const [kernel, devid] = args;
    const st = loadRecord(BLKFRONT_STATE, record);
    if (st.devid !== devid) throw new StateRecordError(`blkfront: the record is of vbd ${st.devid}, not ${devid}`);
    const frames = kernel.memory.frames;
    const pfns = [st.ring.pfn, ...st.freeFrames, ...st.inFlight.flatMap((r) => r.segments.map((g) => g.pfn)), ...st.queued.flatMap((r) => r.segments.map((g) => g.pfn))];
    const bad = pfns.find((p) => p < 1 || p >= frames);
    if (bad !== undefined) throw new StateRecordError(`blkfront: frame ${bad} is outside domain ${kernel.domid}'s ${frames} frames`);
    const f = new BlkFront(kernel, devid);
    f.xb.backendId = st.backendId;
    f.xb.backendDir = st.backendDir;
    f.sectors = st.sectors;
    f.ringPfn = st.ring.pfn;
    f.ringRef = st.ring.ref;
    f.port = st.ring.port;
    f.nextId = BigInt(st.nextId);
    for (const r of st.inFlight)
      f.shadow.set(BigInt(r.id), newShadow(BigInt(r.id), r.operation, r.sector, r.segments.map((g) => ({ pfn: g.pfn, gref: g.gref, sectors: g.sectors }))));
    for (const r of st.queued) f.waiting.push(newShadow(BigInt(r.id), r.operation, r.sector, r.segments.map((g) => ({ pfn: g.pfn, gref: -1, sectors: g.sectors }))));
    f.freeFrames.push(...st.freeFrames);
    for (const [k, v] of Object.entries(st.counters)) if (k in f.counters) f.counters[k as keyof BlkfrontMetrics] = v;
    const page = kernel.memory.page(f.ringPfn);
    f.ring = FrontRing.resume(page, blkifProtocol, st.ring, kernel.ringSync(f.ringPfn, () => f.kick()));
    kernel.labelRing(f.ring, `vbd${devid}`, 'blk');
    f.quiesced = true;
    f.state = 'connected';
    kernel.events.on(f.port, () => f.onEvent());
    f.unwatch = await f.xb.watchBackend((s) => f.onBackendState(s));
    return f;
  }

  /**
   * Drop a saved frontend without touching what its restored successor now owns (ring, grants,
   * frames, port): only its store watch goes, as it would with the runtime it lived in.
   */
  async abandon(): Promise<void> {
    this.quiesced = true;
    this.state = 'closed';
    await this.unwatch?.();
    this.unwatch = undefined;
  }

  /** Orderly close: wait for in-flight requests, then Closing → Closed with the backend. */
  async disconnect(timeoutMs = 10_000): Promise<void> {
    this.resume();
    if ((this.shadow.size > 0 || this.waiting.length > 0) && this.state === 'connected') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.drainWaiters.push(r)),
        new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    this.state = 'closing';
    await this.unwatch?.();
    for (const s of [...this.waiting.splice(0), ...this.shadow.values()]) s.reject(new DeviceError(`vbd ${this.devid} closed`));
    await this.xb.setState(XenbusState.Closing);
    await this.xb.waitBackend((s) => s === XenbusState.Closing || s === XenbusState.Closed, 10_000).catch(() => {});
    this.releaseRing();
    await this.xb.setState(XenbusState.Closed);
    this.state = 'closed';
  }
}
