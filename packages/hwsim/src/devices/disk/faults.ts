/**
 * DiskFaultTable — the drive's blkdebug: the fault rules dom0 installed (hw.disk.faults) and the
 * state that makes them reproducible.
 *
 * The queue asks `match` once per validated request, before any data moves, so an EIO on a write
 * leaves the image untouched. Each rule owns two PRNG streams derived from its seed — one for the
 * probability draws, one for the bit to flip — and every unspent rule whose op and sector range
 * match a request consumes exactly one probability draw for it, whether or not an earlier rule
 * already fired. So each rule's hit pattern depends only on its seed and on the requests it
 * matches, never on the other rules in the table; the first rule (in table order) whose draw
 * succeeds fires, and only it counts a hit and draws a bit. Replacing the table restarts every
 * stream: installing the same rules and replaying the same requests gives the same faults.
 */
import { InvalidArgumentError, SECTOR_SIZE, SplitMix32, mixSeed, validateDiskFaultRules, type DiskFaultRule, type DiskFaultStats } from '@ringvisor/shared';
import type { BlkOpKind } from './request.js';

/** What a fired rule does to the request it hit. */
export type DiskFaultHit =
  | { rule: Readonly<DiskFaultRule>; error: 'eio' }
  /** `bit`: index into the request's data, 0 ≤ bit < sectors × 512 × 8 (byte bit >> 3, bit bit & 7). */
  | { rule: Readonly<DiskFaultRule>; error: 'bitflip'; bit: number };

interface RuleState {
  readonly rule: Readonly<DiskFaultRule>;
  readonly draws: SplitMix32;
  readonly bits: SplitMix32;
  hits: number;
}

/** Stream tags mixed into a rule's seed, so probability and bit choice never share numbers. */
const DRAW_STREAM = 0x64726177; // 'draw'
const BIT_STREAM = 0x62697473; // 'bits'

export class DiskFaultTable {
  private rules: RuleState[] = [];

  /** Replace the rules (validated: throws InvalidArgumentError, leaving the table as it was). Fresh counters and streams. */
  set(rules: readonly DiskFaultRule[]): void {
    const checked = validateDiskFaultRules(rules);
    this.rules = checked.map((rule) => {
      const seed = rule.seed ?? 0;
      return { rule: Object.freeze(rule), draws: new SplitMix32(mixSeed(seed, DRAW_STREAM)), bits: new SplitMix32(mixSeed(seed, BIT_STREAM)), hits: 0 };
    });
  }

  clear(): void {
    this.rules = [];
  }

  get size(): number {
    return this.rules.length;
  }

  /**
   * The fault for a request of `op` on sectors [sector, sector + count) (flush: count 0), or
   * undefined. Consumes draws as described above; call once per request.
   */
  match(op: BlkOpKind, sector: number, count: number): DiskFaultHit | undefined {
    let fired: RuleState | undefined;
    for (const s of this.rules) {
      if (!matches(s, op, sector, count)) continue;
      const draw = s.draws.next(); // always drawn: the stream advances once per matching request
      if (fired === undefined && draw < (s.rule.probability ?? 1)) fired = s;
    }
    if (fired === undefined) return undefined;
    fired.hits++;
    if (fired.rule.error === 'eio') return { rule: fired.rule, error: 'eio' };
    return { rule: fired.rule, error: 'bitflip', bit: fired.bits.nextInt(count * SECTOR_SIZE * 8) };
  }

  stats(): DiskFaultStats[] {
    return this.rules.map((s) => ({ id: s.rule.id, hits: s.hits, spent: spent(s) }));
  }
}

function spent(s: RuleState): boolean {
  return s.rule.times !== undefined && s.hits >= s.rule.times;
}

function matches(s: RuleState, op: BlkOpKind, sector: number, count: number): boolean {
  const { rule } = s;
  if (spent(s)) return false;
  if (rule.op !== 'any' && rule.op !== op) return false;
  if (op === 'flush') return rule.sectors === undefined && rule.error !== 'bitflip'; // no sectors, no data
  if (rule.sectors === undefined) return true;
  const [start, end] = rule.sectors;
  return sector < end && sector + count > start;
}

/** Flip bit `bit` (byte bit >> 3, bit bit & 7) of `buf` in place. */
/**
 * Which piece of a request's data holds data bit `bit`, and the bit's index within it — `lengths`
 * are the pieces' byte lengths in request order (a queue's transfers, a function's IOMMU views,
 * a VIF's segments: every device on the same media takes the same rules).
 */
export function locateBit(lengths: readonly number[], bit: number): { index: number; bit: number } {
  let rest = bit;
  for (let i = 0; i < lengths.length; i++) {
    const bits = lengths[i] * 8;
    if (rest < bits) return { index: i, bit: rest };
    rest -= bits;
  }
  throw new InvalidArgumentError(`bit ${bit} beyond the request's data`); // match() draws within sectors × 512 × 8
}

export function flipBit(buf: Uint8Array, bit: number): void {
  buf[bit >>> 3] ^= 1 << (bit & 7);
}

/** The medium, as the devices on it see it. */
interface Medium {
  readSectors(sector: number, into: Uint8Array): void;
  writeSectors(sector: number, data: Uint8Array): void;
}

/** Read one piece of a request; with a flip (`bit`), it is corrupted as delivered to memory. */
export function readPiece(disk: Medium, sector: number, into: Uint8Array, bit?: number): void {
  disk.readSectors(sector, into);
  if (bit !== undefined) flipBit(into, bit);
}

/** Write one piece of a request; with a flip, what reaches the medium is corrupted, never the caller's buffer. */
export function writePiece(disk: Medium, sector: number, data: Uint8Array, bit?: number): void {
  if (bit === undefined) return disk.writeSectors(sector, data);
  const bad = data.slice();
  flipBit(bad, bit);
  disk.writeSectors(sector, bad);
}
