/**
 * The saved state of an emulated Lance (PCnet-PCI II) NIC (layout 'lance', version 1).
 *
 * The chip's state is its registers and its ring positions: RAP, the 128 CSRs (with the ring
 * base addresses, the interrupt status and masks, the mode, PADR and the multicast filter) and
 * the 32 BCRs (SWSTYLE, DWIO, the LEDs), the ring lengths and the current rx and tx descriptor
 * indices. The model keeps no descriptor between accesses: each walk reads every descriptor it
 * needs once, into a private copy, and hands it back before the walk ends (it is synchronous),
 * so the descriptors themselves — owned by the card and not yet sent, or posted for receive —
 * are in the guest's memory, which is saved with the guest, not here. What the record adds is
 * what the chip had accepted and not yet acted on while it was quiesced: frames from the wire
 * (`rxQueue`, delivered on restore), a transmit demand (`transmitDemand`, a poll on restore),
 * and the interrupt line level the host last saw (`irqLevel`; an edge not yet delivered is
 * raised on restore). The burned-in MAC (the APROM) comes from the constructor.
 */
import { Type, type Static } from '@sinclair/typebox';
import { defineStateLayout } from '../../device/index.js';
import { LANCE_MAX_FRAME, LANCE_MIN_FRAME, RAP_MASK } from './registers.js';

/** Frames held while quiesced, at most (more are dropped and counted, as a full FIFO would). */
export const LANCE_RX_QUEUE_MAX = 256;
const Word = Type.Integer({ minimum: 0, maximum: 0xffff });

export const LanceStateSchema = Type.Object({
  rap: Type.Integer({ minimum: 0, maximum: RAP_MASK }),
  csr: Type.Array(Word, { minItems: 128, maxItems: 128 }),
  bcr: Type.Array(Word, { minItems: 32, maxItems: 32 }),
  /** Ring lengths in descriptors (0: no ring) and the current index in each. */
  rxLen: Word,
  txLen: Word,
  rxIndex: Word,
  txIndex: Word,
  irqLevel: Type.Boolean(),
  transmitDemand: Type.Boolean(),
  rxQueue: Type.Array(Type.Uint8Array({ minByteLength: LANCE_MIN_FRAME, maxByteLength: LANCE_MAX_FRAME }), { maxItems: LANCE_RX_QUEUE_MAX }),
});
export type LanceState = Static<typeof LanceStateSchema>;

export const LANCE_STATE = defineStateLayout('lance', 1, LanceStateSchema, {
  refine: (s) => {
    if (s.rxLen === 0 ? s.rxIndex !== 0 : s.rxIndex >= s.rxLen) return `rx index ${s.rxIndex} outside a ${s.rxLen}-descriptor ring`;
    if (s.txLen === 0 ? s.txIndex !== 0 : s.txIndex >= s.txLen) return `tx index ${s.txIndex} outside a ${s.txLen}-descriptor ring`;
    return undefined;
  },
});
