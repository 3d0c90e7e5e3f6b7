/** IPv4 without options on transmit and without fragmentation (fragments are dropped). */
import { fail, ok, type ParseResult } from './result.js';
import { InvalidArgumentError } from '@ringvisor/shared';

export const IPV4_HEADER_LEN = 20;
export const IP_PROTO_UDP = 17;
export const IPV4_BROADCAST = 0xffffffff;
export const IPV4_ANY = 0;
const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const FRAG_OFFSET_MASK = 0x1fff;

export type Ipv4DropReason =
  | 'ip-truncated'
  | 'ip-bad-version'
  | 'ip-bad-ihl'
  | 'ip-bad-checksum'
  | 'ip-bad-length'
  | 'ip-fragment';

/** Addresses are unsigned 32-bit numbers internally; strings only at API edges. */
export function tryParseIp(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let ip = 0;
  for (const p of parts) {
    // Reject leading zeros ("010") too: some parsers read them as octal.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    ip = ip * 256 + n;
  }
  return ip;
}

export function parseIp(text: string): number {
  const ip = tryParseIp(text);
  if (ip === null) throw new InvalidArgumentError(`invalid IPv4 address: ${JSON.stringify(text)}`);
  return ip;
}

export function formatIp(ip: number): string {
  if (!Number.isInteger(ip) || ip < 0 || ip > 0xffffffff) throw new InvalidArgumentError(`invalid IPv4 address ${ip}`);
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

export function isMulticastIp(ip: number): boolean {
  return ip >>> 28 === 0xe;
}

/** Unfolded big-endian 16-bit word sum (RFC 1071); an odd trailing byte is zero-padded. */
export function onesComplementSum(data: Uint8Array, acc = 0): number {
  const n = data.length;
  let i = 0;
  for (; i + 1 < n; i += 2) acc += (data[i] << 8) | data[i + 1];
  if (i < n) acc += data[i] << 8;
  return acc;
}

/** Folds carries back in until the sum fits 16 bits. */
export function foldSum(sum: number): number {
  // Division instead of >>> because the sum can exceed 2^32 for large inputs.
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The Internet checksum: ones' complement of the ones' complement sum. */
export function internetChecksum(data: Uint8Array, acc = 0): number {
  return ~foldSum(onesComplementSum(data, acc)) & 0xffff;
}

export interface Ipv4Header {
  tos: number;
  totalLength: number;
  id: number;
  dontFragment: boolean;
  ttl: number;
  protocol: number;
  src: number;
  dst: number;
  headerLength: number;
}

export interface Ipv4Packet {
  header: Ipv4Header;
  payload: Uint8Array;
}

export interface Ipv4HeaderOptions {
  src: number;
  dst: number;
  protocol: number;
  payloadLength: number;
  ttl?: number;
  id?: number;
  tos?: number;
  /** Defaults to true: this stack never fragments. */
  dontFragment?: boolean;
}

function checkU(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new InvalidArgumentError(`${name} out of range: ${v}`);
}

export function buildIpv4Header(opts: Ipv4HeaderOptions): Uint8Array {
  const { src, dst, protocol, payloadLength, ttl = 64, id = 0, tos = 0, dontFragment = true } = opts;
  checkU('src', src, 0xffffffff);
  checkU('dst', dst, 0xffffffff);
  checkU('protocol', protocol, 0xff);
  checkU('ttl', ttl, 0xff);
  checkU('id', id, 0xffff);
  checkU('tos', tos, 0xff);
  checkU('payloadLength', payloadLength, 0xffff - IPV4_HEADER_LEN);
  const h = new Uint8Array(IPV4_HEADER_LEN);
  const v = new DataView(h.buffer);
  v.setUint8(0, 0x45);
  v.setUint8(1, tos);
  v.setUint16(2, IPV4_HEADER_LEN + payloadLength);
  v.setUint16(4, id);
  v.setUint16(6, dontFragment ? FLAG_DF : 0);
  v.setUint8(8, ttl);
  v.setUint8(9, protocol);
  v.setUint32(12, src);
  v.setUint32(16, dst);
  v.setUint16(10, internetChecksum(h));
  return h;
}

export function buildIpv4(opts: Omit<Ipv4HeaderOptions, 'payloadLength'> & { payload: Uint8Array }): Uint8Array {
  const header = buildIpv4Header({ ...opts, payloadLength: opts.payload.length });
  const out = new Uint8Array(header.length + opts.payload.length);
  out.set(header, 0);
  out.set(opts.payload, header.length);
  return out;
}

/**
 * Parses and validates an IPv4 packet. `maxTrailing` is how many bytes beyond the
 * total length are tolerated (link-layer padding); any other mismatch is dropped.
 * The payload is a view into `buf`.
 */
export function parseIpv4(buf: Uint8Array, maxTrailing = 0): ParseResult<Ipv4Packet, Ipv4DropReason> {
  if (buf.length < IPV4_HEADER_LEN) return fail('ip-truncated');
  if (buf[0] >>> 4 !== 4) return fail('ip-bad-version');
  const headerLength = (buf[0] & 0x0f) * 4;
  if (headerLength < IPV4_HEADER_LEN) return fail('ip-bad-ihl');
  if (headerLength > buf.length) return fail('ip-truncated');
  // Checksum before trusting any other field: a corrupted length must count as corruption.
  if (foldSum(onesComplementSum(buf.subarray(0, headerLength))) !== 0xffff) return fail('ip-bad-checksum');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const totalLength = v.getUint16(2);
  if (totalLength < headerLength || totalLength > buf.length || buf.length - totalLength > maxTrailing) {
    return fail('ip-bad-length');
  }
  const flags = v.getUint16(6);
  if (flags & (FLAG_MF | FRAG_OFFSET_MASK)) return fail('ip-fragment');
  return ok({
    header: {
      tos: buf[1],
      totalLength,
      id: v.getUint16(4),
      dontFragment: (flags & FLAG_DF) !== 0,
      ttl: buf[8],
      protocol: buf[9],
      src: v.getUint32(12),
      dst: v.getUint32(16),
      headerLength,
    },
    payload: buf.subarray(headerLength, totalLength),
  });
}
