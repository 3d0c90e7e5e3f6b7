/**
 * blkif — the Xen block-device ring protocol (public/io/blkif.h), x86_64 layout.
 *
 * Request, 112 bytes:
 *   0  u8  operation        BLKIF_OP_*
 *   1  u8  nr_segments      1..11 for READ/WRITE (BLKIF_MAX_SEGMENTS_PER_REQUEST)
 *   2  u16 handle           the vbd's device handle
 *   4  —   pad              (u64 alignment of id)
 *   8  u64 id               opaque to the backend; echoed in the response
 *   16 u64 sector_number    first 512-byte sector on the vbd
 *   24 seg[11], 8 bytes each: u32 gref, u8 first_sect, u8 last_sect, u16 pad
 *      first_sect..last_sect are inclusive sector numbers within the 4 KiB granted page (0..7).
 *
 * Response, 16 bytes: 0 u64 id, 8 u8 operation, 9 pad, 10 i16 status, 12 pad.
 * Both share one slot of 112 bytes, so a page holds 32 slots.
 *
 * The u64 fields decode to exact `bigint`s over all 2^64 values: `id` is the frontend's to choose
 * (Mini-OS's blkfront puts a pointer there), and a backend must echo it bit for bit — a JS number
 * would round ids above 2^53, so two requests could get the same id back.
 */
import type { EntryCodec, RingProtocol } from './ring.js';

export const BLKIF_OP_READ = 0;
export const BLKIF_OP_WRITE = 1;
export const BLKIF_OP_WRITE_BARRIER = 2;
export const BLKIF_OP_FLUSH_DISKCACHE = 3;
export const BLKIF_OP_DISCARD = 5;
export const BLKIF_OP_INDIRECT = 6;

export const BLKIF_RSP_EOPNOTSUPP = -2;
export const BLKIF_RSP_ERROR = -1;
export const BLKIF_RSP_OKAY = 0;

export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
export const BLKIF_REQUEST_SIZE = 112;
export const BLKIF_RESPONSE_SIZE = 16;
const SEG_OFFSET = 24;
const SEG_SIZE = 8;

export interface BlkifSegment {
  gref: number;
  firstSect: number;
  lastSect: number;
}

export interface BlkifRequest {
  operation: number;
  /** As the frontend wrote it — may exceed 11 in a hostile request; validate before use. */
  nrSegments: number;
  handle: number;
  /** u64, exact. */
  id: bigint;
  /** u64, exact; validate against the vbd's size before use. */
  sectorNumber: bigint;
  segments: BlkifSegment[];
}

export interface BlkifResponse {
  /** u64, exact: the request's id, echoed. */
  id: bigint;
  operation: number;
  status: number;
}

/** Writes a u64 (little-endian); setBigUint64 wraps modulo 2^64, as a C store to a u64 would. */
export function writeU64(v: DataView, off: number, value: bigint): void {
  v.setBigUint64(off, value, true);
}

/** Reads a u64 (little-endian) exactly. */
export function readU64(v: DataView, off: number): bigint {
  return v.getBigUint64(off, true);
}

export const blkifRequestCodec: EntryCodec<BlkifRequest> = {
  size: BLKIF_REQUEST_SIZE,
  encode(v, off, r) {
    v.setUint8(off, r.operation);
    v.setUint8(off + 1, r.nrSegments);
    v.setUint16(off + 2, r.handle, true);
    v.setUint32(off + 4, 0, true);
    writeU64(v, off + 8, r.id);
    writeU64(v, off + 16, r.sectorNumber);
    const n = Math.min(r.segments.length, BLKIF_MAX_SEGMENTS_PER_REQUEST);
    for (let i = 0; i < n; i++) {
      const s = r.segments[i];
      const so = off + SEG_OFFSET + i * SEG_SIZE;
      v.setUint32(so, s.gref, true);
      v.setUint8(so + 4, s.firstSect);
      v.setUint8(so + 5, s.lastSect);
      v.setUint16(so + 6, 0, true);
    }
  },
  decode(v, off) {
    const nrSegments = v.getUint8(off + 1);
    const segments: BlkifSegment[] = [];
    const n = Math.min(nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
    for (let i = 0; i < n; i++) {
      const so = off + SEG_OFFSET + i * SEG_SIZE;
      segments.push({ gref: v.getUint32(so, true), firstSect: v.getUint8(so + 4), lastSect: v.getUint8(so + 5) });
    }
    return {
      operation: v.getUint8(off),
      nrSegments,
      handle: v.getUint16(off + 2, true),
      id: readU64(v, off + 8),
      sectorNumber: readU64(v, off + 16),
      segments,
    };
  },
};

export const blkifResponseCodec: EntryCodec<BlkifResponse> = {
  size: BLKIF_RESPONSE_SIZE,
  encode(v, off, r) {
    writeU64(v, off, r.id);
    v.setUint8(off + 8, r.operation);
    v.setUint8(off + 9, 0);
    v.setInt16(off + 10, r.status, true);
    v.setUint32(off + 12, 0, true);
  },
  decode(v, off) {
    return { id: readU64(v, off), operation: v.getUint8(off + 8), status: v.getInt16(off + 10, true) };
  },
};

export const blkifProtocol: RingProtocol<BlkifRequest, BlkifResponse> = {
  name: 'blkif',
  request: blkifRequestCodec,
  response: blkifResponseCodec,
};
