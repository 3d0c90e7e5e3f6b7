/**
 * The camera consumer's checker: every delivered frame is verified (header, checksums, every
 * pixel of its sequence-dependent pattern — shared/src/camera/frame.ts) and its sequence number
 * checked against the last: a gap is frames the camera dropped, a sequence number at or below the
 * last is a frame delivered twice or out of order. Nothing is assumed about the transport.
 */
import { verifyCameraFrame, type CameraFormat } from '@ringvisor/shared';

export interface CameraConsumerStats {
  frames: number;
  bytes: number;
  /** Frames that failed verification (torn, bit-flipped, someone else's, wrong size). */
  corrupted: number;
  /** Frames missing between two delivered ones (dropped by the camera: no buffer was ready). */
  gaps: number;
  /** Frames whose sequence number was not above the last one's. */
  reordered: number;
  /** The last sequence number of the current stream. */
  lastSeq: number;
  /** Streams begun again on a new device (after a reset): each starts its sequence afresh. */
  restarts: number;
  /** The first failures, for diagnosis (bounded). */
  failures: string[];
}

const FAILURE_LOG = 16;

export class CameraConsumer {
  readonly stats: CameraConsumerStats = { frames: 0, bytes: 0, corrupted: 0, gaps: 0, reordered: 0, lastSeq: 0, restarts: 0, failures: [] };

  constructor(readonly format: CameraFormat) {}

  /** The camera was reset (a new device, a new stream): sequence numbers start again. */
  restart(): void {
    this.stats.lastSeq = 0;
    this.stats.restarts++;
  }

  /** Check one delivered frame of `used` bytes; returns whether it was intact and in order. */
  check(buf: Uint8Array, used: number): boolean {
    const s = this.stats;
    const r = verifyCameraFrame(buf, used, this.format);
    if (!r.ok) {
      s.corrupted++;
      if (s.failures.length < FAILURE_LOG) s.failures.push(`${r.seq !== undefined ? `frame ${r.seq}: ` : ''}${r.reason}`);
      return false;
    }
    s.frames++;
    s.bytes += used;
    if (r.seq <= s.lastSeq) {
      s.reordered++;
      return false;
    }
    s.gaps += r.seq - s.lastSeq - 1;
    s.lastSeq = r.seq;
    return true;
  }
}
