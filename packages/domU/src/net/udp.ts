/** UDP (RFC 768) with the IPv4 pseudo-header checksum. */
import { foldSum, IP_PROTO_UDP, onesComplementSum } from './ipv4.js';
import { fail, ok, type ParseResult } from './result.js';
import { InvalidArgumentError } from '@ringvisor/shared';

export const UDP_HEADER_LEN = 8;

export type UdpDropReason = 'udp-truncated' | 'udp-bad-length' | 'udp-bad-checksum';

export interface UdpDatagram {
  srcPort: number;
  dstPort: number;
  /** The checksum field as received; 0 means the sender did not compute one. */
  checksum: number;
  payload: Uint8Array;
}

export interface UdpBuildOptions {
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
}

function pseudoHeaderSum(srcIp: number, dstIp: number, udpLength: number): number {
  return (srcIp >>> 16) + (srcIp & 0xffff) + (dstIp >>> 16) + (dstIp & 0xffff) + IP_PROTO_UDP + udpLength;
}

/** Checksum of a UDP segment whose checksum field is zero; never returns 0 (0 is sent as 0xffff). */
export function udpChecksum(srcIp: number, dstIp: number, segment: Uint8Array): number {
  const sum = onesComplementSum(segment, pseudoHeaderSum(srcIp, dstIp, segment.length));
  const c = ~foldSum(sum) & 0xffff;
  // RFC 768: a computed 0 is transmitted as all ones, since 0 means "no checksum".
  return c === 0 ? 0xffff : c;
}

export function buildUdp(opts: UdpBuildOptions): Uint8Array {
  const { srcIp, dstIp, srcPort, dstPort, payload } = opts;
  for (const [name, p] of [['srcPort', srcPort], ['dstPort', dstPort]] as const) {
    if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new InvalidArgumentError(`${name} out of range: ${p}`);
  }
  const length = UDP_HEADER_LEN + payload.length;
  if (length > 0xffff) throw new InvalidArgumentError(`UDP payload too large: ${payload.length}`);
  const seg = new Uint8Array(length);
  const v = new DataView(seg.buffer);
  v.setUint16(0, srcPort);
  v.setUint16(2, dstPort);
  v.setUint16(4, length);
  seg.set(payload, UDP_HEADER_LEN);
  v.setUint16(6, udpChecksum(srcIp, dstIp, seg));
  return seg;
}

/**
 * Parses a UDP segment that is exactly the IP payload. The checksum is verified
 * when non-zero. The payload is a view into `segment`.
 */
export function parseUdp(segment: Uint8Array, srcIp: number, dstIp: number): ParseResult<UdpDatagram, UdpDropReason> {
  if (segment.length < UDP_HEADER_LEN) return fail('udp-truncated');
  const v = new DataView(segment.buffer, segment.byteOffset, segment.byteLength);
  const length = v.getUint16(4);
  if (length !== segment.length) return fail('udp-bad-length');
  const checksum = v.getUint16(6);
  if (checksum !== 0) {
    const sum = onesComplementSum(segment, pseudoHeaderSum(srcIp, dstIp, length));
    if (foldSum(sum) !== 0xffff) return fail('udp-bad-checksum');
  }
  return ok({
    srcPort: v.getUint16(0),
    dstPort: v.getUint16(2),
    checksum,
    payload: segment.subarray(UDP_HEADER_LEN),
  });
}
