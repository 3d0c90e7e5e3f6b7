/**
 * The saved state of a direct disk driver ('vf-blk-driver'): what a fresh driver built with the
 * same options needs to carry on its I/O on the same function.
 *
 * What a record holds: the ring's frame and the driver's private indices (`reqProdPvt`,
 * `rspCons`; the shared ones are in the ring page, in guest memory); the function's generation
 * it runs under and whether it had seen the queue up; every request on the ring and not yet
 * answered (`inflight`, with the id the device will answer) and every request not yet on it
 * (`backlog`), each as its hwblk slot bytes, with the DMA buffer frames it owns and, for a read,
 * how many bytes its caller asked for; the next request id; the counters.
 *
 * What a record does not hold: the guest's memory (the ring, the DMA buffers and the data in
 * them), its frame allocator, and the function (registers, doorbell, interrupt) — the
 * environment, given again as the driver's options. The callers waiting on the saved requests
 * are not in it either: a restored driver hands each request's completion out anew
 * (`VfBlkDriver.restoredRequests`).
 */
import { Type, type Static } from '@sinclair/typebox';
import { PAGE_SIZE, defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Frame = Type.Integer({ minimum: 0, maximum: 0xffffffff });

export const VfBlkRequestState = Type.Object({
  /** The hwblk request slot (104 bytes), id included. */
  slot: Type.Uint8Array({ minByteLength: 104, maxByteLength: 104 }),
  frames: Type.Array(Frame, { maxItems: 11 }),
  /** Bytes a read's caller asked for (0: not a read into a caller's buffer). */
  readBytes: Type.Integer({ minimum: 0, maximum: 11 * PAGE_SIZE }),
  /** A hostile-driver test's raw request (misbehave.ts), told its status only. */
  raw: Type.Boolean(),
});
export type VfBlkRequestState = Static<typeof VfBlkRequestState>;

export const VfBlkDriverState = Type.Object({
  ringPfn: Type.Integer({ minimum: -1, maximum: 0xffffffff }),
  ring: Type.Union([Type.Null(), Type.Object({ reqProdPvt: U32, rspCons: U32 })]),
  generation: U32,
  up: Type.Boolean(),
  sectors: Count,
  nextId: Type.Integer({ minimum: 1, maximum: 0xffffffff }),
  lostReason: Type.Union([Type.Null(), Type.String({ maxLength: 1024 })]),
  inflight: Type.Array(VfBlkRequestState, { maxItems: 256 }),
  backlog: Type.Array(VfBlkRequestState, { maxItems: 65536 }),
  counters: Type.Record(Type.String({ pattern: '^[a-zA-Z]+$' }), Count),
});
export type VfBlkDriverState = Static<typeof VfBlkDriverState>;

export const vfBlkDriverLayout = defineStateLayout('vf-blk-driver', 1, VfBlkDriverState, {
  refine: (s) => {
    const onRing = s.ring ? (s.ring.reqProdPvt - s.ring.rspCons) >>> 0 : 0;
    if (s.inflight.length !== onRing) return `${s.inflight.length} requests in flight, the ring indices say ${onRing}`;
    const frames = new Set<number>();
    for (const r of [...s.inflight, ...s.backlog]) {
      for (const f of r.frames) {
        if (frames.has(f) || f === s.ringPfn) return `frame ${f} owned twice`;
        frames.add(f);
      }
      if (r.readBytes > r.frames.length * PAGE_SIZE) return `a read of ${r.readBytes} bytes into ${r.frames.length} frames`;
    }
    const ids = new Set(s.inflight.map((r) => new DataView(r.slot.buffer, r.slot.byteOffset, 104).getUint32(4, true)));
    if (ids.size !== s.inflight.length) return 'two requests in flight under one id';
    if (s.lostReason !== null && (s.inflight.length > 0 || s.backlog.length > 0)) return 'requests held by a driver whose function is gone';
    return undefined;
  },
});
