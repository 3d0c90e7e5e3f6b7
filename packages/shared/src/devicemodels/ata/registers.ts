/**
 * ATA PIO disk: the register interface (ATA/ATAPI-6, a subset), as the emulated drive
 * decodes it. One channel, one drive (device 0); device 1 is absent.
 *
 * Ports (command block at 0x1F0, control block at 0x3F6; offsets are what the model's
 * PortIoHandlers see):
 *
 *   cmd+0  0x1F0  DATA       r/w  16-bit PIO data; 256 accesses move one 512-byte sector
 *                                 (little-endian words: byte 2i is the low byte of word i).
 *                                 32-bit: two words, low word first (a PIIX splits inl/outl the
 *                                 same way). 8-bit: not a data transfer (8-bit PIO is a CFA
 *                                 feature this drive lacks): reads 0xff, writes are dropped, the
 *                                 transfer does not advance. With DRQ clear: reads all ones,
 *                                 writes are dropped.
 *   cmd+1  0x1F1  ERROR      r    why the last command failed (valid when STATUS.ERR)
 *                 FEATURES   w    command parameter (unused by the commands implemented)
 *   cmd+2  0x1F2  COUNT      r/w  sectors to transfer; 0 means 256
 *   cmd+3  0x1F3  LBA_LOW    r/w  LBA bits 0–7
 *   cmd+4  0x1F4  LBA_MID    r/w  LBA bits 8–15
 *   cmd+5  0x1F5  LBA_HIGH   r/w  LBA bits 16–23
 *   cmd+6  0x1F6  DEVICE     r/w  0xE0 | LBA 24–27: bit 6 (L) = LBA addressing (required: CHS is
 *                                 not supported), bit 4 (DEV) = device select, bits 7 and 5
 *                                 obsolete (written as 1 by convention)
 *   cmd+7  0x1F7  STATUS     r    drive state; reading it clears the pending interrupt
 *                 COMMAND    w    starts a command
 *   ctl+0  0x3F6  ALTSTATUS  r    STATUS without clearing the interrupt
 *                 DEVCTL     w    nIEN (bit 1), SRST (bit 2); bit 7 (HOB) is ignored (no LBA48)
 *
 * Accesses wider than a byte to the byte registers (cmd+1..7, ctl+0) are split into byte
 * accesses at consecutive offsets, low byte first, as the PC bus splits them; bytes past the
 * decoded registers read as all ones.
 *
 * Who writes what:
 *  - The host writes FEATURES, COUNT, LBA_*, DEVICE, then COMMAND, and DEVCTL at any time. The
 *    taskfile registers (cmd+1..6) are latched by both devices (the bus is shared); reads return
 *    what was written. COMMAND and the taskfile are ignored while BSY or DRQ is set (only a
 *    reset gets a busy drive's attention); the drive counts such writes.
 *  - The drive writes STATUS and ERROR. It leaves COUNT and LBA_* as the host wrote them, which
 *    on an error is the first sector of the failed command (transfers go to the backing store
 *    whole, so that is where the failure is reported).
 *
 * Sequencing the host must follow:
 *  1. Select: write DEVICE, then wait until ALTSTATUS shows BSY=0, DRQ=0 (DRDY=1 for a drive).
 *  2. Program COUNT and LBA_*, write COMMAND. Writing COMMAND clears a pending interrupt.
 *  3. PIO data-in (READ SECTORS, IDENTIFY): per 512-byte block, wait for the interrupt, read
 *     STATUS (clears it); ERR → read ERROR, the command is over; DRQ → read 256 words. After the
 *     last block DRQ drops and STATUS shows DRDY with no further interrupt.
 *  4. PIO data-out (WRITE SECTORS): poll ALTSTATUS until BSY=0 and DRQ=1 (no interrupt for the
 *     first block), write 256 words; then per block: wait for the interrupt, read STATUS; DRQ →
 *     write the next 256 words. The interrupt after the last block comes only once the data is in
 *     the backing store (the drive is BSY meanwhile): acknowledged means written.
 *  5. Non-data (FLUSH CACHE): wait for the interrupt, read STATUS. ERR means not flushed.
 *  6. Recovery: DEVCTL = SRST (plus nIEN as wanted), then DEVCTL without SRST. The drive aborts
 *    whatever it was doing (a write not yet complete reaches nothing), stays BSY until any
 *    backing operation it had started has settled, then shows DRDY, ERROR = 0x01 (diagnostics
 *    passed) and the signature COUNT = 1, LBA_LOW = 1, LBA_MID = 0, LBA_HIGH = 0, DEVICE = 0.
 *    A reset raises no interrupt.
 *
 * Interrupts: the drive's INTRQ is a level (pending ∧ ¬nIEN ∧ device 0 selected); the host sees
 * an edge each time it rises, i.e. one `irq()` per interrupt the drive asserts. An interrupt
 * raised under nIEN stays pending and is delivered when nIEN is cleared (ATA-6: nIEN only puts
 * the INTRQ driver in high impedance; so does selecting the other device). An interrupt raised while one is still pending (the host never
 * read STATUS) produces no new edge and is counted as coalesced.
 *
 * STATUS never shows DSC (bit 4, obsolete "seek complete" since ATA-6) or the obsolete bits 1–2.
 */

// Command block offsets.
export const REG_DATA = 0;
export const REG_ERROR = 1;
export const REG_FEATURES = 1;
export const REG_COUNT = 2;
export const REG_LBA_LOW = 3;
export const REG_LBA_MID = 4;
export const REG_LBA_HIGH = 5;
export const REG_DEVICE = 6;
export const REG_STATUS = 7;
export const REG_COMMAND = 7;
/** Byte registers the command block decodes. */
export const COMMAND_BLOCK_SIZE = 8;

// Control block offsets.
export const REG_ALT_STATUS = 0;
export const REG_DEVICE_CONTROL = 0;
export const CONTROL_BLOCK_SIZE = 1;

// Status register bits.
export const STATUS_BSY = 0x80;
export const STATUS_DRDY = 0x40;
export const STATUS_DF = 0x20;
export const STATUS_DSC = 0x10;
export const STATUS_DRQ = 0x08;
export const STATUS_ERR = 0x01;

// Error register bits.
export const ERROR_ICRC = 0x80;
export const ERROR_UNC = 0x40;
export const ERROR_MC = 0x20;
export const ERROR_IDNF = 0x10;
export const ERROR_MCR = 0x08;
export const ERROR_ABRT = 0x04;
export const ERROR_NM = 0x02;
export const ERROR_AMNF = 0x01;
/** ERROR after a reset or power-on: diagnostic code 01h, "device 0 passed, device 1 absent". */
export const ERROR_DIAG_PASSED = 0x01;

// Device register bits.
export const DEVICE_OBSOLETE = 0xa0;
export const DEVICE_LBA = 0x40;
export const DEVICE_DEV1 = 0x10;
export const DEVICE_LBA_HIGH_MASK = 0x0f;

// Device control register bits.
export const DEVCTL_NIEN = 0x02;
export const DEVCTL_SRST = 0x04;
export const DEVCTL_HOB = 0x80;

// Commands implemented.
export const CMD_READ_SECTORS = 0x20;
export const CMD_WRITE_SECTORS = 0x30;
export const CMD_FLUSH_CACHE = 0xe7;
export const CMD_IDENTIFY_DEVICE = 0xec;

export const ATA_SECTOR_SIZE = 512;
/** Words per DRQ block (one sector). */
export const WORDS_PER_SECTOR = ATA_SECTOR_SIZE / 2;
/** Most sectors one LBA28 command moves (COUNT = 0). */
export const ATA_MAX_SECTORS_PER_COMMAND = 256;
/** Most sectors LBA28 addresses (IDENTIFY words 60–61 saturate here). */
export const ATA_LBA28_MAX_SECTORS = 0x0fffffff;

/** Signature a non-packet device leaves in the taskfile after reset. */
export const SIGNATURE = { count: 0x01, lbaLow: 0x01, lbaMid: 0x00, lbaHigh: 0x00, device: 0x00 } as const;

const STATUS_NAMES: Array<[number, string]> = [
  [STATUS_BSY, 'BSY'],
  [STATUS_DRDY, 'DRDY'],
  [STATUS_DF, 'DF'],
  [STATUS_DSC, 'DSC'],
  [STATUS_DRQ, 'DRQ'],
  [STATUS_ERR, 'ERR'],
];
const ERROR_NAMES: Array<[number, string]> = [
  [ERROR_ICRC, 'ICRC'],
  [ERROR_UNC, 'UNC'],
  [ERROR_MC, 'MC'],
  [ERROR_IDNF, 'IDNF'],
  [ERROR_MCR, 'MCR'],
  [ERROR_ABRT, 'ABRT'],
  [ERROR_NM, 'NM'],
  [ERROR_AMNF, 'AMNF'],
];

function names(value: number, table: Array<[number, string]>): string {
  const set = table.filter(([bit]) => value & bit).map(([, n]) => n);
  return set.length ? set.join('|') : '0';
}

/** "DRDY|DRQ" — for logs and test messages. */
export function statusNames(status: number): string {
  return names(status, STATUS_NAMES);
}

/** "ABRT|IDNF" — for logs and test messages. */
export function errorNames(error: number): string {
  return names(error, ERROR_NAMES);
}
