import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, DeviceError } from '@ringvisor/shared';
import { tempDir } from '../../test-support/harness.js';
import { PhysicalDisk, WRITE_CACHE_SECTORS } from './device.js';

describe('PhysicalDisk', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.remove());

  it('creates a missing image at the configured size and reopens an existing one with its data', () => {
    const path = join(tmp.dir, 'disk.img');
    const d1 = PhysicalDisk.open({ path, sizeBytes: 1 << 20 });
    expect(d1.created).toBe(true);
    expect(d1.sectors).toBe(2048);
    expect(statSync(path).size).toBe(1 << 20);
    const data = new Uint8Array(new SharedArrayBuffer(1024)).fill(0x5a);
    d1.writeSectors(2046, data);
    d1.close();
    expect(d1.closed).toBe(true);

    const d2 = PhysicalDisk.open({ path, sizeBytes: 1 << 20 });
    expect(d2.created).toBe(false);
    const back = new Uint8Array(new SharedArrayBuffer(1536));
    d2.readSectors(2045, back);
    expect(back.subarray(0, 512).every((b) => b === 0)).toBe(true);
    expect(back.subarray(512).every((b) => b === 0x5a)).toBe(true);
    d2.close();
  });

  it('grows a smaller image and refuses a larger one', () => {
    const path = join(tmp.dir, 'small.img');
    writeFileSync(path, new Uint8Array(512).fill(1));
    const d = PhysicalDisk.open({ path, sizeBytes: 4096 });
    expect(statSync(path).size).toBe(4096);
    const b = new Uint8Array(1024);
    d.readSectors(0, b);
    expect(b[0]).toBe(1);
    expect(b[600]).toBe(0);
    d.close();
    expect(() => PhysicalDisk.open({ path, sizeBytes: 2048 })).toThrow(ConfigError);
    expect(statSync(path).size).toBe(4096);
  });

  it('checks bounds, sizes and config', () => {
    const path = join(tmp.dir, 'b.img');
    expect(() => PhysicalDisk.open({ path, sizeBytes: 1000 })).toThrow(ConfigError);
    expect(existsSync(path)).toBe(false);
    const d = PhysicalDisk.open({ path, sizeBytes: 8192 });
    expect(() => d.readSectors(15, new Uint8Array(1024))).toThrow(DeviceError);
    expect(() => d.writeSectors(-1, new Uint8Array(512))).toThrow(DeviceError);
    expect(() => d.writeSectors(0, new Uint8Array(100))).toThrow(/whole number/);
    expect(() => d.readSectors(0.5, new Uint8Array(512))).toThrow(DeviceError);
    d.writeSectors(15, new Uint8Array(512));
    d.flush();
    d.close();
    expect(() => d.readSectors(0, new Uint8Array(512))).toThrow(/closed/);
    expect(() => d.flush()).toThrow(DeviceError);
    d.close(); // idempotent
  });

  it('writeback: completed writes live in the volatile cache until a flush; a power loss keeps only what was flushed (and tears the rest)', () => {
    const path = join(tmp.dir, 'wb.img');
    const image = () => new Uint8Array(readFileSync(path));
    const d = PhysicalDisk.open({ path, sizeBytes: 1 << 20, cache: 'writeback' });
    expect(d.writeCache).toMatchObject({ mode: 'writeback', dirtySectors: 0 });
    d.writeSectors(8, new Uint8Array(4096).fill(1)); // block 1: 8 sectors
    // The drive answers from its cache; the image has nothing yet.
    const back = new Uint8Array(4096);
    d.readSectors(8, back);
    expect(back.every((b) => b === 1)).toBe(true);
    expect(image().subarray(8 * 512, 16 * 512).every((b) => b === 0)).toBe(true);
    expect(d.writeCache.dirtySectors).toBe(8);
    d.flush();
    expect(image().subarray(8 * 512, 16 * 512).every((b) => b === 1)).toBe(true);
    expect(d.writeCache).toMatchObject({ dirtySectors: 0, flushes: 1, writtenBack: 8 });
    // Block 1 rewritten (unflushed), block 2 written (unflushed): the power goes with half the
    // cached sectors making it. Flushed data survives; the unflushed blocks are torn or old.
    d.writeSectors(8, new Uint8Array(4096).fill(2));
    d.writeSectors(16, new Uint8Array(4096).fill(3));
    let x = 0;
    const r = d.powerLoss(0.5, () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32));
    expect(r.written + r.lost).toBe(16);
    expect(r.written).toBeGreaterThan(0);
    expect(r.lost).toBeGreaterThan(0);
    expect(d.closed).toBe(true);
    expect(() => d.readSectors(0, new Uint8Array(512))).toThrow(DeviceError);
    const img = image();
    const sector = (i: number) => img[i * 512];
    for (let i = 8; i < 16; i++) expect([1, 2]).toContain(sector(i));
    for (let i = 16; i < 24; i++) expect([0, 3]).toContain(sector(i));
    const mixed = new Set(Array.from({ length: 16 }, (_, i) => sector(8 + i)));
    expect(mixed.size).toBeGreaterThan(2); // some block came back torn
  });

  it('writeback: a clean close writes the cache back; a full cache writes its oldest sectors back on its own', () => {
    const path = join(tmp.dir, 'wb2.img');
    const d = PhysicalDisk.open({ path, sizeBytes: 8 << 20, cache: 'writeback' });
    d.writeSectors(0, new Uint8Array(512).fill(7));
    const many = new Uint8Array(WRITE_CACHE_SECTORS * 512).fill(9);
    d.writeSectors(1, many);
    // Sector 0 was the oldest: written back when the cache overflowed.
    expect(d.writeCache.writtenBack).toBe(1);
    expect(new Uint8Array(readFileSync(path))[0]).toBe(7);
    d.close();
    const img = new Uint8Array(readFileSync(path));
    expect(img[512 * WRITE_CACHE_SECTORS]).toBe(9);
    expect(() => PhysicalDisk.open({ path, sizeBytes: 8 << 20, cache: 'sometimes' as 'writeback' })).toThrow(/writethrough or writeback/);
  });
});
