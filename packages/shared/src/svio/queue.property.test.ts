/**
 * Model-based tests of the VIF message queue: a producer and a consumer interleaved at random,
 * each of which goes to sleep after a final check that found nothing to do (empty; full) and is
 * woken only by the other side's push/release returning notify = true. Properties:
 *   - every message arrives once, in order, intact;
 *   - no lost wake-up: a sleeping consumer never has published messages waiting, and a sleeping
 *     producer never has room while it has messages to send;
 *   - after the random part, driving whoever is awake delivers everything.
 * Plus the untrusted-peer checks: impossible indices from either side are a RogueRingError.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RogueRingError } from '../errors.js';
import { RingPage, type EntryCodec } from '../ring/ring.js';
import { QUEUE_CONS, QUEUE_PROD, QUEUE_SLOTS, QueueConsumer, QueueProducer, initMessageQueue } from './queue.js';

interface Msg {
  id: number;
}
/** Writes the id at both ends of the 64-byte slot so a torn or stale message is caught. */
const codec: EntryCodec<Msg> = {
  size: 64,
  encode(v, o, m) {
    v.setUint32(o, m.id, true);
    v.setUint32(o + 60, (m.id ^ 0xa5a5a5a5) >>> 0, true);
  },
  decode(v, o) {
    const id = v.getUint32(o, true);
    if ((v.getUint32(o + 60, true) ^ 0xa5a5a5a5) >>> 0 !== id) throw new Error(`torn message at ${o}`);
    return { id };
  },
};

function queue(): { page: Uint8Array; p: QueueProducer<Msg>; c: QueueConsumer<Msg> } {
  const page = new Uint8Array(new SharedArrayBuffer(4096));
  initMessageQueue(page);
  return { page, p: new QueueProducer(page, codec), c: new QueueConsumer(page, codec) };
}

/**
 * `*Race` steps let the other side run between a side's drain (empty; full) and its final check.
 * (The narrower window inside the final check — between its store of the event index and its
 * re-read — cannot be split in a sequential model; there the sequential consistency of Atomics
 * is the argument, as for ring.h's final check.)
 */
type Step = 'produce' | 'consume' | 'produceOne' | 'consumeOne' | 'consumeRace' | 'produceRace';
const STEPS: Step[] = ['produce', 'consume', 'produceOne', 'consumeOne', 'consumeRace', 'produceRace'];

describe('VIF message queue', () => {
  it('delivers every message once, in order, and never loses a wake-up (random interleavings)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.array(fc.constantFrom<Step>(...STEPS), { maxLength: 400 }), (total, steps) => {
        const { page, p, c } = queue();
        const idx = new RingPage(page);
        let next = 0;
        const got: number[] = [];
        let consumerAsleep = false;
        let producerAsleep = false;
        const produce = (max: number, between?: () => void) => {
          if (producerAsleep || next >= total) return;
          let n = 0;
          while (next < total && n < max && p.put({ id: next })) { next++; n++; }
          if (p.push()) consumerAsleep = false;
          if (next < total && p.free() === 0) {
            between?.();
            if (!p.finalCheckForSpace()) producerAsleep = true;
          }
        };
        const consume = (max: number, between?: () => void) => {
          if (consumerAsleep) return;
          for (let i = 0; i < Math.min(max, QUEUE_SLOTS); i++) {
            const m = c.take();
            if (!m) break;
            got.push(m.id);
          }
          if (c.release()) producerAsleep = false;
          between?.();
          if (!c.finalCheck()) consumerAsleep = true;
        };
        const invariants = () => {
          const outstanding = (idx.load(QUEUE_PROD) - idx.load(QUEUE_CONS)) >>> 0;
          expect(outstanding).toBeLessThanOrEqual(QUEUE_SLOTS);
          // A sleeping consumer has nothing waiting; a sleeping producer has no room.
          if (consumerAsleep) expect(c.pending(), 'consumer asleep with messages waiting').toBe(0);
          if (producerAsleep) expect(p.free(), 'producer asleep with room').toBe(0);
        };
        for (const s of steps) {
          if (s === 'produce') produce(Infinity);
          else if (s === 'produceOne') produce(1);
          else if (s === 'consume') consume(Infinity);
          else if (s === 'consumeOne') consume(1);
          else if (s === 'consumeRace') consume(Infinity, () => produce(Infinity));
          else produce(Infinity, () => consume(Infinity));
          invariants();
        }
        // Drive whoever is awake until everything is through: if both slept, a wake-up was lost.
        for (let guard = 0; got.length < total && guard < 10_000; guard++) {
          expect(consumerAsleep && producerAsleep, 'both ends asleep with work left').toBe(false);
          produce(Infinity);
          consume(Infinity);
          invariants();
        }
        expect(got).toEqual(Array.from({ length: total }, (_, i) => i));
      }),
      { numRuns: 400 },
    );
  });

  it('free-running indices cross 2^32 without losing a message', () => {
    const { page, p, c } = queue();
    const idx = new RingPage(page);
    const start = 2 ** 32 - 5;
    idx.store(QUEUE_PROD, start);
    idx.store(QUEUE_CONS, start);
    const p2 = new QueueProducer(page, codec);
    const c2 = new QueueConsumer(page, codec);
    void p;
    void c;
    const got: number[] = [];
    for (let id = 0; id < 100; id++) {
      expect(p2.put({ id })).toBe(true);
      p2.push();
      got.push(c2.take()!.id);
      c2.release();
    }
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(idx.load(QUEUE_PROD)).toBe((start + 100) >>> 0);
  });

  it('a producer publishing more than the queue holds, or a consumer claiming more than was sent, is rogue', () => {
    const a = queue();
    new RingPage(a.page).store(QUEUE_PROD, QUEUE_SLOTS + 1);
    expect(() => a.c.take()).toThrow(RogueRingError);
    expect(() => a.c.finalCheck()).toThrow(RogueRingError);
    const b = queue();
    new RingPage(b.page).store(QUEUE_CONS, 7); // consumed what was never sent
    expect(() => b.p.free()).toThrow(RogueRingError);
    expect(() => b.p.put({ id: 1 })).toThrow(RogueRingError);
  });

  it('a full queue refuses put() and the producer is woken by the release that frees a slot', () => {
    const { p, c } = queue();
    for (let id = 0; id < QUEUE_SLOTS; id++) expect(p.put({ id })).toBe(true);
    expect(p.put({ id: 99 })).toBe(false);
    expect(p.push()).toBe(true); // the consumer was waiting for the first message
    expect(p.finalCheckForSpace()).toBe(false); // full: armed, asleep
    expect(c.take()).toEqual({ id: 0 });
    expect(c.release()).toBe(true); // the slot the producer waited for
    expect(c.take()).toEqual({ id: 1 });
    expect(c.release()).toBe(false); // it did not ask again
    expect(p.free()).toBe(2);
  });
});
