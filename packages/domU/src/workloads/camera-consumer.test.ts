/**
 * The camera consumer: intact frames in order count; gaps (frames the camera dropped), repeats
 * and reorders, and damaged frames are each told apart.
 */
import { describe, expect, it } from 'vitest';
import { cameraFrameSize, renderCameraFrame } from '@ringvisor/shared';
import { CameraConsumer } from './camera-consumer.js';

const fmt = { width: 8, height: 4 };
const frame = (seq: number) => {
  const b = new Uint8Array(cameraFrameSize(fmt));
  renderCameraFrame(b, fmt, seq, BigInt(seq * 10));
  return b;
};

describe('CameraConsumer', () => {
  it('counts frames, gaps, reorders and corruption', () => {
    const c = new CameraConsumer(fmt);
    for (const s of [1, 2, 5, 6]) expect(c.check(frame(s), cameraFrameSize(fmt))).toBe(true);
    expect(c.check(frame(4), cameraFrameSize(fmt))).toBe(false); // late
    expect(c.check(frame(6), cameraFrameSize(fmt))).toBe(false); // twice
    const bad = frame(7);
    bad[40] ^= 0x10;
    expect(c.check(bad, bad.byteLength)).toBe(false);
    expect(c.stats).toMatchObject({ frames: 6, gaps: 2, reordered: 2, corrupted: 1, lastSeq: 6 });
    expect(c.stats.failures[0]).toMatch(/frame 7: payload checksum mismatch/);
  });
});
