/**
 * A guest that turns its own vCPU against its emulated ATA drive (fault plans' device kinds, and
 * the hostile-driver tests). The model must answer with ATA errors (ABRT, IDNF) or ignore what
 * the protocol says to ignore, and never touch storage outside the guest's region.
 *
 *   bad-commands   READ/WRITE beyond the end of the disk, LBA 0x0FFFFFFF, unknown opcodes,
 *                  commands while busy, data-port traffic with DRQ clear
 *   port-garbage   random accesses of random widths to the command and control blocks
 *
 * Runs between the driver's own commands; the driver resets the drive before its next one.
 */
import { SplitMix32, type PortIo } from '@ringvisor/shared';

export type AtaAttack = 'bad-commands' | 'port-garbage';
export const ATA_ATTACKS: readonly AtaAttack[] = ['bad-commands', 'port-garbage'];

export interface AtaAttackOutcome {
  accesses: number;
  /** Commands the drive answered with ERR set. */
  errors: number;
  /** Error register bits seen (ABRT 0x04, IDNF 0x10, …), OR-ed together. */
  errorBits: number;
}

const STATUS_BSY = 0x80;
const STATUS_ERR = 0x01;

export function ataAttack(o: { io: PortIo; commandBase: number; controlBase: number; sectors: number }, attack: AtaAttack, count: number, seed: number): AtaAttackOutcome {
  const { io, commandBase: cmd, controlBase: ctl } = o;
  const rng = new SplitMix32(seed);
  let accesses = 0;
  let errors = 0;
  let errorBits = 0;
  const outb = (port: number, v: number) => (accesses++, io.outb(port, v));
  const inb = (port: number) => (accesses++, io.inb(port));
  /** Issue a command and spin (bounded) on alt-status until the drive is not busy. */
  const command = (lba: number, n: number, opcode: number) => {
    outb(cmd + 2, n);
    outb(cmd + 3, lba & 0xff);
    outb(cmd + 4, (lba >>> 8) & 0xff);
    outb(cmd + 5, (lba >>> 16) & 0xff);
    outb(cmd + 6, 0xe0 | ((lba >>> 24) & 0x0f));
    outb(cmd + 7, opcode);
    let st = STATUS_BSY;
    for (let i = 0; i < 200 && st & STATUS_BSY; i++) st = inb(ctl);
    if (st & STATUS_ERR) {
      errors++;
      errorBits |= inb(cmd + 1);
    }
    inb(cmd + 7); // acknowledge
  };
  if (attack === 'bad-commands') {
    for (let i = 0; i < count; i++) {
      command(o.sectors, 1, 0x20); // READ one past the end
      command(o.sectors - 1, 8, 0x30); // WRITE running past the end
      command(0x0fffffff, 0, 0x20); // READ 256 at the top of LBA28
      command(rng.nextU32() % o.sectors, 1, [0x00, 0x25, 0x35, 0xc8, 0xff][rng.nextU32() % 5]); // not supported
      for (let w = 0; w < 64; w++) { accesses++; io.outw(cmd, rng.nextU32()); } // data with DRQ clear
      for (let w = 0; w < 64; w++) { accesses++; io.inw(cmd); }
      outb(cmd + 6, 0xf0); // select the absent device 1 and command it
      outb(cmd + 7, 0x30);
      outb(cmd + 6, 0xe0);
    }
  } else {
    for (let i = 0; i < count * 32; i++) {
      const toControl = rng.nextU32() % 4 === 0;
      const port = toControl ? ctl : cmd + (rng.nextU32() % 8);
      const size = [1, 2, 4][rng.nextU32() % 3];
      const write = rng.nextU32() % 2 === 0;
      // Writing opcodes are left out: garbage data would land in this guest's own disk region,
      // which proves nothing about isolation and would only fail its own ledger.
      let v = rng.nextU32();
      if (!toControl && port === cmd + 7 && write && isWriteOpcode(v & 0xff)) v = 0xec;
      accesses++;
      if (size === 1) write ? io.outb(port, v) : io.inb(port);
      else if (size === 2) write ? io.outw(port, v) : io.inw(port);
      else write ? io.outl(port, v) : io.inl(port);
    }
  }
  return { accesses, errors, errorBits };
}

/** ATA opcodes that write the medium (WRITE SECTORS/MULTIPLE/DMA variants, WRITE VERIFY…). */
function isWriteOpcode(op: number): boolean {
  return (op >= 0x30 && op <= 0x3f) || op === 0xc5 || op === 0xca || op === 0xcb || op === 0xcc || op === 0xce;
}
