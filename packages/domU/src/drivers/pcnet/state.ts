/**
 * The saved state of the guest's pcnet driver (layout 'pcnet', version 1).
 *
 * A guest driver's state is what a kernel keeps in its private structure (pcnet32_private): the
 * open/closed state, the station address, the frames it owns (init block, rings, buffers — by
 * guest frame number; their contents are guest memory, saved with the guest), the ring
 * positions (`curRx`, and `curTx`/`dirtyTx`: sent and not yet reclaimed), the lengths of the
 * frames in the tx slots (counted at reclaim), whether a NAPI poll was scheduled, an interrupt
 * that came while quiesced, and the pending operations: frames waiting in the driver's queue for
 * a tx slot. The PortIo, memory, allocator and IRQ registration come from the constructor.
 */
import { Type, type Static } from '@sinclair/typebox';
import { defineStateLayout } from '@ringvisor/shared';

/** Frames the driver queues while the tx ring is full (its qdisc), at most. */
export const PCNET_TX_BACKLOG = 64;
const ETH_MIN = 14;
const ETH_MAX = 1514;
const Address = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Counter = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const PcnetStateSchema = Type.Object({
  state: Type.Union([Type.Literal('new'), Type.Literal('probed'), Type.Literal('open'), Type.Literal('closed')]),
  chipVersion: Type.Integer({ minimum: 0, maximum: 0xffff }),
  dwio: Type.Boolean(),
  mac: Type.Uint8Array({ minByteLength: 6, maxByteLength: 6 }),
  /** Guest frames the driver owns (released at close). */
  pfns: Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 1024 }),
  initBlock: Address,
  rxRing: Address,
  txRing: Address,
  rxLog2: Type.Integer({ minimum: 0, maximum: 9 }),
  txLog2: Type.Integer({ minimum: 0, maximum: 9 }),
  rxBufs: Type.Array(Address, { maxItems: 512 }),
  txBufs: Type.Array(Address, { maxItems: 512 }),
  txLens: Type.Array(Type.Integer({ minimum: 0, maximum: ETH_MAX }), { maxItems: 512 }),
  curRx: Counter,
  curTx: Counter,
  dirtyTx: Counter,
  napiScheduled: Type.Boolean(),
  irqOwed: Type.Boolean(),
  backlog: Type.Array(Type.Uint8Array({ minByteLength: ETH_MIN, maxByteLength: ETH_MAX }), { maxItems: PCNET_TX_BACKLOG }),
});
export type PcnetState = Static<typeof PcnetStateSchema>;

export const PCNET_STATE = defineStateLayout('pcnet', 1, PcnetStateSchema, {
  refine: (s) => {
    const rx = 1 << s.rxLog2;
    const tx = 1 << s.txLog2;
    if (s.txLens.length !== tx) return `${s.txLens.length} tx lengths for a ${tx}-slot ring`;
    const rings = s.rxBufs.length > 0 || s.txBufs.length > 0;
    if (rings && (s.rxBufs.length !== rx || s.txBufs.length !== tx)) return `${s.rxBufs.length}/${s.txBufs.length} buffers for ${rx}/${tx}-descriptor rings`;
    if (s.state === 'open' && (!rings || s.rxRing === 0 || s.txRing === 0 || s.initBlock === 0)) return 'an open driver without its rings';
    if (s.dirtyTx > s.curTx || s.curTx - s.dirtyTx > tx) return `${s.curTx - s.dirtyTx} frames in flight on a ${tx}-slot ring`;
    if (s.state !== 'open' && (s.backlog.length > 0 || s.napiScheduled)) return `a ${s.state} driver has no queued frames or scheduled poll`;
    return undefined;
  },
});
