/**
 * Small deterministic PRNGs for workloads and fault schedules: reproducible from a seed, fast, and
 * independent of Math.random so a failing run can be replayed exactly.
 */

/** murmur3's 32-bit finalizer: a cheap, well-mixing bijection on u32. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes a tuple of u32 values into one u32 seed (order-sensitive). */
export function mixSeed(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) h = fmix32((h ^ fmix32(v >>> 0)) + 0x632be5ab);
  return h;
}

/** SplitMix32: a Weyl sequence pushed through fmix32. Period 2^32, fine for workloads. */
export class SplitMix32 {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  nextU32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    return fmix32(this.state);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  /** Uniform integer in [0, n). */
  nextInt(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Fills `out` with pseudo-random bytes (little-endian words). */
  fill(out: Uint8Array): void {
    const n = out.length;
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const w = this.nextU32();
      out[i] = w;
      out[i + 1] = w >>> 8;
      out[i + 2] = w >>> 16;
      out[i + 3] = w >>> 24;
    }
    if (i < n) {
      let w = this.nextU32();
      for (; i < n; i++, w >>>= 8) out[i] = w;
    }
  }
}
