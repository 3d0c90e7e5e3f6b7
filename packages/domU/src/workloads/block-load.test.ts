/**
 * The benchmark block load: the queue depth it promises is the one the device sees, requests are
 * aligned and inside the region, sequential means each block once per pass in order, writes carry
 * the pattern, and failures are counted without spinning.
 */
import { describe, expect, it } from 'vitest';
import { BlockLoad } from './block-load.js';
import type { BlockDevice } from './block-verifier.js';

class RecordingDevice implements BlockDevice {
  readonly ops: Array<{ op: 'read' | 'write'; sector: number; bytes: number; first: number }> = [];
  inFlight = 0;
  maxInFlight = 0;
  fail = false;
  constructor(readonly sectors: number) {}
  private async io(op: 'read' | 'write', sector: number, buf: Uint8Array): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setImmediate(r));
    this.inFlight--;
    if (this.fail) throw new Error('EIO');
    this.ops.push({ op, sector, bytes: buf.byteLength, first: buf[0] });
  }
  read(sector: number, buf: Uint8Array) {
    return this.io('read', sector, buf);
  }
  write(sector: number, buf: Uint8Array) {
    return this.io('write', sector, buf);
  }
  async flush() {}
}

async function run(load: BlockLoad, until: () => boolean): Promise<void> {
  await load.runFor(until);
}

describe('BlockLoad', () => {
  it('random 4 KiB reads: queue depth held, every request aligned inside the region, latencies measured', async () => {
    const dev = new RecordingDevice(2048 * 16);
    const load = new BlockLoad({ device: dev, op: 'read', pattern: 'random', blockBytes: 4096, queueDepth: 8, regionBytes: 1 << 20, seed: 7 });
    await run(load, () => dev.ops.length >= 500);
    expect(dev.maxInFlight).toBe(8);
    for (const o of dev.ops) {
      expect(o.op).toBe('read');
      expect(o.bytes).toBe(4096);
      expect(o.sector % 8).toBe(0);
      expect(o.sector * 512 + 4096).toBeLessThanOrEqual(1 << 20);
    }
    // Random: many distinct blocks of the 256 in the region.
    expect(new Set(dev.ops.map((o) => o.sector)).size).toBeGreaterThan(100);
    const s = load.stats;
    expect(s.ops).toBe(dev.ops.length);
    expect(s.bytes).toBe(s.ops * 4096);
    expect(s.latencyUs!.count).toBe(s.ops);
    expect(s.latencyUs!.p99).toBeGreaterThanOrEqual(s.latencyUs!.p50);
    load.resetLatency();
    expect(load.stats.latencyUs).toBeUndefined();
  });

  it('sequential 64 KiB writes: each block of the region in order, wrapping, with the write pattern', async () => {
    const dev = new RecordingDevice(2048);
    const load = new BlockLoad({ device: dev, op: 'write', pattern: 'sequential', blockBytes: 65536, queueDepth: 1, regionBytes: 1 << 20, seed: 1 });
    await run(load, () => dev.ops.length >= 40);
    expect(dev.ops.slice(0, 20).map((o) => o.sector / 128)).toEqual([...Array(16).keys(), 0, 1, 2, 3]);
    expect(dev.ops.every((o) => o.op === 'write' && o.first === 0xa5)).toBe(true);
  });

  it('counts a failing device\'s errors and refuses impossible shapes', async () => {
    const dev = new RecordingDevice(2048);
    dev.fail = true;
    const load = new BlockLoad({ device: dev, op: 'read', pattern: 'random', blockBytes: 4096, queueDepth: 2, regionBytes: 1 << 20, seed: 1 });
    const t0 = performance.now();
    await run(load, () => performance.now() - t0 > 30);
    expect(load.stats.errors).toBeGreaterThan(0);
    // Paced (1 ms after each failure), not a spin.
    expect(load.stats.errors).toBeLessThan(200);
    expect(load.stats.ops).toBe(0);
    expect(() => new BlockLoad({ device: dev, op: 'read', pattern: 'random', blockBytes: 1000, queueDepth: 1, regionBytes: 1 << 20, seed: 1 })).toThrow(/multiple of 512/);
    expect(() => new BlockLoad({ device: dev, op: 'read', pattern: 'random', blockBytes: 4096, queueDepth: 1, regionBytes: 100, seed: 1 })).toThrow(/holds no 4096-byte block/);
  });
});
