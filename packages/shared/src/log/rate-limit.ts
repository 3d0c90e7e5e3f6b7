/**
 * Log lines that strangers can trigger (refused connections, failed handshakes, protocol
 * violations), at a bounded rate. Within each window the first `perKey` lines of a key (a remote
 * address) and at most `perWindow` lines in all are written; the rest are only counted, and when
 * the window ends one summary line per key says how many were suppressed ("N more refusals from
 * X suppressed in the last 10 s"), at most `maxSummaries` such lines plus one for everything else.
 * So a window writes at most perWindow + maxSummaries + 1 lines whatever a flood does, and the
 * counts are never lost. Keys tracked per window are capped too (the rest share one bucket).
 */
import type { Logger } from 'pino';

export interface RateLimitedLogOptions {
  /** Where lines go; without one, events are only counted. */
  log?: Logger;
  /** Plural noun for summaries (default "refusals"). */
  what?: string;
  /** Length of a window in ms (default 10 s). */
  windowMs?: number;
  /** Lines written per key per window (default 3). */
  perKey?: number;
  /** Lines written per window over all keys (default 20). */
  perWindow?: number;
  /** Summary lines naming a key per window (default 5); the others are summed in one line. */
  maxSummaries?: number;
  /** Distinct keys counted per window (default 1024); later keys share one bucket. */
  maxKeys?: number;
  /** Field that names the key in summary lines (default "peer"). */
  keyField?: string;
  /** Clock (for tests). */
  now?: () => number;
}

const OTHER_KEYS = '(other addresses)';

export class RateLimitedLog {
  readonly #log: Logger | undefined;
  readonly #what: string;
  readonly #windowMs: number;
  readonly #perKey: number;
  readonly #perWindow: number;
  readonly #maxSummaries: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #keyField: string;
  #windowStart = 0;
  #written = 0;
  /** Per key in this window: lines written and events suppressed. */
  #keys = new Map<string, { written: number; suppressed: number }>();
  #suppressed = 0;
  #total = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: RateLimitedLogOptions = {}) {
    this.#log = opts.log;
    this.#what = opts.what ?? 'refusals';
    this.#windowMs = opts.windowMs ?? 10_000;
    this.#perKey = opts.perKey ?? 3;
    this.#perWindow = opts.perWindow ?? 20;
    this.#maxSummaries = opts.maxSummaries ?? 5;
    this.#maxKeys = opts.maxKeys ?? 1024;
    this.#now = opts.now ?? Date.now;
    this.#keyField = opts.keyField ?? 'peer';
  }

  /** Length of a window in ms. */
  get windowMs(): number {
    return this.#windowMs;
  }

  /** Events noted since this was made (written or not). */
  get total(): number {
    return this.#total;
  }

  /** Events suppressed in the current window so far. */
  get suppressed(): number {
    return this.#suppressed;
  }

  /** Notes one event of `key`; writes `msg` at warn unless its quota is used. True if written. */
  warn(key: string, fields: Record<string, unknown>, msg: string): boolean {
    const now = this.#now();
    if (this.#keys.size > 0 && now - this.#windowStart >= this.#windowMs) this.flush();
    if (this.#keys.size === 0) this.#windowStart = now;
    this.#total++;
    let k = this.#keys.get(key);
    if (k === undefined) {
      const bucket = this.#keys.size < this.#maxKeys ? key : OTHER_KEYS;
      k = this.#keys.get(bucket);
      if (k === undefined) {
        k = { written: 0, suppressed: 0 };
        this.#keys.set(bucket, k);
      }
    }
    if (k.written < this.#perKey && this.#written < this.#perWindow) {
      k.written++;
      this.#written++;
      this.#log?.warn(fields, msg);
      return true;
    }
    k.suppressed++;
    this.#suppressed++;
    if (this.#timer === undefined) {
      // Summaries appear when the window ends, even if the flood has stopped by then.
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.flush();
      }, Math.max(0, this.#windowStart + this.#windowMs - now));
      this.#timer.unref();
    }
    return false;
  }

  /** Ends the current window: writes the summaries of what it suppressed. */
  flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const seconds = Math.max(1, Math.round((this.#now() - this.#windowStart) / 1000));
    const suppressed = [...this.#keys].filter(([, k]) => k.suppressed > 0).sort((a, b) => b[1].suppressed - a[1].suppressed);
    for (const [key, k] of suppressed.slice(0, this.#maxSummaries))
      this.#log?.warn({ [this.#keyField]: key, suppressed: k.suppressed }, `${k.suppressed} more ${this.#what} from ${key} suppressed in the last ${seconds} s`);
    const rest = suppressed.slice(this.#maxSummaries);
    if (rest.length > 0) {
      const n = rest.reduce((s, [, k]) => s + k.suppressed, 0);
      this.#log?.warn({ suppressed: n, peers: rest.length }, `${n} more ${this.#what} from ${rest.length} other addresses suppressed in the last ${seconds} s`);
    }
    this.#keys = new Map();
    this.#written = 0;
    this.#suppressed = 0;
  }

  /** Writes the pending summaries and stops the timer. */
  close(): void {
    this.flush();
  }
}
