/**
 * The camera: every frame time gets the next sequence number; a frame with a buffer is rendered
 * into it (verifiable by the consumer), one without is dropped and shows as a gap; streaming runs
 * on the camera's own timer.
 */
import { describe, expect, it, vi } from 'vitest';
import { ConfigError, verifyCameraFrame } from '@ringvisor/shared';
import { CameraDevice, type CameraSink } from './device.js';

describe('CameraDevice', () => {
  it('renders each frame into the buffer it is given; frames without a buffer are dropped, their numbers skipped', () => {
    let now = 5_000;
    const cam = new CameraDevice({ width: 16, height: 4, fps: 30, clockUs: () => (now += 33_333) });
    const got: Array<{ seq: number; used: number; ts: bigint; ok: boolean }> = [];
    let buffers = 2;
    const pool = [new Uint8Array(cam.frameSize), new Uint8Array(cam.frameSize)];
    const sink: CameraSink = {
      buffer: (size) => (buffers > 0 && size === cam.frameSize ? pool[--buffers] : undefined),
      filled: (seq, used, ts) => got.push({ seq, used, ts, ok: verifyCameraFrame(pool[buffers], used, cam.format).ok }),
    };
    for (let i = 0; i < 4; i++) cam.capture(sink);
    expect(got.map((g) => [g.seq, g.used, g.ok])).toEqual([
      [1, cam.frameSize, true],
      [2, cam.frameSize, true],
    ]);
    expect(got[1].ts).toBeGreaterThan(got[0].ts);
    expect(cam.metrics).toEqual({ captured: 4, delivered: 2, dropped: 2, bytes: 2 * cam.frameSize });
    buffers = 1;
    cam.capture(sink);
    expect(got.at(-1)!.seq).toBe(5); // 3 and 4 were dropped: the consumer sees the gap
  });

  it('streams on its own clock until stopped', async () => {
    const cam = new CameraDevice({ width: 8, height: 2, fps: 200 });
    const seqs: number[] = [];
    cam.start({ buffer: (n) => new Uint8Array(n), filled: (seq) => seqs.push(seq) });
    expect(cam.streaming).toBe(true);
    await vi.waitFor(() => expect(seqs.length).toBeGreaterThanOrEqual(3), { timeout: 10_000, interval: 5 });
    cam.stop();
    expect(cam.streaming).toBe(false);
    const n = seqs.length;
    expect(n).toBeGreaterThan(0);
    expect(seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    await new Promise((r) => setTimeout(r, 30));
    expect(seqs.length).toBe(n);
  });

  it('refuses impossible formats with what was wrong', () => {
    expect(() => new CameraDevice({ width: 0, height: 4, fps: 30 })).toThrow(ConfigError);
    expect(() => new CameraDevice({ width: 4, height: 4, fps: 1000 })).toThrow(/fps must be an integer in 1\.\.240/);
  });
});
