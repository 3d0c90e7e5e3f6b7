import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, DeviceError } from '@ringvisor/shared';
import { tempDir } from '../../test/harness.js';
import { PhysicalDisk } from './device.js';

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
});
