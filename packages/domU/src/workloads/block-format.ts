/**
 * Self-describing 4 KiB blocks for the block writer/verifier. Each block names its
 * own address, writer and generation and carries checksums, so a read-back alone can
 * tell lost, torn, misdirected and stale writes apart.
 *
 * Layout (integers little-endian):
 *
 *   off   size  field
 *     0      4  magic "RVBK" (bytes 52 56 42 4B)
 *     4      2  version (1)
 *     6      2  writer domid
 *     8      8  lba: the block's own address in 4 KiB blocks
 *    16      4  generation (>= 1; 0 means "never written" and is never encoded)
 *    20      4  payload length (always 4064)
 *    24      4  crc32c of the payload
 *    28      4  header crc: crc32c of bytes 0..27
 *    32   4064  payload: SplitMix32 stream seeded from (writer, lba, generation)
 *
 * The header has its own crc so a torn write that mixes sectors of two versions, or
 * a corrupted header field, is never mistaken for a valid block of another identity.
 */
import { InvalidArgumentError, crc32c } from '@ringvisor/shared';
import { mixSeed, SplitMix32 } from '@ringvisor/shared';

export const BLOCK_SIZE = 4096;
export const SECTOR_SIZE = 512;
export const SECTORS_PER_BLOCK = BLOCK_SIZE / SECTOR_SIZE;
export const BLOCK_HEADER_SIZE = 32;
export const BLOCK_PAYLOAD_SIZE = BLOCK_SIZE - BLOCK_HEADER_SIZE;
export const BLOCK_VERSION = 1;
const MAGIC = [0x52, 0x56, 0x42, 0x4b] as const; // "RVBK"
const HEADER_CRC_OFFSET = 28;

export interface BlockIdentity {
  /** 4 KiB-block address. */
  lba: number;
  /** >= 1 for written blocks; an expectation of 0 means "never written". */
  generation: number;
  /** Writer domid (u16). */
  writer: number;
}

export interface BlockHeader extends BlockIdentity {
  version: number;
  payloadLength: number;
  payloadCrc: number;
}

export type BlockClass = 'ok' | 'zero' | 'torn' | 'misdirected' | 'stale' | 'foreign' | 'unexpected';

function checkLength(buf: Uint8Array): void {
  if (buf.length !== BLOCK_SIZE) throw new InvalidArgumentError(`block buffer must be ${BLOCK_SIZE} bytes, got ${buf.length}`);
}

function checkIdentity(id: BlockIdentity): void {
  if (!Number.isSafeInteger(id.lba) || id.lba < 0) throw new InvalidArgumentError(`invalid lba ${id.lba}`);
  if (!Number.isInteger(id.generation) || id.generation < 1 || id.generation > 0xffffffff) {
    throw new InvalidArgumentError(`invalid generation ${id.generation}`);
  }
  if (!Number.isInteger(id.writer) || id.writer < 0 || id.writer > 0xffff) throw new InvalidArgumentError(`invalid writer ${id.writer}`);
}

function payloadSeed(id: BlockIdentity): number {
  return mixSeed(id.writer, id.lba % 0x1_0000_0000, Math.floor(id.lba / 0x1_0000_0000), id.generation);
}

/** Writes the deterministic payload for `id` into `out`. */
export function fillPayload(out: Uint8Array, id: BlockIdentity): void {
  new SplitMix32(payloadSeed(id)).fill(out);
}

export function encodeBlock(buf: Uint8Array, id: BlockIdentity): void {
  checkLength(buf);
  checkIdentity(id);
  const payload = buf.subarray(BLOCK_HEADER_SIZE);
  fillPayload(payload, id);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  buf.set(MAGIC, 0);
  v.setUint16(4, BLOCK_VERSION, true);
  v.setUint16(6, id.writer, true);
  v.setUint32(8, id.lba % 0x1_0000_0000, true);
  v.setUint32(12, Math.floor(id.lba / 0x1_0000_0000), true);
  v.setUint32(16, id.generation, true);
  v.setUint32(20, BLOCK_PAYLOAD_SIZE, true);
  v.setUint32(24, crc32c(payload), true);
  v.setUint32(HEADER_CRC_OFFSET, crc32c(buf.subarray(0, HEADER_CRC_OFFSET)), true);
}

/** The header if it is intact and self-consistent, else null. Does not check the payload. */
export function decodeBlockHeader(buf: Uint8Array): BlockHeader | null {
  checkLength(buf);
  for (let i = 0; i < MAGIC.length; i++) if (buf[i] !== MAGIC[i]) return null;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint32(HEADER_CRC_OFFSET, true) !== crc32c(buf.subarray(0, HEADER_CRC_OFFSET))) return null;
  const version = v.getUint16(4, true);
  const lbaHi = v.getUint32(12, true);
  const generation = v.getUint32(16, true);
  const payloadLength = v.getUint32(20, true);
  // A crc-valid header with impossible fields was not written by encodeBlock.
  if (version !== BLOCK_VERSION || payloadLength !== BLOCK_PAYLOAD_SIZE || generation === 0 || lbaHi > 0x1fffff) return null;
  return {
    version,
    writer: v.getUint16(6, true),
    lba: lbaHi * 0x1_0000_0000 + v.getUint32(8, true),
    generation,
    payloadLength,
    payloadCrc: v.getUint32(24, true),
  };
}

function isAllZero(buf: Uint8Array): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

const scratch = new Uint8Array(BLOCK_PAYLOAD_SIZE);

/**
 * Classifies a read-back block against what should be there. `expected` undefined
 * (or generation 0) means the block was never written, so 'zero' is the good outcome;
 * with undefined there is no identity to compare, so any valid block is 'unexpected'.
 * Precedence for valid blocks: foreign > misdirected > stale/unexpected > ok.
 */
export function classifyBlock(buf: Uint8Array, expected: BlockIdentity | undefined): BlockClass {
  checkLength(buf);
  if (isAllZero(buf)) return 'zero';
  const h = decodeBlockHeader(buf);
  if (!h) return 'torn';
  const payload = buf.subarray(BLOCK_HEADER_SIZE);
  if (crc32c(payload) !== h.payloadCrc) return 'torn';
  // Also demand the exact bytes the header implies: catches a writer that checksummed the wrong data.
  fillPayload(scratch, h);
  for (let i = 0; i < BLOCK_PAYLOAD_SIZE; i++) if (payload[i] !== scratch[i]) return 'torn';
  if (!expected) return 'unexpected';
  if (h.writer !== expected.writer) return 'foreign';
  if (h.lba !== expected.lba) return 'misdirected';
  if (h.generation < expected.generation) return 'stale';
  if (h.generation > expected.generation) return 'unexpected';
  return 'ok';
}
