/**
 * The saved state of a direct NIC driver ('vf-nic-driver'): what a fresh driver built with the
 * same options needs to carry on on the same function.
 *
 * What a record holds: the two rings' frames and the driver's private indices on each (the
 * shared ones are in the ring pages, guest memory); the DMA buffers it owns (frame and offset,
 * by buffer id) and which transmit buffers are free — every other one is on the tx ring, not yet
 * answered; the frames queued for transmit and not yet in a buffer; the function's generation,
 * whether the queues were up, why the function was lost (if it was); the MAC; the counters.
 *
 * What a record does not hold: the guest's memory (rings, buffers and the frames in them), its
 * frame allocator and the function — the environment, given again as the driver's options.
 * Frames received and not yet collected stay in their rx buffers and answers on the rx ring, and
 * are collected by the restored driver. A hostile-driver test's raw transmits (misbehave.ts) are
 * not carried: their slots complete as ordinary ones.
 */
import { Type, type Static } from '@sinclair/typebox';
import { ETH_MAX_FRAME, defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Ring = Type.Object({ reqProdPvt: U32, rspCons: U32 });
const Buffer = Type.Object({ pfn: U32, offset: Type.Union([Type.Literal(0), Type.Literal(2048)]) });

export const VfNicDriverState = Type.Object({
  ringPfns: Type.Array(U32, { maxItems: 2 }),
  tx: Type.Union([Type.Null(), Ring]),
  rx: Type.Union([Type.Null(), Ring]),
  txBufs: Type.Array(Buffer, { maxItems: 256 }),
  rxBufs: Type.Array(Buffer, { maxItems: 256 }),
  txFree: Type.Array(Type.Integer({ minimum: 0, maximum: 255 }), { maxItems: 256 }),
  txQueue: Type.Array(Type.Uint8Array({ maxByteLength: ETH_MAX_FRAME }), { maxItems: 1024 }),
  generation: U32,
  up: Type.Boolean(),
  lost: Type.Union([Type.Null(), Type.String({ maxLength: 1024 })]),
  mac: Type.String({ maxLength: 17 }),
  counters: Type.Record(Type.String({ pattern: '^[a-zA-Z]+$' }), Count),
});
export type VfNicDriverState = Static<typeof VfNicDriverState>;

export const vfNicDriverLayout = defineStateLayout('vf-nic-driver', 1, VfNicDriverState, {
  refine: (s) => {
    if ((s.tx === null) !== (s.rx === null)) return 'one ring without the other';
    if (s.tx && s.ringPfns.length !== 2) return 'rings without their frames';
    const free = new Set(s.txFree);
    if (free.size !== s.txFree.length || s.txFree.some((id) => id >= s.txBufs.length)) return 'a free transmit buffer that is not one, or listed twice';
    if (s.tx && ((s.tx.reqProdPvt - s.tx.rspCons) >>> 0) !== s.txBufs.length - s.txFree.length)
      return `${s.txBufs.length - s.txFree.length} transmit buffers busy, the tx ring indices say ${(s.tx.reqProdPvt - s.tx.rspCons) >>> 0}`;
    if (s.rx && ((s.rx.reqProdPvt - s.rx.rspCons) >>> 0) > s.rxBufs.length) return 'more rx buffers posted than the driver has';
    const seen = new Set<string>();
    for (const b of [...s.txBufs, ...s.rxBufs]) {
      const key = `${b.pfn}:${b.offset}`;
      if (seen.has(key) || s.ringPfns.includes(b.pfn)) return `buffer ${key} owned twice`;
      seen.add(key);
    }
    return undefined;
  },
});
