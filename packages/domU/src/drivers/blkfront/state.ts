/**
 * blkfront's saved state (layout 'blkfront' v1): what a restored frontend needs to carry on the
 * I/O of the one it replaces. The ring page, the bounce frames and the grant entries stay in the
 * guest's memory and grant table (the environment keeps them), so the record names them and holds
 * the frontend's private view of them:
 *
 * - the xenbus connection: where the backend is, the negotiated vbd size, the ring's frame, grant
 *   reference and event-channel port;
 * - the ring's private indices (req_prod_pvt, rsp_cons: Xen's `blkfront_ring_info` keeps them in
 *   the front ring struct, not on the page);
 * - the shadow of every request on the ring whose response is not collected (id, operation,
 *   sector, each segment's frame, grant and length — blkif_recover walks the same table), the
 *   requests queued behind a full ring (not yet granted), the next id and the free bounce frames;
 * - the counters, so views continue rather than restart.
 *
 * A record is untrusted input (it may come off the wire): `refine` refuses one whose parts do not
 * fit together, and BlkFront.restore checks what depends on the guest (frame numbers) before it
 * builds anything.
 */
import { Type, type Static } from '@sinclair/typebox';
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  SECTORS_PER_PAGE,
  defineStateLayout,
  ringSize,
  slotSize,
  blkifProtocol,
} from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Frame = Type.Integer({ minimum: 0, maximum: 0x7fffffff });
/** A u64 request id, exact, in decimal (a JS number would round ids above 2^53). */
const U64 = Type.String({ pattern: '^(0|[1-9][0-9]{0,19})$' });
/** Requests a record may hold waiting for the ring: the bound on what a restore allocates. */
export const BLKFRONT_MAX_QUEUED = 4096;
export const BLKFRONT_RING_SIZE = ringSize(slotSize(blkifProtocol));

const Segment = Type.Object({ pfn: Frame, gref: U32, sectors: Type.Integer({ minimum: 1, maximum: SECTORS_PER_PAGE }) }, { additionalProperties: false });
const QueuedSegment = Type.Object({ pfn: Frame, sectors: Type.Integer({ minimum: 1, maximum: SECTORS_PER_PAGE }) }, { additionalProperties: false });
const Operation = Type.Union([Type.Literal(BLKIF_OP_READ), Type.Literal(BLKIF_OP_WRITE), Type.Literal(BLKIF_OP_FLUSH_DISKCACHE)]);
const Sector = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const BlkfrontStateSchema = Type.Object(
  {
    devid: U32,
    backendId: Type.Integer({ minimum: 0, maximum: 0xfffe }),
    backendDir: Type.String({ pattern: '^/local/domain/[0-9]+/backend/vbd/[0-9]+/[0-9]+$', maxLength: 128 }),
    sectors: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    ring: Type.Object({ pfn: Frame, ref: U32, port: Type.Integer({ minimum: 1, maximum: 0xffff }), reqProdPvt: U32, rspCons: U32 }, { additionalProperties: false }),
    nextId: U64,
    /** On the ring (granted, written to a slot), response not yet collected. */
    inFlight: Type.Array(
      Type.Object({ id: U64, operation: Operation, sector: Sector, segments: Type.Array(Segment, { maxItems: BLKIF_MAX_SEGMENTS_PER_REQUEST }) }, { additionalProperties: false }),
      { maxItems: BLKFRONT_RING_SIZE },
    ),
    /** Waiting for ring space, in order: data already in their frames, not granted yet. */
    queued: Type.Array(
      Type.Object({ id: U64, operation: Operation, sector: Sector, segments: Type.Array(QueuedSegment, { maxItems: BLKIF_MAX_SEGMENTS_PER_REQUEST }) }, { additionalProperties: false }),
      { maxItems: BLKFRONT_MAX_QUEUED },
    ),
    freeFrames: Type.Array(Frame, { maxItems: BLKFRONT_MAX_QUEUED * BLKIF_MAX_SEGMENTS_PER_REQUEST }),
    counters: Type.Record(Type.String({ pattern: '^[A-Za-z]{1,40}$' }), Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type BlkfrontSavedState = Static<typeof BlkfrontStateSchema>;

/** Why a record's parts do not fit together, or undefined. */
function refineBlkfront(s: BlkfrontSavedState): string | undefined {
  const outstanding = (s.ring.reqProdPvt - s.ring.rspCons) >>> 0;
  if (outstanding > BLKFRONT_RING_SIZE) return `ring indices req_prod_pvt ${s.ring.reqProdPvt} and rsp_cons ${s.ring.rspCons} are more than a ring (${BLKFRONT_RING_SIZE}) apart`;
  if (s.inFlight.length > outstanding) return `${s.inFlight.length} requests in flight but only ${outstanding} ring slots outstanding`;
  const next = BigInt(s.nextId);
  const ids = new Set<string>();
  const frames = new Set<number>([s.ring.pfn]);
  const grants = new Set<number>([s.ring.ref]);
  const frame = (pfn: number, where: string): string | undefined => {
    if (frames.has(pfn)) return `frame ${pfn} is used twice (${where})`;
    frames.add(pfn);
    return undefined;
  };
  for (const [list, name] of [
    [s.inFlight, 'in flight'],
    [s.queued, 'queued'],
  ] as const) {
    for (const r of list) {
      if (ids.has(r.id)) return `request id ${r.id} appears twice`;
      ids.add(r.id);
      if (BigInt(r.id) >= next) return `request id ${r.id} (${name}) is not below next id ${s.nextId}`;
      const flush = r.operation === BLKIF_OP_FLUSH_DISKCACHE;
      if (flush !== (r.segments.length === 0)) return `request ${r.id}: operation ${r.operation} with ${r.segments.length} segments`;
      const n = r.segments.reduce((a, g) => a + g.sectors, 0);
      if (!flush && r.sector + n > s.sectors) return `request ${r.id}: sectors ${r.sector}+${n} outside the ${s.sectors}-sector vbd`;
      for (const g of r.segments) {
        const p = frame(g.pfn, `request ${r.id}`);
        if (p) return p;
        if ('gref' in g) {
          if (grants.has(g.gref)) return `grant ${g.gref} is used twice`;
          grants.add(g.gref);
        }
      }
    }
  }
  for (const pfn of s.freeFrames) {
    const p = frame(pfn, 'free frames');
    if (p) return p;
  }
  return undefined;
}

export const BLKFRONT_STATE = defineStateLayout('blkfront', 1, BlkfrontStateSchema, { refine: refineBlkfront });
