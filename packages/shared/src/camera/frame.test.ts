/**
 * The camera frame format: what the camera renders verifies, and every kind of damage a transport
 * could do to a frame is caught — any single bit flipped, a header naming another frame, a frame
 * torn between two captures, a wrong size.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../util/crc32c.js';
import { CAMERA_HEADER_SIZE, cameraFrameSize, patternByte, renderCameraFrame, verifyCameraFrame } from './frame.js';
import { InvalidArgumentError } from '../errors.js';

const f = { width: 32, height: 8 };

function frame(seq: number, fmt = f): Uint8Array {
  const b = new Uint8Array(cameraFrameSize(fmt));
  renderCameraFrame(b, fmt, seq, 1_000_000n + BigInt(seq));
  return b;
}

describe('camera frames', () => {
  it('render and verify: sequence number, timestamp, size, the pattern', () => {
    const b = frame(42);
    expect(b.byteLength).toBe(CAMERA_HEADER_SIZE + 32 * 8);
    expect(verifyCameraFrame(b, b.byteLength, f)).toEqual({ ok: true, seq: 42, timestampUs: 1_000_042n, width: 32, height: 8 });
    expect(b[CAMERA_HEADER_SIZE + 5 * 32 + 7]).toBe(patternByte(42, 7, 5));
    // Into a larger buffer: only `used` bytes are the frame.
    const big = new Uint8Array(4096);
    const used = renderCameraFrame(big, f, 3, 0n);
    expect(verifyCameraFrame(big, used, f).ok).toBe(true);
    expect(() => renderCameraFrame(new Uint8Array(10), f, 1, 0n)).toThrow(InvalidArgumentError);
  });

  it('any single bit flipped anywhere in the frame is caught', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffffffff }), fc.nat(), fc.integer({ min: 0, max: 7 }), (seq, at, bit) => {
        const b = frame(seq);
        b[at % b.byteLength] ^= 1 << bit;
        expect(verifyCameraFrame(b, b.byteLength, f).ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('a header naming another frame, a torn frame, a wrong size or format are caught', () => {
    // The header rewritten to say frame 8, both checksums consistent: the pixels are still frame
    // 7's, and the pattern says so.
    const relabelled = frame(7);
    const v = new DataView(relabelled.buffer);
    v.setUint32(4, 8, true);
    v.setUint32(28, crc32c(relabelled.subarray(0, 28)), true);
    const r = verifyCameraFrame(relabelled, relabelled.byteLength, f);
    expect(r).toMatchObject({ ok: false, seq: 8 });
    expect((r as { reason: string }).reason).toMatch(/off the pattern of frame 8/);
    // Torn: the first half of frame 9 over the second half of frame 10.
    const torn = frame(10);
    torn.set(frame(9).subarray(0, torn.byteLength / 2));
    expect(verifyCameraFrame(torn, torn.byteLength, f).ok).toBe(false);
    const good = frame(11);
    expect(verifyCameraFrame(good, good.byteLength - 1, f)).toMatchObject({ ok: false });
    expect(verifyCameraFrame(good, good.byteLength, { width: 16, height: 16 })).toMatchObject({ ok: false, reason: '32x8, expected 16x16' });
    expect(verifyCameraFrame(new Uint8Array(8), 8)).toMatchObject({ ok: false });
    expect(verifyCameraFrame(new Uint8Array(64), 64)).toEqual({ ok: false, reason: 'bad magic' });
  });
});
