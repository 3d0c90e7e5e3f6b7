/**
 * A VIF message queue (SV-IO, after Raj & Schwan, HPDC 2007): a virtual interface has exactly two
 * of these — outgoing (guest → device) and incoming (device → guest). Unlike a Xen ring, whose
 * responses travel back through the request slots, each queue carries messages one way only, so
 * the producer must also learn when slots free up. One 4 KiB page:
 *
 *   offset  size  field        written by   meaning
 *   0       4     prod         producer     messages published so far (free-running u32)
 *   4       4     prod_event   consumer     "notify me when prod passes this" (I am asleep, empty)
 *   8       4     cons         consumer     messages consumed so far (free-running u32)
 *   12      4     cons_event   producer     "notify me when cons passes this" (I am asleep, full)
 *   16      48    pad
 *   64      …     slot[32]     producer     64-byte messages, slot = index & 31
 *
 * Each index word has one writer, and the layout puts each event word after the index it
 * watches, as ring.h's does (so ring/mirror.ts mirrors a queue page exactly as a ring page: the
 * side that receives an event-word update re-checks on the other's behalf).
 *
 * Ordering, as in ring.ts: slots are written with plain stores, indices with Atomics; a consumer
 * that loads `prod` sees the slots it covers (the wmb before the publish), a producer that loads
 * `cons` may reuse the slots it covers (the consumer copied them out first).
 *
 * Notification suppression, both ways. The producer notifies after a push only if it crossed
 * `prod_event`; the consumer, after releasing slots, only if its new `cons` crossed `cons_event`.
 * Before sleeping each side makes the *final check*: the consumer sets `prod_event = cons + 1`
 * and re-reads `prod`; the producer, finding the queue full, sets `cons_event = cons + 1` and
 * re-reads `cons`. Without the re-check a push (or a release) landing between "empty" (or
 * "full") and the store would never notify, and that side would sleep forever.
 *
 * Untrusted peers: a consumer copies each message out once and validates only its copy, treats
 * `prod - cons > 32` as a rogue producer (RogueRingError: stop the queue), and bounds every
 * consume loop by the queue size; a producer treats `prod - cons > 32` (a consumer claiming to
 * have consumed what was never sent) the same way.
 */
import { InvalidArgumentError, RogueRingError } from '../errors.js';
import { RingPage, needsNotify, type EntryCodec, type PageSync } from '../ring/ring.js';

export const QUEUE_PROD = 0;
export const QUEUE_PROD_EVENT = 1;
export const QUEUE_CONS = 2;
export const QUEUE_CONS_EVENT = 3;
export const QUEUE_HEADER_SIZE = 64;
export const QUEUE_MSG_SIZE = 64;
export const QUEUE_SLOTS = 32;

/** Initialise a queue page: empty, the first push notifies, no producer waiting for space. */
export function initMessageQueue(page: Uint8Array, sync?: PageSync): void {
  const p = new RingPage(page, sync);
  p.store(QUEUE_PROD, 0);
  p.store(QUEUE_PROD_EVENT, 1);
  p.store(QUEUE_CONS, 0);
  p.store(QUEUE_CONS_EVENT, 0);
  page.fill(0, 16, QUEUE_HEADER_SIZE);
  sync?.wroteBytes(16, QUEUE_HEADER_SIZE - 16);
}

export interface QueueEndStats {
  messages: number;
  notifies: number;
  suppressed: number;
}

abstract class QueueEnd<M> {
  readonly page: RingPage;
  readonly size = QUEUE_SLOTS;
  readonly stats: QueueEndStats = { messages: 0, notifies: 0, suppressed: 0 };

  constructor(
    page: Uint8Array,
    protected readonly codec: EntryCodec<M>,
    sync?: PageSync,
  ) {
    if (codec.size > QUEUE_MSG_SIZE) throw new InvalidArgumentError(`a queue message is at most ${QUEUE_MSG_SIZE} bytes, the codec writes ${codec.size}`);
    this.page = new RingPage(page, sync);
  }

  protected slot(index: number): number {
    return QUEUE_HEADER_SIZE + (index & (QUEUE_SLOTS - 1)) * QUEUE_MSG_SIZE;
  }

  /** prod - cons as published; more than the queue holds means the other side is lying. */
  protected outstanding(prod: number, cons: number): number {
    const n = (prod - cons) >>> 0;
    if (n > QUEUE_SLOTS) throw new RogueRingError(`queue indices prod ${prod} cons ${cons}: ${n} messages outstanding in a ${QUEUE_SLOTS}-slot queue`);
    return n;
  }
}

/** The producing end (the guest of an outgoing queue, the device of an incoming one). */
export class QueueProducer<M> extends QueueEnd<M> {
  private prodPvt: number;

  constructor(page: Uint8Array, codec: EntryCodec<M>, sync?: PageSync) {
    super(page, codec, sync);
    this.prodPvt = this.page.load(QUEUE_PROD);
  }

  /** Slots free for put(), counting those written but not yet pushed. */
  free(): number {
    return QUEUE_SLOTS - this.outstanding(this.prodPvt, this.page.load(QUEUE_CONS));
  }

  /** Write a message into the next free slot (not yet visible: push() publishes). False if full. */
  put(m: M): boolean {
    if (this.free() === 0) return false;
    const off = this.slot(this.prodPvt);
    this.codec.encode(this.page.view, off, m);
    this.page.sync?.wroteBytes(off, this.codec.size);
    this.prodPvt = (this.prodPvt + 1) >>> 0;
    this.stats.messages++;
    return true;
  }

  /** Publish what put() wrote; true if the consumer asked to be notified (it is asleep). */
  push(): boolean {
    const old = this.page.load(QUEUE_PROD);
    const now = this.prodPvt;
    if (old === now) return false;
    this.page.store(QUEUE_PROD, now);
    const notify = needsNotify(now, old, this.page.load(QUEUE_PROD_EVENT));
    if (notify) this.stats.notifies++;
    else this.stats.suppressed++;
    return notify;
  }

  /**
   * The producer's final check when the queue is full: ask to be notified when the consumer
   * frees a slot, then look again. True if there is room now (go on); false: sleep until notified.
   */
  finalCheckForSpace(): boolean {
    if (this.free() > 0) return true;
    this.page.store(QUEUE_CONS_EVENT, (this.page.load(QUEUE_CONS) + 1) >>> 0);
    return this.free() > 0;
  }
}

/** The consuming end (the device of an outgoing queue, the guest of an incoming one). */
export class QueueConsumer<M> extends QueueEnd<M> {
  private consPvt: number;

  constructor(page: Uint8Array, codec: EntryCodec<M>, sync?: PageSync) {
    super(page, codec, sync);
    this.consPvt = this.page.load(QUEUE_CONS);
  }

  /** Messages published and not yet taken. Throws RogueRingError on impossible indices. */
  pending(): number {
    return this.outstanding(this.page.load(QUEUE_PROD), this.consPvt);
  }

  /** Copy the next message out of shared memory (once: validate the copy). Undefined if none. */
  take(): M | undefined {
    if (this.pending() === 0) return undefined;
    const m = this.codec.decode(this.page.view, this.slot(this.consPvt));
    this.consPvt = (this.consPvt + 1) >>> 0;
    this.stats.messages++;
    return m;
  }

  /** Give the taken slots back; true if the producer asked to be notified (it waits for space). */
  release(): boolean {
    const old = this.page.load(QUEUE_CONS);
    const now = this.consPvt;
    if (old === now) return false;
    this.page.store(QUEUE_CONS, now);
    const notify = needsNotify(now, old, this.page.load(QUEUE_CONS_EVENT));
    if (notify) this.stats.notifies++;
    else this.stats.suppressed++;
    return notify;
  }

  /**
   * The consumer's final check when the queue is empty: ask to be notified by the next push,
   * then look again. True if messages are waiting (go on); false: sleep until notified.
   */
  finalCheck(): boolean {
    if (this.pending() > 0) return true;
    this.page.store(QUEUE_PROD_EVENT, (this.consPvt + 1) >>> 0);
    return this.pending() > 0;
  }
}
