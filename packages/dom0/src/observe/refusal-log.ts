/**
 * The control endpoint's refusals: counted per reason since start (`totals`, for views and
 * tests), and logged through the shared RateLimitedLog keyed by reason, so a probe or a flood
 * refused thousands of times a second writes a bounded number of lines and the counts survive in
 * the summaries.
 */
import { RateLimitedLog, type Logger } from '@ringvisor/shared';

export class RefusalLog {
  /** Refusals since start, per reason (the reasons are a fixed set, so this stays small). */
  readonly totals = new Map<string, number>();
  readonly #lines: RateLimitedLog;

  constructor(log: Logger | undefined, opts: { windowMs?: number; now?: () => number } = {}) {
    this.#lines = new RateLimitedLog({ ...(log ? { log } : {}), ...opts, keyField: 'reason', perWindow: 20, perKey: 3 });
  }

  get windowMs(): number {
    return this.#lines.windowMs;
  }

  /** Counts one refusal and logs it unless this reason's quota for the window is used. */
  refused(reason: string, details: Record<string, unknown> = {}): void {
    const total = (this.totals.get(reason) ?? 0) + 1;
    this.totals.set(reason, total);
    this.#lines.warn(reason, { ...details, reason, total }, 'control endpoint refused a request');
  }

  /** Writes the summaries of what the current window suppressed. */
  flush(): void {
    this.#lines.flush();
  }

  close(): void {
    this.#lines.close();
  }
}
