/**
 * netfront's saved state (layout 'netfront' v1). The tx and rx ring pages, the transmit buffers
 * and the posted receive buffers are frames of the guest's memory, granted in its grant table:
 * the environment keeps them, so the record names them and holds the frontend's private view:
 *
 * - the xenbus connection: backend location, MAC, the event-channel port;
 * - per ring its frame, grant reference and private indices (req_prod_pvt, rsp_cons);
 * - tx: which buffer ids are free, which are on the ring (with the grant of the frame being
 *   sent), the frame of each buffer id allocated so far, and the frames queued behind a full ring
 *   (their bytes: they are in no guest page yet);
 * - rx: the buffer posted under each id (frame and grant; a buffer stays granted for its life);
 * - the counters.
 *
 * `refine` refuses a record whose parts do not fit together (ids out of range or used twice, a
 * frame used twice, indices more than a ring apart).
 */
import { Type, type Static } from '@sinclair/typebox';
import { ETH_MAX_FRAME, ETH_MIN_FRAME, defineStateLayout, netifRxProtocol, netifTxProtocol, ringSize, slotSize } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Frame = Type.Integer({ minimum: 0, maximum: 0x7fffffff });
/** The most buffers of either kind a netfront keeps (its constructor caps them). */
export const NETFRONT_MAX_BUFFERS = 256;
/** Frames waiting for a free tx slot before new ones are refused. */
export const NETFRONT_TX_QUEUE_LIMIT = 256;
export const NETFRONT_TX_RING_SIZE = ringSize(slotSize(netifTxProtocol));
export const NETFRONT_RX_RING_SIZE = ringSize(slotSize(netifRxProtocol));

const Ring = Type.Object({ pfn: Frame, ref: U32, reqProdPvt: U32, rspCons: U32 }, { additionalProperties: false });
const BufferId = Type.Integer({ minimum: 0, maximum: NETFRONT_MAX_BUFFERS - 1 });

export const NetfrontStateSchema = Type.Object(
  {
    devid: U32,
    backendId: Type.Integer({ minimum: 0, maximum: 0xfffe }),
    backendDir: Type.String({ pattern: '^/local/domain/[0-9]+/backend/vif/[0-9]+/[0-9]+$', maxLength: 128 }),
    mac: Type.String({ pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$' }),
    port: Type.Integer({ minimum: 1, maximum: 0xffff }),
    tx: Ring,
    rx: Ring,
    txBufCount: Type.Integer({ minimum: 1, maximum: NETFRONT_MAX_BUFFERS }),
    txFree: Type.Array(BufferId, { maxItems: NETFRONT_MAX_BUFFERS }),
    /** Buffer ids on the tx ring, with the grant of the frame they carry. */
    txInFlight: Type.Array(Type.Object({ id: BufferId, gref: U32 }, { additionalProperties: false }), { maxItems: NETFRONT_TX_RING_SIZE }),
    /** The frame of each transmit buffer allocated so far (allocated on first use). */
    txBuffers: Type.Array(Type.Object({ id: BufferId, pfn: Frame }, { additionalProperties: false }), { maxItems: NETFRONT_MAX_BUFFERS }),
    txQueue: Type.Array(Type.Uint8Array({ minByteLength: ETH_MIN_FRAME, maxByteLength: ETH_MAX_FRAME }), { maxItems: NETFRONT_TX_QUEUE_LIMIT }),
    /** Receive buffer `i` is posted under id `i`. */
    rxBufs: Type.Array(Type.Object({ pfn: Frame, gref: U32 }, { additionalProperties: false }), { minItems: 1, maxItems: NETFRONT_MAX_BUFFERS }),
    counters: Type.Record(Type.String({ pattern: '^[A-Za-z]{1,40}$' }), Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type NetfrontSavedState = Static<typeof NetfrontStateSchema>;

function refineNetfront(s: NetfrontSavedState): string | undefined {
  for (const [name, r, size] of [
    ['tx', s.tx, NETFRONT_TX_RING_SIZE],
    ['rx', s.rx, NETFRONT_RX_RING_SIZE],
  ] as const) {
    if (((r.reqProdPvt - r.rspCons) >>> 0) > size) return `${name} ring indices req_prod_pvt ${r.reqProdPvt} and rsp_cons ${r.rspCons} are more than a ring (${size}) apart`;
  }
  if (s.txInFlight.length > ((s.tx.reqProdPvt - s.tx.rspCons) >>> 0)) return `${s.txInFlight.length} frames in flight but only ${(s.tx.reqProdPvt - s.tx.rspCons) >>> 0} tx slots outstanding`;
  const ids = new Set<number>();
  for (const id of [...s.txFree, ...s.txInFlight.map((t) => t.id)]) {
    if (id >= s.txBufCount) return `tx buffer id ${id} is not below ${s.txBufCount}`;
    if (ids.has(id)) return `tx buffer id ${id} is both free and in flight, or listed twice`;
    ids.add(id);
  }
  if (ids.size !== s.txBufCount) return `tx buffer ids cover ${ids.size} of ${s.txBufCount}`;
  const buffers = new Set<number>();
  const frames = new Set<number>([s.tx.pfn, s.rx.pfn]);
  if (frames.size !== 2) return 'the tx and rx rings share a frame';
  for (const b of s.txBuffers) {
    if (b.id >= s.txBufCount || buffers.has(b.id)) return `tx buffer ${b.id} is out of range or listed twice`;
    buffers.add(b.id);
    if (frames.has(b.pfn)) return `frame ${b.pfn} is used twice`;
    frames.add(b.pfn);
  }
  for (const t of s.txInFlight) if (!buffers.has(t.id)) return `tx buffer ${t.id} is in flight but has no frame`;
  for (const b of s.rxBufs) {
    if (frames.has(b.pfn)) return `frame ${b.pfn} is used twice`;
    frames.add(b.pfn);
  }
  const grants = new Set<number>([s.tx.ref, s.rx.ref, ...s.txInFlight.map((t) => t.gref), ...s.rxBufs.map((b) => b.gref)]);
  if (grants.size !== 2 + s.txInFlight.length + s.rxBufs.length) return 'a grant reference is used twice';
  return undefined;
}

export const NETFRONT_STATE = defineStateLayout('netfront', 1, NetfrontStateSchema, { refine: refineNetfront });
