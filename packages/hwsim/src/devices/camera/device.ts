/**
 * CameraDevice — the simulated camera: frames of a configured size at a configured rate, each
 * one rendered straight into a buffer the consumer side supplied (shared/src/camera/frame.ts:
 * sequence number, timestamp, checksums, and a test pattern that depends on the sequence number).
 *
 * Like a real sensor it does not wait: at every frame time it captures, and if nobody has a
 * buffer ready the frame is dropped — counted, and visible to the consumer as a gap in the
 * sequence numbers. Its rate comes from its own clock (a timer), never from whoever reads it.
 */
import { CAMERA_MAX_HEIGHT, CAMERA_MAX_WIDTH, ConfigError, cameraFrameSize, renderCameraFrame, type CameraFormat } from '@ringvisor/shared';

export interface CameraOptions extends CameraFormat {
  /** Frames per second, 1..240. */
  fps: number;
  /** The camera's clock in µs (tests pass their own). */
  clockUs?: () => number;
}

/** Where captured frames go: a buffer for the next frame (or none: dropped), then its completion. */
export interface CameraSink {
  buffer(size: number): Uint8Array | undefined;
  /** `timestampUs` is the frame header's u64, exact. */
  filled(seq: number, used: number, timestampUs: bigint): void;
}

export interface CameraMetrics {
  /** Frame times that came (every one gets a sequence number). */
  captured: number;
  /** Frames rendered into a consumer's buffer. */
  delivered: number;
  /** Frames lost for want of a buffer. */
  dropped: number;
  bytes: number;
}

export class CameraDevice {
  readonly format: CameraFormat;
  readonly fps: number;
  readonly frameSize: number;
  readonly metrics: CameraMetrics = { captured: 0, delivered: 0, dropped: 0, bytes: 0 };
  private seq = 0;
  private lastTs: bigint | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sink: CameraSink | undefined;
  private readonly clockUs: () => number;

  constructor(o: CameraOptions) {
    for (const [k, v, max] of [
      ['width', o.width, CAMERA_MAX_WIDTH],
      ['height', o.height, CAMERA_MAX_HEIGHT],
      ['fps', o.fps, 240],
    ] as const)
      if (!Number.isInteger(v) || v < 1 || v > max) throw new ConfigError(`camera ${k} must be an integer in 1..${max}, got ${String(v)}`);
    this.format = { width: o.width, height: o.height };
    this.fps = o.fps;
    this.frameSize = cameraFrameSize(this.format);
    this.clockUs = o.clockUs ?? (() => Math.floor((performance.timeOrigin + performance.now()) * 1000));
  }

  get streaming(): boolean {
    return this.timer !== undefined;
  }

  /** The last sequence number given (the next frame's is one more). */
  get sequence(): number {
    return this.seq;
  }

  /** The last delivered frame's timestamp (µs), undefined before the first. */
  get lastTimestampUs(): bigint | undefined {
    return this.lastTs;
  }

  /** A restored camera goes on from a saved sequence (the guest sees no false gap). */
  continueFrom(seq: number, lastTimestampUs: bigint | undefined): void {
    this.seq = seq;
    this.lastTs = lastTimestampUs;
  }

  /** Start streaming into `sink` at the camera's rate (STREAM_START). */
  start(sink: CameraSink): void {
    this.stop();
    this.sink = sink;
    this.timer = setInterval(() => this.capture(), 1000 / this.fps);
  }

  /** STREAM_STOP: no more frame times until started again (the sequence goes on). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sink = undefined;
  }

  /** One frame time: the next sequence number, rendered into a buffer if the sink has one. */
  capture(sink: CameraSink | undefined = this.sink): void {
    const seq = ++this.seq;
    this.metrics.captured++;
    const buf = sink?.buffer(this.frameSize);
    if (!sink || !buf) {
      this.metrics.dropped++;
      return;
    }
    const ts = BigInt(Math.max(0, Math.floor(this.clockUs())));
    const used = renderCameraFrame(buf, this.format, seq, ts);
    this.lastTs = ts;
    this.metrics.delivered++;
    this.metrics.bytes += used;
    sink.filled(seq, used, ts);
  }
}
