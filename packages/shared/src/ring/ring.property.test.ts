/**
 * Model-based tests of the ring protocol: arbitrary interleavings of a frontend and a backend,
 * each of which may go to sleep after a final check, and is woken only by a push that returns
 * notify = true. Properties, in both directions:
 *   - no entry is lost, duplicated, reordered or torn;
 *   - no lost wake-up: a sleeping consumer never has published, unconsumed work (so whatever is
 *     published while it sleeps must come with a notification);
 *   - in-flight entries never exceed the ring size;
 *   - after the producers stop, driving only awake parties delivers everything.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BackRing, FrontRing, REQ_EVENT, REQ_PROD, RSP_EVENT, RSP_PROD, RingPage, initSharedRing, type EntryCodec, type RingProtocol } from './ring.js';
import { blkifProtocol, type BlkifRequest, type BlkifResponse } from './blkif.js';

const U32 = 2 ** 32;

interface Msg {
  id: number;
}

/**
 * A test codec whose slot size picks the ring size (1000 bytes → 4 slots, …). It writes the id
 * at both ends of the entry plus a kind tag, so a torn or misplaced entry is caught on decode.
 */
function tagged(size: number, tag: number): EntryCodec<Msg> {
  return {
    size,
    encode(v, o, m) {
      v.setUint32(o, m.id, true);
      v.setUint32(o + 4, tag, true);
      v.setUint32(o + size - 4, m.id ^ 0x5a5a5a5a, true);
    },
    decode(v, o) {
      const id = v.getUint32(o, true);
      const t = v.getUint32(o + 4, true);
      const check = v.getUint32(o + size - 4, true);
      if (t !== tag || (check ^ 0x5a5a5a5a) >>> 0 !== id) throw new Error(`torn or misplaced entry at ${o}: id ${id} tag ${t}`);
      return { id };
    },
  };
}

function taggedProtocol(slots: number): RingProtocol<Msg, Msg> {
  const size = Math.floor((4096 - 64) / slots);
  return { name: `tagged-${slots}`, request: tagged(size, 0x51), response: tagged(Math.max(8, size >> 1), 0x52) };
}

/** Adapter so one model drives both the tagged protocol and real blkif entries. */
interface Flavour<Req, Rsp> {
  protocol: RingProtocol<Req, Rsp>;
  req(id: number): Req;
  reqId(r: Req): number;
  rsp(r: Req): Rsp;
  rspId(r: Rsp): number;
  check(r: Rsp, id: number): void;
}

const taggedFlavour = (slots: number): Flavour<Msg, Msg> => ({
  protocol: taggedProtocol(slots),
  req: (id) => ({ id }),
  reqId: (r) => r.id,
  rsp: (r) => ({ id: r.id }),
  rspId: (r) => r.id,
  check: () => {},
});

/** blkif ids far above 2^53 (as Mini-OS's pointers): any rounding would mix requests up. */
const HIGH_ID = 0xfedc_ba98_0000_0000n;
const blkFlavour: Flavour<BlkifRequest, BlkifResponse> = {
  protocol: blkifProtocol,
  req: (id) => ({ operation: id % 2, nrSegments: 1, handle: 7, id: HIGH_ID + BigInt(id), sectorNumber: BigInt(id) * 8n + 1n, segments: [{ gref: id & 0xffff, firstSect: 0, lastSect: 7 }] }),
  reqId: (r) => {
    const id = Number(r.id - HIGH_ID);
    if (r.sectorNumber !== BigInt(id) * 8n + 1n || r.segments[0].gref !== (id & 0xffff)) throw new Error(`corrupt request ${r.id}`);
    return id;
  },
  rsp: (r) => ({ id: r.id, operation: r.operation, status: (r.id - HIGH_ID) % 3n === 0n ? -1 : 0 }),
  rspId: (r) => Number(r.id - HIGH_ID),
  check: (r, id) => {
    if (r.operation !== id % 2 || r.status !== (id % 3 === 0 ? -1 : 0)) throw new Error(`corrupt response ${id}`);
  },
};

type Step =
  | { t: 'fput'; k: number } // frontend writes up to k requests (private)
  | { t: 'fpush' } // frontend publishes requests; a notify wakes the backend
  | { t: 'fconsume'; k: number } // frontend (if awake) takes up to k responses
  | { t: 'fsleep'; race: Step[] } // frontend final check; if nothing found it sleeps
  | { t: 'bconsume'; k: number } // backend (if awake) takes up to k requests
  | { t: 'brespond'; k: number } // backend answers up to k consumed requests (private)
  | { t: 'bpush' } // backend publishes responses; a notify wakes the frontend
  | { t: 'bsleep'; race: Step[] }; // backend final check; if nothing found it sleeps
// `race`: steps of the *other* party that run inside the final check, between its "ring is
// empty" test and the arming of the event index — the lost wake-up window.

const k = fc.integer({ min: 1, max: 40 });
const frontSteps = [
  fc.record({ t: fc.constant('fput' as const), k }),
  fc.constant({ t: 'fpush' as const }),
  fc.record({ t: fc.constant('fconsume' as const), k }),
];
const backSteps = [
  fc.record({ t: fc.constant('bconsume' as const), k }),
  fc.record({ t: fc.constant('brespond' as const), k }),
  fc.constant({ t: 'bpush' as const }),
];
const raceArb = (steps: fc.Arbitrary<Step>[]): fc.Arbitrary<Step[]> => fc.oneof({ weight: 2, arbitrary: fc.constant<Step[]>([]) }, { weight: 1, arbitrary: fc.array(fc.oneof(...steps), { minLength: 1, maxLength: 3 }) });
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  ...frontSteps,
  fc.record({ t: fc.constant('fsleep' as const), race: raceArb(backSteps) }),
  ...backSteps,
  fc.record({ t: fc.constant('bsleep' as const), race: raceArb(frontSteps) }),
);

const startArb = fc.oneof(
  fc.constant(0),
  fc.integer({ min: U32 - 8, max: U32 - 1 }), // wraps during most runs
  fc.nat({ max: U32 - 1 }),
);

/** The whole system: one page, two ends, and who is asleep. */
class Model<Req, Rsp> {
  readonly page = new Uint8Array(new SharedArrayBuffer(4096));
  readonly front: FrontRing<Req, Rsp>;
  readonly back: BackRing<Req, Rsp>;
  frontAsleep = false;
  backAsleep = false;
  nextId = 0;
  backSeen: number[] = [];
  pendingAtBack: Req[] = [];
  frontSeen: number[] = [];
  wakeups = { back: 0, front: 0 };
  private checkedBack = 0;
  private checkedFront = 0;

  constructor(
    readonly f: Flavour<Req, Rsp>,
    start: number,
  ) {
    initSharedRing(this.page);
    const p = new RingPage(this.page);
    p.store(REQ_PROD, start);
    p.store(RSP_PROD, start);
    p.store(REQ_EVENT, start + 1);
    p.store(RSP_EVENT, start + 1);
    this.front = FrontRing.attach(this.page, f.protocol);
    this.back = BackRing.attach(this.page, f.protocol);
  }

  get size(): number {
    return this.front.size;
  }

  apply(s: Step): void {
    const { front, back, f } = this;
    switch (s.t) {
      case 'fput':
        for (let i = 0; i < s.k && !front.isFull(); i++) front.putRequest(f.req(this.nextId++));
        break;
      case 'fpush':
        if (front.pushRequests() && this.backAsleep) {
          this.backAsleep = false;
          this.wakeups.back++;
        }
        break;
      case 'fconsume':
        if (this.frontAsleep) break;
        for (let i = 0; i < s.k; i++) {
          const r = front.takeResponse();
          if (r === undefined) break;
          const id = f.rspId(r);
          f.check(r, id);
          this.frontSeen.push(id);
        }
        break;
      case 'fsleep':
        if (!this.frontAsleep && !this.racing(front, 'unconsumedResponses', s.race, () => front.finalCheckForResponses())) this.frontAsleep = true;
        break;
      case 'bconsume':
        if (this.backAsleep) break;
        for (let i = 0; i < s.k; i++) {
          const r = back.takeRequest();
          if (r === undefined) break;
          this.backSeen.push(f.reqId(r));
          this.pendingAtBack.push(r);
        }
        break;
      case 'brespond':
        // Completions may arrive while the request loop sleeps (asynchronous I/O).
        for (let i = 0; i < s.k && this.pendingAtBack.length; i++) back.putResponse(f.rsp(this.pendingAtBack.shift()!));
        break;
      case 'bpush':
        if (back.pushResponses() && this.frontAsleep) {
          this.frontAsleep = false;
          this.wakeups.front++;
        }
        break;
      case 'bsleep':
        if (!this.backAsleep && !this.racing(back, 'unconsumedRequests', s.race, () => back.finalCheckForRequests())) this.backAsleep = true;
        break;
    }
  }

  /** Run `check` with `race` executed right after its first emptiness test. */
  private racing<E extends object>(end: E, method: keyof E & string, race: Step[], check: () => boolean): boolean {
    if (race.length === 0) return check();
    const real = (end as Record<string, () => number>)[method];
    let first = true;
    (end as Record<string, () => number>)[method] = () => {
      const n = real.call(end);
      if (first) {
        first = false;
        for (const r of race) this.apply(r);
      }
      return n;
    };
    try {
      return check();
    } finally {
      delete (end as Record<string, unknown>)[method]; // back to the prototype's method
    }
  }

  /** Invariants that must hold between any two steps (plain checks: this runs after every step). */
  check(): void {
    const p = new RingPage(this.page);
    const publishedReqs = (p.load(REQ_PROD) - this.back.reqCons) >>> 0;
    const publishedRsps = (p.load(RSP_PROD) - this.front.rspCons) >>> 0;
    const fail = (what: string): never => {
      throw new Error(`${what} (front asleep ${this.frontAsleep}, back asleep ${this.backAsleep}, reqs ${publishedReqs}, rsps ${publishedRsps})`);
    };
    // No lost wake-up: a sleeper has nothing published for it.
    if (this.backAsleep && publishedReqs !== 0) fail('lost wake-up: backend asleep with published requests');
    if (this.frontAsleep && publishedRsps !== 0) fail('lost wake-up: frontend asleep with published responses');
    // Bounded occupancy.
    if ((this.front.reqProdPvt - this.front.rspCons) >>> 0 > this.size) fail('frontend has more than a ring in flight');
    if ((this.back.reqCons - this.back.rspProdPvt) >>> 0 > this.size) fail('backend holds more than a ring of requests');
    if (publishedReqs > this.size) fail('more published requests than slots');
    if (this.back.rogue) fail('honest frontend judged rogue');
    // Exactly-once, in-order: each side has seen a prefix 0, 1, 2, … of what was sent to it.
    if (this.backSeen.length > this.nextId || this.frontSeen.length > this.backSeen.length) fail('more received than sent');
    for (let i = this.checkedBack; i < this.backSeen.length; i++) if (this.backSeen[i] !== i) fail(`backend saw id ${this.backSeen[i]} at position ${i}`);
    for (let i = this.checkedFront; i < this.frontSeen.length; i++) if (this.frontSeen[i] !== i) fail(`frontend saw id ${this.frontSeen[i]} at position ${i}`);
    this.checkedBack = this.backSeen.length;
    this.checkedFront = this.frontSeen.length;
  }

  /**
   * The producers stop producing; each party then runs only while awake, sleeping through the
   * final check when idle. Everything written must arrive: no deadlock from a lost wake-up.
   */
  drain(): void {
    this.apply({ t: 'fpush' });
    for (let round = 0; round < 4 * this.size + 10; round++) {
      const before = this.frontSeen.length + this.backSeen.length + this.pendingAtBack.length;
      this.apply({ t: 'bconsume', k: this.size });
      this.apply({ t: 'brespond', k: this.size });
      this.apply({ t: 'bpush' });
      this.apply({ t: 'bsleep', race: [] });
      this.check();
      this.apply({ t: 'fconsume', k: this.size });
      this.apply({ t: 'fsleep', race: [] });
      // A frontend with free slots resubmits nothing (it has stopped), but it still pushes any
      // requests it had written before stopping.
      this.apply({ t: 'fpush' });
      this.check();
      const after = this.frontSeen.length + this.backSeen.length + this.pendingAtBack.length;
      if (this.frontAsleep && this.backAsleep && after === before) break;
    }
    expect(this.backSeen.length).toBe(this.nextId);
    expect(this.frontSeen.length).toBe(this.nextId);
    expect(this.frontAsleep && this.backAsleep).toBe(true);
  }
}

function run<Req, Rsp>(f: Flavour<Req, Rsp>, start: number, steps: Step[]): Model<Req, Rsp> {
  const m = new Model(f, start);
  m.check();
  for (const s of steps) {
    m.apply(s);
    m.check();
  }
  m.drain();
  return m;
}

describe('ring protocol model', () => {
  it('tagged rings of 1..8 slots: no loss, duplication, reordering or lost wake-up', () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 4, 8), startArb, fc.array(stepArb, { maxLength: 300, size: 'max' }), (slots, start, steps) => {
        run(taggedFlavour(slots), start, steps);
      }),
      { numRuns: 1000 },
    );
  });

  it('blkif ring (32 slots): the same properties with real entries', () => {
    fc.assert(
      fc.property(startArb, fc.array(stepArb, { maxLength: 500, size: 'max' }), (start, steps) => {
        run(blkFlavour, start, steps);
      }),
      { numRuns: 500 },
    );
  });

  it('generated runs do exercise sleeping, wake-ups, full rings and the wrap', () => {
    // Guard against a vacuous model: the interesting states must actually occur.
    let sleptAndWoke = 0;
    let wrapped = 0;
    let filled = 0;
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 4), startArb, fc.array(stepArb, { minLength: 50, maxLength: 250, size: 'max' }), (slots, start, steps) => {
        const m = run(taggedFlavour(slots), start, steps);
        if (m.wakeups.back > 0 && m.wakeups.front > 0) sleptAndWoke++;
        if (start + m.nextId >= U32) wrapped++;
        if (m.front.stats.produced >= slots) filled++;
      }),
      { numRuns: 100, seed: 42 },
    );
    expect(sleptAndWoke).toBeGreaterThan(20);
    expect(wrapped).toBeGreaterThan(15);
    expect(filled).toBeGreaterThan(50);
  });
});
