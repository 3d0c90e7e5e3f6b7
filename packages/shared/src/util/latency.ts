/**
 * Latency percentiles of a workload: the most recent `capacity` samples (µs) in a ring, sorted on
 * demand. A benchmark resets it when its measurement window opens, so the percentiles are the
 * window's (as long as the window holds no more than `capacity` operations; beyond that, its
 * latest ones). p99.9 needs at least 1000 samples to mean anything; `count` says how many there were.
 */
export interface LatencyPercentiles {
  p50: number;
  p99: number;
  p999: number;
  count: number;
}

export class LatencySamples {
  private readonly samples: Float64Array;
  private n = 0;

  constructor(readonly capacity = 8192) {
    this.samples = new Float64Array(capacity);
  }

  record(us: number): void {
    this.samples[this.n++ % this.capacity] = us;
  }

  reset(): void {
    this.n = 0;
  }

  /** Undefined before the first sample. Rounded to whole µs. */
  percentiles(): LatencyPercentiles | undefined {
    const n = Math.min(this.n, this.capacity);
    if (n === 0) return undefined;
    const sorted = this.samples.slice(0, n).sort();
    const at = (q: number) => Math.round(sorted[Math.min(n - 1, Math.floor(q * n))]);
    return { p50: at(0.5), p99: at(0.99), p999: at(0.999), count: this.n };
  }
}
