/**
 * Fault rules for the simulated physical disk, in the spirit of QEMU's blkdebug: dom0 (or a test,
 * or a fault-injection schedule) tells the hardware "make these requests fail or corrupt" and the
 * drive does so inside its request path, below every driver — so what the stack above sees is
 * exactly what a flaky disk would give it. The rules are seeded, so a run that found a bug can be
 * replayed bit for bit.
 *
 * This is the wire type (hw.disk.faults, hw.stats) shared by dom0 and hwsim, and its validator:
 * the rules cross a process boundary, so hwsim checks every field instead of trusting the shape.
 */
import { InvalidArgumentError } from '../errors.js';

export type DiskFaultOp = 'read' | 'write' | 'flush' | 'any';
export type DiskFaultError = 'eio' | 'bitflip';

export interface DiskFaultRule {
  /** Names the rule in counters and traces (unique within one rule set). */
  id: string;
  op: DiskFaultOp;
  /**
   * Physical-disk sector range [start, end) a request must overlap to match (absent: any). Flush
   * has no sectors: it matches only rules without a range.
   */
  sectors?: [number, number];
  /**
   * eio: the request fails with an I/O error status and a write changes nothing on disk;
   * bitflip: the request succeeds but one bit of the data (read: as delivered to memory; write: as
   * stored on disk) is flipped (silent corruption). A flush carries no data, so bitflip rules
   * never match a flush (and `op: 'flush'` with bitflip is refused).
   */
  error: DiskFaultError;
  /** Chance that a matching request is hit, 0..1 (default 1). */
  probability?: number;
  /** At most this many hits (≥ 1), then the rule is spent (absent: unlimited). */
  times?: number;
  /** PRNG seed (u32) for the probability draws and the bit choice (default 0). */
  seed?: number;
}

export interface DiskFaultStats {
  id: string;
  hits: number;
  spent: boolean;
}

/** Longest accepted rule id: it is a label, not a payload. */
export const DISK_FAULT_ID_MAX = 64;
/** Most rules one hw.disk.faults call may install. */
export const DISK_FAULT_RULES_MAX = 64;

const OPS: readonly DiskFaultOp[] = ['read', 'write', 'flush', 'any'];
const ERRORS: readonly DiskFaultError[] = ['eio', 'bitflip'];
const KEYS = new Set(['id', 'op', 'sectors', 'error', 'probability', 'times', 'seed']);

function isSector(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function show(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'object') return 'an object';
  return String(v);
}

/**
 * Checks one rule as received (any shape) and returns a clean copy holding only the fields
 * that are present. Throws InvalidArgumentError naming the bad field.
 */
export function validateDiskFaultRule(x: unknown): DiskFaultRule {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new InvalidArgumentError(`disk fault rule: expected an object, got ${show(x)}`);
  const o = x as Record<string, unknown>;
  const id = o.id;
  if (typeof id !== 'string' || id.length === 0 || id.length > DISK_FAULT_ID_MAX)
    throw new InvalidArgumentError(`disk fault rule .id: expected a string of 1..${DISK_FAULT_ID_MAX} characters, got ${show(id)}`);
  const what = `disk fault rule ${JSON.stringify(id)}`;
  for (const key of Object.keys(o))
    if (!KEYS.has(key)) throw new InvalidArgumentError(`${what}: unknown field ${JSON.stringify(key)} (known: ${[...KEYS].join(', ')})`);

  const op = o.op;
  if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op))
    throw new InvalidArgumentError(`${what} .op: expected one of ${OPS.join(', ')}, got ${show(op)}`);
  const error = o.error;
  if (typeof error !== 'string' || !(ERRORS as readonly string[]).includes(error))
    throw new InvalidArgumentError(`${what} .error: expected one of ${ERRORS.join(', ')}, got ${show(error)}`);
  const rule: DiskFaultRule = { id, op: op as DiskFaultOp, error: error as DiskFaultError };
  if (rule.op === 'flush' && rule.error === 'bitflip') throw new InvalidArgumentError(`${what}: a flush carries no data, so it cannot take a bitflip`);

  if (o.sectors !== undefined) {
    const s: unknown = o.sectors;
    const pair: readonly unknown[] = Array.isArray(s) ? s : [];
    const [start, end] = pair;
    if (pair.length !== 2 || !isSector(start) || !isSector(end))
      throw new InvalidArgumentError(`${what} .sectors: expected [start, end) as two non-negative integers, got ${Array.isArray(s) ? JSON.stringify(s).slice(0, 60) : show(s)}`);
    if (start >= end) throw new InvalidArgumentError(`${what} .sectors: empty range [${start}, ${end}) (end must be greater than start)`);
    if (rule.op === 'flush') throw new InvalidArgumentError(`${what} .sectors: a flush has no sectors, so a flush rule cannot have a range`);
    rule.sectors = [start, end];
  }
  if (o.probability !== undefined) {
    const p = o.probability;
    if (typeof p !== 'number' || !Number.isFinite(p) || p < 0 || p > 1) throw new InvalidArgumentError(`${what} .probability: expected a number in 0..1, got ${show(p)}`);
    rule.probability = p;
  }
  if (o.times !== undefined) {
    const t = o.times;
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 1)
      throw new InvalidArgumentError(`${what} .times: expected a positive integer (omit it for no limit), got ${show(t)}`);
    rule.times = t;
  }
  if (o.seed !== undefined) {
    const seed = o.seed;
    if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
      throw new InvalidArgumentError(`${what} .seed: expected an integer in 0..${0xffffffff}, got ${show(seed)}`);
    rule.seed = seed;
  }
  return rule;
}

/**
 * Checks a whole rule set (the `rules` of hw.disk.faults): an array of at most
 * DISK_FAULT_RULES_MAX valid rules with distinct ids. Returns clean copies, in order.
 */
export function validateDiskFaultRules(x: unknown): DiskFaultRule[] {
  if (!Array.isArray(x)) throw new InvalidArgumentError(`disk fault rules: expected an array, got ${show(x)}`);
  if (x.length > DISK_FAULT_RULES_MAX) throw new InvalidArgumentError(`disk fault rules: ${x.length} rules, at most ${DISK_FAULT_RULES_MAX} allowed`);
  const rules = (x as readonly unknown[]).map((r, i) => {
    try {
      return validateDiskFaultRule(r);
    } catch (e) {
      if (e instanceof InvalidArgumentError) throw new InvalidArgumentError(`rules[${i}]: ${e.message}`);
      throw e;
    }
  });
  const seen = new Set<string>();
  for (const r of rules) {
    if (seen.has(r.id)) throw new InvalidArgumentError(`disk fault rules: duplicate id ${JSON.stringify(r.id)}`);
    seen.add(r.id);
  }
  return rules;
}
