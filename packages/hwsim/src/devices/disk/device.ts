/**
 * PhysicalDisk — the simulated drive: a raw image file, 512-byte sectors.
 *
 * The image is created sparse (ftruncate to the configured size) if missing, and reopened as is
 * if present, so data written before a restart is there after it. An existing image smaller than
 * the configured size is grown (sparse, nothing lost); a larger one is refused rather than
 * silently hiding its tail.
 *
 * I/O is synchronous pread/pwrite straight between the file and the caller's buffer — in the
 * simulator that buffer is a DMA view of a guest page, so no intermediate copy is made.
 *
 * Two cache modes, as a drive's write cache is enabled or not:
 *   writethrough (default)  a completed write is in the image file (the page cache): it survives
 *                           any crash of the simulator; `flush` fsyncs for the host's sake
 *   writeback               a completed write sits in the drive's volatile cache (sector copies,
 *                           bounded: the oldest are written back when it is full) until `flush`
 *                           writes the cache back in order; reads see the cache. A crash loses
 *                           what was not flushed; `powerLoss` first writes back a random part of
 *                           it, sector by sector, so a block can come back torn — what a real
 *                           drive does when the power goes mid-write-back. Acknowledged writes a
 *                           completed flush covered always survive.
 */
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { ConfigError, DeviceError, SECTOR_SIZE } from '@ringvisor/shared';

export interface PhysicalDiskOptions {
  /** Path of the raw image file. */
  path: string;
  /** Capacity in bytes: a positive multiple of 512. */
  sizeBytes: number;
  /** The drive's write cache (default writethrough: no volatile cache). */
  cache?: 'writethrough' | 'writeback';
}

/** Sectors the volatile cache holds before it writes the oldest back (4 MiB). */
export const WRITE_CACHE_SECTORS = 8192;

export interface WriteCacheStats {
  mode: 'writethrough' | 'writeback';
  dirtySectors: number;
  writtenBack: number;
  flushes: number;
  /** powerLoss: cached sectors written before the power went, and lost. */
  tornWritten: number;
  lost: number;
}

export class PhysicalDisk {
  readonly path: string;
  readonly sizeBytes: number;
  readonly sectors: number;
  readonly sectorSize = SECTOR_SIZE;
  /** Whether the image file was created by this open (false: an existing image was reopened). */
  readonly created: boolean;
  private fd: number | undefined;
  readonly cache: 'writethrough' | 'writeback';
  /** writeback: dirty sectors, oldest first (a rewrite moves a sector to the end). */
  private readonly dirty = new Map<number, Uint8Array>();
  private readonly cacheStats = { writtenBack: 0, flushes: 0, tornWritten: 0, lost: 0 };

  private constructor(path: string, sizeBytes: number, fd: number, created: boolean, cache: 'writethrough' | 'writeback') {
    this.path = path;
    this.sizeBytes = sizeBytes;
    this.sectors = sizeBytes / SECTOR_SIZE;
    this.fd = fd;
    this.created = created;
    this.cache = cache;
  }

  static open(options: PhysicalDiskOptions): PhysicalDisk {
    const { path, sizeBytes } = options;
    if (typeof path !== 'string' || path.length === 0) throw new ConfigError('disk image path must be a non-empty string');
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % SECTOR_SIZE !== 0)
      throw new ConfigError(`disk size must be a positive multiple of ${SECTOR_SIZE} bytes, got ${sizeBytes}`);
    let fd: number;
    let created = false;
    try {
      fd = openSync(path, 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new DeviceError(`cannot open disk image ${path}: ${(e as Error).message}`, { cause: e });
      try {
        fd = openSync(path, 'wx+', 0o600); // exclusive: never clobber an image created concurrently
        created = true;
      } catch (e2) {
        throw new DeviceError(`cannot create disk image ${path}: ${(e2 as Error).message}`, { cause: e2 });
      }
    }
    try {
      const current = fstatSync(fd).size;
      if (current > sizeBytes)
        throw new ConfigError(
          `disk image ${path} is ${current} bytes, larger than the configured ${sizeBytes}; raise the configured size or remove the image`,
        );
      if (current < sizeBytes) ftruncateSync(fd, sizeBytes); // sparse: no blocks allocated
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    if (options.cache !== undefined && options.cache !== 'writethrough' && options.cache !== 'writeback') {
      closeSync(fd);
      throw new ConfigError(`disk cache must be writethrough or writeback, got ${JSON.stringify(options.cache)}`);
    }
    return new PhysicalDisk(path, sizeBytes, fd, created, options.cache ?? 'writethrough');
  }

  get writeCache(): WriteCacheStats {
    return { mode: this.cache, dirtySectors: this.dirty.size, ...this.cacheStats };
  }

  get closed(): boolean {
    return this.fd === undefined;
  }

  /** Fill `into` (a whole number of sectors) from the image starting at `sector` (and the cache). */
  readSectors(sector: number, into: Uint8Array): void {
    this.readImage(sector, into);
    if (this.dirty.size === 0) return;
    for (let i = 0; i < into.byteLength / SECTOR_SIZE; i++) {
      const d = this.dirty.get(sector + i);
      if (d) into.set(d, i * SECTOR_SIZE);
    }
  }

  private readImage(sector: number, into: Uint8Array): void {
    const fd = this.check(sector, into);
    let pos = sector * SECTOR_SIZE;
    let done = 0;
    while (done < into.byteLength) {
      const n = readSync(fd, into, done, into.byteLength - done, pos);
      if (n === 0) {
        into.fill(0, done); // past EOF of a sparse image reads as zeros
        break;
      }
      done += n;
      pos += n;
    }
  }

  /** Write `from` (a whole number of sectors) starting at `sector`: to the image, or the cache. */
  writeSectors(sector: number, from: Uint8Array): void {
    if (this.cache === 'writethrough') return this.writeImage(sector, from);
    this.check(sector, from);
    for (let i = 0; i < from.byteLength / SECTOR_SIZE; i++) {
      this.dirty.delete(sector + i);
      this.dirty.set(sector + i, from.slice(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE));
    }
    // Full: the oldest go to the image (a drive writes back on its own).
    while (this.dirty.size > WRITE_CACHE_SECTORS) {
      const [s0, data] = this.dirty.entries().next().value as [number, Uint8Array];
      this.dirty.delete(s0);
      this.writeImage(s0, data);
      this.cacheStats.writtenBack++;
    }
  }

  private writeImage(sector: number, from: Uint8Array): void {
    const fd = this.check(sector, from);
    let pos = sector * SECTOR_SIZE;
    let done = 0;
    while (done < from.byteLength) {
      const n = writeSync(fd, from, done, from.byteLength - done, pos);
      done += n;
      pos += n;
    }
  }

  /** Make every completed write durable: the cache written back in order, then fsync. */
  flush(): void {
    const fd = this.handle();
    for (const [sector, data] of this.dirty) {
      this.writeImage(sector, data);
      this.cacheStats.writtenBack++;
    }
    this.dirty.clear();
    this.cacheStats.flushes++;
    fsyncSync(fd);
  }

  /**
   * The power goes (writeback): each cached sector reaches the image with probability
   * `writeProbability` (so a multi-sector block can come back torn), the rest is lost, and the
   * drive is gone (closed, no flush). Returns how many sectors were written and lost.
   */
  powerLoss(writeProbability: number, random: () => number): { written: number; lost: number } {
    let written = 0;
    let lost = 0;
    for (const [sector, data] of this.dirty) {
      if (random() < writeProbability) {
        this.writeImage(sector, data);
        written++;
      } else lost++;
    }
    this.dirty.clear();
    this.cacheStats.tornWritten += written;
    this.cacheStats.lost += lost;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    return { written, lost };
  }

  /** Flush (the cache too) and close the image; later I/O throws DeviceError. Idempotent. */
  close(): void {
    if (this.fd === undefined) return;
    try {
      this.flush();
    } finally {
      const fd = this.fd;
      this.fd = undefined;
      if (fd !== undefined) closeSync(fd);
    }
  }

  private handle(): number {
    if (this.fd === undefined) throw new DeviceError(`disk ${this.path} is closed`);
    return this.fd;
  }

  private check(sector: number, buf: Uint8Array): number {
    const fd = this.handle();
    if (buf.byteLength === 0 || buf.byteLength % SECTOR_SIZE !== 0)
      throw new DeviceError(`transfer of ${buf.byteLength} bytes is not a whole number of ${SECTOR_SIZE}-byte sectors`);
    const count = buf.byteLength / SECTOR_SIZE;
    if (!Number.isSafeInteger(sector) || sector < 0 || sector + count > this.sectors)
      throw new DeviceError(`sectors ${sector}..${sector + count - 1} outside disk of ${this.sectors} sectors`);
    return fd;
  }
}
