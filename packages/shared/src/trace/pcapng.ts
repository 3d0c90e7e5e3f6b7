/**
 * pcapng writer — frames seen on vif/netif rings, written so Wireshark/tshark can open them.
 *
 * Format: draft-ietf-opsawg-pcapng. This writer emits one section, little-endian throughout,
 * with three block types. Every block is
 *
 *     u32 Block Type | u32 Block Total Length | body … | u32 Block Total Length (repeated)
 *
 * and every block's total length is a multiple of 4 (the body is zero-padded to 32 bits).
 *
 * Section Header Block (SHB, type 0x0A0D0D0A; the type is a palindrome so it reads the same in
 * either byte order, and the magic after it tells the reader which order the section uses):
 *
 *     u32 0x0A0D0D0A | u32 len | u32 Byte-Order Magic 0x1A2B3C4D | u16 Major 1 | u16 Minor 0 |
 *     i64 Section Length (-1: not given) | options | u32 len
 *
 *     options: shb_hardware (2), shb_os (3), shb_userappl (4); UTF-8, not NUL-terminated.
 *
 * Interface Description Block (IDB, type 0x00000001); the n-th IDB of a section is interface n:
 *
 *     u32 1 | u32 len | u16 LinkType (1 = Ethernet) | u16 reserved 0 | u32 SnapLen | options | u32 len
 *
 *     options: if_name (2), if_description (3), if_tsresol (9; 1 byte, 6 = 10^-6 s, i.e. µs).
 *
 * Enhanced Packet Block (EPB, type 0x00000006):
 *
 *     u32 6 | u32 len | u32 Interface ID | u32 Timestamp (high) | u32 Timestamp (low) |
 *     u32 Captured Packet Length | u32 Original Packet Length | packet data, padded to 32 bits |
 *     options | u32 len
 *
 *     The timestamp is one 64-bit count of if_tsresol units since 1970-01-01 00:00:00 UTC, stored
 *     as two u32 words, high word first (each word in the section's byte order).
 *     options: epb_flags (2; u32, bits 0-1 direction: 0 unknown, 1 inbound, 2 outbound).
 *
 * An option is `u16 code | u16 value length | value, zero-padded to 32 bits`; the value length
 * excludes the padding. A non-empty option list ends with opt_endofopt (code 0, length 0). A block
 * with no options has no option list at all (not even opt_endofopt).
 *
 * Each block is built in a fresh buffer and handed to the sink whole, so a sink may keep it
 * (an fs.WriteStream queues the buffer it was given).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { release, type as osType } from 'node:os';
import { InvalidArgumentError } from '../errors.js';

export const LINKTYPE_ETHERNET = 1;

/** Block types. */
export const PCAPNG_BLOCK_SHB = 0x0a0d0d0a;
export const PCAPNG_BLOCK_IDB = 0x00000001;
export const PCAPNG_BLOCK_EPB = 0x00000006;
/** The SHB's byte-order magic; read back as 0x4D3C2B1A, it says the section is byte-swapped. */
export const PCAPNG_BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/** Snapshot length written in every IDB; longer frames are captured truncated to it. */
export const PCAPNG_SNAPLEN = 65535;

const OPT_ENDOFOPT = 0;
const SHB_HARDWARE = 2;
const SHB_OS = 3;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;

/** if_tsresol: a power of ten (high bit clear) — 10^-6 s. */
const TSRESOL_MICROSECONDS = 6;
const EPB_DIRECTION_INBOUND = 1;
const EPB_DIRECTION_OUTBOUND = 2;
const TWO_POW_32 = 0x1_0000_0000;
const MAX_OPTION_VALUE = 0xffff;

export interface PcapngWriterOptions {
  /** shb_userappl; default "ringvisor". */
  application?: string;
  /** shb_hardware; omitted when not given. */
  hardware?: string;
  /** shb_os; default `${os.type()} ${os.release()}` of this process. */
  os?: string;
}

interface Option {
  code: number;
  value: Uint8Array;
}

const utf8 = new TextEncoder();

const pad4 = (n: number): number => (n + 3) & ~3;

function stringOption(code: number, value: string, what: string): Option {
  const bytes = utf8.encode(value);
  if (bytes.length > MAX_OPTION_VALUE) {
    throw new InvalidArgumentError(`pcapng ${what} is ${bytes.length} bytes UTF-8; at most ${MAX_OPTION_VALUE}`);
  }
  return { code, value: bytes };
}

function u8Option(code: number, value: number): Option {
  return { code, value: Uint8Array.of(value) };
}

function u32Option(code: number, value: number): Option {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value, true);
  return { code, value: bytes };
}

/** Encoded size of an option list: each option padded, plus opt_endofopt; 0 for no options. */
function optionsLength(options: readonly Option[]): number {
  if (options.length === 0) return 0;
  let n = 4; // opt_endofopt
  for (const o of options) n += 4 + pad4(o.value.length);
  return n;
}

/** Writes the option list at `off` (the buffer is zeroed, so padding is already zero). */
function writeOptions(buf: Uint8Array, view: DataView, off: number, options: readonly Option[]): number {
  if (options.length === 0) return off;
  for (const o of options) {
    view.setUint16(off, o.code, true);
    view.setUint16(off + 2, o.value.length, true);
    buf.set(o.value, off + 4);
    off += 4 + pad4(o.value.length);
  }
  view.setUint16(off, OPT_ENDOFOPT, true);
  view.setUint16(off + 2, 0, true);
  return off + 4;
}

/**
 * Allocates a block of `bodyLength` body bytes (a multiple of 4) plus options, writes the type and
 * both total lengths, and hands the body to `fill` at offset 8.
 */
function buildBlock(
  type: number,
  bodyLength: number,
  options: readonly Option[],
  fill: (buf: Uint8Array, view: DataView) => void,
): Uint8Array {
  const total = 8 + bodyLength + optionsLength(options) + 4;
  const buf = new Uint8Array(total);
  const view = new DataView(buf.buffer);
  view.setUint32(0, type, true);
  view.setUint32(4, total, true);
  fill(buf, view);
  writeOptions(buf, view, 8 + bodyLength, options);
  view.setUint32(total - 4, total, true);
  return buf;
}

export class PcapngWriter {
  readonly #sink: (block: Uint8Array) => void;
  readonly #interfaces = new Map<string, number>();

  /** `sink` receives whole blocks in order (e.g. a fs.WriteStream's write, or a sync fd writer). */
  constructor(sink: (block: Uint8Array) => void, opts: PcapngWriterOptions = {}) {
    this.#sink = sink;
    const options: Option[] = [];
    if (opts.hardware !== undefined) options.push(stringOption(SHB_HARDWARE, opts.hardware, 'shb_hardware'));
    options.push(stringOption(SHB_OS, opts.os ?? `${osType()} ${release()}`, 'shb_os'));
    options.push(stringOption(SHB_USERAPPL, opts.application ?? 'ringvisor', 'shb_userappl'));
    this.#sink(
      buildBlock(PCAPNG_BLOCK_SHB, 16, options, (_buf, view) => {
        view.setUint32(8, PCAPNG_BYTE_ORDER_MAGIC, true);
        view.setUint16(12, 1, true); // major
        view.setUint16(14, 0, true); // minor
        view.setBigInt64(16, -1n, true); // section length: not given
      }),
    );
  }

  /**
   * Returns the interface id; writes an Interface Description Block (linktype Ethernet, snaplen
   * 65535, if_name, if_description when given, if_tsresol = 6 i.e. microseconds) the first time a
   * name is seen. Idempotent per name: the same name returns the same id (a later description is
   * ignored). Ids count from 0 in order of first use.
   */
  interfaceId(name: string, description?: string): number {
    const known = this.#interfaces.get(name);
    if (known !== undefined) return known;
    const options: Option[] = [stringOption(IF_NAME, name, 'if_name')];
    if (description !== undefined) options.push(stringOption(IF_DESCRIPTION, description, 'if_description'));
    options.push(u8Option(IF_TSRESOL, TSRESOL_MICROSECONDS));
    const block = buildBlock(PCAPNG_BLOCK_IDB, 8, options, (_buf, view) => {
      view.setUint16(8, LINKTYPE_ETHERNET, true);
      view.setUint16(10, 0, true); // reserved
      view.setUint32(12, PCAPNG_SNAPLEN, true);
    });
    // Write before recording the id, so a throwing sink leaves no id without its IDB.
    this.#sink(block);
    const id = this.#interfaces.size;
    this.#interfaces.set(name, id);
    return id;
  }

  /**
   * Enhanced Packet Block on interface `ifId`. `timestampMs` is wall-clock milliseconds since the
   * epoch (float, sub-ms precision), written as microseconds rounded to the nearest. Captured
   * length = original length = bytes.length, except that a frame longer than the snaplen (a GSO
   * super-frame) is captured truncated to 65535 bytes with its original length kept. `dir` adds
   * epb_flags with the direction (inbound = 1, outbound = 2).
   */
  packet(ifId: number, timestampMs: number, bytes: Uint8Array, dir?: 'in' | 'out'): void {
    if (!Number.isInteger(ifId) || ifId < 0 || ifId >= this.#interfaces.size) {
      throw new InvalidArgumentError(`pcapng interface id ${ifId} was not returned by interfaceId()`);
    }
    const us = Math.round(timestampMs * 1000);
    if (!Number.isSafeInteger(us) || us < 0) {
      throw new InvalidArgumentError(`pcapng timestamp ${timestampMs} ms is not a time since the epoch`);
    }
    const hi = Math.floor(us / TWO_POW_32);
    const lo = us - hi * TWO_POW_32;
    const captured = Math.min(bytes.length, PCAPNG_SNAPLEN);
    const options: Option[] =
      dir === undefined ? [] : [u32Option(EPB_FLAGS, dir === 'in' ? EPB_DIRECTION_INBOUND : EPB_DIRECTION_OUTBOUND)];
    this.#sink(
      buildBlock(PCAPNG_BLOCK_EPB, 20 + pad4(captured), options, (buf, view) => {
        view.setUint32(8, ifId, true);
        view.setUint32(12, hi, true);
        view.setUint32(16, lo, true);
        view.setUint32(20, captured, true);
        view.setUint32(24, bytes.length, true);
        buf.set(captured === bytes.length ? bytes : bytes.subarray(0, captured), 28);
      }),
    );
  }
}

/**
 * Convenience: a writer that appends synchronously to a file (created or truncated), with
 * close(). Every block is on disk (in the page cache) when the call that made it returns, so a
 * reader such as `tshark -r` sees whole blocks even while capture goes on. Writing after close()
 * throws; close() is idempotent.
 */
export function openPcapngFile(path: string, opts?: PcapngWriterOptions): PcapngWriter & { close(): void } {
  let fd: number | null = openSync(path, 'w');
  const sink = (block: Uint8Array): void => {
    if (fd === null) throw new InvalidArgumentError(`pcapng file ${path} is closed`);
    let off = 0;
    while (off < block.length) off += writeSync(fd, block, off, block.length - off);
  };
  let writer: PcapngWriter;
  try {
    writer = new PcapngWriter(sink, opts);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return Object.assign(writer, {
    close(): void {
      if (fd === null) return;
      const f = fd;
      fd = null;
      closeSync(f);
    },
  });
}
