/** VIF messages round-trip through their 64-byte slots; a raw segment count above 4 is kept for the device to refuse. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIF_BLK_MAX_SEGMENTS, VIF_CAM_FRAME, VIF_READ, VIF_RX_POST, VIF_TX, VIF_WRITE, vifCodec, vifMessage } from './messages.js';

describe('VIF messages', () => {
  it('net and block messages round-trip', () => {
    const view = new DataView(new ArrayBuffer(64));
    fc.assert(
      fc.property(
        fc.constantFrom(VIF_TX, VIF_RX_POST, VIF_READ, VIF_WRITE),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: -32768, max: 32767 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.array(fc.record({ gfn: fc.integer({ min: 0, max: 0xffffffff }), first: fc.integer({ min: 0, max: 255 }), last: fc.integer({ min: 0, max: 255 }) }), { maxLength: VIF_BLK_MAX_SEGMENTS }),
        (type, id, status, gfn, offset, len, sector, segments) => {
          const blk = type === VIF_READ || type === VIF_WRITE;
          const m = blk ? vifMessage({ type, id, status, sector, segments }) : vifMessage({ type, id, status, gfn, offset, len });
          vifCodec.encode(view, 0, m);
          expect(vifCodec.decode(view, 0)).toEqual(m);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('camera frames round-trip', () => {
    const view = new DataView(new ArrayBuffer(64));
    const m = vifMessage({ type: VIF_CAM_FRAME, id: 3, seq: 0xfffffffe, used: 76832, timestampUs: 1_796_000_000_123_456n });
    vifCodec.encode(view, 0, m);
    expect(vifCodec.decode(view, 0)).toEqual(m);
  });

  it('keeps the raw segment count a guest wrote, decoding at most four segments', () => {
    const view = new DataView(new ArrayBuffer(64));
    vifCodec.encode(view, 0, vifMessage({ type: VIF_READ, id: 1, segments: [{ gfn: 1, first: 0, last: 7 }] }));
    view.setUint8(16, 9);
    const m = vifCodec.decode(view, 0);
    expect(m.nseg).toBe(9);
    expect(m.segments).toHaveLength(4);
  });
});
