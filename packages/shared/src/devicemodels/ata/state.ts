/**
 * The saved state of an emulated ATA drive (layout 'ata', version 1).
 *
 * A record is taken after quiesce(), which waits for the backing operation in flight, so the
 * drive is never BSY in a record: it is idle, in a PIO transfer (data-in: the sectors already
 * read from the backing, the position within them; data-out: the sectors the guest has written
 * so far and the LBA they go to), or held in software reset. The record carries the task file,
 * STATUS's inputs (phase, ERR) and ERROR, the interrupt pending flag and the INTRQ level the host
 * last saw (a rising edge still owed is raised on restore), nIEN and SRST. What the constructor
 * rebuilds (the backing, IDENTIFY's strings, the capacity) is not in it.
 */
import { Type, type Static } from '@sinclair/typebox';
import { defineStateLayout } from '../../device/index.js';
import { ATA_SECTOR_SIZE, DEVICE_DEV1 } from './registers.js';

const Byte = Type.Integer({ minimum: 0, maximum: 0xff });
/** The most one command moves: 256 sectors. */
const MAX_TRANSFER_BYTES = 256 * ATA_SECTOR_SIZE;

export const AtaStateSchema = Type.Object({
  /** 'busy' and 'resetting' never appear: quiesce() waits for the backing. */
  phase: Type.Union([Type.Literal('idle'), Type.Literal('pio-in'), Type.Literal('pio-out'), Type.Literal('srst')]),
  /** The PIO transfer in progress (all zero/empty outside pio-in and pio-out). */
  transfer: Type.Object({
    /** The DRQ buffer: every sector of the command (pio-in: as read; pio-out: filled up to `pos`). */
    data: Type.Uint8Array({ maxByteLength: MAX_TRANSFER_BYTES }),
    /** Next byte the data port moves (always even: the port moves 16-bit words). */
    pos: Type.Integer({ minimum: 0, maximum: MAX_TRANSFER_BYTES }),
    /** End of the current DRQ block: the drive interrupts (or finishes) when `pos` reaches it. */
    blockEnd: Type.Integer({ minimum: 0, maximum: MAX_TRANSFER_BYTES }),
    /** First sector of the transfer (pio-out: where the backing write goes). */
    lba: Type.Integer({ minimum: 0, maximum: 0x0fffffff }),
    /** pio-in of sectors (true) or of IDENTIFY data (false): whether sectorsRead counts it. */
    counted: Type.Boolean(),
  }),
  taskfile: Type.Object({ features: Byte, count: Byte, lbaLow: Byte, lbaMid: Byte, lbaHigh: Byte, device: Byte }),
  /** STATUS.ERR of the last command, and the ERROR register. */
  err: Type.Boolean(),
  error: Byte,
  interruptPending: Type.Boolean(),
  /** The INTRQ level the host's interrupt controller has seen (an edge not yet delivered: false). */
  intrq: Type.Boolean(),
  nIEN: Type.Boolean(),
  srst: Type.Boolean(),
});
export type AtaState = Static<typeof AtaStateSchema>;

export const ATA_STATE = defineStateLayout('ata', 1, AtaStateSchema, {
  refine: (s) => {
    const t = s.transfer;
    const inTransfer = s.phase === 'pio-in' || s.phase === 'pio-out';
    if (!inTransfer && (t.data.byteLength !== 0 || t.pos !== 0 || t.blockEnd !== 0 || t.lba !== 0 || t.counted))
      return `a drive in phase ${s.phase} has no transfer, but the record holds one`;
    if (inTransfer) {
      const n = t.data.byteLength;
      if (n === 0 || n % ATA_SECTOR_SIZE !== 0) return `a PIO transfer of ${n} bytes is not a whole number of sectors (1..256)`;
      if (t.pos % 2 !== 0) return `the data port moves words: position ${t.pos} is odd`;
      if (t.blockEnd % ATA_SECTOR_SIZE !== 0 || t.blockEnd > n || t.pos >= t.blockEnd || t.pos < t.blockEnd - ATA_SECTOR_SIZE)
        return `position ${t.pos} is not inside the DRQ block ending at ${t.blockEnd} of a ${n}-byte transfer`;
      if (s.phase === 'pio-in' && !t.counted && n !== ATA_SECTOR_SIZE) return `IDENTIFY data is one sector, the record holds ${n} bytes`;
      if (s.phase === 'pio-out' && t.counted) return 'a data-out transfer is never an IDENTIFY';
    }
    if (s.srst !== (s.phase === 'srst')) return `SRST ${s.srst ? 'set' : 'clear'} in phase ${s.phase}`;
    if (s.phase === 'srst' && (s.interruptPending || s.err)) return 'a drive held in reset has no interrupt or error pending';
    if (s.intrq && !(s.interruptPending && !s.nIEN && (s.taskfile.device & DEVICE_DEV1) === 0)) return 'INTRQ asserted without an unmasked pending interrupt on device 0';
    if (inTransfer && s.err) return 'ERR set during a data transfer';
    return undefined;
  },
});
