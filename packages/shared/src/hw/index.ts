/**
 * The physical devices' host interface: the queues that dom0's device drivers share with the
 * simulated hardware. They are the same ring shape as Xen's (ring.ts) — a real NVMe or NIC
 * queue pair is a request/completion ring too — but entries carry *machine frames* (owning
 * domain + pfn) that the device reaches by DMA, not grant references.
 *
 * hwblk (disk queue), slot 104 bytes, 32 per page:
 *   request  0 u8 op (READ 0, WRITE 1, FLUSH 2), 1 u8 nr_segments (≤ 11), 2 u16 pad, 4 u32 id,
 *            8 u64 sector, 16 seg[11] of { u16 domid, u8 first_sect, u8 last_sect, u32 pfn }
 *   response 0 u32 id, 4 i16 status (0 OK, -1 I/O error, -2 unsupported), 6 u16 pad
 *   (`sector`, a u64, decodes to an exact bigint)
 *
 * hwnic tx queue, slot 12 bytes, 256 per page:
 *   request  0 u16 domid, 2 u16 id, 4 u32 pfn, 8 u16 offset, 10 u16 len
 *   response 0 u16 id, 2 i16 status
 * hwnic rx queue, slot 12 bytes, 256 per page:
 *   request  0 u16 domid, 2 u16 id, 4 u32 pfn, 8 u16 offset, 10 u16 capacity  (an empty buffer)
 *   response 0 u16 id, 2 i16 status (> 0: bytes received)
 */
import type { EntryCodec, RingProtocol } from '../ring/ring.js';
import { readU64, writeU64 } from '../ring/blkif.js';

export const HWBLK_OP_READ = 0;
export const HWBLK_OP_WRITE = 1;
export const HWBLK_OP_FLUSH = 2;
export const HWBLK_MAX_SEGMENTS = 11;
export const HW_STATUS_OK = 0;
export const HW_STATUS_EIO = -1;
export const HW_STATUS_ENOTSUP = -2;

export interface HwBlkSegment {
  domid: number;
  pfn: number;
  firstSect: number;
  lastSect: number;
}
export interface HwBlkRequest {
  op: number;
  id: number;
  /** u64, exact. */
  sector: bigint;
  segments: HwBlkSegment[];
}
export interface HwStatusResponse {
  id: number;
  status: number;
}

export const hwBlkProtocol: RingProtocol<HwBlkRequest, HwStatusResponse> = {
  name: 'hwblk',
  request: {
    size: 104,
    encode(v, o, r) {
      v.setUint8(o, r.op);
      v.setUint8(o + 1, r.segments.length);
      v.setUint16(o + 2, 0, true);
      v.setUint32(o + 4, r.id, true);
      writeU64(v, o + 8, r.sector);
      r.segments.forEach((s, i) => {
        const so = o + 16 + i * 8;
        v.setUint16(so, s.domid, true);
        v.setUint8(so + 2, s.firstSect);
        v.setUint8(so + 3, s.lastSect);
        v.setUint32(so + 4, s.pfn, true);
      });
    },
    decode(v, o) {
      const n = Math.min(v.getUint8(o + 1), HWBLK_MAX_SEGMENTS);
      const segments: HwBlkSegment[] = [];
      for (let i = 0; i < n; i++) {
        const so = o + 16 + i * 8;
        segments.push({ domid: v.getUint16(so, true), firstSect: v.getUint8(so + 2), lastSect: v.getUint8(so + 3), pfn: v.getUint32(so + 4, true) });
      }
      return { op: v.getUint8(o), id: v.getUint32(o + 4, true), sector: readU64(v, o + 8), segments };
    },
  },
  response: {
    size: 8,
    encode(v, o, r) {
      v.setUint32(o, r.id, true);
      v.setInt16(o + 4, r.status, true);
      v.setUint16(o + 6, 0, true);
    },
    decode(v, o) {
      return { id: v.getUint32(o, true), status: v.getInt16(o + 4, true) };
    },
  },
};

export interface HwNicBuffer {
  domid: number;
  id: number;
  pfn: number;
  offset: number;
  len: number;
}

const nicBufferCodec: EntryCodec<HwNicBuffer> = {
  size: 12,
  encode(v, o, r) {
    v.setUint16(o, r.domid, true);
    v.setUint16(o + 2, r.id, true);
    v.setUint32(o + 4, r.pfn, true);
    v.setUint16(o + 8, r.offset, true);
    v.setUint16(o + 10, r.len, true);
  },
  decode(v, o) {
    return { domid: v.getUint16(o, true), id: v.getUint16(o + 2, true), pfn: v.getUint32(o + 4, true), offset: v.getUint16(o + 8, true), len: v.getUint16(o + 10, true) };
  },
};

const statusCodec16: EntryCodec<HwStatusResponse> = {
  size: 4,
  encode(v, o, r) {
    v.setUint16(o, r.id, true);
    v.setInt16(o + 2, r.status, true);
  },
  decode(v, o) {
    return { id: v.getUint16(o, true), status: v.getInt16(o + 2, true) };
  },
};

export const hwNicTxProtocol: RingProtocol<HwNicBuffer, HwStatusResponse> = { name: 'hwnic-tx', request: nicBufferCodec, response: statusCodec16 };
export const hwNicRxProtocol: RingProtocol<HwNicBuffer, HwStatusResponse> = { name: 'hwnic-rx', request: nicBufferCodec, response: statusCodec16 };

/** Ethernet limits the NIC enforces. */
export const ETH_MIN_FRAME = 14;
export const ETH_MAX_FRAME = 1514;

export * from './faults.js';
export * from './irq-faults.js';
export * from './registers.js';
export * from './vf.js';
