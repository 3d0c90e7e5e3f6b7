/**
 * The saved state of an SV-IO camera driver ('svio-cam-driver'): what a fresh driver built with
 * the same arguments (the open VIF, the guest's memory, its frame allocator) needs to carry on.
 *
 * What a record holds: the queue indices as the driver last published them (checked against the
 * queue pages on restore); its frame buffers (first frame and page count, by id) and which wait
 * to be queued (every other one is with the VIF); whether the stream runs; the camera consumer's
 * check state — the last sequence number seen, so the first frame after a restore is checked
 * for order and gaps against it — and the counters.
 *
 * What a record does not hold: the guest's memory (queues, buffers, the frames in them), the
 * frame allocator and the VIF — the environment. A restored driver does not allocate buffers.
 */
import { Type, type Static } from '@sinclair/typebox';
import { defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const SvioCamDriverState = Type.Object({
  outProd: U32,
  inCons: U32,
  buffers: Type.Array(Type.Object({ pfn: U32, pages: Type.Integer({ minimum: 1, maximum: 4096 }) }), { minItems: 1, maxItems: 16 }),
  toQueue: Type.Array(Type.Integer({ minimum: 0, maximum: 15 }), { maxItems: 16 }),
  streaming: Type.Boolean(),
  consumer: Type.Object({ frames: Count, bytes: Count, corrupted: Count, gaps: Count, reordered: Count, lastSeq: U32, restarts: Count, failures: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 64 }) }),
  counters: Type.Record(Type.String({ pattern: '^[a-zA-Z]+$' }), Count),
});
export type SvioCamDriverState = Static<typeof SvioCamDriverState>;

export const svioCamDriverLayout = defineStateLayout('svio-cam-driver', 1, SvioCamDriverState, {
  refine: (s) => {
    if (new Set(s.toQueue).size !== s.toQueue.length || s.toQueue.some((i) => i >= s.buffers.length)) return 'a buffer to queue that is not one, or listed twice';
    const sorted = [...s.buffers].sort((a, b) => a.pfn - b.pfn);
    for (let i = 1; i < sorted.length; i++) if (sorted[i - 1].pfn + sorted[i - 1].pages > sorted[i].pfn) return 'two frame buffers overlap';
    return undefined;
  },
});
