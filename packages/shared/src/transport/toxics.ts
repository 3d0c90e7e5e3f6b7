/**
 * Network faults on a MessageLink, toxiproxy-style, in user space: a ToxicLink wraps any link
 * (PortLink, WsLink, …) and adds latency with jitter, a bandwidth cap, partitions and resets —
 * what a misbehaving TCP path does to a connection, and nothing a TCP connection would not do.
 *
 * Why only these faults. The links it wraps carry ordered streams: over the ws transport the
 * domain link between dom0 and a guest ships ring-page mirror updates and events that are only
 * meaningful in order (transport/domain-link.ts). TCP never loses, duplicates or reorders a byte
 * it has delivered, so neither does a ToxicLink: every message is delivered exactly once, in the
 * order it was sent, or the link is closed (a reset). Loss, duplication, reordering and
 * corruption belong on the LAN, where frames are datagrams (hwsim/lan/faults.ts).
 *
 * Model, per direction (outgoing `send`, incoming `onMessage`), each a FIFO pipe:
 *   - bandwidth: a message occupies the pipe for size / bandwidth seconds after the previous one
 *     has left it (size by the caller's sizer; default: its JSON length, binary views by bytes);
 *   - latency: it then arrives `latencyMs + U[0, jitterMs)` later — but never before the message
 *     ahead of it (head-of-line blocking, as in TCP), so jitter never reorders;
 *   - partition: the direction's exit is cut; nothing comes out (messages already under way wait
 *     too) and what enters is counted as held. On heal the held messages go on through the pipe
 *     in order, with the toxics then in force. A partition that lasts longer than `resetAfterMs`
 *     closes the link, as a TCP retransmission timeout would.
 * Latency and bandwidth apply to each direction (a round trip costs 2 × latency). Toxics can be
 * replaced at any time; messages already under way keep the arrival time they were given.
 *
 * Cost when idle. A ToxicLink sits on every link so a fault schedule can reach it; with no toxics
 * and nothing queued, `send` and delivery are one flag test and a direct call — no timer, no
 * queue entry, no allocation.
 *
 * Determinism. Jitter comes from SplitMix32 streams seeded from `seed` (default 0) and the
 * direction, re-seeded whenever `set` is given a seed: the same seed, the same messages and the
 * same clock give the same arrival times.
 */
import { InvalidArgumentError } from '../errors.js';
import { SplitMix32, mixSeed } from '../util/prng.js';
import type { MessageLink, WireMessage } from './rpc.js';

export interface LinkToxics {
  /** Added one-way delay in ms, plus uniform jitter in [0, jitterMs). Order is preserved (a message never overtakes an earlier one). */
  latencyMs?: number;
  jitterMs?: number;
  /** Bytes per second (message size estimated by a caller-supplied sizer, default JSON length); messages queue, in order. */
  bandwidthBytesPerSec?: number;
  /**
   * Partition: 'send' holds outgoing, 'receive' holds incoming, 'both'. Held messages are delivered
   * in order when healed — unless the partition lasts longer than `resetAfterMs` (if set), in which
   * case the link is closed with reason "partitioned longer than N ms" (like a TCP timeout).
   */
  partition?: 'send' | 'receive' | 'both';
  resetAfterMs?: number;
  seed?: number;
}

export interface ToxicLinkCounters {
  /** Messages that went through the latency/bandwidth pipe instead of straight through. */
  delayed: number;
  /** Messages that entered a partitioned direction. */
  held: number;
  /** Held messages let go when their direction healed. */
  released: number;
  /** Resets: `reset()` calls and partitions that outlasted `resetAfterMs`. */
  resets: number;
  /** Messages still under way or held when the link closed (closing ends the stream). */
  discarded: number;
}

export interface ToxicLinkOptions {
  /** Message size in bytes, for the bandwidth toxic (default: jsonSize). */
  sizer?: (msg: unknown) => number;
  /** Clock in ms (default performance.now). */
  now?: () => number;
}

/**
 * A message's JSON length, with binary views (Uint8Array, Buffer, …) and ArrayBuffers counted at
 * their byte length, as msgpack would carry them. 0 for what JSON cannot encode (cycles).
 */
export function jsonSize(msg: unknown): number {
  let binary = 0;
  let s: string | undefined;
  try {
    s = JSON.stringify(msg, function (this: unknown, key: string, value: unknown): unknown {
      // `this[key]` is the value before toJSON (Buffer's toJSON would turn bytes into an array).
      const raw = (this as Record<string, unknown>)[key];
      if (ArrayBuffer.isView(raw) || raw instanceof ArrayBuffer) {
        binary += raw.byteLength;
        return 0;
      }
      return typeof value === 'bigint' ? value.toString() : value;
    });
  } catch {
    return 0;
  }
  return (s?.length ?? 0) + binary;
}

type Direction = 'send' | 'receive';

interface Entry<T> {
  msg: T;
  /** Arrival time; NaN while held by a partition. */
  due: number;
}

/** One direction of the link: a FIFO of messages under way, delivered at their arrival times. */
class Pipe<T> {
  /** True while the direction has no toxic and nothing queued: messages go straight through. */
  direct = true;
  delay = false;
  cut = false;
  rng: SplitMix32;
  private queue: Array<Entry<T> | undefined> = [];
  private head = 0;
  private busyUntil = -Infinity;
  private lastDue = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private pumping = false;
  private again = false;

  constructor(
    private readonly owner: ToxicLink,
    readonly dir: Direction,
    seed: number,
    private readonly deliver: (msg: T) => void,
  ) {
    this.rng = new SplitMix32(mixSeed(seed, dir === 'send' ? 1 : 2));
  }

  get length(): number {
    return this.queue.length - this.head;
  }

  reseed(seed: number): void {
    this.rng = new SplitMix32(mixSeed(seed, this.dir === 'send' ? 1 : 2));
  }

  /** A message entering the pipe (the caller has found `direct` false). */
  push(msg: T): void {
    const c = this.owner.counters;
    if (this.cut) {
      c.held++;
      this.queue.push({ msg, due: NaN });
    } else {
      c.delayed++;
      this.queue.push({ msg, due: this.schedule(msg) });
    }
    this.update();
    this.pump();
  }

  /** Toxics changed: held messages get arrival times if the direction is open again. */
  retune(): void {
    if (!this.cut) {
      const c = this.owner.counters;
      for (let i = this.head; i < this.queue.length; i++) {
        const e = this.queue[i];
        if (e !== undefined && Number.isNaN(e.due)) {
          e.due = this.schedule(e.msg);
          c.released++;
        }
      }
    }
    this.update();
    this.pump();
  }

  /** Drops everything (the link closed); returns how many messages were dropped. */
  discard(): number {
    const n = this.length;
    this.queue = [];
    this.head = 0;
    this.disarm();
    this.direct = false;
    return n;
  }

  private update(): void {
    this.direct = !this.delay && !this.cut && this.length === 0 && !this.owner.closed;
  }

  /** Arrival time of a message entering the open pipe now. */
  private schedule(msg: T): number {
    const t = this.owner.toxics;
    const now = this.owner.now();
    let leaves = now;
    const bw = t.bandwidthBytesPerSec;
    if (bw !== undefined) {
      const start = Math.max(now, this.busyUntil);
      this.busyUntil = start + (Math.max(0, this.owner.sizer(msg)) * 1000) / bw;
      leaves = this.busyUntil;
    }
    const jitter = t.jitterMs ? this.rng.next() * t.jitterMs : 0;
    const due = Math.max(leaves + (t.latencyMs ?? 0) + jitter, this.lastDue);
    this.lastDue = due;
    return due;
  }

  /** Delivers every message that has arrived, in order; arms the timer for the next one. */
  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    let failure: { err: unknown } | undefined;
    try {
      do {
        this.again = false;
        while (!this.cut && !this.owner.closed && this.head < this.queue.length) {
          const e = this.queue[this.head];
          if (e === undefined || Number.isNaN(e.due) || e.due > this.owner.now()) break;
          this.queue[this.head++] = undefined;
          if (this.head === this.queue.length) {
            this.queue = [];
            this.head = 0;
            this.update();
          } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
            this.queue = this.queue.slice(this.head);
            this.head = 0;
          }
          try {
            this.deliver(e.msg);
          } catch (err) {
            // Keep the stream moving; the first failure is rethrown once the batch is out.
            failure ??= { err };
          }
        }
      } while (this.again);
    } finally {
      this.pumping = false;
    }
    this.arm();
    if (failure !== undefined) throw failure.err;
  }

  private arm(): void {
    const e = this.queue[this.head];
    const at = this.cut || this.owner.closed || e === undefined || Number.isNaN(e.due) ? Infinity : e.due;
    if (at === this.timerAt) return;
    this.disarm();
    if (at === Infinity) return;
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Infinity;
        this.pump();
      },
      Math.max(0, Math.ceil(at - this.owner.now())),
    );
  }

  private disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }
}

function checkNonNegative(name: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new InvalidArgumentError(`ToxicLink: ${name} must be a finite number >= 0, got ${v}`);
}

/**
 * A MessageLink with toxics between its user and `inner`. Closing passes through (`close`,
 * `onClose` are the inner link's); `reset` and an outlasted partition close the inner link, whose
 * far end sees it as a dropped connection.
 */
export class ToxicLink implements MessageLink {
  readonly counters: ToxicLinkCounters = { delayed: 0, held: 0, released: 0, resets: 0, discarded: 0 };
  readonly sizer: (msg: unknown) => number;
  readonly now: () => number;

  #toxics: Readonly<LinkToxics> = {};
  #closed = false;
  #listening = false;
  #messageCbs: Array<(msg: unknown) => void> = [];
  readonly #out: Pipe<WireMessage>;
  readonly #in: Pipe<unknown>;
  #partitionSince: number | undefined;
  #resetTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly inner: MessageLink,
    opts: ToxicLinkOptions = {},
  ) {
    this.sizer = opts.sizer ?? jsonSize;
    this.now = opts.now ?? (() => performance.now());
    this.#out = new Pipe<WireMessage>(this, 'send', 0, (m) => inner.send(m));
    this.#in = new Pipe<unknown>(this, 'receive', 0, (m) => this.#dispatch(m));
    inner.onClose(() => this.#teardown());
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The toxics in force (a copy of the last `set`). */
  get toxics(): Readonly<LinkToxics> {
    return this.#toxics;
  }

  /** Messages under way or held, per direction. */
  get pending(): { send: number; receive: number } {
    return { send: this.#out.length, receive: this.#in.length };
  }

  send(msg: WireMessage): void {
    if (this.#out.direct) this.inner.send(msg);
    else if (!this.#closed) this.#out.push(msg);
  }

  onMessage(cb: (msg: unknown) => void): void {
    this.#messageCbs.push(cb);
    // Subscribe to the inner link on first use, not in the constructor: links such as WsLink
    // hold early messages until someone listens, and that someone must be our user.
    if (this.#listening) return;
    this.#listening = true;
    this.inner.onMessage((m) => {
      if (this.#in.direct) this.#dispatch(m);
      else if (!this.#closed) this.#in.push(m);
    });
  }

  onClose(cb: (reason: string) => void): void {
    this.inner.onClose(cb);
  }

  close(reason: string): void {
    this.#teardown();
    this.inner.close(reason);
  }

  /** Replaces the active toxics (`set({})` heals). Held messages of a healed direction go on, in order. */
  set(toxics: LinkToxics): void {
    checkNonNegative('latencyMs', toxics.latencyMs);
    checkNonNegative('jitterMs', toxics.jitterMs);
    checkNonNegative('resetAfterMs', toxics.resetAfterMs);
    const bw = toxics.bandwidthBytesPerSec;
    if (bw !== undefined && !(Number.isFinite(bw) && bw > 0))
      throw new InvalidArgumentError(`ToxicLink: bandwidthBytesPerSec must be a finite number > 0, got ${bw}`);
    const p = toxics.partition;
    if (p !== undefined && p !== 'send' && p !== 'receive' && p !== 'both')
      throw new InvalidArgumentError(`ToxicLink: partition must be 'send', 'receive' or 'both', got ${String(p)}`);
    if (toxics.seed !== undefined && !Number.isInteger(toxics.seed)) throw new InvalidArgumentError(`ToxicLink: seed must be an integer, got ${toxics.seed}`);
    if (this.#closed) return;

    this.#toxics = { ...toxics };
    if (toxics.seed !== undefined) {
      this.#out.reseed(toxics.seed);
      this.#in.reseed(toxics.seed);
    }
    const delay = !!toxics.latencyMs || !!toxics.jitterMs || bw !== undefined;
    this.#out.delay = this.#in.delay = delay;
    this.#out.cut = p === 'send' || p === 'both';
    this.#in.cut = p === 'receive' || p === 'both';

    if (p === undefined) this.#partitionSince = undefined;
    else this.#partitionSince ??= this.now();
    this.#armReset();

    // Deliveries can call back into us (set, close …); each pipe guards its own re-entry.
    let failure: { err: unknown } | undefined;
    for (const pipe of [this.#out, this.#in]) {
      try {
        pipe.retune();
      } catch (err) {
        failure ??= { err };
      }
    }
    if (failure !== undefined) throw failure.err;
  }

  /** Removes every toxic and releases held messages in order. */
  heal(): void {
    this.set({});
  }

  /** Closes the inner link now, like a TCP RST (toxiproxy's reset_peer). */
  reset(reason = 'connection reset (toxic)'): void {
    if (this.#closed) return;
    this.counters.resets++;
    this.close(reason);
  }

  #armReset(): void {
    if (this.#resetTimer !== undefined) clearTimeout(this.#resetTimer);
    this.#resetTimer = undefined;
    const after = this.toxics.resetAfterMs;
    const since = this.#partitionSince;
    if (after === undefined || since === undefined) return;
    this.#resetTimer = setTimeout(
      () => {
        this.#resetTimer = undefined;
        if (this.#partitionSince === since) this.reset(`partitioned longer than ${after} ms`);
      },
      Math.max(0, Math.ceil(since + after - this.now())),
    );
  }

  #dispatch(m: unknown): void {
    const cbs = this.#messageCbs;
    if (cbs.length === 1) cbs[0](m);
    else for (const cb of cbs) cb(m);
  }

  #teardown(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#resetTimer !== undefined) clearTimeout(this.#resetTimer);
    this.#resetTimer = undefined;
    this.counters.discarded += this.#out.discard() + this.#in.discard();
  }
}
