/**
 * blkback's saved state (layout 'blkback' v1). The ring page is the guest's (the backend maps it
 * by its grant reference), so the record holds the backend's private view of it:
 *
 * - the device and its event-channel port (bound to the frontend's, which the environment keeps);
 * - the ring's grant reference and the backend's private indices: req_cons (requests taken) and
 *   rsp_prod_pvt (responses written), with rsp_prod as published when it was saved;
 * - the responses written but not yet pushed, by value: the restored backend writes them again
 *   into their slots before it pushes, so what it publishes is what it decided, not whatever the
 *   (guest-writable) page holds by then;
 * - the vbd's size, which a restore checks against the region it is given;
 * - the counters.
 *
 * No "taken but not finished" list: blkback submits a request to the disk the moment it takes
 * it, and quiesce() waits for the disk, so a saved blkback has answered every request it took
 * (req_cons = rsp_prod_pvt; `refine` insists). Requests still on the ring (req_prod > req_cons)
 * are found there by the restored backend.
 */
import { Type, type Static } from '@sinclair/typebox';
import { blkifProtocol, defineStateLayout, ringSize, slotSize } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const U64 = Type.String({ pattern: '^(0|[1-9][0-9]{0,19})$' });
export const BLKBACK_RING_SIZE = ringSize(slotSize(blkifProtocol));

export const BlkbackStateSchema = Type.Object(
  {
    frontDomid: Type.Integer({ minimum: 1, maximum: 0x7fef }),
    devid: U32,
    port: Type.Integer({ minimum: 1, maximum: 0xffff }),
    sectors: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    ring: Type.Object({ ref: U32, reqCons: U32, rspProdPvt: U32, rspProd: U32 }, { additionalProperties: false }),
    unpushed: Type.Array(
      Type.Object({ id: U64, operation: Type.Integer({ minimum: 0, maximum: 255 }), status: Type.Integer({ minimum: -32768, maximum: 32767 }) }, { additionalProperties: false }),
      { maxItems: BLKBACK_RING_SIZE },
    ),
    counters: Type.Record(Type.String({ pattern: '^[A-Za-z]{1,40}$' }), Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type BlkbackSavedState = Static<typeof BlkbackStateSchema>;

function refineBlkback(s: BlkbackSavedState): string | undefined {
  const { reqCons, rspProdPvt, rspProd } = s.ring;
  if (reqCons !== rspProdPvt) return `req_cons ${reqCons} and rsp_prod_pvt ${rspProdPvt} differ: a saved blkback has answered every request it took`;
  const unpushed = (rspProdPvt - rspProd) >>> 0;
  if (unpushed > BLKBACK_RING_SIZE) return `rsp_prod_pvt ${rspProdPvt} is more than a ring (${BLKBACK_RING_SIZE}) ahead of rsp_prod ${rspProd}`;
  if (unpushed !== s.unpushed.length) return `${s.unpushed.length} unpushed responses recorded for ${unpushed} slots between rsp_prod and rsp_prod_pvt`;
  return undefined;
}

export const BLKBACK_STATE = defineStateLayout('blkback', 1, BlkbackStateSchema, { refine: refineBlkback });
