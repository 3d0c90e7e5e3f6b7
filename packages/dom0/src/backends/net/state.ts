/**
 * netback's saved state (layout 'netback' v1). The tx and rx ring pages are the guest's (mapped
 * by grant reference), so the record holds netback's private view of them and what it holds of
 * its own:
 *
 * - the device and its event-channel port;
 * - per ring its grant reference and private indices (req_cons, rsp_prod_pvt), with rsp_prod as
 *   published — netback pushes every response in the pass that wrote it, so they are equal;
 * - the tx request taken and not yet answered because the vif ran out of credit (its private,
 *   validated copy: the ring slot may hold anything by now);
 * - the frames the bridge delivered that wait for an rx buffer, by value (they live in dom0's skb
 *   pool, which is no part of the guest's memory);
 * - the counters.
 *
 * The credit window starts afresh on restore (a rate limit, not I/O state).
 */
import { Type, type Static } from '@sinclair/typebox';
import { ETH_MAX_FRAME, ETH_MIN_FRAME, defineStateLayout, netifRxProtocol, netifTxProtocol, ringSize, slotSize } from '@ringvisor/shared';

/** Frames the bridge may queue for one vif waiting for rx buffers; beyond it they are dropped. */
export const NETBACK_RX_QUEUE_LIMIT = 256;

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const U16 = Type.Integer({ minimum: 0, maximum: 0xffff });
export const NETBACK_TX_RING_SIZE = ringSize(slotSize(netifTxProtocol));
export const NETBACK_RX_RING_SIZE = ringSize(slotSize(netifRxProtocol));
const Ring = Type.Object({ ref: U32, reqCons: U32, rspProdPvt: U32, rspProd: U32 }, { additionalProperties: false });

export const NetbackStateSchema = Type.Object(
  {
    frontDomid: Type.Integer({ minimum: 1, maximum: 0x7fef }),
    devid: U32,
    port: Type.Integer({ minimum: 1, maximum: 0xffff }),
    tx: Ring,
    rx: Ring,
    stalledTx: Type.Union([Type.Null(), Type.Object({ gref: U32, offset: U16, flags: U16, id: U16, size: U16 }, { additionalProperties: false })]),
    rxQueue: Type.Array(Type.Uint8Array({ minByteLength: ETH_MIN_FRAME, maxByteLength: ETH_MAX_FRAME }), { maxItems: NETBACK_RX_QUEUE_LIMIT }),
    counters: Type.Record(Type.String({ pattern: '^[A-Za-z]{1,40}$' }), Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type NetbackSavedState = Static<typeof NetbackStateSchema>;

function refineNetback(s: NetbackSavedState): string | undefined {
  for (const [name, r] of [
    ['tx', s.tx],
    ['rx', s.rx],
  ] as const) {
    if (r.rspProdPvt !== r.rspProd) return `${name}: rsp_prod_pvt ${r.rspProdPvt} is not rsp_prod ${r.rspProd}: netback pushes every response in the pass that wrote it`;
  }
  const taken = (s.tx.reqCons - s.tx.rspProdPvt) >>> 0;
  if (taken !== (s.stalledTx ? 1 : 0)) return `tx: req_cons ${s.tx.reqCons} is ${taken} ahead of rsp_prod_pvt ${s.tx.rspProdPvt}, with ${s.stalledTx ? 'one request' : 'no request'} held`;
  if (s.rx.reqCons !== s.rx.rspProdPvt) return `rx: req_cons ${s.rx.reqCons} and rsp_prod_pvt ${s.rx.rspProdPvt} differ: netback answers each rx request in the pass that took it`;
  return undefined;
}

export const NETBACK_STATE = defineStateLayout('netback', 1, NetbackStateSchema, { refine: refineNetback });
