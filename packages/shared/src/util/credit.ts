/**
 * Transmit credit, as netback's `rate` key: `bytes,usec` allows `bytes` of transmit per `usec`
 * window. A packet larger than the remaining credit waits for the next replenish (a timer), so
 * a guest over its limit is slowed, not dropped.
 */
import { ConfigError } from '../errors.js';

export interface CreditLimit {
  bytes: number;
  usec: number;
}

export function parseRate(rate: string): CreditLimit {
  const m = /^(\d+),(\d+)$/.exec(rate.trim());
  const bytes = m ? Number(m[1]) : NaN;
  const usec = m ? Number(m[2]) : NaN;
  if (!m || bytes < 1 || usec < 1000)
    throw new ConfigError(`rate ${JSON.stringify(rate)} must be "bytes,usec" with bytes ≥ 1 and usec ≥ 1000 (e.g. "125000,10000" for 100 Mbit/s)`);
  return { bytes, usec };
}

export class TxCredit {
  private remaining: number;
  private windowStart: number;
  throttled = 0;

  constructor(
    readonly limit: CreditLimit | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.remaining = limit?.bytes ?? Infinity;
    this.windowStart = now();
  }

  private replenish(): void {
    if (!this.limit) return;
    const t = this.now();
    if ((t - this.windowStart) * 1000 >= this.limit.usec) {
      this.windowStart = t;
      this.remaining = this.limit.bytes;
    }
  }

  /** Take credit for `size` bytes; false means wait `msUntilReplenish()`. */
  take(size: number): boolean {
    if (!this.limit) return true;
    this.replenish();
    // A packet bigger than a whole window's credit still goes, once the window is fresh.
    if (size > this.remaining && !(this.remaining === this.limit.bytes && size > this.limit.bytes)) {
      this.throttled++;
      return false;
    }
    this.remaining -= Math.min(size, this.remaining);
    return true;
  }

  /** Credit left in the current window (null: no limit), for a saved state. */
  get credit(): number | null {
    return this.limit ? this.remaining : null;
  }

  /** A restored limit goes on with the credit that was left, in a window starting now. */
  resumeWith(credit: number | null): void {
    if (!this.limit || credit === null) return;
    this.remaining = Math.min(this.limit.bytes, Math.max(0, credit));
    this.windowStart = this.now();
  }

  msUntilReplenish(): number {
    if (!this.limit) return 0;
    return Math.max(0, this.limit.usec / 1000 - (this.now() - this.windowStart));
  }
}
