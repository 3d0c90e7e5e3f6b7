/**
 * The saved state of an SV-IO VIF's device side (NetVif 'net-vif', BlkVif 'blk-vif', CamVif
 * 'cam-vif'): what a fresh processor built with the same constructor arguments needs to carry on
 * the guest's I/O.
 *
 * What a record holds:
 * - both queues' indices as the device last published them: the outgoing queue's `cons` (this
 *   end consumes) and the incoming queue's `prod` (this end produces). A pass always publishes
 *   what it took and wrote, so at rest they are the device's private indices too; a restore
 *   checks them against the queue pages, which are the guest's memory;
 * - the messages the device took and has not answered, each as the 64 bytes it copied out (its
 *   private copy; the slot went back to the guest): the one its QoS turn could not afford
 *   (`held`), answers waiting for room on the incoming queue (`backlog`), a network VIF's posted
 *   receive buffers, a camera VIF's queued frame buffers;
 * - the QoS state on its core's scheduler: the deficit it carries into its next round and the
 *   credit left in the current window of its rate limit (`qos`, absent when it runs alone);
 * - a camera's sequence number (the next frame's is one more: the guest sees no false gap) and
 *   whether it was streaming, and the last frame's timestamp for the reader (frames keep the
 *   camera's own clock, which is the environment's);
 * - `kickPending`: a doorbell that came while quiesced (served on resume), and the counters.
 *
 * What a record does not hold: the guest's memory (queues and buffers), the disk image, the wire
 * and the interrupt path — the environment, given again as constructor arguments.
 */
import { Type, type Static } from '@sinclair/typebox';
import { QUEUE_SLOTS, defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
/** A VIF message slot as the device copied it out. */
export const MessageSlot = Type.Uint8Array({ minByteLength: 64, maxByteLength: 64 });

const VifFields = {
  outCons: U32,
  inProd: U32,
  held: Type.Union([Type.Null(), MessageSlot]),
  backlog: Type.Array(MessageSlot, { maxItems: QUEUE_SLOTS }),
  stopReason: Type.Union([Type.Null(), Type.String({ maxLength: 1024 })]),
  kickPending: Type.Boolean(),
  qos: Type.Union([Type.Null(), Type.Object({ deficit: Type.Number({ minimum: 0, maximum: 1e12 }), credit: Type.Union([Type.Null(), Count]) })]),
  counters: Type.Object({ passes: Count, messagesIn: Count, messagesOut: Count, refused: Count, backpressured: Count, notifications: Count, bytes: Count }),
};
export const VifStateSchema = Type.Object(VifFields);
/** The fields every VIF's record has (VifProcessor's own state). */
export type VifState = Static<typeof VifStateSchema>;

export const NetVifState = Type.Object({
  ...VifFields,
  posted: Type.Array(MessageSlot, { maxItems: 256 }),
  net: Type.Object({ txFrames: Count, rxFrames: Count, rxMissed: Count }),
});
export type NetVifState = Static<typeof NetVifState>;

export const BlkVifState = Type.Object({
  ...VifFields,
  blk: Type.Object({ reads: Count, writes: Count, flushes: Count, injected: Count }),
});
export type BlkVifState = Static<typeof BlkVifState>;

export const CamVifState = Type.Object({
  ...VifFields,
  queued: Type.Array(Type.Object({ id: U32, gfn: U32, pages: Type.Integer({ minimum: 1, maximum: 4096 }) }), { maxItems: 64 }),
  camera: Type.Object({
    seq: U32,
    streaming: Type.Boolean(),
    /** The last frame's timestamp (µs, decimal u64), for the reader; null before the first. */
    lastTimestampUs: Type.Union([Type.Null(), Type.String({ pattern: '^[0-9]{1,20}$' })]),
    metrics: Type.Object({ captured: Count, delivered: Count, dropped: Count, bytes: Count }),
  }),
});
export type CamVifState = Static<typeof CamVifState>;

function refineVif(s: VifState): string | undefined {
  if (s.held && s.backlog.length > 0) return 'a message held for its QoS turn while answers wait for room: a pass never takes one with a backlog';
  if (s.stopReason === null && s.counters.passes === 0 && (s.held || s.backlog.length > 0)) return 'messages held by a VIF that never ran a pass';
  return undefined;
}

export const netVifLayout = defineStateLayout('net-vif', 1, NetVifState, { refine: refineVif });
export const blkVifLayout = defineStateLayout('blk-vif', 1, BlkVifState, { refine: refineVif });
export const camVifLayout = defineStateLayout('cam-vif', 1, CamVifState, {
  refine: (s) => {
    const base = refineVif(s);
    if (base) return base;
    if (s.camera.metrics.delivered + s.camera.metrics.dropped !== s.camera.metrics.captured) return `camera: ${s.camera.metrics.captured} frames captured, but ${s.camera.metrics.delivered} delivered and ${s.camera.metrics.dropped} dropped`;
    if (s.camera.seq < s.camera.metrics.captured) return `camera sequence ${s.camera.seq} behind the ${s.camera.metrics.captured} frames captured`;
    const ids = new Set(s.queued.map((q) => q.id));
    if (ids.size !== s.queued.length) return 'a frame buffer queued twice';
    return undefined;
  },
});
