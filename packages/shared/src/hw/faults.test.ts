/**
 * The disk fault rule validator: rules arrive from another process, so every field is checked and
 * a bad one is named in the error.
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../errors.js';
import { DISK_FAULT_ID_MAX, DISK_FAULT_RULES_MAX, validateDiskFaultRule, validateDiskFaultRules } from './faults.js';

const base = { id: 'r1', op: 'write', error: 'eio' };

function rejects(x: unknown, message: RegExp): void {
  expect(() => validateDiskFaultRule(x)).toThrow(InvalidArgumentError);
  expect(() => validateDiskFaultRule(x)).toThrow(message);
}

describe('validateDiskFaultRule', () => {
  it('accepts a full rule and returns a clean copy of the fields present', () => {
    const input = { id: 'slow-sector', op: 'read', sectors: [100, 108], error: 'bitflip', probability: 0.25, times: 3, seed: 0xdeadbeef };
    const rule = validateDiskFaultRule(input);
    expect(rule).toEqual(input);
    expect(rule).not.toBe(input);
    expect(rule.sectors).not.toBe(input.sectors);
    expect(validateDiskFaultRule({ ...base, sectors: undefined, times: undefined })).toEqual(base); // absent, not undefined-valued
    expect(Object.keys(validateDiskFaultRule(base))).toEqual(['id', 'op', 'error']);
    for (const op of ['read', 'write', 'flush', 'any']) expect(validateDiskFaultRule({ ...base, op }).op).toBe(op);
    expect(validateDiskFaultRule({ ...base, probability: 0 }).probability).toBe(0);
    expect(validateDiskFaultRule({ ...base, probability: 1, seed: 0 })).toMatchObject({ probability: 1, seed: 0 });
  });

  it('rejects a non-object', () => {
    rejects(null, /expected an object, got null/);
    rejects([base], /expected an object, got an array/);
    rejects('r1', /expected an object/);
  });

  it('rejects a bad id', () => {
    rejects({ ...base, id: '' }, /\.id: expected a string of 1\.\.64 characters/);
    rejects({ ...base, id: 7 }, /\.id: expected a string/);
    rejects({ ...base, id: 'x'.repeat(DISK_FAULT_ID_MAX + 1) }, /\.id/);
    rejects({ op: 'read', error: 'eio' }, /\.id/);
  });

  it('rejects unknown fields (a typo must not silently mean "default")', () => {
    rejects({ ...base, probabilty: 0.5 }, /"r1": unknown field "probabilty"/);
  });

  it('rejects a bad op or error', () => {
    rejects({ ...base, op: 'discard' }, /"r1" \.op: expected one of read, write, flush, any, got "discard"/);
    rejects({ id: 'r1', error: 'eio' }, /\.op: expected one of/);
    rejects({ ...base, error: 'timeout' }, /"r1" \.error: expected one of eio, bitflip, got "timeout"/);
    rejects({ ...base, op: 'flush', error: 'bitflip' }, /flush carries no data/);
  });

  it('rejects a bad sector range', () => {
    rejects({ ...base, sectors: [8] }, /\.sectors: expected \[start, end\) as two non-negative integers, got \[8\]/);
    rejects({ ...base, sectors: [0, 8, 16] }, /\.sectors: expected/);
    rejects({ ...base, sectors: [-1, 8] }, /\.sectors: expected/);
    rejects({ ...base, sectors: [0, 1.5] }, /\.sectors: expected/);
    rejects({ ...base, sectors: ['0', '8'] }, /\.sectors: expected/);
    rejects({ ...base, sectors: { start: 0, end: 8 } }, /\.sectors: expected .*got an object/);
    rejects({ ...base, sectors: [8, 8] }, /\.sectors: empty range \[8, 8\)/);
    rejects({ ...base, sectors: [9, 8] }, /\.sectors: empty range/);
    rejects({ ...base, op: 'flush', sectors: [0, 8] }, /a flush has no sectors/);
  });

  it('rejects a bad probability, times or seed', () => {
    rejects({ ...base, probability: 1.5 }, /\.probability: expected a number in 0\.\.1, got 1\.5/);
    rejects({ ...base, probability: -0.1 }, /\.probability/);
    rejects({ ...base, probability: Number.NaN }, /\.probability/);
    rejects({ ...base, probability: '0.5' }, /\.probability/);
    rejects({ ...base, times: 0 }, /\.times: expected a positive integer/);
    rejects({ ...base, times: 2.5 }, /\.times/);
    rejects({ ...base, times: Number.POSITIVE_INFINITY }, /\.times/);
    rejects({ ...base, seed: -1 }, /\.seed: expected an integer in 0\.\.4294967295/);
    rejects({ ...base, seed: 2 ** 32 }, /\.seed/);
    rejects({ ...base, seed: 0.5 }, /\.seed/);
  });
});

describe('validateDiskFaultRules', () => {
  it('checks the list: an array, each rule (indexed), distinct ids, bounded length', () => {
    expect(validateDiskFaultRules([])).toEqual([]);
    expect(validateDiskFaultRules([base, { ...base, id: 'r2' }]).map((r) => r.id)).toEqual(['r1', 'r2']);
    expect(() => validateDiskFaultRules(base)).toThrow(/expected an array, got an object/);
    expect(() => validateDiskFaultRules([base, { ...base, id: 'r2', op: 'trim' }])).toThrow(/^rules\[1\]: disk fault rule "r2" \.op/);
    expect(() => validateDiskFaultRules([base, base])).toThrow(/duplicate id "r1"/);
    const many = Array.from({ length: DISK_FAULT_RULES_MAX + 1 }, (_, i) => ({ ...base, id: `r${i}` }));
    expect(() => validateDiskFaultRules(many)).toThrow(InvalidArgumentError);
  });
});
