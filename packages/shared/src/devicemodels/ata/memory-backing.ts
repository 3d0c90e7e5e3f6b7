/**
 * An AtaBacking held in memory, for tests and demos (Firecracker's test_utils role): it records
 * every call, can fail the next operation of a kind, and can hold operations until released so
 * a test can look at the drive while it is BSY.
 */
import { ATA_SECTOR_SIZE } from './registers.js';
import type { AtaBacking } from './device.js';

export interface MemoryBackingCall {
  op: 'read' | 'write' | 'flush';
  lba: number;
  count: number;
}

export class MemoryAtaBacking implements AtaBacking {
  readonly sectors: number;
  readonly bytes: Uint8Array;
  /** Every call, in order. */
  readonly calls: MemoryBackingCall[] = [];
  /** Calls whose range was outside the store (answered -1; a correct drive never makes one). */
  outOfRange = 0;
  /** Nonzero: the next operation of that kind answers this status (then the entry is cleared). */
  readonly failNext: { read?: number; write?: number; flush?: number } = {};
  /** While true, operations wait until `release()`. */
  holding = false;
  private readonly held: Array<() => void> = [];

  constructor(sectors: number) {
    this.sectors = sectors;
    this.bytes = new Uint8Array(sectors * ATA_SECTOR_SIZE);
  }

  /** Operations waiting while `holding`. */
  get heldCount(): number {
    return this.held.length;
  }

  /** Let every held operation proceed (and stop holding new ones if `stop`). */
  release(stop = true): void {
    if (stop) this.holding = false;
    for (const go of this.held.splice(0)) go();
  }

  async read(lba: number, count: number): Promise<Uint8Array | number> {
    this.calls.push({ op: 'read', lba, count });
    await this.gate();
    const st = this.take('read');
    if (st) return st;
    if (!this.inRange(lba, count)) return -1;
    return this.bytes.slice(lba * ATA_SECTOR_SIZE, (lba + count) * ATA_SECTOR_SIZE);
  }

  async write(lba: number, data: Uint8Array): Promise<number> {
    const count = data.length / ATA_SECTOR_SIZE;
    this.calls.push({ op: 'write', lba, count });
    await this.gate();
    const st = this.take('write');
    if (st) return st;
    if (!Number.isInteger(count) || !this.inRange(lba, count)) return -1;
    this.bytes.set(data, lba * ATA_SECTOR_SIZE);
    return 0;
  }

  async flush(): Promise<number> {
    this.calls.push({ op: 'flush', lba: 0, count: 0 });
    await this.gate();
    return this.take('flush');
  }

  private take(kind: 'read' | 'write' | 'flush'): number {
    const st = this.failNext[kind] ?? 0;
    delete this.failNext[kind];
    return st;
  }

  private inRange(lba: number, count: number): boolean {
    const ok = Number.isInteger(lba) && Number.isInteger(count) && lba >= 0 && count >= 1 && count <= 256 && lba + count <= this.sectors;
    if (!ok) this.outOfRange++;
    return ok;
  }

  private gate(): Promise<void> {
    if (!this.holding) return Promise.resolve();
    return new Promise((resolve) => this.held.push(resolve));
  }
}
