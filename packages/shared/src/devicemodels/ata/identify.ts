/**
 * The 512-byte IDENTIFY DEVICE block (256 little-endian words), ATA/ATAPI-6 layout.
 *
 * Only what this drive implements is claimed: LBA28 addressing (no CHS geometry, no LBA48),
 * PIO only (no DMA, no READ/WRITE MULTIPLE), a volatile write cache with FLUSH CACHE. Word 255
 * carries the integrity signature A5h and a checksum making the 512 bytes sum to 0 mod 256,
 * which Linux checks.
 */
import { ATA_LBA28_MAX_SECTORS, ATA_SECTOR_SIZE } from './registers.js';

export interface IdentityStrings {
  /** Up to 20 printable ASCII characters (words 10–19). */
  serial: string;
  /** Up to 8 (words 23–26). */
  firmware: string;
  /** Up to 40 (words 27–46). */
  model: string;
}

export const IDENTIFY_SERIAL = { word: 10, chars: 20 } as const;
export const IDENTIFY_FIRMWARE = { word: 23, chars: 8 } as const;
export const IDENTIFY_MODEL = { word: 27, chars: 40 } as const;

/** True if every character is printable ASCII (what ATA strings allow). */
export function isAtaString(s: string): boolean {
  return /^[\x20-\x7e]*$/.test(s);
}

/**
 * An ATA string: space padded to `chars` (even), truncated if longer, and stored with the two
 * characters of each word swapped — the first character is the word's high byte.
 */
export function putAtaString(block: Uint8Array, word: number, chars: number, s: string): void {
  for (let i = 0; i < chars; i++) {
    const c = i < s.length ? s.charCodeAt(i) & 0x7f : 0x20;
    block[word * 2 + (i ^ 1)] = c;
  }
}

/** Read an ATA string back (trailing spaces removed). */
export function getAtaString(block: Uint8Array, word: number, chars: number): string {
  let s = '';
  for (let i = 0; i < chars; i++) s += String.fromCharCode(block[word * 2 + (i ^ 1)]);
  return s.trimEnd();
}

function put16(block: Uint8Array, word: number, v: number): void {
  block[word * 2] = v & 0xff;
  block[word * 2 + 1] = (v >>> 8) & 0xff;
}

/** Build the IDENTIFY DEVICE block for a drive of `sectors` sectors. */
export function buildIdentify(sectors: number, ids: IdentityStrings): Uint8Array {
  const b = new Uint8Array(ATA_SECTOR_SIZE);
  const lbaSectors = Math.min(sectors, ATA_LBA28_MAX_SECTORS);
  put16(b, 0, 0x0040); // ATA device (bit 15 = 0), fixed (bit 6)
  putAtaString(b, IDENTIFY_SERIAL.word, IDENTIFY_SERIAL.chars, ids.serial);
  putAtaString(b, IDENTIFY_FIRMWARE.word, IDENTIFY_FIRMWARE.chars, ids.firmware);
  putAtaString(b, IDENTIFY_MODEL.word, IDENTIFY_MODEL.chars, ids.model);
  put16(b, 47, 0x8000); // READ/WRITE MULTIPLE: 0 sectors (not supported)
  put16(b, 49, 1 << 9); // capabilities: LBA supported; no DMA, no IORDY claims
  put16(b, 50, 0x4000); // bit 14 shall be one
  put16(b, 53, 1 << 1); // words 64–70 valid
  put16(b, 60, lbaSectors & 0xffff); // LBA28 capacity, low word first
  put16(b, 61, lbaSectors >>> 16);
  put16(b, 64, 0x0003); // PIO modes 3 and 4
  put16(b, 67, 120); // minimum PIO cycle time without / with IORDY (ns)
  put16(b, 68, 120);
  put16(b, 80, 0x007e); // major version: ATA-1 … ATA/ATAPI-6
  put16(b, 82, 1 << 5); // command sets supported: write cache
  put16(b, 83, (1 << 14) | (1 << 12)); // bit 14 one; FLUSH CACHE supported
  put16(b, 84, 1 << 14);
  put16(b, 85, 1 << 5); // enabled: write cache
  put16(b, 86, 1 << 12); // enabled: FLUSH CACHE
  put16(b, 87, 1 << 14);
  let sum = 0xa5;
  for (let i = 0; i < ATA_SECTOR_SIZE - 2; i++) sum += b[i];
  b[510] = 0xa5;
  b[511] = -sum & 0xff;
  return b;
}

/** Words 60–61 of an IDENTIFY block: the LBA28 capacity in sectors. */
export function identifyCapacity(block: Uint8Array): number {
  return (block[120] | (block[121] << 8) | (block[122] << 16)) + block[123] * 0x1000000;
}
