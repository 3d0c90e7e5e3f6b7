import { describe, expect, it } from 'vitest';
import { BLOCK_SIZE, decodeBlockHeader, encodeBlock, SECTOR_SIZE, SECTORS_PER_BLOCK } from './block-format.js';
import { BlockVerifier, type BlockDevice } from './block-verifier.js';
import { InvalidArgumentError, SplitMix32 } from '@ringvisor/shared';

const WRITER = 7;
const tick = () => new Promise<void>((r) => setImmediate(r));

interface WriteInfo {
  block: number;
  generation: number | undefined;
  data: Uint8Array;
}

/**
 * In-memory disk with random completion delays (so operations complete out of order).
 * Writes are applied at completion time. `mangle` lets a broken variant redirect,
 * truncate or drop a write: it returns the [sector, data] to apply, or null to drop.
 */
class MemDevice implements BlockDevice {
  readonly data: Uint8Array;
  readonly rng: SplitMix32;
  /** Blocks with an operation in flight; overlapping ops on one block are recorded. */
  readonly inFlight = new Map<number, number>();
  overlaps = 0;
  maxInFlight = 0;
  current = 0;
  readonly written = new Set<number>();
  mangle?: (w: WriteInfo) => [number, Uint8Array] | null;
  failRate = 0;

  constructor(readonly sectors: number, seed: number) {
    this.data = new Uint8Array(sectors * SECTOR_SIZE);
    this.rng = new SplitMix32(seed);
  }

  private async delay(): Promise<void> {
    for (let i = this.rng.nextInt(6); i > 0; i--) await tick();
  }

  private check(sector: number, buf: Uint8Array): void {
    if (buf.length % SECTOR_SIZE !== 0 || sector < 0 || sector + buf.length / SECTOR_SIZE > this.sectors) {
      throw new RangeError(`bad I/O ${sector}+${buf.length}`);
    }
  }

  private begin(sector: number): number {
    const block = Math.floor(sector / SECTORS_PER_BLOCK);
    if (this.inFlight.has(block)) this.overlaps++;
    this.inFlight.set(block, (this.inFlight.get(block) ?? 0) + 1);
    this.current++;
    this.maxInFlight = Math.max(this.maxInFlight, this.current);
    return block;
  }

  private end(block: number): void {
    const n = this.inFlight.get(block)! - 1;
    if (n === 0) this.inFlight.delete(block);
    else this.inFlight.set(block, n);
    this.current--;
  }

  async read(sector: number, buf: Uint8Array): Promise<void> {
    this.check(sector, buf);
    const block = this.begin(sector);
    try {
      await this.delay();
      if (this.rng.next() < this.failRate) throw new Error('EIO');
      buf.set(this.data.subarray(sector * SECTOR_SIZE, sector * SECTOR_SIZE + buf.length));
    } finally {
      this.end(block);
    }
  }

  async write(sector: number, buf: Uint8Array): Promise<void> {
    this.check(sector, buf);
    const block = this.begin(sector);
    const info: WriteInfo = { block, generation: decodeBlockHeader(buf)?.generation, data: buf.slice() };
    const plan = this.mangle ? this.mangle(info) : ([sector, info.data] as [number, Uint8Array]);
    try {
      await this.delay();
      if (this.rng.next() < this.failRate) {
        // A failed write may or may not have reached the disk, possibly partially.
        const r = this.rng.next();
        if (plan && r < 0.3) this.data.set(plan[1], plan[0] * SECTOR_SIZE);
        else if (plan && r < 0.6) this.data.set(plan[1].subarray(0, 3 * SECTOR_SIZE), plan[0] * SECTOR_SIZE);
        throw new Error('EIO');
      }
      if (plan) {
        this.data.set(plan[1], plan[0] * SECTOR_SIZE);
        this.written.add(Math.floor(plan[0] / SECTORS_PER_BLOCK));
      }
    } finally {
      this.end(block);
    }
  }

  async flush(): Promise<void> {
    await this.delay();
    if (this.rng.next() < this.failRate) throw new Error('EIO');
  }
}

const BLOCKS = 64;
const mk = (device: BlockDevice, extra: Partial<ConstructorParameters<typeof BlockVerifier>[0]> = {}) =>
  new BlockVerifier({ device, writer: WRITER, blocks: BLOCKS, queueDepth: 8, seed: 1234, ...extra });

describe('BlockVerifier', () => {
  it('finds no failures on a correct device and keeps the queue full', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK + 5, 99);
    const v = mk(dev);
    // Stopped by progress, not by the clock: a loaded machine only makes it take longer.
    await v.runFor(Infinity, () => v.stats.writes > 200 && v.stats.reads > 200 && v.stats.flushes > 0);
    const s = v.stats;
    expect(s.failures).toBe(0);
    expect(s.failureKinds).toEqual({});
    expect(s.errors).toBe(0);
    expect(s.writes).toBeGreaterThan(200);
    expect(s.reads).toBeGreaterThan(200);
    expect(s.flushes).toBeGreaterThan(0);
    expect(s.checked).toBe(s.reads);
    expect(s.bytesWritten).toBe(s.writes * BLOCK_SIZE);
    expect(s.bytesRead).toBe(s.reads * BLOCK_SIZE);
    expect(dev.overlaps).toBe(0); // never two ops on one block
    expect(dev.maxInFlight).toBe(8);
    expect(dev.current).toBe(0); // runFor drained everything

    const written = Array.from({ length: BLOCKS }, (_, b) => v.ackedGeneration(b)).filter((g) => g > 0).length;
    expect(written).toBeGreaterThan(BLOCKS / 2);
    const summary = await v.verifyAll();
    expect(summary).toEqual({ checked: written, failures: 0 });
    // The disk really holds what the verifier believes.
    for (let b = 0; b < BLOCKS; b++) {
      const h = decodeBlockHeader(dev.data.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE));
      expect(h?.generation ?? 0).toBe(v.ackedGeneration(b));
    }
  });

  it('is reproducible for a given seed and device timing', async () => {
    const run = async () => {
      const v = mk(new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 5));
      let ops = 0;
      await v.runFor(10_000, () => ++ops > 300);
      return Array.from({ length: BLOCKS }, (_, b) => v.ackedGeneration(b));
    };
    expect(await run()).toEqual(await run());
  });

  it('catches a silently dropped write as stale', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 3);
    let dropped: WriteInfo | undefined;
    dev.mangle = (w) => {
      if (dropped || (w.generation ?? 0) < 2) return [w.block * SECTORS_PER_BLOCK, w.data];
      dropped = w;
      return null;
    };
    const v = mk(dev);
    await v.runFor(10_000, () => dropped !== undefined);
    expect(dropped).toBeDefined();
    expect(v.stats.failures).toBe(0); // nothing read it back yet
    const summary = await v.verifyAll();
    expect(summary.failures).toBe(1);
    expect(v.stats.failureKinds).toEqual({ stale: 1 });
    expect(v.failureLog).toEqual([{ block: dropped!.block, kind: 'stale', expectedGeneration: dropped!.generation, phase: 'verify' }]);
  });

  it('catches a dropped first write as zero', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 4);
    let dropped: WriteInfo | undefined;
    dev.mangle = (w) => {
      if (dropped || dev.written.size < 10) return [w.block * SECTORS_PER_BLOCK, w.data];
      if (w.generation !== 1) return [w.block * SECTORS_PER_BLOCK, w.data];
      dropped = w;
      return null;
    };
    const v = mk(dev);
    await v.runFor(10_000, () => dropped !== undefined);
    await v.verifyAll();
    expect(v.stats.failureKinds).toEqual({ zero: 1 });
    expect(v.failureLog[0].block).toBe(dropped!.block);
  });

  it('catches a write to the wrong place as misdirected (and the intended block as stale)', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 5);
    let redirected: { from: number; to: number } | undefined;
    dev.mangle = (w) => {
      const target = [...dev.written].find((b) => b !== w.block && !dev.inFlight.has(b));
      if (redirected || (w.generation ?? 0) < 2 || target === undefined) return [w.block * SECTORS_PER_BLOCK, w.data];
      redirected = { from: w.block, to: target };
      return [target * SECTORS_PER_BLOCK, w.data];
    };
    const v = mk(dev);
    await v.runFor(10_000, () => redirected !== undefined);
    await v.verifyAll();
    expect(v.stats.failures).toBe(2);
    expect(v.stats.failureKinds).toEqual({ misdirected: 1, stale: 1 });
    const byKind = Object.fromEntries(v.failureLog.map((f) => [f.kind, f.block]));
    expect(byKind).toEqual({ misdirected: redirected!.to, stale: redirected!.from });
  });

  it('catches a partially applied write as torn', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 6);
    let torn: WriteInfo | undefined;
    dev.mangle = (w) => {
      if (torn || (w.generation ?? 0) < 3) return [w.block * SECTORS_PER_BLOCK, w.data];
      torn = w;
      return [w.block * SECTORS_PER_BLOCK, w.data.subarray(0, 5 * SECTOR_SIZE)];
    };
    const v = mk(dev);
    await v.runFor(10_000, () => torn !== undefined);
    await v.verifyAll();
    expect(v.stats.failureKinds).toEqual({ torn: 1 });
  });

  it('detects foreign data during the run when reading never-written blocks', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 8);
    encodeBlock(dev.data.subarray(0, BLOCK_SIZE), { lba: 0, generation: 1, writer: WRITER + 1 });
    const v = new BlockVerifier({ device: dev, writer: WRITER, blocks: 4, queueDepth: 2, seed: 1, writeRatio: 0 });
    let ops = 0;
    await v.runFor(10_000, () => ++ops > 100);
    const s = v.stats;
    expect(s.writes).toBe(0);
    expect(s.checked).toBe(s.reads);
    expect(s.failureKinds.foreign).toBeGreaterThan(0);
    expect(s.failures).toBe(s.failureKinds.foreign); // the 3 zeroed blocks are fine
    expect(v.failureLog.every((f) => f.block === 0 && f.phase === 'run' && f.expectedGeneration === 0)).toBe(true);
  });

  it('freshDevice: false skips never-written blocks holding an earlier run\'s data', async () => {
    const reused = () => {
      const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 12);
      for (let b = 0; b < BLOCKS; b++) encodeBlock(dev.data.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE), { lba: b, generation: 100, writer: WRITER });
      return dev;
    };
    const strict = mk(reused());
    let n = 0;
    await strict.runFor(10_000, () => ++n > 200);
    expect(strict.stats.failureKinds.unexpected).toBeGreaterThan(0); // default assumes a zeroed disk

    const lenient = mk(reused(), { freshDevice: false });
    n = 0;
    await lenient.runFor(10_000, () => ++n > 200);
    const summary = await lenient.verifyAll();
    expect(lenient.stats.failures).toBe(0);
    expect(summary.checked).toBeGreaterThan(0); // blocks written in this run are still checked
    expect(lenient.stats.reads - lenient.stats.checked).toBeGreaterThan(0); // reads of never-written blocks went unjudged
  });

  it('tolerates I/O errors: counted, and blocks with failed writes are not misjudged', async () => {
    const dev = new MemDevice(BLOCKS * SECTORS_PER_BLOCK, 10);
    dev.failRate = 0.1;
    const v = mk(dev, { blocks: 16 });
    await v.runFor(300);
    const s = v.stats;
    expect(s.errors).toBeGreaterThan(20);
    expect(s.failures).toBe(0);
    expect(s.writes).toBeGreaterThan(50);
    dev.failRate = 0;
    const summary = await v.verifyAll();
    expect(summary.failures).toBe(0);
    expect(dev.overlaps).toBe(0);
  });

  it('validates its options and refuses overlapping runs', async () => {
    const dev = new MemDevice(64, 1);
    expect(() => new BlockVerifier({ device: dev, writer: 1, blocks: 9, queueDepth: 1, seed: 0 })).toThrow(InvalidArgumentError);
    expect(() => new BlockVerifier({ device: dev, writer: 1, blocks: 8, queueDepth: 0, seed: 0 })).toThrow(InvalidArgumentError);
    const v = new BlockVerifier({ device: dev, writer: 1, blocks: 8, queueDepth: 4, seed: 0 });
    const run = v.runFor(20);
    await expect(v.verifyAll()).rejects.toThrow(/in progress/);
    await run;
    expect(v.stats.writes).toBeGreaterThan(0);
  });

  describe('with a volatile write cache (a writeback disk)', () => {
    /**
     * MemDevice's data is what the drive answers from (cache over image); `image` is what the
     * platters hold. A flush makes everything completed so far durable; a power loss keeps each
     * cached sector with probability p and drops the rest. `lyingFlush`: a broken drive that
     * acknowledges flushes without writing anything back. `failFlushes`: flushes fail (EIO), so
     * what is written meanwhile stays unflushed, and the ledger knows it.
     */
    class CachedDevice extends MemDevice {
      image: Uint8Array;
      lyingFlush = false;
      failFlushes = false;
      constructor(sectors: number, seed: number) {
        super(sectors, seed);
        this.image = this.data.slice();
      }
      override async flush(): Promise<void> {
        await super.flush();
        if (this.failFlushes) throw new Error('EIO');
        if (!this.lyingFlush) this.image = this.data.slice();
      }
      powerLoss(p: number): void {
        for (let sct = 0; sct < this.sectors; sct++) {
          const at = sct * SECTOR_SIZE;
          if (this.rng.next() >= p) this.data.set(this.image.subarray(at, at + SECTOR_SIZE), at);
        }
        this.image = this.data.slice();
      }
    }

    it('a power loss may drop or tear only writes no completed flush covered: reported as unflushed, never as lost', async () => {
      const dev = new CachedDevice(BLOCKS * SECTORS_PER_BLOCK, 5);
      const v = mk(dev, { volatileCache: true, flushRatio: 0.05 });
      await v.runFor(Infinity, () => v.stats.flushes > 5 && v.stats.writes > 150);
      // Writes no flush covers (the flushes fail meanwhile), then the power goes.
      dev.failFlushes = true;
      await v.runFor(Infinity, () => v.stats.writes > 250);
      dev.powerLoss(0.5);
      v.powerLost();
      dev.failFlushes = false;
      await v.runFor(Infinity, () => v.stats.writes > 400);
      const summary = await v.verifyAll();
      expect(summary.failures).toBe(0);
      expect(v.stats.failures).toBe(0);
      // The power loss really cost something, and it was judged as unflushed.
      expect(v.stats.unflushed).toBeGreaterThan(0);
    });

    it('a drive that lies about flushing is caught: flushed writes gone after a power loss are lost', async () => {
      const dev = new CachedDevice(BLOCKS * SECTORS_PER_BLOCK, 6);
      dev.lyingFlush = true;
      const v = mk(dev, { volatileCache: true, flushRatio: 0.05 });
      await v.runFor(Infinity, () => v.stats.flushes > 5 && v.stats.writes > 150);
      dev.powerLoss(0);
      v.powerLost();
      await v.verifyAll();
      expect(v.stats.failures).toBeGreaterThan(0);
      expect(Object.keys(v.stats.failureKinds).some((k) => k === 'zero' || k === 'stale')).toBe(true);
    });

    it('without volatileCache the same power loss is a failure (a writethrough disk must never lose an acknowledged write)', async () => {
      const dev = new CachedDevice(BLOCKS * SECTORS_PER_BLOCK, 7);
      const v = mk(dev, { flushRatio: 0.05 });
      await v.runFor(Infinity, () => v.stats.flushes > 5 && v.stats.writes > 150);
      dev.failFlushes = true;
      await v.runFor(Infinity, () => v.stats.writes > 250);
      dev.powerLoss(0);
      v.powerLost();
      dev.failFlushes = false;
      await v.verifyAll();
      expect(v.stats.failures).toBeGreaterThan(0);
      expect(v.stats.unflushed).toBe(0);
    });
  });
});
