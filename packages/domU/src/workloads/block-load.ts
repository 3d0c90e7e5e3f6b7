/**
 * A block load generator for benchmarks, as fio runs one: `queueDepth` requests always in flight
 * against one block device, all reads or all writes, `blockBytes` each, at random aligned offsets
 * of a region or sequentially through it (wrapping). It checks nothing — the block verifier is the
 * correctness workload; this one measures: operations, bytes, errors and latency percentiles.
 *
 * Writes carry a fixed, non-zero pattern (the same bytes every time: the device does the same
 * work whatever the data). Sequential requests are handed out from one cursor, so `queueDepth`
 * streams interleave into one sequential stream, as fio's does with iodepth > 1.
 */
import { InvalidArgumentError, LatencySamples, SplitMix32, type LatencyPercentiles } from '@ringvisor/shared';
import type { BlockDevice } from './block-verifier.js';

export interface BlockLoadOptions {
  device: BlockDevice;
  op: 'read' | 'write';
  pattern: 'random' | 'sequential';
  /** A multiple of 512. */
  blockBytes: number;
  queueDepth: number;
  /** Bytes of the device exercised from offset 0 (clamped to its size). */
  regionBytes: number;
  seed: number;
}

export interface BlockLoadStats {
  ops: number;
  bytes: number;
  errors: number;
  latencyUs?: LatencyPercentiles;
}

export class BlockLoad {
  private readonly s = { ops: 0, bytes: 0, errors: 0 };
  private readonly latency = new LatencySamples();
  private readonly rng: SplitMix32;
  private readonly blocks: number;
  private cursor = 0;

  constructor(private readonly o: BlockLoadOptions) {
    if (o.blockBytes <= 0 || o.blockBytes % 512 !== 0) throw new InvalidArgumentError(`block size ${o.blockBytes} is not a positive multiple of 512`);
    if (!Number.isInteger(o.queueDepth) || o.queueDepth < 1) throw new InvalidArgumentError(`queue depth ${o.queueDepth} must be at least 1`);
    this.blocks = Math.floor(Math.min(o.regionBytes, o.device.sectors * 512) / o.blockBytes);
    if (this.blocks < 1) throw new InvalidArgumentError(`a region of ${o.regionBytes} bytes holds no ${o.blockBytes}-byte block`);
    this.rng = new SplitMix32(o.seed || 1);
  }

  get stats(): BlockLoadStats {
    const p = this.latency.percentiles();
    return { ...this.s, ...(p ? { latencyUs: p } : {}) };
  }

  /** Forget the latencies so far (a benchmark's measurement window opens). */
  resetLatency(): void {
    this.latency.reset();
  }

  /** Keep `queueDepth` requests in flight until `stop()` says so. */
  async runFor(stop: () => boolean): Promise<void> {
    await Promise.all(Array.from({ length: this.o.queueDepth }, () => this.stream(stop)));
  }

  private next(): number {
    if (this.o.pattern === 'random') return this.rng.nextInt(this.blocks);
    const b = this.cursor;
    this.cursor = (this.cursor + 1) % this.blocks;
    return b;
  }

  private async stream(stop: () => boolean): Promise<void> {
    const { device, op, blockBytes } = this.o;
    const buf = new Uint8Array(blockBytes);
    if (op === 'write') buf.fill(0xa5);
    while (!stop()) {
      const sector = (this.next() * blockBytes) / 512;
      const t0 = performance.now();
      try {
        await (op === 'read' ? device.read(sector, buf) : device.write(sector, buf));
        this.latency.record((performance.now() - t0) * 1000);
        this.s.ops++;
        this.s.bytes += blockBytes;
      } catch {
        this.s.errors++;
        // A failing device is not spun on.
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  }
}
