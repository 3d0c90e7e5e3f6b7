/**
 * The saved state of an SV-IO block driver ('svio-blk-driver'): what a fresh driver built with
 * the same arguments (the open VIF, the guest's memory, its frame allocator) needs to carry on.
 *
 * What a record holds: the queue indices as the driver last published them (the outgoing queue's
 * `prod`, the incoming queue's `cons`; at rest they are its private ones too, and a restore checks
 * them against the queue pages); every request on the outgoing queue and not yet answered
 * (`inflight`) and every one not yet on it (`backlog`), each as its 64-byte message, with the DMA
 * buffer frames it owns and, for a read, how many bytes its caller asked for; the next id; the
 * counters.
 *
 * What a record does not hold: the guest's memory (the queues, the buffers and the data in them),
 * its frame allocator and the VIF (register page, doorbell, interrupt) — the environment. The
 * callers waiting on the saved requests are not in it either: a restored driver hands each
 * request's completion out anew (`SvioBlkDriver.restoredRequests`).
 */
import { Type, type Static } from '@sinclair/typebox';
import { PAGE_SIZE, QUEUE_SLOTS, VIF_BLK_MAX_SEGMENTS, defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const SvioBlkRequestState = Type.Object({
  message: Type.Uint8Array({ minByteLength: 64, maxByteLength: 64 }),
  frames: Type.Array(U32, { maxItems: VIF_BLK_MAX_SEGMENTS }),
  readBytes: Type.Integer({ minimum: 0, maximum: VIF_BLK_MAX_SEGMENTS * PAGE_SIZE }),
});
export type SvioBlkRequestState = Static<typeof SvioBlkRequestState>;

export const SvioBlkDriverState = Type.Object({
  outProd: U32,
  inCons: U32,
  nextId: Type.Integer({ minimum: 1, maximum: 0x7fffffff }),
  inflight: Type.Array(SvioBlkRequestState, { maxItems: QUEUE_SLOTS }),
  backlog: Type.Array(SvioBlkRequestState, { maxItems: 65536 }),
  counters: Type.Record(Type.String({ pattern: '^[a-zA-Z]+$' }), Count),
});
export type SvioBlkDriverState = Static<typeof SvioBlkDriverState>;

export const svioBlkDriverLayout = defineStateLayout('svio-blk-driver', 1, SvioBlkDriverState, {
  refine: (s) => {
    const frames = new Set<number>();
    for (const r of [...s.inflight, ...s.backlog]) {
      for (const f of r.frames) {
        if (frames.has(f)) return `frame ${f} owned twice`;
        frames.add(f);
      }
      if (r.readBytes > r.frames.length * PAGE_SIZE) return `a read of ${r.readBytes} bytes into ${r.frames.length} frames`;
    }
    const ids = new Set(s.inflight.map((r) => new DataView(r.message.buffer, r.message.byteOffset, 64).getUint32(4, true)));
    if (ids.size !== s.inflight.length || ids.has(0)) return 'requests in flight without an id of their own';
    return undefined;
  },
});
