/**
 * Parsing and validating hwblk requests (the disk's host-interface queue; layout in
 * @ringvisor/shared hw/index.ts).
 *
 * The device decodes each slot exactly once into a private copy (XSA-155: never re-read shared
 * memory after validating) and validates only that copy. The decoder keeps the *raw*
 * nr_segments byte as the driver wrote it, so a request claiming 12+ segments is rejected rather
 * than silently truncated to 11.
 */
import {
  HWBLK_MAX_SEGMENTS,
  HWBLK_OP_FLUSH,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_EIO,
  HW_STATUS_ENOTSUP,
  SECTORS_PER_PAGE,
  SECTOR_SIZE,
  hwBlkProtocol,
  readU64,
  type HwBlkRequest,
  type HwBlkSegment,
  type HwStatusResponse,
  type MachineFrame,
  type RingProtocol,
} from '@ringvisor/shared';

/** A request as read off the ring: `nrSegments` is the raw byte, `segments` at most 11 of them. */
export interface HwBlkWireRequest extends HwBlkRequest {
  nrSegments: number;
}

/** The device's view of the hwblk queue: same bytes as hwBlkProtocol, raw segment count kept. */
export const hwBlkDeviceProtocol: RingProtocol<HwBlkWireRequest, HwStatusResponse> = {
  name: 'hwblk',
  request: {
    size: hwBlkProtocol.request.size,
    encode(v, o, r) {
      hwBlkProtocol.request.encode(v, o, r);
      v.setUint8(o + 1, r.nrSegments);
    },
    decode(v, o) {
      const op = v.getUint8(o);
      const nrSegments = v.getUint8(o + 1);
      const id = v.getUint32(o + 4, true);
      const sector = readU64(v, o + 8);
      const segments: HwBlkSegment[] = [];
      const n = Math.min(nrSegments, HWBLK_MAX_SEGMENTS);
      for (let i = 0; i < n; i++) {
        const so = o + 16 + i * 8;
        segments.push({ domid: v.getUint16(so, true), firstSect: v.getUint8(so + 2), lastSect: v.getUint8(so + 3), pfn: v.getUint32(so + 4, true) });
      }
      return { op, nrSegments, id, sector, segments };
    },
  },
  response: hwBlkProtocol.response,
};

export type BlkOpKind = 'read' | 'write' | 'flush';

/** One validated contiguous piece of a transfer: sectors [first, last] of a machine frame. */
export interface BlkTransfer {
  frame: MachineFrame;
  /** Byte offset within the frame. */
  offset: number;
  /** Bytes (a whole number of sectors). */
  len: number;
  /** Disk sector this piece starts at. */
  sector: number;
}

export type BlkRequestCheck =
  | { ok: true; id: number; kind: BlkOpKind; sector: number; sectors: number; transfers: BlkTransfer[] }
  | { ok: false; id: number; status: number; reason: string };

export interface BlkValidationContext {
  /** Disk capacity in sectors. */
  diskSectors: number;
  /** Can DMA reach this frame? */
  reachable(frame: MachineFrame): boolean;
}

function reject(id: number, status: number, reason: string): BlkRequestCheck {
  return { ok: false, id, status, reason };
}

/** Validate the private copy of one request. Never throws. */
export function validateHwBlkRequest(req: HwBlkWireRequest, ctx: BlkValidationContext): BlkRequestCheck {
  const { id } = req;
  if (req.op === HWBLK_OP_FLUSH) {
    if (req.nrSegments !== 0) return reject(id, HW_STATUS_EIO, `flush with ${req.nrSegments} segments`);
    return { ok: true, id, kind: 'flush', sector: 0, sectors: 0, transfers: [] };
  }
  if (req.op !== HWBLK_OP_READ && req.op !== HWBLK_OP_WRITE) return reject(id, HW_STATUS_ENOTSUP, `unknown operation ${req.op}`);
  const kind: BlkOpKind = req.op === HWBLK_OP_READ ? 'read' : 'write';
  if (req.nrSegments < 1 || req.nrSegments > HWBLK_MAX_SEGMENTS)
    return reject(id, HW_STATUS_EIO, `${kind} with ${req.nrSegments} segments (1..${HWBLK_MAX_SEGMENTS})`);
  // The u64 is exact (bigint); once it is within the disk it is a safe number for the rest.
  if (req.sector >= ctx.diskSectors) return reject(id, HW_STATUS_EIO, `sector ${req.sector} past the end of a ${ctx.diskSectors}-sector disk`);
  const first = Number(req.sector);
  const transfers: BlkTransfer[] = [];
  let sector = first;
  for (let i = 0; i < req.segments.length; i++) {
    const s = req.segments[i];
    if (s.firstSect > s.lastSect || s.lastSect >= SECTORS_PER_PAGE)
      return reject(id, HW_STATUS_EIO, `segment ${i}: sectors ${s.firstSect}..${s.lastSect} not within 0..${SECTORS_PER_PAGE - 1} in order`);
    const frame = { domid: s.domid, pfn: s.pfn };
    if (!ctx.reachable(frame)) return reject(id, HW_STATUS_EIO, `segment ${i}: frame ${s.domid}:${s.pfn} not reachable by DMA`);
    const count = s.lastSect - s.firstSect + 1;
    transfers.push({ frame, offset: s.firstSect * SECTOR_SIZE, len: count * SECTOR_SIZE, sector });
    sector += count;
  }
  const sectors = sector - first;
  if (sector > ctx.diskSectors) return reject(id, HW_STATUS_EIO, `sectors ${first}..${sector - 1} past the end of a ${ctx.diskSectors}-sector disk`);
  return { ok: true, id, kind, sector: first, sectors, transfers };
}
