import { InvalidArgumentError, crc32c } from '@ringvisor/shared';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BLOCK_HEADER_SIZE,
  BLOCK_SIZE,
  classifyBlock,
  decodeBlockHeader,
  encodeBlock,
  SECTOR_SIZE,
  type BlockIdentity,
} from './block-format.js';
import { SplitMix32 } from '@ringvisor/shared';

const enc = (id: BlockIdentity): Uint8Array => {
  const b = new Uint8Array(BLOCK_SIZE);
  encodeBlock(b, id);
  return b;
};
const ID: BlockIdentity = { lba: 12, generation: 5, writer: 3 };

describe('block format', () => {
  it('lays out the header as documented', () => {
    const b = enc({ lba: 0x1_2345_6789, generation: 0xdeadbeef, writer: 0xbeef });
    const v = new DataView(b.buffer);
    expect(new TextDecoder().decode(b.subarray(0, 4))).toBe('RVBK');
    expect(v.getUint16(4, true)).toBe(1);
    expect(v.getUint16(6, true)).toBe(0xbeef);
    expect(v.getBigUint64(8, true)).toBe(0x1_2345_6789n);
    expect(v.getUint32(16, true)).toBe(0xdeadbeef);
    expect(v.getUint32(20, true)).toBe(BLOCK_SIZE - BLOCK_HEADER_SIZE);
    expect(v.getUint32(24, true)).toBe(crc32c(b.subarray(32)));
    expect(v.getUint32(28, true)).toBe(crc32c(b.subarray(0, 28)));
    expect(decodeBlockHeader(b)).toMatchObject({ lba: 0x1_2345_6789, generation: 0xdeadbeef, writer: 0xbeef });
  });

  it('payload is deterministic and differs per writer, lba and generation', () => {
    const p = (id: BlockIdentity) => Buffer.from(enc(id).subarray(BLOCK_HEADER_SIZE)).toString('hex');
    expect(p(ID)).toBe(p({ ...ID }));
    const variants = [ID, { ...ID, writer: 4 }, { ...ID, lba: 13 }, { ...ID, generation: 6 }, { ...ID, lba: 12 + 2 ** 32 }];
    expect(new Set(variants.map(p)).size).toBe(variants.length);
    // Not a trivially repeating pattern: bytes roughly uniform.
    const payload = enc(ID).subarray(BLOCK_HEADER_SIZE);
    const counts = new Array(256).fill(0);
    for (const x of payload) counts[x]++;
    expect(Math.max(...counts)).toBeLessThan(40); // mean ~16
  });

  it('rejects bad buffers and identities', () => {
    expect(() => encodeBlock(new Uint8Array(4095), ID)).toThrow(InvalidArgumentError);
    expect(() => enc({ ...ID, generation: 0 })).toThrow(InvalidArgumentError);
    expect(() => enc({ ...ID, writer: 0x10000 })).toThrow(InvalidArgumentError);
    expect(() => enc({ ...ID, lba: -1 })).toThrow(InvalidArgumentError);
    expect(() => classifyBlock(new Uint8Array(512), ID)).toThrow(InvalidArgumentError);
  });

  it('reaches every classification', () => {
    const zero = new Uint8Array(BLOCK_SIZE);
    expect(classifyBlock(enc(ID), ID)).toBe('ok');
    expect(classifyBlock(zero, undefined)).toBe('zero');
    expect(classifyBlock(zero, { ...ID, generation: 0 })).toBe('zero');
    expect(classifyBlock(zero, ID)).toBe('zero'); // lost write: caller decides this is a failure

    const payloadHit = enc(ID);
    payloadHit[2000] ^= 0x10;
    expect(classifyBlock(payloadHit, ID)).toBe('torn');
    const headerHit = enc(ID);
    headerHit[16] ^= 0x01; // generation field, header crc now wrong
    expect(classifyBlock(headerHit, ID)).toBe('torn');
    // Torn write: new first sector over an old block.
    const mixed = enc({ ...ID, generation: 4 });
    mixed.set(enc(ID).subarray(0, SECTOR_SIZE), 0);
    expect(classifyBlock(mixed, ID)).toBe('torn');
    const mixed2 = enc(ID);
    mixed2.set(enc({ ...ID, generation: 4 }).subarray(0, SECTOR_SIZE), 0);
    expect(classifyBlock(mixed2, ID)).toBe('torn');
    // Partially zero (only the first sector reached the disk).
    const partial = new Uint8Array(BLOCK_SIZE);
    partial.set(enc(ID).subarray(0, SECTOR_SIZE));
    expect(classifyBlock(partial, ID)).toBe('torn');

    expect(classifyBlock(enc({ ...ID, lba: 13 }), ID)).toBe('misdirected');
    expect(classifyBlock(enc({ ...ID, generation: 4 }), ID)).toBe('stale');
    expect(classifyBlock(enc({ ...ID, writer: 9 }), ID)).toBe('foreign');
    expect(classifyBlock(enc({ ...ID, generation: 6 }), ID)).toBe('unexpected');
    expect(classifyBlock(enc(ID), undefined)).toBe('unexpected');
    expect(classifyBlock(enc(ID), { ...ID, generation: 0 })).toBe('unexpected');
    // Precedence: another writer's block wins over lba/generation differences.
    expect(classifyBlock(enc({ lba: 1, generation: 1, writer: 9 }), ID)).toBe('foreign');
    expect(classifyBlock(enc({ ...ID, lba: 1, generation: 1 }), ID)).toBe('misdirected');
  });

  it('a crc-consistent block whose payload is not the deterministic one is torn', () => {
    const b = enc(ID);
    b[100] ^= 1;
    const v = new DataView(b.buffer);
    v.setUint32(24, crc32c(b.subarray(32)), true);
    v.setUint32(28, crc32c(b.subarray(0, 28)), true);
    expect(classifyBlock(b, ID)).toBe('torn');
  });

  it('no single-bit flip in the header is ever ok (exhaustive)', () => {
    const b = enc(ID);
    for (let bit = 0; bit < BLOCK_HEADER_SIZE * 8; bit++) {
      b[bit >> 3] ^= 1 << (bit & 7);
      expect(classifyBlock(b, ID), `bit ${bit}`).not.toBe('ok');
      b[bit >> 3] ^= 1 << (bit & 7);
    }
    expect(classifyBlock(b, ID)).toBe('ok');
  });

  it('no single-bit flip anywhere is ever ok (property)', () => {
    fc.assert(
      fc.property(
        fc.record({
          lba: fc.nat({ max: 2 ** 40 }),
          generation: fc.integer({ min: 1, max: 0xffffffff }),
          writer: fc.integer({ min: 0, max: 0xffff }),
        }),
        fc.integer({ min: 0, max: BLOCK_SIZE * 8 - 1 }),
        (id, bit) => {
          const b = enc(id);
          expect(classifyBlock(b, id)).toBe('ok');
          b[bit >> 3] ^= 1 << (bit & 7);
          expect(classifyBlock(b, id)).not.toBe('ok');
        },
      ),
      { numRuns: 4000 },
    );
  });
});

describe('SplitMix32', () => {
  it('is deterministic per seed and stays in range', () => {
    const a = new SplitMix32(42);
    const b = new SplitMix32(42);
    const c = new SplitMix32(43);
    const xs = Array.from({ length: 1000 }, () => a.nextU32());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.nextU32()));
    expect(xs.slice(0, 10)).not.toEqual(Array.from({ length: 10 }, () => c.nextU32()));
    expect(xs.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff)).toBe(true);
    const r = new SplitMix32(1);
    const buckets = new Array(10).fill(0);
    for (let i = 0; i < 10000; i++) buckets[r.nextInt(10)]++;
    expect(Math.min(...buckets)).toBeGreaterThan(850);
    expect(Math.max(...buckets)).toBeLessThan(1150);
  });
});
