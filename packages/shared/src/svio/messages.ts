/**
 * SV-IO VIF messages: what travels on a virtual interface's two queues (queue.ts), 64 bytes each.
 * A guest's VIF driver produces on the outgoing queue and consumes the incoming one; the device
 * (the SV-IO engine) the other way round. Addresses are the guest's own frame numbers: a VIF is
 * bound to one guest, and the engine reaches only that guest's memory.
 *
 * Every message: 0 u8 type, 1 u8 flags (0), 2 i16 status (incoming; 0 outgoing), 4 u32 id.
 *
 * net, outgoing
 *   TX       1   8 u32 gfn, 12 u16 offset, 14 u16 len           a frame to send
 *   RX_POST  2   8 u32 gfn, 12 u16 offset, 14 u16 capacity      an empty buffer for a frame
 * net, incoming
 *   TX_DONE  0x81  status 0 sent / -1 refused
 *   RX       0x82  status > 0: bytes received into buffer `id`; -1: the buffer was bad
 * block, outgoing
 *   READ 3 / WRITE 4 / FLUSH 5   8 u64 sector, 16 u8 nseg (≤ 4), then nseg × { u32 gfn, u8 first,
 *                                u8 last, u16 pad } at 24 (inclusive 512-byte sectors of a page)
 * block, incoming
 *   DONE     0x83  status 0 ok / -1 I/O error / -2 unsupported
 * camera, outgoing (the camera's format and rate are the VIF's, set through the management API)
 *   CAM_BUF     6   8 u32 gfn, 12 u16 pages      queue buffer `id`: `pages` consecutive frames
 *   CAM_STREAM  7   12 u16 on (1 start, 0 stop)  STREAM_START / STREAM_STOP
 * camera, incoming
 *   CAM_FRAME   0x84  8 u32 seq, 12 u32 used, 16 u64 timestamp (µs)   a frame filled buffer `id`
 *                     (a gap in seq: frames the camera dropped, as cameraif's FRAME_AVAIL seq_num);
 *                     status -1: the buffer was refused (not the guest's, too small)
 *
 * The u64 fields (sector, timestamp) decode to exact bigints over all 2^64 values.
 */
import type { EntryCodec } from '../ring/ring.js';
import { readU64, writeU64 } from '../ring/blkif.js';

export const VIF_TX = 1;
export const VIF_RX_POST = 2;
export const VIF_READ = 3;
export const VIF_WRITE = 4;
export const VIF_FLUSH = 5;
export const VIF_TX_DONE = 0x81;
export const VIF_RX = 0x82;
export const VIF_DONE = 0x83;
export const VIF_CAM_BUF = 6;
export const VIF_CAM_STREAM = 7;
export const VIF_CAM_FRAME = 0x84;
export const VIF_BLK_MAX_SEGMENTS = 4;
export const VIF_OK = 0;
export const VIF_EIO = -1;
export const VIF_ENOTSUP = -2;

export interface VifSegment {
  gfn: number;
  first: number;
  last: number;
}

/** One message, decoded. Fields a type does not use are 0 / empty. */
export interface VifMessage {
  type: number;
  status: number;
  id: number;
  gfn: number;
  offset: number;
  len: number;
  /** u64, exact. */
  sector: bigint;
  /** Raw nseg byte as written (validate against VIF_BLK_MAX_SEGMENTS). */
  nseg: number;
  segments: VifSegment[];
  /** CAM_FRAME: the frame's sequence number, bytes used, capture time (µs). */
  seq: number;
  used: number;
  /** u64, exact. */
  timestampUs: bigint;
}

export function vifMessage(m: Partial<VifMessage> & { type: number }): VifMessage {
  return { status: 0, id: 0, gfn: 0, offset: 0, len: 0, sector: 0n, nseg: m.segments?.length ?? 0, segments: [], seq: 0, used: 0, timestampUs: 0n, ...m };
}

export const vifCodec: EntryCodec<VifMessage> = {
  size: 64,
  encode(v, o, m) {
    v.setUint8(o, m.type);
    v.setUint8(o + 1, 0);
    v.setInt16(o + 2, m.status, true);
    v.setUint32(o + 4, m.id >>> 0, true);
    if (m.type === VIF_READ || m.type === VIF_WRITE || m.type === VIF_FLUSH) {
      writeU64(v, o + 8, m.sector);
      v.setUint8(o + 16, m.nseg);
      m.segments.slice(0, VIF_BLK_MAX_SEGMENTS).forEach((s, i) => {
        const so = o + 24 + i * 8;
        v.setUint32(so, s.gfn >>> 0, true);
        v.setUint8(so + 4, s.first);
        v.setUint8(so + 5, s.last);
        v.setUint16(so + 6, 0, true);
      });
    } else if (m.type === VIF_CAM_FRAME) {
      v.setUint32(o + 8, m.seq >>> 0, true);
      v.setUint32(o + 12, m.used >>> 0, true);
      writeU64(v, o + 16, m.timestampUs);
    } else {
      v.setUint32(o + 8, m.gfn >>> 0, true);
      v.setUint16(o + 12, m.offset, true);
      v.setUint16(o + 14, m.len, true);
    }
  },
  decode(v, o) {
    const type = v.getUint8(o);
    const base = { type, status: v.getInt16(o + 2, true), id: v.getUint32(o + 4, true) };
    if (type === VIF_READ || type === VIF_WRITE || type === VIF_FLUSH) {
      const nseg = v.getUint8(o + 16);
      const segments: VifSegment[] = [];
      for (let i = 0; i < Math.min(nseg, VIF_BLK_MAX_SEGMENTS); i++) {
        const so = o + 24 + i * 8;
        segments.push({ gfn: v.getUint32(so, true), first: v.getUint8(so + 4), last: v.getUint8(so + 5) });
      }
      return { ...base, gfn: 0, offset: 0, len: 0, sector: readU64(v, o + 8), nseg, segments, seq: 0, used: 0, timestampUs: 0n };
    }
    if (type === VIF_CAM_FRAME)
      return { ...base, gfn: 0, offset: 0, len: 0, sector: 0n, nseg: 0, segments: [], seq: v.getUint32(o + 8, true), used: v.getUint32(o + 12, true), timestampUs: readU64(v, o + 16) };
    return { ...base, gfn: v.getUint32(o + 8, true), offset: v.getUint16(o + 12, true), len: v.getUint16(o + 14, true), sector: 0n, nseg: 0, segments: [], seq: 0, used: 0, timestampUs: 0n };
  },
};
