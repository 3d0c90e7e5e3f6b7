/**
 * Refusals logged at a bounded rate. A probe or a flood can be refused thousands of times a
 * second; each reason gets one warning line when it first happens, then at most one line per
 * interval carrying how many refusals of that reason it stands for. The counts since start stay
 * readable (`totals`) for views and tests.
 */
import type { Logger } from '@ringvisor/shared';

interface Pending {
  /** Refusals of this reason not yet reported in a log line. */
  unreported: number;
  lastLoggedAt: number;
  /** Details of the latest unreported refusal (e.g. its remote address). */
  latest: Record<string, unknown>;
}

export class RateLimitedRefusalLog {
  /** Refusals since start, per reason. */
  readonly totals = new Map<string, number>();
  private readonly pending = new Map<string, Pending>();
  private timer?: NodeJS.Timeout;
  /** Log lines written (for tests: bounded whatever the number of refusals). */
  lines = 0;

  constructor(
    private readonly log: Logger,
    readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Count one refusal; log it now if this reason has not been logged within the interval. */
  refused(reason: string, details: Record<string, unknown> = {}): void {
    this.totals.set(reason, (this.totals.get(reason) ?? 0) + 1);
    const t = this.now();
    let p = this.pending.get(reason);
    if (!p) {
      p = { unreported: 0, lastLoggedAt: -Infinity, latest: details };
      this.pending.set(reason, p);
    }
    p.unreported++;
    p.latest = details;
    if (t - p.lastLoggedAt >= this.intervalMs) this.report(reason, p, t);
    else this.schedule();
  }

  /** Write the pending summaries now (also done by the timer, and before close). */
  flush(): void {
    const t = this.now();
    for (const [reason, p] of this.pending) if (p.unreported > 0) this.report(reason, p, t);
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private report(reason: string, p: Pending, t: number): void {
    this.log.warn({ ...p.latest, reason, count: p.unreported, total: this.totals.get(reason) }, 'control endpoint refused a request');
    this.lines++;
    p.unreported = 0;
    p.lastLoggedAt = t;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const t = this.now();
      let more = false;
      for (const [reason, p] of this.pending) {
        if (p.unreported === 0) continue;
        if (t - p.lastLoggedAt >= this.intervalMs) this.report(reason, p, t);
        else more = true;
      }
      if (more) this.schedule();
    }, this.intervalMs);
    this.timer.unref();
  }
}
