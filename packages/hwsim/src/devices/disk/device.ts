/**
 * PhysicalDisk — the simulated drive: a raw image file, 512-byte sectors.
 *
 * The image is created sparse (ftruncate to the configured size) if missing, and reopened as is
 * if present, so data written before a restart is there after it. An existing image smaller than
 * the configured size is grown (sparse, nothing lost); a larger one is refused rather than
 * silently hiding its tail.
 *
 * I/O is synchronous pread/pwrite straight between the file and the caller's buffer — in the
 * simulator that buffer is a DMA view of a guest page, so no intermediate copy is made. Like a
 * drive with a volatile write cache, a completed write is not durable until `flush` (fsync).
 */
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { ConfigError, DeviceError, SECTOR_SIZE } from '@ringvisor/shared';

export interface PhysicalDiskOptions {
  /** Path of the raw image file. */
  path: string;
  /** Capacity in bytes: a positive multiple of 512. */
  sizeBytes: number;
}

export class PhysicalDisk {
  readonly path: string;
  readonly sizeBytes: number;
  readonly sectors: number;
  readonly sectorSize = SECTOR_SIZE;
  /** Whether the image file was created by this open (false: an existing image was reopened). */
  readonly created: boolean;
  private fd: number | undefined;

  private constructor(path: string, sizeBytes: number, fd: number, created: boolean) {
    this.path = path;
    this.sizeBytes = sizeBytes;
    this.sectors = sizeBytes / SECTOR_SIZE;
    this.fd = fd;
    this.created = created;
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
    return new PhysicalDisk(path, sizeBytes, fd, created);
  }

  get closed(): boolean {
    return this.fd === undefined;
  }

  /** Fill `into` (a whole number of sectors) from the image starting at `sector`. */
  readSectors(sector: number, into: Uint8Array): void {
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

  /** Write `from` (a whole number of sectors) to the image starting at `sector`. */
  writeSectors(sector: number, from: Uint8Array): void {
    const fd = this.check(sector, from);
    let pos = sector * SECTOR_SIZE;
    let done = 0;
    while (done < from.byteLength) {
      const n = writeSync(fd, from, done, from.byteLength - done, pos);
      done += n;
      pos += n;
    }
  }

  /** Make every completed write durable (fsync). */
  flush(): void {
    fsyncSync(this.handle());
  }

  /** Flush and close the image; later I/O throws DeviceError. Idempotent. */
  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
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
