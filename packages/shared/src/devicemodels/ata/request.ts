/**
 * Decoding and validating an ATA command from the taskfile the guest wrote.
 *
 * The drive latches the taskfile registers one byte at a time as the guest writes them; the
 * command write takes a snapshot of them (a private copy) and everything below looks only at
 * that copy, so nothing the guest writes later can change a command already accepted. Decoding
 * never throws: a command the drive cannot run is answered with the ERROR bits to report.
 */
import {
  ATA_MAX_SECTORS_PER_COMMAND,
  CMD_FLUSH_CACHE,
  CMD_IDENTIFY_DEVICE,
  CMD_READ_SECTORS,
  CMD_WRITE_SECTORS,
  DEVICE_LBA,
  DEVICE_LBA_HIGH_MASK,
  ERROR_ABRT,
  ERROR_IDNF,
} from './registers.js';

/** The taskfile as latched (each field a byte). */
export interface Taskfile {
  features: number;
  count: number;
  lbaLow: number;
  lbaMid: number;
  lbaHigh: number;
  device: number;
}

export type AtaCommandKind = 'identify' | 'read' | 'write' | 'flush';

export type AtaCommand =
  | { kind: 'identify' }
  | { kind: 'flush' }
  | { kind: 'read' | 'write'; lba: number; count: number };

export type AtaDecodeResult =
  | { ok: true; command: AtaCommand }
  | { ok: false; opcode: number; error: number; reason: string; kind: AtaCommandKind | 'unknown' };

/** COUNT as a number of sectors: 0 means 256. */
export function sectorCount(count: number): number {
  const n = count & 0xff;
  return n === 0 ? ATA_MAX_SECTORS_PER_COMMAND : n;
}

/** The 28-bit LBA the taskfile addresses. */
export function lba28(tf: Taskfile): number {
  return ((tf.device & DEVICE_LBA_HIGH_MASK) * 0x1000000 + ((tf.lbaHigh & 0xff) << 16) + ((tf.lbaMid & 0xff) << 8) + (tf.lbaLow & 0xff)) >>> 0;
}

/**
 * Decode `opcode` against the taskfile snapshot `tf` for a drive that serves `capacity` sectors.
 * Reads and writes need LBA addressing (DEVICE bit 6) and must lie wholly inside the drive.
 */
export function decodeCommand(opcode: number, tf: Taskfile, capacity: number): AtaDecodeResult {
  switch (opcode & 0xff) {
    case CMD_IDENTIFY_DEVICE:
      return { ok: true, command: { kind: 'identify' } };
    case CMD_FLUSH_CACHE:
      return { ok: true, command: { kind: 'flush' } };
    case CMD_READ_SECTORS:
    case CMD_WRITE_SECTORS: {
      const kind = (opcode & 0xff) === CMD_READ_SECTORS ? 'read' : 'write';
      if (!(tf.device & DEVICE_LBA)) return { ok: false, opcode, kind, error: ERROR_ABRT, reason: `${kind} with CHS addressing (DEVICE 0x${hex(tf.device)}): only LBA is supported` };
      const lba = lba28(tf);
      const count = sectorCount(tf.count);
      if (lba + count > capacity)
        return { ok: false, opcode, kind, error: ERROR_IDNF, reason: `${kind} of sectors ${lba}..${lba + count - 1} past the end of a ${capacity}-sector drive` };
      return { ok: true, command: { kind, lba, count } };
    }
    default:
      return { ok: false, opcode, kind: 'unknown', error: ERROR_ABRT, reason: `unsupported command 0x${hex(opcode)}` };
  }
}

function hex(v: number): string {
  return (v & 0xff).toString(16).padStart(2, '0');
}
