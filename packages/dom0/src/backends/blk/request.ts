/**
 * Parsing and validation of one blkif request — always the backend's private copy, read once
 * from the ring (never re-read shared memory after validating: XSA-155).
 */
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP_DISCARD,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  SECTORS_PER_PAGE,
  type BlkifRequest,
} from '@ringvisor/shared';

export interface ValidSegment {
  gref: number;
  firstSect: number;
  lastSect: number;
}

export type ParsedBlkRequest =
  | { kind: 'rw'; id: bigint; operation: number; write: boolean; sector: number; nsectors: number; segments: ValidSegment[] }
  | { kind: 'flush'; id: bigint; operation: number }
  | { kind: 'reject'; id: bigint; operation: number; status: number; reason: string };

/**
 * Validate against a vbd of `sectors` sectors. `id` stays the exact u64 the frontend wrote (it is
 * echoed, never interpreted); `sector` is checked against the vbd as a bigint and only then
 * becomes a (safe) number.
 */
export function parseBlkRequest(req: BlkifRequest, sectors: number): ParsedBlkRequest {
  const { id, operation } = req;
  const reject = (status: number, reason: string): ParsedBlkRequest => ({ kind: 'reject', id, operation, status, reason });
  switch (operation) {
    case BLKIF_OP_FLUSH_DISKCACHE:
      return { kind: 'flush', id, operation };
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_DISCARD:
    case BLKIF_OP_INDIRECT:
      return reject(BLKIF_RSP_EOPNOTSUPP, `operation ${operation} not supported`);
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
      break;
    default:
      return reject(BLKIF_RSP_EOPNOTSUPP, `unknown operation ${operation}`);
  }
  if (req.nrSegments < 1 || req.nrSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST)
    return reject(BLKIF_RSP_ERROR, `nr_segments ${req.nrSegments} outside 1..${BLKIF_MAX_SEGMENTS_PER_REQUEST}`);
  let nsectors = 0;
  const segments: ValidSegment[] = [];
  for (const s of req.segments) {
    if (s.firstSect > s.lastSect || s.lastSect >= SECTORS_PER_PAGE)
      return reject(BLKIF_RSP_ERROR, `segment sectors ${s.firstSect}..${s.lastSect} outside a page`);
    nsectors += s.lastSect - s.firstSect + 1;
    segments.push({ gref: s.gref, firstSect: s.firstSect, lastSect: s.lastSect });
  }
  if (req.sectorNumber > sectors - nsectors)
    return reject(BLKIF_RSP_ERROR, `sectors ${req.sectorNumber}+${nsectors} past the end of a ${sectors}-sector vbd`);
  return { kind: 'rw', id, operation, write: operation === BLKIF_OP_WRITE, sector: Number(req.sectorNumber), nsectors, segments };
}
