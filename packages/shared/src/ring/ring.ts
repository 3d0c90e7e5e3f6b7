/**
 * The shared I/O ring — Xen `public/io/ring.h` semantics and byte layout.
 *
 * One 4 KiB page, shared between a frontend (which produces requests and consumes responses)
 * and a backend (which consumes requests and produces responses):
 *
 *   offset  size  field       written by   meaning
 *   0       4     req_prod    frontend     requests published so far (free-running u32)
 *   4       4     req_event   backend      "notify me when req_prod passes this"
 *   8       4     rsp_prod    backend      responses published so far (free-running u32)
 *   12      4     rsp_event   frontend     "notify me when rsp_prod passes this"
 *   16      4     pvt pad     —            (netif/blkif private area, unused here)
 *   20      44    pad         —
 *   64      …     ring[n]     both         a union of request and response per slot
 *
 * n is the largest power of two such that 64 + n × max(sizeof req, sizeof rsp) ≤ 4096, and
 * slots are indexed by `idx & (n - 1)`. Indices never wrap explicitly: u32 arithmetic makes
 * `prod - cons` the number of outstanding entries even across 2^32.
 *
 * Private (unshared) state: front keeps `req_prod_pvt` (requests written but not yet published)
 * and `rsp_cons`; back keeps `rsp_prod_pvt` and `req_cons`. A response overwrites the slot of a
 * request already consumed, so the ring never holds more than n entries in total.
 *
 * Ordering. Index words are accessed with Atomics (sequentially consistent in the JS memory
 * model), entries with plain DataView accesses. A plain write before an Atomics.store is visible
 * to a thread whose Atomics.load observes that store — that is the write barrier (wmb) before
 * publishing `*_prod` in ring.h, and the read barrier (rmb) after reading it.
 *
 * Notification suppression ("push and check notify"): after publishing prod `new` (old value
 * `old`), the producer notifies only if the consumer's event index lies in (old, new], i.e.
 * `(new - event) < (new - old)` in u32 arithmetic. The consumer, before sleeping, performs the
 * *final check*: set `event = cons + 1`, then re-read prod; if work arrived in between it keeps
 * going. Without the re-check a push landing between "ring is empty" and "set event" would
 * never notify, and the consumer would sleep forever (the lost wake-up).
 *
 * Untrusted peers. A backend reads each request out of shared memory exactly once into a private
 * copy and validates only that copy (a second read could see different bytes: XSA-155), treats
 * `req_prod - rsp_prod_pvt > n` as a rogue frontend and stops the ring, and bounds each consume
 * loop by n.
 */
import { InvalidArgumentError, RingFullError, RogueRingError } from '../errors.js';
import { PAGE_SIZE } from '../memory/index.js';
import { ringConsumeChannel, ringPushChannel, traceNow, type RingLabel } from '../trace/index.js';

export const RING_HEADER_SIZE = 64;
export const REQ_PROD = 0;
export const REQ_EVENT = 1;
export const RSP_PROD = 2;
export const RSP_EVENT = 3;

/** Encoding of one message kind into a ring slot. `decode` must read each byte at most once. */
export interface EntryCodec<T> {
  readonly size: number;
  encode(view: DataView, offset: number, value: T): void;
  decode(view: DataView, offset: number): T;
}

export interface RingProtocol<Req, Rsp> {
  readonly name: string;
  readonly request: EntryCodec<Req>;
  readonly response: EntryCodec<Rsp>;
}

/** Number of slots on a page for a given entry size: the largest power of two that fits. */
export function ringSize(entrySize: number, pageSize = PAGE_SIZE): number {
  const fit = Math.floor((pageSize - RING_HEADER_SIZE) / entrySize);
  if (fit < 1) throw new InvalidArgumentError(`entry of ${entrySize} bytes does not fit a ring page`);
  return 2 ** Math.floor(Math.log2(fit));
}

export function slotSize<Req, Rsp>(protocol: RingProtocol<Req, Rsp>): number {
  return Math.max(protocol.request.size, protocol.response.size);
}

/**
 * Told of every local write to a ring page, so a transport without shared memory (ws) can mirror
 * it to the peer's copy: entry bytes first, index words after — the same publish order the
 * barriers enforce on shared memory. Index stores that leave the word unchanged are not reported
 * (RingPage.store). Absent (undefined) on real shared memory.
 */
export interface PageSync {
  wroteBytes(offset: number, length: number): void;
  storedIndex(word: number, value: number): void;
}

/** The shared page: index words (as Int32 for Atomics) and the slot area. */
export class RingPage {
  readonly indices: Int32Array;
  readonly view: DataView;
  readonly bytes: Uint8Array;

  constructor(
    page: Uint8Array,
    readonly sync?: PageSync,
  ) {
    if (page.byteLength !== PAGE_SIZE) throw new InvalidArgumentError('a ring page is exactly 4096 bytes');
    if (!(page.buffer instanceof SharedArrayBuffer)) throw new InvalidArgumentError('a ring page must be shared memory');
    if (page.byteOffset % 4 !== 0) throw new InvalidArgumentError('a ring page must be 4-byte aligned');
    this.bytes = page;
    this.indices = new Int32Array(page.buffer, page.byteOffset, RING_HEADER_SIZE / 4);
    this.view = new DataView(page.buffer, page.byteOffset, PAGE_SIZE);
  }

  load(word: number): number {
    return Atomics.load(this.indices, word) >>> 0;
  }
  /**
   * Store an index word. Across a mirror, a store that leaves the word unchanged is not shipped:
   * our copy already holds what the peer's copy holds for a word we write, so it carries nothing
   * — and a re-armed event index (every empty RING_FINAL_CHECK re-stores cons + 1) would
   * otherwise cost one message per pass. `always` ships it anyway (ring initialisation, which
   * must overwrite whatever the peer's copy holds).
   */
  store(word: number, value: number, always = false): void {
    const v = value | 0;
    if (!this.sync) {
      Atomics.store(this.indices, word, v);
      return;
    }
    if (Atomics.exchange(this.indices, word, v) !== v || always) this.sync.storedIndex(word, value >>> 0);
  }
}

/** SHARED_RING_INIT: both producers 0, both events 1 (the first push notifies). */
export function initSharedRing(page: Uint8Array, sync?: PageSync): void {
  const p = new RingPage(page, sync);
  p.store(REQ_PROD, 0, true);
  p.store(RSP_PROD, 0, true);
  p.store(REQ_EVENT, 1, true);
  p.store(RSP_EVENT, 1, true);
  page.fill(0, 16, RING_HEADER_SIZE);
  sync?.wroteBytes(16, RING_HEADER_SIZE - 16);
}

/** Counters every ring end keeps, so results can be explained. */
export interface RingEndStats {
  produced: number;
  consumed: number;
  notifies: number;
  suppressed: number;
}

function newStats(): RingEndStats {
  return { produced: 0, consumed: 0, notifies: 0, suppressed: 0 };
}

/** (new - event) < (new - old), all u32: was the consumer's event index passed by this push? */
export function needsNotify(newProd: number, oldProd: number, event: number): boolean {
  return ((newProd - event) >>> 0) < ((newProd - oldProd) >>> 0);
}

abstract class RingEnd<Req, Rsp> {
  readonly page: RingPage;
  readonly size: number;
  readonly slot: number;
  readonly stats: RingEndStats = newStats();
  /** Names this ring in trace events (set by whoever attaches it). Untraced while absent. */
  label?: RingLabel;
  /** Consumer index as of the last `traceConsumed` (entries consumed since are one batch). */
  protected consumeMark = 0;
  /**
   * Private copies of the last `size` entries this end consumed, by slot: what really crossed
   * (the shared slot may be reused the moment it is consumed). One array store per entry.
   */
  protected readonly consumedCopies: unknown[] = [];

  constructor(
    page: Uint8Array,
    readonly protocol: RingProtocol<Req, Rsp>,
    sync?: PageSync,
  ) {
    this.page = new RingPage(page, sync);
    this.slot = slotSize(protocol);
    this.size = ringSize(this.slot);
  }

  protected slotOffset(idx: number): number {
    return RING_HEADER_SIZE + (idx & (this.size - 1)) * this.slot;
  }

  protected publish(prodWord: number, eventWord: number, newProd: number): boolean {
    const old = this.page.load(prodWord);
    // Traced entries are decoded *before* the producer index moves: once it does, the other end
    // may consume a request and write its response into the same slot (requests and responses
    // share slots), and a decode after that would read a response as a request.
    const half = prodWord === REQ_PROD ? 'req' : 'rsp';
    const traced = ringPushChannel.hasSubscribers && this.label && newProd !== old ? this.decodeRange(half, old, newProd) : undefined;
    this.page.store(prodWord, newProd); // wmb before this store is implied by Atomics ordering
    const notify = needsNotify(newProd, old, this.page.load(eventWord));
    if (notify) this.stats.notifies++;
    else if (newProd !== old) this.stats.suppressed++;
    if (traced) ringPushChannel.publish({ kind: 'ring.push', t: traceNow(), ...this.label!, half, before: old, after: newProd, notify, entries: traced });
    return notify;
  }

  /** The consumer index of this end (req_cons for a backend, rsp_cons for a frontend). */
  protected abstract get consIndex(): number;

  /**
   * Publish the entries consumed since the last call as one `ring.consume` batch. Consumers call
   * it at the end of a pass; with nobody listening it only moves a mark.
   */
  traceConsumed(): void {
    const now = this.consIndex;
    const before = this.consumeMark;
    this.consumeMark = now;
    if (!ringConsumeChannel.hasSubscribers || !this.label || now === before) return;
    const half = this instanceof BackRing ? 'req' : 'rsp';
    ringConsumeChannel.publish({ kind: 'ring.consume', t: traceNow(), ...this.label, half, before, after: now, entries: () => this.consumedSince(before, now) });
  }

  /** The private copies of entries consumed in [from, to), at most the last `size`. */
  protected consumedSince(from: number, to: number): Array<{ index: number } & Record<string, unknown>> {
    const n = Math.min((to - from) >>> 0, this.size);
    const out: Array<{ index: number } & Record<string, unknown>> = [];
    for (let i = (to - n) >>> 0; i !== to; i = (i + 1) >>> 0) out.push({ index: i, ...(this.consumedCopies[i & (this.size - 1)] as object) });
    return out;
  }

  /**
   * Decode slots [from, to) as they are now, newest `size` at most — for observers only (a
   * second read of guest memory, never used to act on a request).
   */
  decodeRange(half: 'req' | 'rsp', from: number, to: number): Array<{ index: number } & Record<string, unknown>> {
    const n = Math.min((to - from) >>> 0, this.size);
    const codec = half === 'req' ? this.protocol.request : this.protocol.response;
    const out: Array<{ index: number } & Record<string, unknown>> = [];
    for (let i = (to - n) >>> 0; i !== to; i = (i + 1) >>> 0) out.push({ index: i, ...(codec.decode(this.page.view, this.slotOffset(i)) as object) });
    return out;
  }
}

/** The frontend's end: produces requests, consumes responses. */
export class FrontRing<Req, Rsp> extends RingEnd<Req, Rsp> {
  reqProdPvt = 0;
  rspCons = 0;

  protected get consIndex(): number {
    return this.rspCons;
  }

  /** FRONT_RING_ATTACH: resume from whatever the shared page holds (used after reconnects). */
  static attach<Req, Rsp>(page: Uint8Array, protocol: RingProtocol<Req, Rsp>, sync?: PageSync): FrontRing<Req, Rsp> {
    const r = new FrontRing(page, protocol, sync);
    r.reqProdPvt = r.page.load(REQ_PROD);
    r.rspCons = r.page.load(RSP_PROD);
    r.consumeMark = r.rspCons;
    return r;
  }

  /**
   * A restored frontend's end: the shared page is as the saved device left it, the private
   * indices come from its saved state (req_prod_pvt may be ahead of the published req_prod).
   */
  static resume<Req, Rsp>(page: Uint8Array, protocol: RingProtocol<Req, Rsp>, pvt: { reqProdPvt: number; rspCons: number }, sync?: PageSync): FrontRing<Req, Rsp> {
    const r = new FrontRing(page, protocol, sync);
    r.reqProdPvt = pvt.reqProdPvt >>> 0;
    r.rspCons = pvt.rspCons >>> 0;
    r.consumeMark = r.rspCons;
    return r;
  }

  /** Slots the frontend may still fill: responses not yet consumed also occupy slots. */
  freeRequests(): number {
    return this.size - ((this.reqProdPvt - this.rspCons) >>> 0);
  }

  isFull(): boolean {
    return this.freeRequests() === 0;
  }

  /** Write a request into the next private slot (not yet visible to the backend). */
  putRequest(req: Req): void {
    if (this.isFull()) throw new RingFullError(`${this.protocol.name} ring is full`);
    const off = this.slotOffset(this.reqProdPvt);
    this.protocol.request.encode(this.page.view, off, req);
    this.page.sync?.wroteBytes(off, this.protocol.request.size);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }

  /** RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish and say whether the backend must be kicked. */
  pushRequests(): boolean {
    const before = this.page.load(REQ_PROD);
    this.stats.produced += (this.reqProdPvt - before) >>> 0;
    return this.publish(REQ_PROD, REQ_EVENT, this.reqProdPvt);
  }

  /** Responses published and not yet consumed. */
  unconsumedResponses(): number {
    return (this.page.load(RSP_PROD) - this.rspCons) >>> 0;
  }

  /** Consume one response (copied out once). Returns undefined when none is published. */
  takeResponse(): Rsp | undefined {
    const prod = this.page.load(RSP_PROD);
    if (prod === this.rspCons) return undefined;
    // A backend that publishes more responses than requests outstanding is lying.
    if (((prod - this.rspCons) >>> 0) > ((this.reqProdPvt - this.rspCons) >>> 0))
      throw new RogueRingError(`${this.protocol.name}: rsp_prod ${prod} runs past requests ${this.reqProdPvt}`);
    const rsp = this.protocol.response.decode(this.page.view, this.slotOffset(this.rspCons));
    this.consumedCopies[this.rspCons & (this.size - 1)] = rsp;
    this.rspCons = (this.rspCons + 1) >>> 0;
    this.stats.consumed++;
    return rsp;
  }

  /** RING_FINAL_CHECK_FOR_RESPONSES: arm rsp_event, then re-check to close the lost wake-up race. */
  finalCheckForResponses(): boolean {
    if (this.unconsumedResponses() > 0) return true;
    this.page.store(RSP_EVENT, (this.rspCons + 1) >>> 0);
    return this.unconsumedResponses() > 0;
  }
}

/** The backend's end: consumes requests, produces responses. Never trusts the frontend. */
export class BackRing<Req, Rsp> extends RingEnd<Req, Rsp> {
  rspProdPvt = 0;
  reqCons = 0;
  rogue = false;
  /**
   * The backend's private copies of the last `size` requests it took and responses it wrote, by
   * slot: what really crossed the ring, for views (the shared slots may already hold the
   * frontend's next, unpublished requests). One array store per entry.
   */
  private readonly wroteResponses: Array<Rsp | undefined> = [];

  /** The latest entries that crossed this ring, oldest first, with their ring indices. */
  recent(half: 'req' | 'rsp'): Array<{ index: number; entry: Req | Rsp }> {
    const end = half === 'req' ? this.reqCons : this.rspProdPvt;
    const from = half === 'req' ? this.attachedAt.req : this.attachedAt.rsp;
    const n = Math.min((end - from) >>> 0, this.size);
    const store = (half === 'req' ? this.consumedCopies : this.wroteResponses) as Array<Req | Rsp | undefined>;
    const out: Array<{ index: number; entry: Req | Rsp }> = [];
    for (let i = (end - n) >>> 0; i !== end; i = (i + 1) >>> 0) {
      const e = store[i & (this.size - 1)];
      if (e !== undefined) out.push({ index: i, entry: e });
    }
    return out;
  }

  private attachedAt = { req: 0, rsp: 0 };

  protected get consIndex(): number {
    return this.reqCons;
  }

  static attach<Req, Rsp>(page: Uint8Array, protocol: RingProtocol<Req, Rsp>, sync?: PageSync): BackRing<Req, Rsp> {
    const r = new BackRing(page, protocol, sync);
    r.rspProdPvt = r.page.load(RSP_PROD);
    r.reqCons = r.rspProdPvt;
    r.consumeMark = r.reqCons;
    r.attachedAt = { req: r.reqCons, rsp: r.rspProdPvt };
    return r;
  }

  /**
   * A restored backend's end: private indices from its saved state (req_cons may be ahead of
   * rsp_prod_pvt by requests taken and not yet answered; rsp_prod_pvt ahead of the published
   * rsp_prod by responses written and not yet pushed).
   */
  static resume<Req, Rsp>(page: Uint8Array, protocol: RingProtocol<Req, Rsp>, pvt: { reqCons: number; rspProdPvt: number }, sync?: PageSync): BackRing<Req, Rsp> {
    const r = new BackRing(page, protocol, sync);
    r.reqCons = pvt.reqCons >>> 0;
    r.rspProdPvt = pvt.rspProdPvt >>> 0;
    r.consumeMark = r.reqCons;
    r.attachedAt = { req: r.reqCons, rsp: r.rspProdPvt };
    return r;
  }

  /**
   * Requests the backend may consume now. Throws RogueRingError (and marks the ring rogue) when
   * the frontend's req_prod claims more outstanding requests than the ring can hold.
   */
  unconsumedRequests(): number {
    if (this.rogue) return 0;
    const prod = this.page.load(REQ_PROD);
    if (((prod - this.rspProdPvt) >>> 0) > this.size) {
      this.rogue = true;
      throw new RogueRingError(
        `${this.protocol.name}: req_prod ${prod} is ${(prod - this.rspProdPvt) >>> 0} ahead of rsp_prod ${this.rspProdPvt} (ring of ${this.size})`,
      );
    }
    const reqs = (prod - this.reqCons) >>> 0;
    const room = this.size - ((this.reqCons - this.rspProdPvt) >>> 0);
    return Math.min(reqs, room);
  }

  /** Copy one request out of shared memory — the only read of those bytes — and advance req_cons. */
  takeRequest(): Req | undefined {
    if (this.unconsumedRequests() === 0) return undefined;
    const req = this.protocol.request.decode(this.page.view, this.slotOffset(this.reqCons));
    this.consumedCopies[this.reqCons & (this.size - 1)] = req;
    this.reqCons = (this.reqCons + 1) >>> 0;
    this.stats.consumed++;
    return req;
  }

  /** Responses queued privately may not outrun requests consumed. */
  putResponse(rsp: Rsp): void {
    if (this.rspProdPvt === this.reqCons) throw new RingFullError(`${this.protocol.name}: response without a consumed request`);
    const off = this.slotOffset(this.rspProdPvt);
    this.protocol.response.encode(this.page.view, off, rsp);
    this.page.sync?.wroteBytes(off, this.protocol.response.size);
    this.wroteResponses[this.rspProdPvt & (this.size - 1)] = rsp;
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY. */
  pushResponses(): boolean {
    const before = this.page.load(RSP_PROD);
    this.stats.produced += (this.rspProdPvt - before) >>> 0;
    return this.publish(RSP_PROD, RSP_EVENT, this.rspProdPvt);
  }

  /** RING_FINAL_CHECK_FOR_REQUESTS: arm req_event, then re-check. */
  finalCheckForRequests(): boolean {
    if (this.unconsumedRequests() > 0) return true;
    this.page.store(REQ_EVENT, (this.reqCons + 1) >>> 0);
    return this.unconsumedRequests() > 0;
  }
}
