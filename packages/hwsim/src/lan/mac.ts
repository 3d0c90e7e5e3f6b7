/**
 * Ethernet MAC addresses: parsing, formatting and the two bits a switch cares about.
 * Canonical text form is lower-case, colon-separated (`52:54:00:12:34:56`).
 */
import { ConfigError } from '@ringvisor/shared';

export const ETH_ALEN = 6;
export const ETH_HEADER_SIZE = 14;
export const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Parse `aa:bb:cc:dd:ee:ff` (case-insensitive); throws ConfigError on anything else. */
export function parseMac(text: string): Uint8Array {
  if (typeof text !== 'string' || !MAC_RE.test(text)) throw new ConfigError(`invalid MAC address ${JSON.stringify(text)}: expected six hex octets like 52:54:00:12:34:56`);
  return Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
}

/** Format 6 bytes starting at `offset` of `bytes` as a canonical MAC string. */
export function formatMac(bytes: Uint8Array, offset = 0): string {
  let s = '';
  for (let i = 0; i < ETH_ALEN; i++) {
    if (i) s += ':';
    s += (bytes[offset + i] ?? 0).toString(16).padStart(2, '0');
  }
  return s;
}

/** The I/G bit: group (multicast or broadcast) addresses are never learned and always flooded. */
export function isGroupMac(bytes: Uint8Array, offset = 0): boolean {
  return (bytes[offset] & 1) === 1;
}

/** Destination MAC of an Ethernet frame, as text. */
export function frameDestination(frame: Uint8Array): string {
  return formatMac(frame, 0);
}

/** Source MAC of an Ethernet frame, as text. */
export function frameSource(frame: Uint8Array): string {
  return formatMac(frame, ETH_ALEN);
}
