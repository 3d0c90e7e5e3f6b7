/**
 * A device register page: u32 little-endian registers on a shared 4 KiB page (an SR-IOV
 * function's BAR0, an SV-IO VIF's access page). Registers are read and written with Atomics;
 * across a process boundary (ws) each side has its own copy, and `sync` logs every store so it is
 * mirrored to the other side (ring/mirror.ts). MACs and 64-bit sizes span two registers.
 */
import type { PageSync } from '../ring/ring.js';

export class RegisterPage {
  readonly words: Int32Array;
  sync?: PageSync;

  constructor(
    readonly page: Uint8Array,
    readonly count: number,
  ) {
    this.words = new Int32Array(page.buffer, page.byteOffset, count);
  }

  read(reg: number): number {
    return Atomics.load(this.words, reg) >>> 0;
  }

  write(reg: number, value: number): void {
    Atomics.store(this.words, reg, value | 0);
    this.sync?.wroteBytes(reg * 4, 4);
  }

  /** Clear every register. */
  clear(): void {
    for (let r = 0; r < this.count; r++) this.write(r, 0);
  }

  /** A MAC in two registers: bytes 0..3 in `lo` (byte 0 lowest), 4..5 in `hi`. */
  readMac(lo: number, hi: number): string {
    const a = this.read(lo);
    const b = this.read(hi);
    return [a & 0xff, (a >>> 8) & 0xff, (a >>> 16) & 0xff, a >>> 24, b & 0xff, (b >>> 8) & 0xff].map((x) => x.toString(16).padStart(2, '0')).join(':');
  }

  writeMac(lo: number, hi: number, mac: string): void {
    const b = mac.split(':').map((h) => parseInt(h, 16));
    this.write(lo, (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0);
    this.write(hi, b[4] | (b[5] << 8));
  }

  /** A u64 in two registers (low, high), exact over all 2^64 values. */
  read64(lo: number, hi: number): bigint {
    return (BigInt(this.read(hi)) << 32n) | BigInt(this.read(lo));
  }

  /** Stores `n` modulo 2^64, as a u64 register pair would. */
  write64(lo: number, hi: number, n: bigint): void {
    this.write(lo, Number(BigInt.asUintN(32, n)));
    this.write(hi, Number(BigInt.asUintN(32, n >> 32n)));
  }
}
