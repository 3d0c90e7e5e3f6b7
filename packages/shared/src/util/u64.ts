/**
 * u64 protocol fields are exact `bigint`s in every decoded entry (ring ids and sectors, SV-IO
 * sectors and timestamps). JSON cannot carry a bigint (JSON.stringify throws), so wherever a
 * decoded entry leaves the process — a trace stream, a forwarded trace batch, the dashboard's
 * API — its bigints become decimal strings: exact, and readable by any JSON client.
 */

/**
 * A copy of `value` with every bigint (at any depth of plain objects and arrays) as its decimal
 * string. Values without bigints come back as they are (no copy).
 */
export function decimalU64s<T>(value: T): T {
  return convert(value) as T;
}

function convert(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v !== 'object' || v === null || ArrayBuffer.isView(v)) return v;
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const c = convert(v[i]);
      if (c !== v[i]) (out ??= v.slice())[i] = c;
    }
    return out ?? v;
  }
  let out: Record<string, unknown> | undefined;
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    const c = convert(x);
    if (c !== x) (out ??= { ...(v as Record<string, unknown>) })[k] = c;
  }
  return out ?? v;
}

/** A JSON.stringify replacer for the same rule: bigints as decimal strings. */
export function bigintAsDecimal(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}
