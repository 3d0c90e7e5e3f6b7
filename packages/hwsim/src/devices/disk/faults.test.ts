/**
 * DiskFaultTable on its own: which requests a rule matches, and that its seeded draws give the
 * same faults every time the same rules meet the same requests.
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, type DiskFaultRule } from '@ringvisor/shared';
import { DiskFaultTable, flipBit, type DiskFaultHit } from './faults.js';
import type { BlkOpKind } from './request.js';

function table(...rules: DiskFaultRule[]): DiskFaultTable {
  const t = new DiskFaultTable();
  t.set(rules);
  return t;
}

const id = (h: DiskFaultHit | undefined): string | undefined => h?.rule.id;

/** Which of `n` identical write requests the table hits (as a 0/1 string). */
function pattern(t: DiskFaultTable, n: number, op: BlkOpKind = 'write', sector = 0, count = 8): string {
  let s = '';
  for (let i = 0; i < n; i++) s += t.match(op, sector, count) ? '1' : '0';
  return s;
}

describe('DiskFaultTable', () => {
  it('matches on op: read, write, flush, any', () => {
    const t = table({ id: 'r', op: 'read', error: 'eio' }, { id: 'w', op: 'write', error: 'eio' }, { id: 'f', op: 'flush', error: 'eio' });
    expect(id(t.match('read', 0, 1))).toBe('r');
    expect(id(t.match('write', 0, 1))).toBe('w');
    expect(id(t.match('flush', 0, 0))).toBe('f');
    const any = table({ id: 'a', op: 'any', error: 'eio' });
    expect([id(any.match('read', 5, 1)), id(any.match('write', 5, 1)), id(any.match('flush', 0, 0))]).toEqual(['a', 'a', 'a']);
    expect(any.stats()).toEqual([{ id: 'a', hits: 3, spent: false }]);
    expect(table({ id: 'r', op: 'read', error: 'eio' }).match('write', 0, 8)).toBeUndefined();
  });

  it('matches a request that overlaps the sector range [start, end), and no other', () => {
    const t = table({ id: 'x', op: 'any', sectors: [100, 108], error: 'eio' });
    expect(t.match('read', 92, 8)).toBeUndefined(); // [92, 100): ends where the range starts
    expect(t.match('write', 108, 8)).toBeUndefined(); // [108, 116): starts at the exclusive end
    expect(t.match('read', 0, 100)).toBeUndefined();
    expect(id(t.match('read', 93, 8))).toBe('x'); // [93, 101) overlaps by one sector
    expect(id(t.match('write', 107, 8))).toBe('x');
    expect(id(t.match('read', 102, 1))).toBe('x'); // inside
    expect(id(t.match('write', 0, 2048))).toBe('x'); // covers it
    expect(t.stats()).toEqual([{ id: 'x', hits: 4, spent: false }]);
  });

  it('lets a flush match only rules without a range, and never a bitflip', () => {
    const t = table(
      { id: 'ranged', op: 'any', sectors: [0, 2048], error: 'eio' },
      { id: 'flip', op: 'any', error: 'bitflip' },
      { id: 'eio', op: 'any', error: 'eio', times: 1 },
    );
    expect(id(t.match('flush', 0, 0))).toBe('eio');
    expect(t.match('flush', 0, 0)).toBeUndefined(); // 'eio' spent; the others cannot match a flush
    expect(t.stats()).toEqual([
      { id: 'ranged', hits: 0, spent: false },
      { id: 'flip', hits: 0, spent: false },
      { id: 'eio', hits: 1, spent: true },
    ]);
  });

  it('fires the first matching rule in table order', () => {
    const t = table({ id: 'narrow', op: 'write', sectors: [10, 11], error: 'bitflip' }, { id: 'wide', op: 'any', error: 'eio' });
    expect(t.match('write', 10, 1)).toMatchObject({ rule: { id: 'narrow' }, error: 'bitflip' });
    expect(t.match('write', 11, 1)).toMatchObject({ rule: { id: 'wide' }, error: 'eio' });
    expect(t.match('read', 10, 1)).toMatchObject({ rule: { id: 'wide' }, error: 'eio' });
  });

  it('stops a rule after `times` hits and reports it spent; later rules take over', () => {
    const t = table({ id: 'thrice', op: 'write', error: 'eio', times: 3 }, { id: 'after', op: 'write', error: 'eio', times: 2 });
    const hits = Array.from({ length: 7 }, () => id(t.match('write', 0, 8)));
    expect(hits).toEqual(['thrice', 'thrice', 'thrice', 'after', 'after', undefined, undefined]);
    expect(t.stats()).toEqual([
      { id: 'thrice', hits: 3, spent: true },
      { id: 'after', hits: 2, spent: true },
    ]);
  });

  it('draws probability from the seed: the same hit pattern twice, another seed another pattern', () => {
    const rule: DiskFaultRule = { id: 'p', op: 'write', error: 'eio', probability: 0.3, seed: 42 };
    const a = pattern(table(rule), 1000);
    const t = table(rule);
    expect(pattern(t, 1000)).toBe(a);
    t.set([rule]); // re-installing restarts the streams
    expect(pattern(t, 1000)).toBe(a);
    const rate = [...a].filter((c) => c === '1').length / a.length;
    expect(rate).toBeGreaterThan(0.25);
    expect(rate).toBeLessThan(0.35);
    expect(pattern(table({ ...rule, seed: 43 }), 1000)).not.toBe(a);
    expect(pattern(table({ ...rule, probability: 0 }), 100)).toBe('0'.repeat(100));
    expect(pattern(table({ ...rule, probability: 1 }), 100)).toBe('1'.repeat(100));
    expect(pattern(table({ ...rule, seed: undefined }), 200)).toBe(pattern(table({ ...rule, seed: 0 }), 200)); // default seed 0
  });

  it('keeps each rule on its own stream: an earlier rule changes which fires, not what a rule draws', () => {
    const a: DiskFaultRule = { id: 'a', op: 'write', error: 'eio', probability: 0.5, seed: 1 };
    const b: DiskFaultRule = { id: 'b', op: 'write', error: 'eio', probability: 0.5, seed: 2 };
    const alone = { a: pattern(table(a), 200), b: pattern(table(b), 200) };
    const both = table(a, b);
    const fired = Array.from({ length: 200 }, () => id(both.match('write', 0, 8)));
    fired.forEach((f, i) => expect(f).toBe(alone.a[i] === '1' ? 'a' : alone.b[i] === '1' ? 'b' : undefined));
    // A request outside a rule's op or range draws nothing from it.
    const skip = table(b);
    for (let i = 0; i < 200; i++) {
      expect(skip.match('read', 0, 8)).toBeUndefined();
      expect(id(skip.match('write', 0, 8))).toBe(alone.b[i] === '1' ? 'b' : undefined);
    }
  });

  it('picks the bit to flip from the rule’s seed, within the request’s data', () => {
    const rule: DiskFaultRule = { id: 'flip', op: 'read', error: 'bitflip', seed: 7 };
    const bits = (t: DiskFaultTable): number[] =>
      Array.from({ length: 50 }, () => {
        const h = t.match('read', 0, 3);
        if (h?.error !== 'bitflip') throw new Error('expected a bitflip');
        return h.bit;
      });
    const first = bits(table(rule));
    expect(bits(table(rule))).toEqual(first);
    expect(first.every((b) => Number.isInteger(b) && b >= 0 && b < 3 * 512 * 8)).toBe(true);
    expect(new Set(first).size).toBeGreaterThan(40);
    expect(bits(table({ ...rule, seed: 8 }))).not.toEqual(first);
  });

  it('validates on set and leaves the table as it was when refused; clear() empties it', () => {
    const t = table({ id: 'keep', op: 'read', error: 'eio' });
    expect(() => t.set([{ id: 'x', op: 'read', error: 'eio' }, { id: 'x', op: 'write', error: 'eio' }])).toThrow(InvalidArgumentError);
    expect(() => t.set([{ id: 'y', op: 'read', error: 'eio', probability: 2 }])).toThrow(/probability/);
    expect(t.stats()).toEqual([{ id: 'keep', hits: 0, spent: false }]);
    t.clear();
    expect(t.size).toBe(0);
    expect(t.stats()).toEqual([]);
    expect(t.match('read', 0, 1)).toBeUndefined();
  });

  it('flipBit flips exactly the addressed bit', () => {
    const b = new Uint8Array(4);
    flipBit(b, 0);
    flipBit(b, 15);
    flipBit(b, 26);
    expect([...b]).toEqual([0x01, 0x80, 0x00, 0x04]);
    flipBit(b, 15);
    expect(b[1]).toBe(0);
  });
});
