/**
 * Worker side of the ring benchmark (bench/ring.ts). One worker plays one role; the main thread
 * starts a pair, posts `go`, and after the measurement window raises the STOP word and rings
 * every doorbell. Each worker answers with `{ t: 'result', count, ms, ... }`.
 *
 * Roles:
 *   rt-front / rt-back   request→response round trips over a Xen-layout blkif ring
 *                        (FrontRing/BackRing), the frontend pushing up to `batch` requests per
 *                        push and keeping the ring full;
 *   ow-front / ow-back   one-way: the frontend pushes requests, the backend copies each out and
 *                        only acknowledges consumed slots (rsp_prod advanced, no response bodies)
 *                        so the frontend can reuse them: responses are flow control only;
 *   raw-prod / raw-cons  baseline: a raw SPSC ring on a SharedArrayBuffer, 64-byte slots, each
 *                        index on its own cache line, published after every entry (pure spinning);
 *   pm-send / pm-recv    baseline: MessagePort.postMessage of small objects, with a window of
 *                        acknowledgements so the queue cannot grow without bound.
 *
 * Ring consumers spin briefly (see Spinner) before the final check, then Atomics.wait on a
 * doorbell word; producers ring the doorbell only when the ring's push says notify. Both ring
 * ends publish in batches: the frontend at most `batch` requests per push, the backend its
 * responses every `batch` (8 in the benchmark) and at the end of each drain, so each side can
 * work on one part of the ring while the other works on another.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { BackRing, FrontRing, blkifProtocol, type BlkifRequest, type BlkifResponse } from '@ringvisor/shared';

/** Int32 indices of the control words, one per 64-byte line. */
export const CTRL = { STOP: 0, REQ_BELL: 16, RSP_BELL: 32, WORDS: 48 } as const;

export type Role = 'rt-front' | 'rt-back' | 'ow-front' | 'ow-back' | 'raw-prod' | 'raw-cons' | 'pm-send' | 'pm-recv';

export interface WorkerConfig {
  role: Role;
  ctrl: SharedArrayBuffer;
  /** The ring page (rt/ow) or the raw SPSC buffer (raw). */
  shared?: SharedArrayBuffer;
  /** Most entries published per push: requests (front) or responses (back). */
  batch?: number;
  /** raw: slots in the SPSC ring. */
  rawSlots?: number;
  /** pm: the peer's port. */
  port?: MessagePort;
}

export interface WorkerResult {
  t: 'result';
  role: Role;
  /** Entries (or round trips) completed in the window. */
  count: number;
  ms: number;
  /** Rate (per second) in each 50 ms slice of the window after the first (JIT warm-up). */
  slices: number[];
  errors: number;
  waits: number;
  /** Time spent with nothing to do: spinning and sleeping on the doorbell. */
  idleMs: number;
  /** Times the spinner found it had been preempted (an oversubscribed machine). */
  preemptions: number;
  notifies: number;
  suppressed: number;
}

const WAIT_MS = 50; // a bounded sleep: STOP is also checked after every wake
const PREEMPTED_MS = 3;
const POLITE_MS = 100;
const POLITE_SPIN_US = 5;

function kick(ctrl: Int32Array, bell: number): void {
  Atomics.add(ctrl, bell, 1);
  Atomics.notify(ctrl, bell, 1);
}

function stopped(ctrl: Int32Array): boolean {
  return Atomics.load(ctrl, CTRL.STOP) !== 0;
}

/**
 * Spin before sleeping, for a time budget rather than an iteration count (an iteration's cost
 * depends on cache-line contention). The budget must stay above the wake-up latency of
 * Atomics.wait/notify (~60 µs here): shorter, and the two threads fall into a convoy where each
 * sleeps while the other is waking. It grows when spinning found work late in the budget and
 * shrinks (not below 100 µs) when many whole budgets are wasted in a row (the peer is idle).
 *
 * Spinning only pays while both threads have a core. When the spinner notices it was preempted
 * (a gap of more than 3 ms between two clock reads: longer than a GC pause, as long as a time
 * slice), the machine is oversubscribed and the peer probably waits for this very core: for the
 * next 100 ms it barely spins and sleeps at once, handing the core over instead of burning it.
 */
class Spinner {
  budgetUs = 200;
  idleMs = 0;
  preemptions = 0;
  private wasted = 0;
  private politeUntil = 0;
  spin(ready: () => boolean): boolean {
    const start = performance.now();
    try {
      return this.spinFrom(start, ready);
    } finally {
      this.idleMs += performance.now() - start;
    }
  }
  /** Sleep on a doorbell word, counted as idle time. */
  wait(ctrl: Int32Array, bell: number, seq: number): void {
    const start = performance.now();
    Atomics.wait(ctrl, bell, seq, WAIT_MS);
    this.idleMs += performance.now() - start;
  }
  private spinFrom(start: number, ready: () => boolean): boolean {
    const polite = start < this.politeUntil;
    const limit = start + (polite ? POLITE_SPIN_US : this.budgetUs) / 1000;
    let prev = start;
    for (;;) {
      for (let i = 0; i < 32; i++) if (ready()) return this.found(performance.now() - start);
      const now = performance.now();
      if (now - prev > PREEMPTED_MS) {
        this.preemptions++;
        this.politeUntil = now + POLITE_MS;
        return false;
      }
      prev = now;
      if (now > limit) break;
    }
    if (!polite && ++this.wasted >= 64) {
      this.budgetUs = Math.max(this.budgetUs / 2, 100);
      this.wasted = 0;
    }
    return false;
  }
  private found(elapsedMs: number): true {
    this.wasted = 0;
    if (elapsedMs * 1000 > this.budgetUs / 2) this.budgetUs = Math.min(this.budgetUs * 2, 1000);
    return true;
  }
}

/**
 * Per-slice rates, so a window disturbed by other processes on a small machine can be summarised
 * by its median slice instead of its mean.
 */
export class Slicer {
  readonly slices: number[] = [];
  private t: number;
  private c = 0;
  private warm = false;
  constructor(
    private readonly sliceMs = 50,
    now = performance.now(),
  ) {
    this.t = now;
  }
  /** Call often (every batch) with the running count. */
  tick(count: number): void {
    const now = performance.now();
    if (now - this.t < this.sliceMs) return;
    if (this.warm) this.slices.push(((count - this.c) / (now - this.t)) * 1000);
    this.warm = true;
    this.t = now;
    this.c = count;
  }
}

function result(role: Role, count: number, t0: number, extra: Partial<WorkerResult> = {}): WorkerResult {
  return { t: 'result', role, count, ms: performance.now() - t0, slices: [], errors: 0, waits: 0, idleMs: 0, preemptions: 0, notifies: 0, suppressed: 0, ...extra };
}

// ---- Xen-layout blkif ring ------------------------------------------------------------------

function frontend(cfg: WorkerConfig, oneWay: boolean): WorkerResult {
  const ctrl = new Int32Array(cfg.ctrl);
  const front = new FrontRing<BlkifRequest, BlkifResponse>(new Uint8Array(cfg.shared!), blkifProtocol);
  const batch = Math.max(1, Math.min(cfg.batch ?? front.size, front.size));
  // One request object, rewritten per entry: the codec copies it into the slot.
  const req: BlkifRequest = { operation: 0, nrSegments: 1, handle: 0, id: 0n, sectorNumber: 0n, segments: [{ gref: 8, firstSect: 0, lastSect: 7 }] };
  const spinner = new Spinner();
  let next = 0;
  let done = 0;
  // The u64 ids, exact (bigint), counted beside `next`/`done`.
  let nextId = 0n;
  let doneId = 0n;
  let errors = 0;
  let waits = 0;
  const t0 = performance.now();
  const slicer = new Slicer();
  while (!stopped(ctrl)) {
    slicer.tick(oneWay ? next : done);
    // Keep the ring full, publishing every `batch` requests.
    let put = 0;
    while (!front.isFull()) {
      req.id = nextId;
      req.sectorNumber = nextId * 8n;
      front.putRequest(req);
      next++;
      nextId++;
      if (++put % batch === 0 && front.pushRequests()) kick(ctrl, CTRL.REQ_BELL);
    }
    if (put % batch !== 0 && front.pushRequests()) kick(ctrl, CTRL.REQ_BELL);

    let got = 0;
    if (oneWay) {
      // Flow control only: reclaim every slot the backend has acknowledged, reading no bodies.
      const n = front.unconsumedResponses();
      if (n > front.size - front.freeRequests()) errors++;
      front.rspCons = (front.rspCons + n) >>> 0;
      got = n;
    } else {
      for (let rsp = front.takeResponse(); rsp !== undefined; rsp = front.takeResponse()) {
        if (rsp.id !== doneId || rsp.status !== 0) errors++;
        done++;
        doneId++;
        got++;
      }
    }
    if (got > 0 || put > 0) continue;
    if (spinner.spin(() => front.unconsumedResponses() > 0)) continue;
    const seq = Atomics.load(ctrl, CTRL.RSP_BELL);
    if (front.finalCheckForResponses()) continue;
    waits++;
    spinner.wait(ctrl, CTRL.RSP_BELL, seq);
  }
  return result(oneWay ? 'ow-front' : 'rt-front', oneWay ? next : done, t0, {
    slices: slicer.slices,
    errors,
    waits,
    idleMs: spinner.idleMs,
    preemptions: spinner.preemptions,
    notifies: front.stats.notifies,
    suppressed: front.stats.suppressed,
  });
}

function backend(cfg: WorkerConfig, oneWay: boolean): WorkerResult {
  const ctrl = new Int32Array(cfg.ctrl);
  const back = new BackRing<BlkifRequest, BlkifResponse>(new Uint8Array(cfg.shared!), blkifProtocol);
  const rsp: BlkifResponse = { id: 0n, operation: 0, status: 0 };
  const rspBatch = Math.max(1, Math.min(cfg.batch ?? back.size, back.size));
  const spinner = new Spinner();
  let consumed = 0;
  let errors = 0;
  let waits = 0;
  const t0 = performance.now();
  const slicer = new Slicer();
  while (!stopped(ctrl)) {
    slicer.tick(consumed);
    let n = 0;
    for (let r = back.takeRequest(); r !== undefined; r = back.takeRequest()) {
      // Validate the private copy (as a real backend would) before answering.
      if (r.nrSegments !== 1 || r.sectorNumber !== r.id * 8n) errors++;
      if (oneWay) back.rspProdPvt = back.reqCons; // acknowledge the slot: flow control, no body
      else {
        rsp.id = r.id;
        rsp.operation = r.operation;
        back.putResponse(rsp);
      }
      // Publish responses in batches too, so the frontend can reuse slots while we keep going.
      if (++n % rspBatch === 0 && back.pushResponses()) kick(ctrl, CTRL.RSP_BELL);
    }
    if (n > 0) {
      consumed += n;
      if (back.pushResponses()) kick(ctrl, CTRL.RSP_BELL);
      continue;
    }
    if (spinner.spin(() => back.unconsumedRequests() > 0)) continue;
    const seq = Atomics.load(ctrl, CTRL.REQ_BELL);
    if (back.finalCheckForRequests()) continue;
    waits++;
    spinner.wait(ctrl, CTRL.REQ_BELL, seq);
  }
  return result(oneWay ? 'ow-back' : 'rt-back', consumed, t0, {
    slices: slicer.slices,
    errors,
    waits,
    idleMs: spinner.idleMs,
    preemptions: spinner.preemptions,
    notifies: back.stats.notifies,
    suppressed: back.stats.suppressed,
  });
}

// ---- raw SPSC baseline ----------------------------------------------------------------------

/**
 * Raw ring layout (Int32 words): head at 0, tail at 16 (separate cache lines), slots from 32, 16
 * words (64 bytes) each, of which 8 words (32 bytes, a one-segment blkif request's worth) are
 * written and read per entry.
 */
const RAW_HEAD = 0;
const RAW_TAIL = 16;
const RAW_SLOTS = 32;
const RAW_SLOT_WORDS = 16;
const RAW_PAYLOAD_WORDS = 8;

export function rawRingBytes(slots: number): number {
  return (RAW_SLOTS + slots * RAW_SLOT_WORDS) * 4;
}

/**
 * The raw baseline spins without a doorbell. On an oversubscribed machine (it was preempted while
 * spinning) it briefly sleeps on the index word instead, so the peer gets the core (see Spinner).
 */
class RawIdle {
  private spinning = false;
  private last = 0;
  private politeUntil = 0;
  /** Nothing to do: spin once more, or yield the core when the machine is oversubscribed. */
  idle(w: Int32Array, word: number, value: number): void {
    const now = performance.now();
    if (this.spinning && now - this.last > PREEMPTED_MS) this.politeUntil = now + POLITE_MS;
    this.spinning = true;
    this.last = now;
    if (now < this.politeUntil) {
      Atomics.wait(w, word, value, 0.05);
      this.last = performance.now();
    }
  }
  busy(): void {
    this.spinning = false;
  }
}

function rawProducer(cfg: WorkerConfig): WorkerResult {
  const ctrl = new Int32Array(cfg.ctrl);
  const w = new Int32Array(cfg.shared!);
  const slots = cfg.rawSlots!;
  const mask = slots - 1;
  let head = 0;
  let tail = 0;
  const idle = new RawIdle();
  const t0 = performance.now();
  outer: for (;;) {
    for (let k = 0; k < 1024; k++) {
      if (((head - tail) | 0) === slots) {
        tail = Atomics.load(w, RAW_TAIL);
        if (((head - tail) | 0) === slots) {
          if (stopped(ctrl)) break outer;
          idle.idle(w, RAW_TAIL, tail);
          continue;
        }
        idle.busy();
      }
      // 32 bytes of payload, as much as a one-segment blkif request carries.
      const s = RAW_SLOTS + (head & mask) * RAW_SLOT_WORDS;
      w[s] = head;
      for (let i = 1; i < RAW_PAYLOAD_WORDS; i++) w[s + i] = head + i;
      head = (head + 1) | 0;
      Atomics.store(w, RAW_HEAD, head); // publish every entry
    }
    if (stopped(ctrl)) break;
  }
  return result('raw-prod', head >>> 0, t0);
}

function rawConsumer(cfg: WorkerConfig): WorkerResult {
  const ctrl = new Int32Array(cfg.ctrl);
  const w = new Int32Array(cfg.shared!);
  const mask = cfg.rawSlots! - 1;
  let tail = 0;
  let errors = 0;
  let sink = 0;
  const idle = new RawIdle();
  const t0 = performance.now();
  const slicer = new Slicer();
  for (;;) {
    slicer.tick(tail >>> 0);
    const head = Atomics.load(w, RAW_HEAD);
    if (head === tail) {
      if (stopped(ctrl)) break;
      idle.idle(w, RAW_HEAD, head);
      continue;
    }
    idle.busy();
    while (tail !== head) {
      const s = RAW_SLOTS + (tail & mask) * RAW_SLOT_WORDS;
      if (w[s] !== tail) errors++;
      for (let i = 1; i < RAW_PAYLOAD_WORDS; i++) sink += w[s + i] - tail;
      tail = (tail + 1) | 0;
      Atomics.store(w, RAW_TAIL, tail); // publish every entry
    }
  }
  // Every payload word i of entry t holds t + i, so the sum over a whole entry is fixed.
  const expectedSink = (tail >>> 0) * ((RAW_PAYLOAD_WORDS * (RAW_PAYLOAD_WORDS - 1)) / 2);
  return result('raw-cons', tail >>> 0, t0, { slices: slicer.slices, errors: errors + (sink === expectedSink ? 0 : 1) });
}

// ---- postMessage baseline --------------------------------------------------------------------

const PM_WINDOW = 8192;
const PM_ACK_EVERY = 1024;

async function pmSender(cfg: WorkerConfig): Promise<WorkerResult> {
  const ctrl = new Int32Array(cfg.ctrl);
  const port = cfg.port!;
  let acked = 0;
  let wake: (() => void) | undefined;
  port.on('message', (m: { ack: number }) => {
    acked = m.ack;
    wake?.();
  });
  let sent = 0;
  const t0 = performance.now();
  while (!stopped(ctrl)) {
    while (sent - acked < PM_WINDOW) {
      port.postMessage({ id: sent, op: 0, sector: sent * 8 });
      sent++;
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, WAIT_MS);
    });
    wake = undefined;
  }
  port.close();
  return result('pm-send', sent, t0);
}

async function pmReceiver(cfg: WorkerConfig): Promise<WorkerResult> {
  const ctrl = new Int32Array(cfg.ctrl);
  const port = cfg.port!;
  let received = 0;
  let errors = 0;
  let first = 0;
  let last = 0;
  let slicer: Slicer | undefined;
  return new Promise((resolve) => {
    const finish = (): void => {
      clearInterval(timer);
      port.close();
      // The rate is measured from the first to the last message seen in the window.
      resolve({ ...result('pm-recv', Math.max(0, received - 1), 0), ms: last - first, slices: slicer?.slices ?? [], errors });
    };
    const timer = setInterval(() => {
      if (stopped(ctrl)) finish();
    }, 5);
    port.on('message', (m: { id: number; op: number; sector: number }) => {
      if (stopped(ctrl)) return;
      const now = performance.now();
      if (received === 0) {
        first = now;
        slicer = new Slicer(50, now);
      }
      last = now;
      if ((received & 255) === 0) slicer!.tick(received);
      if (m.id !== received || m.sector !== m.id * 8) errors++;
      received++;
      if (received % PM_ACK_EVERY === 0) port.postMessage({ ack: received });
    });
  });
}

// ---- entry ----------------------------------------------------------------------------------

async function run(cfg: WorkerConfig): Promise<WorkerResult> {
  switch (cfg.role) {
    case 'rt-front':
      return frontend(cfg, false);
    case 'rt-back':
      return backend(cfg, false);
    case 'ow-front':
      return frontend(cfg, true);
    case 'ow-back':
      return backend(cfg, true);
    case 'raw-prod':
      return rawProducer(cfg);
    case 'raw-cons':
      return rawConsumer(cfg);
    case 'pm-send':
      return pmSender(cfg);
    case 'pm-recv':
      return pmReceiver(cfg);
  }
}

const cfg = workerData as (WorkerConfig & { bench?: string }) | null;
if (parentPort && cfg?.bench === 'ring') {
  const parent = parentPort;
  parent.on('message', (m: { t: string }) => {
    if (m.t !== 'go') return;
    run(cfg).then(
      (r) => parent.postMessage(r),
      (e: unknown) => parent.postMessage({ t: 'error', message: e instanceof Error ? e.stack ?? e.message : String(e) }),
    );
  });
  parent.postMessage({ t: 'ready' });
}
