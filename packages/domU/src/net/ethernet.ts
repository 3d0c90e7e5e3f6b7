/** Ethernet II framing (no 802.3/LLC, no VLAN tags, no FCS: virtual NICs carry none). */
import { fail, ok, type ParseResult } from './result.js';
import { InvalidArgumentError } from '@ringvisor/shared';

export const ETH_ADDR_LEN = 6;
export const ETH_HEADER_LEN = 14;
/** Minimum frame without FCS; shorter frames are padded on build. */
export const ETH_MIN_FRAME = 60;
export const ETH_MAX_FRAME = 1514;
export const ETH_MIN_PAYLOAD = ETH_MIN_FRAME - ETH_HEADER_LEN;
export const ETH_MAX_PAYLOAD = ETH_MAX_FRAME - ETH_HEADER_LEN;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
/** Values below this are 802.3 length fields, not Ethernet II types. */
const ETHERTYPE_MIN = 0x0600;

export type EthDropReason = 'eth-truncated' | 'eth-oversize' | 'eth-not-ethernet-ii';

export interface EthernetFrame {
  dst: Uint8Array;
  src: Uint8Array;
  ethertype: number;
  payload: Uint8Array;
}

const MAC_RE = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/i;

/** Parses "00:16:3e:12:34:56" (case-insensitive). Throws TypeError on anything else. */
export function parseMac(text: string): Uint8Array {
  const mac = tryParseMac(text);
  if (!mac) throw new InvalidArgumentError(`invalid MAC address: ${JSON.stringify(text)}`);
  return mac;
}

export function tryParseMac(text: string): Uint8Array | null {
  if (!MAC_RE.test(text)) return null;
  return Uint8Array.from(text.split(':'), (h) => parseInt(h, 16));
}

export function formatMac(mac: Uint8Array): string {
  if (mac.length !== ETH_ADDR_LEN) throw new InvalidArgumentError(`MAC must be 6 bytes, got ${mac.length}`);
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A fresh copy each call: a shared constant Uint8Array could be mutated by any caller. */
export function broadcastMac(): Uint8Array {
  return new Uint8Array(ETH_ADDR_LEN).fill(0xff);
}

export function isBroadcastMac(mac: Uint8Array): boolean {
  return mac.length === ETH_ADDR_LEN && mac.every((b) => b === 0xff);
}

/** Group bit (I/G) set; broadcast is a multicast address too. */
export function isMulticastMac(mac: Uint8Array): boolean {
  return mac.length === ETH_ADDR_LEN && (mac[0] & 1) === 1;
}

export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Builds a frame, zero-padding to the 60-byte minimum. Throws on invalid fields (caller bug). */
export function buildFrame(frame: EthernetFrame): Uint8Array {
  const { dst, src, ethertype, payload } = frame;
  if (dst.length !== ETH_ADDR_LEN || src.length !== ETH_ADDR_LEN) throw new InvalidArgumentError('MAC must be 6 bytes');
  if (!Number.isInteger(ethertype) || ethertype < ETHERTYPE_MIN || ethertype > 0xffff) {
    throw new InvalidArgumentError(`invalid Ethernet II type 0x${ethertype.toString(16)}`);
  }
  if (payload.length > ETH_MAX_PAYLOAD) throw new InvalidArgumentError(`payload ${payload.length} > ${ETH_MAX_PAYLOAD}`);
  const out = new Uint8Array(Math.max(ETH_MIN_FRAME, ETH_HEADER_LEN + payload.length));
  out.set(dst, 0);
  out.set(src, 6);
  out[12] = ethertype >>> 8;
  out[13] = ethertype & 0xff;
  out.set(payload, ETH_HEADER_LEN);
  return out;
}

/**
 * Parses a frame. Short (unpadded) frames are accepted; the returned fields are
 * views into `buf` and the payload may include padding, which upper layers trim
 * using their own length fields.
 */
export function parseFrame(buf: Uint8Array): ParseResult<EthernetFrame, EthDropReason> {
  if (buf.length < ETH_HEADER_LEN) return fail('eth-truncated');
  if (buf.length > ETH_MAX_FRAME) return fail('eth-oversize');
  const ethertype = (buf[12] << 8) | buf[13];
  if (ethertype < ETHERTYPE_MIN) return fail('eth-not-ethernet-ii');
  return ok({
    dst: buf.subarray(0, 6),
    src: buf.subarray(6, 12),
    ethertype,
    payload: buf.subarray(ETH_HEADER_LEN),
  });
}
