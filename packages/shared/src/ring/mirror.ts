/**
 * Ring pages without shared memory: each side keeps its own copy of the page, and every local
 * write is mirrored to the peer's copy.
 *
 * Protocol. A side records what it wrote (entry byte ranges, index-word stores) through the
 * ring's PageSync hook. At the end of the current turn — or at once, before an event is sent —
 * it ships everything dirty in ONE message: for each page, the written bytes (read from the local
 * page at flush time), then the index stores in the order they happened. The receiver applies
 * bytes with plain writes and indices with Atomics.store, so a consumer that sees a new index
 * also sees the entries it covers: the same publish order the write barrier gives on shared memory.
 *
 * Why this preserves ring.h semantics. Each index word has one writer (req_prod and rsp_event the
 * frontend; req_event and rsp_prod the backend), and a slot is rewritten only after its previous
 * content was consumed — which needs that content to have arrived — so the two copies never
 * disagree about anything either side may act on. Notification suppression still works: event
 * indices are mirrored like any other index. An event sent after a push is ordered after the
 * push's page update on the same link, so the consumer never wakes to stale indices.
 *
 * The one thing shared memory gives that messages do not: the final check is a store followed by
 * a load on each side (consumer: store event, load prod; producer: store prod, load event), and
 * only sequential consistency guarantees one of them sees the other. Over a mirror both may miss —
 * the consumer arms its event index and sleeps while the producer, not yet seeing the new event
 * index, suppresses its notification. So the receiver of an event-index update re-checks on the
 * producer's behalf: if its own producer index has already reached the newly armed event index,
 * the peer went to sleep with work pending and gets a (late) notification.
 *
 * Only a *new* arm counts — a store that changes our copy of the event word — and a page wakes at
 * most once per message. A re-store of the value we hold (every empty final check re-arms
 * cons + 1) arms nothing new: we re-checked when that value arrived, and every push since saw it.
 * Counting re-stores is not harmless: a device that re-arms two rings per doorbell turned each
 * doorbell into two late wakes, doubling every round trip, and the backlog of doorbells queued
 * our next producer update behind it (a doorbell storm). Other extra notifications are harmless:
 * pending bits coalesce and the handler re-checks the ring.
 *
 * A late wake must travel behind the page updates of the writes it saw. The check reads the
 * receiver's copy of the producer index; when that copy is written by another thread with a
 * mirror of its own (an SV-IO core: its updates reach the link through the engine's thread), the
 * copy may be ahead of what was shipped. A notification sent straight from the link then
 * overtakes the update carrying the work: the peer wakes to nothing and re-arms the same value —
 * no new arm on either side, and not even shipped — so it sleeps with work pending until its
 * missed-event poll (SV-IO over ws lost most of its wake-ups this way, ~40× fewer operations). So
 * the late wake is handed to the writer, which flushes its log and then notifies (hwsim's SV-IO
 * engine: the core's `wake`). A writer that uses the link's own mirror needs nothing: the
 * link flushes before any event it sends.
 */
import type { PageSync } from './ring.js';

/** One page's changes: written byte ranges, then index stores in order. */
export interface PageUpdate {
  page: string;
  bytes: Array<[offset: number, data: Uint8Array]>;
  indices: Array<[word: number, value: number]>;
}

interface Dirty {
  page: Uint8Array;
  ranges: Array<[number, number]>;
  indices: Array<[number, number]>;
}

export interface MirrorCounters {
  flushes: number;
  updates: number;
  bytesShipped: number;
  indexStores: number;
}

/**
 * Records local writes to mirrored pages and ships them in batches. The log keeps the order of
 * writes across pages (a data page written back before the ring page that answers for it must
 * arrive first); consecutive writes to the same page coalesce into one entry.
 */
export class PageMirror {
  private readonly log: Array<Dirty & { id: string }> = [];
  private scheduled = false;
  readonly counters: MirrorCounters = { flushes: 0, updates: 0, bytesShipped: 0, indexStores: 0 };

  constructor(private readonly emit: (updates: PageUpdate[]) => void) {}

  private entry(id: string, page: Uint8Array): Dirty {
    const last = this.log[this.log.length - 1];
    if (last && last.id === id) return last;
    const d = { id, page, ranges: [] as Array<[number, number]>, indices: [] as Array<[number, number]> };
    this.log.push(d);
    this.schedule();
    return d;
  }

  /** The PageSync to hand to a ring built on `page`, known to the peer as `id`. */
  syncFor(id: string, page: Uint8Array): PageSync {
    return {
      wroteBytes: (offset, length) => this.wrote(id, page, offset, length),
      storedIndex: (word, value) => {
        this.entry(id, page).indices.push([word, value]);
      },
    };
  }

  /** Record that bytes [offset, offset+length) of `page` changed (a write-back, a copy). */
  wrote(id: string, page: Uint8Array, offset: number, length: number): void {
    const d = this.entry(id, page);
    // Index stores already logged for this entry must stay after the bytes they publish;
    // bytes written after an index store start a new entry so that order is kept.
    const target = d.indices.length > 0 ? this.pushNew(id, page) : d;
    const last = target.ranges[target.ranges.length - 1];
    // Consecutive slots coalesce into one range: a batch of pushes ships as one copy.
    if (last && last[0] + last[1] === offset) last[1] += length;
    else target.ranges.push([offset, length]);
  }

  private pushNew(id: string, page: Uint8Array): Dirty {
    const d = { id, page, ranges: [] as Array<[number, number]>, indices: [] as Array<[number, number]> };
    this.log.push(d);
    return d;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => this.flush());
  }

  /** Ship everything dirty now (call before sending an event that refers to it). */
  flush(): void {
    this.scheduled = false;
    if (this.log.length === 0) return;
    const updates: PageUpdate[] = this.log.map((d) => {
      const bytes: Array<[number, Uint8Array]> = d.ranges.map(([off, len]) => [off, d.page.slice(off, off + len)]);
      for (const [, b] of bytes) this.counters.bytesShipped += b.byteLength;
      this.counters.indexStores += d.indices.length;
      return { page: d.id, bytes, indices: d.indices };
    });
    this.log.length = 0;
    this.counters.flushes++;
    this.counters.updates += updates.length;
    this.emit(updates);
  }
}

export interface ApplyResult {
  applied: number;
  rejected: number;
  /** Pages whose peer newly armed an event index our producer index already reached: notify it (each page once). */
  lateWakes: string[];
}

/** Reject anything that is not a well-formed update for a page we know; never throw past this. */
export function applyPageUpdates(updates: unknown, resolve: (page: string) => Uint8Array | undefined): ApplyResult {
  let applied = 0;
  let rejected = 0;
  const lateWakes: string[] = [];
  if (!Array.isArray(updates)) return { applied, rejected: 1, lateWakes };
  for (const u of updates as unknown[]) {
    const upd = u as Partial<PageUpdate> | null;
    const page = upd && typeof upd.page === 'string' ? resolve(upd.page) : undefined;
    if (!page || !Array.isArray(upd!.bytes) || !Array.isArray(upd!.indices)) {
      rejected++;
      continue;
    }
    const words = new Int32Array(page.buffer, page.byteOffset, 16);
    let ok = true;
    let armed = false;
    for (const chunk of upd!.bytes as unknown[]) {
      const [off, data] = Array.isArray(chunk) ? (chunk as [unknown, unknown]) : [undefined, undefined];
      if (typeof off !== 'number' || !(data instanceof Uint8Array) || !Number.isInteger(off) || off < 0 || off + data.byteLength > page.byteLength) {
        ok = false;
        continue;
      }
      page.set(data, off);
    }
    for (const st of upd!.indices as unknown[]) {
      const [word, value] = Array.isArray(st) ? (st as [unknown, unknown]) : [undefined, undefined];
      if (typeof word !== 'number' || typeof value !== 'number' || !Number.isInteger(word) || word < 0 || word > 3) {
        ok = false;
        continue;
      }
      const prev = Atomics.exchange(words, word, value | 0);
      // Event words are 1 (req_event) and 3 (rsp_event); their producer index is the word before.
      // A re-store of the value we already had is not a new arm (see the header).
      if ((word === 1 || word === 3) && prev !== (value | 0)) {
        const prod = Atomics.load(words, word - 1) >>> 0;
        if (((prod - (value >>> 0)) >>> 0) < 0x80000000) armed = true;
      }
    }
    // One late wake per page per message, however many of its updates armed.
    if (armed && !lateWakes.includes(upd!.page as string)) lateWakes.push(upd!.page as string);
    if (ok) applied++;
    else rejected++;
  }
  return { applied, rejected, lateWakes };
}
