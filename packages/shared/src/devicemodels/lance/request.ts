/**
 * Parsing and validation of what the guest puts in its memory for the Lance: the SWSTYLE 2/3
 * init block and the 16-byte ring descriptors. Every function takes a *private copy* the model
 * read once through its DmaWindow (XSA-155: no double fetch) and returns plain values; nothing
 * here throws on guest data — a malformed structure comes back flagged, and the device decides
 * which status bits that earns.
 */
import {
  DESC_BCNT_MASK,
  DESC_ENP,
  DESC_ERR,
  DESC_ONES_MASK,
  DESC_OWN,
  DESC_SIZE,
  DESC_STP,
  IB_LADRF,
  IB_MODE,
  IB_PADR,
  IB_RDRA,
  IB_RLEN,
  IB_TDRA,
  IB_TLEN,
  INIT_BLOCK_SIZE,
  RING_LOG2_MAX,
  SWSTYLE_PCNET_PCI_II,
  decodeBcnt,
} from './registers.js';

export interface InitBlock {
  mode: number;
  /** log2 of the ring sizes, as written (upper nibble of RLEN/TLEN). */
  rlenLog2: number;
  tlenLog2: number;
  /** Entries per ring: 2^log2, with 9 and above meaning 512. */
  rxRingLength: number;
  txRingLength: number;
  padr: Uint8Array;
  ladrf: Uint8Array;
  rdra: number;
  tdra: number;
}

/** Ring entries an RLEN/TLEN nibble selects. */
export function ringLengthFromLog2(log2: number): number {
  return 1 << Math.min(log2, RING_LOG2_MAX);
}

/** The init block from a private copy of its 28 bytes; undefined if the copy is short. */
export function parseInitBlock(bytes: Uint8Array): InitBlock | undefined {
  if (bytes.byteLength < INIT_BLOCK_SIZE) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, INIT_BLOCK_SIZE);
  const rlenLog2 = v.getUint8(IB_RLEN) >> 4;
  const tlenLog2 = v.getUint8(IB_TLEN) >> 4;
  return {
    mode: v.getUint16(IB_MODE, true),
    rlenLog2,
    tlenLog2,
    rxRingLength: ringLengthFromLog2(rlenLog2),
    txRingLength: ringLengthFromLog2(tlenLog2),
    padr: bytes.slice(IB_PADR, IB_PADR + 6),
    ladrf: bytes.slice(IB_LADRF, IB_LADRF + 8),
    rdra: v.getUint32(IB_RDRA, true),
    tdra: v.getUint32(IB_TDRA, true),
  };
}

/** Where each word lives in a 16-byte descriptor: SWSTYLE 3 swaps words 0 and 2. */
export interface DescriptorLayout {
  addrOffset: number;
  miscOffset: number;
}

/** Word 1 always sits at byte 4; its upper (status) half at byte 6. */
export const DESC_WORD1 = 4;
export const DESC_STATUS_HALF = 6;

export function descriptorLayout(swstyle: number): DescriptorLayout {
  return swstyle === SWSTYLE_PCNET_PCI_II ? { addrOffset: 8, miscOffset: 0 } : { addrOffset: 0, miscOffset: 8 };
}

/** One descriptor (TMD or RMD), decoded from a private copy. */
export interface Descriptor {
  /** Buffer address (TMD0/RMD0). */
  addr: number;
  /** Word 1 as read (status in the upper half, ONES|BCNT in the lower). */
  word1: number;
  /** Word 2 as read (TMD2 error bits / RMD2 message count). */
  word2: number;
  own: boolean;
  stp: boolean;
  enp: boolean;
  /** Buffer length BCNT encodes (0..4095). */
  length: number;
  /** The ONES nibble is 1111 as the data sheet requires; false marks a malformed descriptor. */
  wellFormed: boolean;
}

/** A descriptor from a private copy of its 16 bytes; undefined if the copy is short. */
export function parseDescriptor(bytes: Uint8Array, layout: DescriptorLayout): Descriptor | undefined {
  if (bytes.byteLength < DESC_SIZE) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, DESC_SIZE);
  const word1 = v.getUint32(DESC_WORD1, true);
  return {
    addr: v.getUint32(layout.addrOffset, true),
    word1,
    word2: v.getUint32(layout.miscOffset, true),
    own: (word1 & DESC_OWN) !== 0,
    stp: (word1 & DESC_STP) !== 0,
    enp: (word1 & DESC_ENP) !== 0,
    length: decodeBcnt(word1 & DESC_BCNT_MASK),
    wellFormed: (word1 & DESC_ONES_MASK) === DESC_ONES_MASK,
  };
}

/**
 * The status half of word 1 the chip writes back: the guest's bits with OWN cleared and the
 * chip's own bits set (`set`, as 32-bit-word bits) — `clear` names bits the chip recomputes.
 */
export function handBackStatus(d: Descriptor, set: number, clear: number): number {
  const w = ((d.word1 & ~(DESC_OWN | DESC_ERR | clear)) | set) >>> 0;
  return w >>> 16;
}

/** Little-endian encodings of the two pieces the chip writes back. */
export function u16le(value: number): Uint8Array {
  return Uint8Array.of(value & 0xff, (value >>> 8) & 0xff);
}

export function u32le(value: number): Uint8Array {
  return Uint8Array.of(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff);
}

// --- Ethernet helpers: CRC-32 (IEEE 802.3, reflected 0xEDB88320) for the FCS and the LADRF hash.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 register after `data`, from `init`, without the final inversion. */
function crcUpdate(init: number, data: Uint8Array, end = data.byteLength): number {
  let c = init >>> 0;
  for (let i = 0; i < end; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return c >>> 0;
}

/** Standard CRC-32 (as zlib): the Ethernet FCS, transmitted least significant byte first. */
export function crc32(data: Uint8Array): number {
  return (crcUpdate(0xffffffff, data) ^ 0xffffffff) >>> 0;
}

/** The 4 FCS bytes that follow `frame` on the wire. */
export function ethernetFcs(frame: Uint8Array): Uint8Array {
  return u32le(crc32(frame));
}

/**
 * Logical address filter index (0..63) of a multicast destination: the top 6 bits of the
 * little-endian CRC-32 register (no final inversion) over the 6 address bytes — what the data
 * sheet describes and Linux's ether_crc_le(6, addr) >> 26 computes.
 */
export function ladrfIndex(dest: Uint8Array): number {
  return crcUpdate(0xffffffff, dest, 6) >>> 26;
}

/** Whether LADRF (8 bytes, CSR8-11 little-endian) accepts this multicast destination. */
export function ladrfAccepts(ladrf: Uint8Array, dest: Uint8Array): boolean {
  const i = ladrfIndex(dest);
  return (ladrf[i >> 3] & (1 << (i & 7))) !== 0;
}
