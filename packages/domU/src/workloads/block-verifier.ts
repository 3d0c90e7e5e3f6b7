/**
 * Block write/verify workload, independent of any driver: it keeps `queueDepth`
 * operations in flight against a BlockDevice, writing self-describing blocks
 * (see block-format.ts) and reading them back to detect lost, torn, misdirected
 * and stale writes.
 *
 * Invariant that makes every read decidable: at most one operation per block is in
 * flight, and a block's expected generation changes only when its write is acked.
 */
import {
  BLOCK_SIZE,
  classifyBlock,
  decodeBlockHeader,
  encodeBlock,
  SECTORS_PER_BLOCK,
  type BlockClass,
} from './block-format.js';
import { InvalidArgumentError, BusyError, LatencySamples, SplitMix32 } from '@ringvisor/shared';

export interface BlockDevice {
  /** Capacity in 512-byte sectors. */
  readonly sectors: number;
  /** `buf.length` is a multiple of 512. */
  read(sector: number, buf: Uint8Array): Promise<void>;
  write(sector: number, buf: Uint8Array): Promise<void>;
  flush(): Promise<void>;
}

export interface BlockVerifierOptions {
  device: BlockDevice;
  /** Writer domid stamped into every block (u16). */
  writer: number;
  /** Number of 4 KiB blocks used, starting at block 0. */
  blocks: number;
  /** Operations kept in flight; effectively capped at `blocks` (one op per block at a time). */
  queueDepth: number;
  seed: number;
  /** Probability that a block operation is a write (default 0.5). */
  writeRatio?: number;
  /** Probability that an operation is a flush (default 0.02). */
  flushRatio?: number;
  /**
   * Whether the device starts all-zero (default true). On a reused disk (a vbd that survived an
   * earlier run) a block not yet written in this run holds old data, so it is not checked.
   */
  freshDevice?: boolean;
  /** Milliseconds clock for runFor's deadline (default performance.now). */
  now?: () => number;
  /**
   * The device may have a volatile write cache (a writeback disk): an acknowledged write is
   * durable only once a flush issued after its acknowledgement has completed. A power loss may
   * then drop or tear the writes no flush covered; the ledger judges those blocks as
   * indeterminate (`unflushed`), never as lost — and judges every flushed write strictly.
   */
  volatileCache?: boolean;
}

export interface BlockVerifierStats {
  writes: number;
  reads: number;
  flushes: number;
  bytesWritten: number;
  bytesRead: number;
  /** Blocks classified (runtime reads plus verifyAll). */
  checked: number;
  failures: number;
  /** Failures by classification, e.g. { stale: 1 }. */
  failureKinds: Record<string, number>;
  /** Device operations that rejected. */
  errors: number;
  /**
   * volatileCache: blocks read back older than their last acknowledged write, or torn, when no
   * completed flush covered that write — what a power loss may do; indeterminate, not failures.
   */
  unflushed: number;
  /** Latency of recent successful reads and writes (µs, the last LATENCY_SAMPLES), for percentiles. */
  latencyP50Us?: number;
  latencyP99Us?: number;
  latencyP999Us?: number;
}

/** Block operation latencies remembered for percentiles (a ring of the most recent ones). */
const LATENCY_SAMPLES = 8192;

export interface BlockFailure {
  block: number;
  kind: BlockClass;
  /** 0 when the block was expected to be unwritten. */
  expectedGeneration: number;
  phase: 'run' | 'verify';
}

export interface VerifySummary {
  checked: number;
  failures: number;
}

const FAILURE_LOG_LIMIT = 100;
/** Ops per worker between macrotask yields, so timers elsewhere still run against fast devices. */
const YIELD_EVERY = 64;

function yieldMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class BlockVerifier {
  readonly writer: number;
  readonly blocks: number;
  readonly queueDepth: number;
  /** First failures in detail, for diagnosis (bounded). */
  readonly failureLog: BlockFailure[] = [];
  private readonly device: BlockDevice;
  private readonly rng: SplitMix32;
  private readonly writeRatio: number;
  private readonly flushRatio: number;
  private readonly now: () => number;
  /** Last acknowledged generation per block; 0 = never written. */
  private readonly acked: number[];
  /** Highest generation ever issued per block, so generations stay monotonic across errors. */
  private readonly issued: number[];
  /** Set after a failed write: contents undefined until the next successful write. */
  private readonly unknown: Uint8Array;
  private readonly busy: Uint8Array;
  private active = false;
  private readonly freshDevice: boolean;
  private readonly latencies = new LatencySamples(LATENCY_SAMPLES);
  private readonly s: BlockVerifierStats = {
    writes: 0,
    reads: 0,
    flushes: 0,
    bytesWritten: 0,
    bytesRead: 0,
    checked: 0,
    failures: 0,
    failureKinds: {},
    errors: 0,
    unflushed: 0,
  };
  private readonly volatileCache: boolean;
  /** volatileCache: per block, the generation a completed flush made durable. */
  private readonly durable: number[];
  /**
   * volatileCache: per block, the last generation issued before the latest power loss. A flush
   * completing after the loss cannot vouch for those (the cache that held them is gone); only a
   * rewrite makes the block durable again.
   */
  private readonly floor: number[];

  constructor(opts: BlockVerifierOptions) {
    const { device, writer, blocks, queueDepth, seed } = opts;
    if (!Number.isInteger(writer) || writer < 0 || writer > 0xffff) throw new InvalidArgumentError(`invalid writer ${writer}`);
    if (!Number.isInteger(blocks) || blocks < 1) throw new InvalidArgumentError(`blocks must be >= 1, got ${blocks}`);
    if (blocks * SECTORS_PER_BLOCK > device.sectors) {
      throw new InvalidArgumentError(`${blocks} blocks need ${blocks * SECTORS_PER_BLOCK} sectors; device has ${device.sectors}`);
    }
    if (!Number.isInteger(queueDepth) || queueDepth < 1) throw new InvalidArgumentError(`queueDepth must be >= 1, got ${queueDepth}`);
    this.device = device;
    this.writer = writer;
    this.blocks = blocks;
    this.queueDepth = queueDepth;
    this.rng = new SplitMix32(seed);
    this.writeRatio = opts.writeRatio ?? 0.5;
    this.flushRatio = opts.flushRatio ?? 0.02;
    this.now = opts.now ?? (() => performance.now());
    this.freshDevice = opts.freshDevice ?? true;
    this.volatileCache = opts.volatileCache ?? false;
    this.durable = new Array<number>(blocks).fill(0);
    this.floor = new Array<number>(blocks).fill(0);
    this.acked = new Array<number>(blocks).fill(0);
    this.issued = new Array<number>(blocks).fill(0);
    this.unknown = new Uint8Array(blocks);
    this.busy = new Uint8Array(blocks);
  }

  /** Blocks whose contents are undefined now: their last write failed and none succeeded since. */
  get indeterminate(): number {
    let n = 0;
    for (let b = 0; b < this.blocks; b++) n += this.unknown[b];
    return n;
  }

  /** A snapshot of the counters. */
  get stats(): BlockVerifierStats {
    const base = { ...this.s, failureKinds: { ...this.s.failureKinds } };
    const p = this.latencies.percentiles();
    return p ? { ...base, latencyP50Us: p.p50, latencyP99Us: p.p99, latencyP999Us: p.p999 } : base;
  }

  /** Forget the latencies seen so far (a benchmark's measurement window starts). */
  resetLatency(): void {
    this.latencies.reset();
  }

  /** Last acknowledged generation of `block` (0 = never written or unknown after an error). */
  ackedGeneration(block: number): number {
    return this.unknown[block] ? 0 : this.acked[block];
  }

  /**
   * Runs the random read/write/flush mix until `ms` elapse or `shouldStop` returns
   * true (checked before each new operation), then waits for in-flight operations.
   * Call verifyAll() afterwards for a full read-back.
   */
  async runFor(ms: number, shouldStop?: () => boolean): Promise<void> {
    this.enter();
    try {
      const deadline = this.now() + ms;
      const stop = (): boolean => this.now() >= deadline || (shouldStop?.() ?? false);
      const workers = Math.min(this.queueDepth, this.blocks);
      await Promise.all(Array.from({ length: workers }, () => this.worker(stop)));
    } finally {
      this.active = false;
    }
  }

  /**
   * The drive lost power (the toolstack says so before the hardware comes back): every write
   * issued so far and not yet durable is in doubt for good — even an acknowledgement arriving
   * after this notice, or a flush completing after it, cannot make it durable; a rewrite can.
   */
  powerLost(): void {
    for (let b = 0; b < this.blocks; b++) this.floor[b] = this.issued[b];
  }

  /** Reads back every block with an acknowledged write and checks it. */
  async verifyAll(): Promise<VerifySummary> {
    this.enter();
    try {
      const before = { checked: this.s.checked, failures: this.s.failures };
      const todo: number[] = [];
      for (let b = 0; b < this.blocks; b++) if (this.acked[b] > 0 && !this.unknown[b]) todo.push(b);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < todo.length) await this.readAndCheck(todo[next++], 'verify');
      };
      await Promise.all(Array.from({ length: Math.min(this.queueDepth, todo.length) }, worker));
      return { checked: this.s.checked - before.checked, failures: this.s.failures - before.failures };
    } finally {
      this.active = false;
    }
  }

  private enter(): void {
    // Overlapping runs would break the one-op-per-block invariant bookkeeping.
    if (this.active) throw new BusyError('BlockVerifier: runFor/verifyAll already in progress');
    this.active = true;
  }

  private async worker(stop: () => boolean): Promise<void> {
    let sinceYield = 0;
    while (!stop()) {
      await this.step();
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await yieldMacrotask();
      }
    }
  }

  private async step(): Promise<void> {
    if (this.rng.next() < this.flushRatio) return this.flush();
    const b = this.pickIdleBlock();
    // Cannot happen while workers <= blocks; yield rather than spin if it ever does.
    if (b < 0) return yieldMacrotask();
    if (this.unknown[b] || this.rng.next() < this.writeRatio) return this.write(b);
    return this.readAndCheck(b, 'run');
  }

  private pickIdleBlock(): number {
    const start = this.rng.nextInt(this.blocks);
    for (let i = 0; i < this.blocks; i++) {
      const b = (start + i) % this.blocks;
      if (!this.busy[b]) return b;
    }
    return -1;
  }

  private async flush(): Promise<void> {
    // A flush covers the writes acknowledged before it was issued (not those completing during it).
    const covered = this.volatileCache ? this.acked.slice() : undefined;
    try {
      await this.device.flush();
      this.s.flushes++;
      if (covered) for (let b = 0; b < this.blocks; b++) if (covered[b] > this.durable[b] && covered[b] > this.floor[b]) this.durable[b] = covered[b];
    } catch {
      this.s.errors++;
    }
  }

  private async write(b: number): Promise<void> {
    const generation = this.issued[b] + 1;
    this.issued[b] = generation;
    const buf = new Uint8Array(BLOCK_SIZE);
    encodeBlock(buf, { lba: b, generation, writer: this.writer });
    this.busy[b] = 1;
    try {
      const t0 = performance.now();
      await this.device.write(b * SECTORS_PER_BLOCK, buf);
      this.latencies.record((performance.now() - t0) * 1000);
      this.acked[b] = generation;
      this.unknown[b] = 0;
      this.s.writes++;
      this.s.bytesWritten += BLOCK_SIZE;
    } catch {
      this.s.errors++;
      this.unknown[b] = 1;
    } finally {
      this.busy[b] = 0;
    }
  }

  /**
   * volatileCache: the block's last write was acknowledged but no completed flush covered it. A
   * power loss may leave it at any generation since the last durable one, or torn between them:
   * take the device's word for it (an indeterminate block), and judge what follows from there.
   */
  private lostUnflushed(b: number, buf: Uint8Array, kind: BlockClass): boolean {
    if (kind === 'torn') {
      this.unknown[b] = 1;
      this.s.unflushed++;
      return true;
    }
    const g = kind === 'zero' ? 0 : kind === 'stale' ? (decodeBlockHeader(buf)?.generation ?? -1) : -1;
    if (g < this.durable[b]) return false;
    this.acked[b] = g;
    this.s.unflushed++;
    return true;
  }

  private async readAndCheck(b: number, phase: BlockFailure['phase']): Promise<void> {
    const buf = new Uint8Array(BLOCK_SIZE);
    const expectedGeneration = this.acked[b];
    this.busy[b] = 1;
    try {
      const t0 = performance.now();
      await this.device.read(b * SECTORS_PER_BLOCK, buf);
      this.latencies.record((performance.now() - t0) * 1000);
    } catch {
      this.s.errors++;
      return;
    } finally {
      this.busy[b] = 0;
    }
    this.s.reads++;
    this.s.bytesRead += BLOCK_SIZE;
    if (this.unknown[b]) return; // contents legitimately undefined after a failed write
    if (expectedGeneration === 0 && !this.freshDevice) return; // old data from an earlier run
    const want: BlockClass = expectedGeneration > 0 ? 'ok' : 'zero';
    const kind = classifyBlock(buf, { lba: b, generation: expectedGeneration, writer: this.writer });
    this.s.checked++;
    if (kind === want) return;
    if (this.volatileCache && expectedGeneration > this.durable[b] && this.acked[b] === expectedGeneration && this.lostUnflushed(b, buf, kind)) return;
    this.s.failures++;
    this.s.failureKinds[kind] = (this.s.failureKinds[kind] ?? 0) + 1;
    if (this.failureLog.length < FAILURE_LOG_LIMIT) this.failureLog.push({ block: b, kind, expectedGeneration, phase });
  }
}
