import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { MAX_DEPTH, MAX_VALUES, msgpackProblem } from './msgpack-check.js';
import { encodeMessage } from './ws.js';
import { anyExtension, embedded } from './test-support/msgpack-frames.js';

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** Plain data as the transport carries it: no Dates, no class instances, no typed arrays but bytes. */
const plain = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double({ noNaN: true }).map((x) => (Object.is(x, -0) ? 0 : x)),
    fc.string({ unit: 'binary' }),
    fc.uint8Array({ maxLength: 300 }),
    fc.array(tie('value'), { maxLength: 6 }),
    fc.dictionary(fc.string(), fc.oneof(tie('value'), fc.constant(undefined)), { maxKeys: 6 }),
  ),
})).value;

describe('msgpackProblem', () => {
  it('accepts everything the transport encodes, and msgpackr decodes it to the same value', () => {
    fc.assert(
      fc.property(plain, (payload) => {
        const bytes = encodeMessage({ t: 'notify', topic: 'p', payload });
        expect(msgpackProblem(bytes)).toBeNull();
        // Decoded and encoded again, it is the same bytes (bin comes back as a Buffer, a Uint8Array).
        expect(Buffer.from(encodeMessage(unpackr.unpack(bytes) as { t: 'notify'; topic: string; payload: unknown }))).toEqual(Buffer.from(bytes));
      }),
      { numRuns: 500, seed: 17 },
    );
  });

  it('refuses every extension type wherever it sits, naming it', () => {
    fc.assert(
      fc.property(anyExtension.chain(embedded), (bytes) => {
        expect(msgpackProblem(bytes)).toMatch(/^msgpack extension -?\d+ .*in (fixext|ext) \d+ is not accepted$/);
      }),
      { numRuns: 1000, seed: 18 },
    );
    expect(msgpackProblem(new Packr().pack(new Date(0)))).toMatch(/extension -1 \(timestamp\) in fixext 4/);
    expect(msgpackProblem(new Packr({ useRecords: true }).pack({ a: 1 }))).toMatch(/extension 114 \(msgpackr's record\)/);
    const shared = { s: 'x'.repeat(10) };
    expect(msgpackProblem(new Packr({ structuredClone: true }).pack([shared, shared]))).toMatch(/not accepted/);
    expect(msgpackProblem(new Packr({ moreTypes: true }).pack(/a+$/))).toMatch(/not accepted/);
    expect(msgpackProblem(new Packr({ moreTypes: true }).pack(new Float64Array(3)))).toMatch(/not accepted/);
  });

  it("lets msgpackr's `undefined` (d4 00 00) through and nothing that merely resembles it", () => {
    expect(msgpackProblem(Uint8Array.from([0x81, 0xa1, 0x61, 0xd4, 0x00, 0x00]))).toBeNull();
    expect(unpackr.unpack(Buffer.from([0x81, 0xa1, 0x61, 0xd4, 0x00, 0x00]))).toEqual({ a: undefined });
    expect(msgpackProblem(Uint8Array.from([0xd4, 0x00, 0x01]))).toMatch(/extension 0/);
    expect(msgpackProblem(Uint8Array.from([0xd5, 0x00, 0x00, 0x00]))).toMatch(/extension 0/);
    expect(msgpackProblem(Uint8Array.from([0xd4, 0x00]))).toMatch(/extension 0/);
  });

  it('refuses a container that promises more values than the frame has bytes, at its header', () => {
    // a map of 2^32-1 entries in 5 bytes, an array of 2^32-1 in 5, then with a tail of padding
    expect(msgpackProblem(Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff]))).toMatch(/declares more values than its 5 bytes/);
    expect(msgpackProblem(Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff]))).toMatch(/declares more values/);
    const padded = new Uint8Array(1 << 20).fill(0xc0);
    padded.set([0xdd, 0x00, 0x10, 0x00, 0x00]); // 1 Mi values promised, 1 Mi - 5 bytes left
    expect(msgpackProblem(padded)).toMatch(/declares more values/);
    // promises add up across nesting: [ [16 values], [16 values] ] in 10 bytes
    expect(msgpackProblem(Uint8Array.from([0x92, 0x9f, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0x9f, 0xc0, 0xc0]))).toMatch(/declares more values/);
  });

  it(`bounds the values of a message at ${MAX_VALUES}, at the header that would exceed it`, () => {
    const array = (n: number, fill: number): Uint8Array => {
      const b = new Uint8Array(5 + n).fill(fill);
      b.set([0xdd, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
      return b;
    };
    expect(msgpackProblem(array(MAX_VALUES - 1, 0xc0))).toBeNull(); // the array and its values
    expect(msgpackProblem(array(MAX_VALUES, 0xc0))).toBe(`declares more than ${MAX_VALUES} values`);
    expect(msgpackProblem(array(16 * 1024 * 1024 - 5, 0x90))).toBe(`declares more than ${MAX_VALUES} values`);
    // counted across containers: two arrays of half each, plus the outer one
    const half = array(MAX_VALUES / 2, 0xc0);
    expect(msgpackProblem(Uint8Array.from([0x92, ...half, ...half]))).toBe(`declares more than ${MAX_VALUES} values`);
  });

  it(`bounds nesting at ${MAX_DEPTH}`, () => {
    const nest = (n: number): Uint8Array => Uint8Array.from([...new Array<number>(n).fill(0x91), 0xc0]);
    expect(msgpackProblem(nest(MAX_DEPTH))).toBeNull();
    expect(msgpackProblem(nest(MAX_DEPTH + 1))).toBe(`nested deeper than ${MAX_DEPTH}`);
    expect(msgpackProblem(nest(1_000_000))).toBe(`nested deeper than ${MAX_DEPTH}`);
  });

  it('refuses 0xc1, non-scalar map keys, trailing bytes, empty and truncated frames', () => {
    expect(msgpackProblem(Uint8Array.from([0xc1]))).toMatch(/0xc1/);
    expect(msgpackProblem(Uint8Array.from([0x81, 0x90, 0xc0]))).toMatch(/map key/);
    expect(msgpackProblem(Uint8Array.from([0x81, 0xc4, 0x00, 0xc0]))).toMatch(/map key/);
    expect(msgpackProblem(Uint8Array.from([0x81, 0x07, 0xc0]))).toBeNull(); // integer keys are fine
    expect(msgpackProblem(Uint8Array.from([0xc0, 0xc0]))).toBe('1 bytes after the message');
    expect(msgpackProblem(new Uint8Array(0))).toBe('empty frame');
    expect(msgpackProblem(Uint8Array.from([0x92, 0xcd, 0x01]))).toBe('truncated');
    expect(msgpackProblem(Uint8Array.from([0xc6, 0xff, 0xff, 0xff, 0xff, 1]))).toBe('truncated');
    expect(msgpackProblem(Uint8Array.from([0xdb, 0x00, 0x00]))).toBe('truncated');
  });

  it('never throws on random bytes, and what it accepts msgpackr decodes without throwing', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const problem = msgpackProblem(bytes);
        if (problem === null) expect(() => unpackr.unpack(Buffer.from(bytes))).not.toThrow();
      }),
      { numRuns: 5000, seed: 19 },
    );
  });
});
