/**
 * A camera frame as the simulated camera writes it into a buffer, and how a consumer proves it
 * intact. Both sides agree on this layout; the pattern makes every kind of damage visible:
 *
 *   offset  size  field
 *   0       4     magic 0x46435652 ('RVCF', little-endian)
 *   4       4     seq: numbered from 1 in capture order; a gap means frames were dropped
 *   8       8     timestamp: µs on the camera's clock when the frame was captured (u64, an exact bigint)
 *   16      2     width      18  2  height   (pixels)
 *   20      4     format: fourcc 'GREY' (8-bit luma, one byte per pixel)
 *   24      4     crc32c of the payload
 *   28      4     crc32c of bytes 0..27 (the header)
 *   32      w·h   payload: pixel (x, y) = (x + 3·y + 7·seq) mod 256
 *
 * The pattern depends on seq, so a frame whose header was rewritten with another frame's seq
 * fails, a torn frame (half of one, half of the next) fails, and a bit flip fails the checksum.
 * Xen's cameraif carries the same facts in its FRAME_AVAIL event (buffer index, used size, a
 * monotonically increasing seq_num); here they are also in the frame, so a consumer can check a
 * frame without trusting whoever delivered it.
 */
import { crc32c } from '../util/crc32c.js';
import { InvalidArgumentError } from '../errors.js';

export const CAMERA_FRAME_MAGIC = 0x46435652;
export const CAMERA_FORMAT_GREY = 0x59455247; // 'GREY'
export const CAMERA_HEADER_SIZE = 32;
export const CAMERA_MAX_WIDTH = 1920;
export const CAMERA_MAX_HEIGHT = 1080;

export interface CameraFormat {
  width: number;
  height: number;
}

export function cameraFrameSize(f: CameraFormat): number {
  return CAMERA_HEADER_SIZE + f.width * f.height;
}

export function patternByte(seq: number, x: number, y: number): number {
  return (x + 3 * y + 7 * seq) & 0xff;
}

/** Render frame `seq` captured at `timestampUs` into `into` (at least cameraFrameSize bytes). */
export function renderCameraFrame(into: Uint8Array, f: CameraFormat, seq: number, timestampUs: bigint): number {
  const size = cameraFrameSize(f);
  if (into.byteLength < size) throw new InvalidArgumentError(`a ${f.width}x${f.height} frame needs ${size} bytes, the buffer has ${into.byteLength}`);
  const payload = into.subarray(CAMERA_HEADER_SIZE, size);
  // Row by row: each row is the previous one shifted by 3, so fill the first row and copy.
  const base = (7 * seq) & 0xff;
  for (let y = 0; y < f.height; y++) {
    const row = payload.subarray(y * f.width, (y + 1) * f.width);
    const start = (base + 3 * y) & 0xff;
    for (let x = 0; x < f.width; x++) row[x] = (start + x) & 0xff;
  }
  const v = new DataView(into.buffer, into.byteOffset, CAMERA_HEADER_SIZE);
  v.setUint32(0, CAMERA_FRAME_MAGIC, true);
  v.setUint32(4, seq >>> 0, true);
  v.setBigUint64(8, timestampUs, true);
  v.setUint16(16, f.width, true);
  v.setUint16(18, f.height, true);
  v.setUint32(20, CAMERA_FORMAT_GREY, true);
  v.setUint32(24, crc32c(payload), true);
  v.setUint32(28, crc32c(into.subarray(0, 28)), true);
  return size;
}

export type CameraFrameCheck =
  | { ok: true; seq: number; timestampUs: bigint; width: number; height: number }
  | { ok: false; reason: string; seq?: number };

/** Check a delivered frame of `used` bytes: header, size, checksums and every pixel. Never throws. */
export function verifyCameraFrame(buf: Uint8Array, used = buf.byteLength, expect?: CameraFormat): CameraFrameCheck {
  if (used < CAMERA_HEADER_SIZE || used > buf.byteLength) return { ok: false, reason: `used size ${used} cannot hold a frame header` };
  const v = new DataView(buf.buffer, buf.byteOffset, CAMERA_HEADER_SIZE);
  if (v.getUint32(0, true) !== CAMERA_FRAME_MAGIC) return { ok: false, reason: 'bad magic' };
  if (crc32c(buf.subarray(0, 28)) !== v.getUint32(28, true)) return { ok: false, reason: 'header checksum mismatch' };
  const seq = v.getUint32(4, true);
  const width = v.getUint16(16, true);
  const height = v.getUint16(18, true);
  if (v.getUint32(20, true) !== CAMERA_FORMAT_GREY) return { ok: false, reason: 'unknown format', seq };
  if (expect && (expect.width !== width || expect.height !== height)) return { ok: false, reason: `${width}x${height}, expected ${expect.width}x${expect.height}`, seq };
  const size = CAMERA_HEADER_SIZE + width * height;
  if (used !== size) return { ok: false, reason: `used size ${used}, a ${width}x${height} frame is ${size}`, seq };
  const payload = buf.subarray(CAMERA_HEADER_SIZE, size);
  if (crc32c(payload) !== v.getUint32(24, true)) return { ok: false, reason: 'payload checksum mismatch', seq };
  const base = (7 * seq) & 0xff;
  for (let y = 0; y < height; y++) {
    const start = (base + 3 * y) & 0xff;
    const row = y * width;
    for (let x = 0; x < width; x++) if (payload[row + x] !== ((start + x) & 0xff)) return { ok: false, reason: `pixel (${x}, ${y}) off the pattern of frame ${seq}`, seq };
  }
  return { ok: true, seq, timestampUs: v.getBigUint64(8, true), width, height };
}
