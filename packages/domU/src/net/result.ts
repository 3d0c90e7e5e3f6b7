/**
 * Parsers return a tagged result instead of throwing: the stack drops malformed
 * input on the hot path and needs the reason for its drop counters.
 */
export type ParseResult<T, R extends string> = { ok: true; value: T } | { ok: false; reason: R };

export function ok<T>(value: T): { ok: true; value: T } {
  return { ok: true, value };
}

export function fail<R extends string>(reason: R): { ok: false; reason: R } {
  return { ok: false, reason };
}
