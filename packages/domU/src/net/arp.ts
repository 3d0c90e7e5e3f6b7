/** ARP (RFC 826) for IPv4 over Ethernet only, plus a bounded, TTL-based cache. */
import { ETH_ADDR_LEN, ETHERTYPE_IPV4 } from './ethernet.js';
import { fail, ok, type ParseResult } from './result.js';
import { InvalidArgumentError } from '@ringvisor/shared';

export const ARP_PACKET_LEN = 28;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;
const HTYPE_ETHERNET = 1;

export type ArpOp = typeof ARP_OP_REQUEST | typeof ARP_OP_REPLY;
export type ArpDropReason = 'arp-truncated' | 'arp-unsupported' | 'arp-bad-op';

export interface ArpPacket {
  op: ArpOp;
  senderMac: Uint8Array;
  senderIp: number;
  targetMac: Uint8Array;
  targetIp: number;
}

export function encodeArp(p: ArpPacket): Uint8Array {
  if (p.senderMac.length !== ETH_ADDR_LEN || p.targetMac.length !== ETH_ADDR_LEN) {
    throw new InvalidArgumentError('ARP MACs must be 6 bytes');
  }
  const out = new Uint8Array(ARP_PACKET_LEN);
  const v = new DataView(out.buffer);
  v.setUint16(0, HTYPE_ETHERNET);
  v.setUint16(2, ETHERTYPE_IPV4);
  v.setUint8(4, ETH_ADDR_LEN);
  v.setUint8(5, 4);
  v.setUint16(6, p.op);
  out.set(p.senderMac, 8);
  v.setUint32(14, p.senderIp >>> 0);
  out.set(p.targetMac, 18);
  v.setUint32(24, p.targetIp >>> 0);
  return out;
}

/** Trailing bytes (Ethernet padding) are ignored. MACs are copies, safe to keep. */
export function parseArp(buf: Uint8Array): ParseResult<ArpPacket, ArpDropReason> {
  if (buf.length < ARP_PACKET_LEN) return fail('arp-truncated');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint16(0) !== HTYPE_ETHERNET || v.getUint16(2) !== ETHERTYPE_IPV4 || buf[4] !== ETH_ADDR_LEN || buf[5] !== 4) {
    return fail('arp-unsupported');
  }
  const op = v.getUint16(6);
  if (op !== ARP_OP_REQUEST && op !== ARP_OP_REPLY) return fail('arp-bad-op');
  return ok({
    op: op as ArpOp,
    senderMac: buf.slice(8, 14),
    senderIp: v.getUint32(14),
    targetMac: buf.slice(18, 24),
    targetIp: v.getUint32(24),
  });
}

export function arpRequest(senderMac: Uint8Array, senderIp: number, targetIp: number): ArpPacket {
  return { op: ARP_OP_REQUEST, senderMac, senderIp, targetMac: new Uint8Array(ETH_ADDR_LEN), targetIp };
}

export function arpReply(request: ArpPacket, ourMac: Uint8Array): ArpPacket {
  return {
    op: ARP_OP_REPLY,
    senderMac: ourMac,
    senderIp: request.targetIp,
    targetMac: request.senderMac,
    targetIp: request.senderIp,
  };
}

export interface ArpCacheOptions {
  now: () => number;
  maxEntries?: number;
  ttlMs?: number;
}

interface ArpEntry {
  mac: Uint8Array;
  expiresAt: number;
}

/**
 * IPv4 -> MAC cache. Time comes from the injected clock and expiry is checked lazily
 * on access, so there are no timers. When full, the least recently refreshed entry
 * is evicted (Map iteration order is insertion order; updates re-insert).
 */
export class ArpCache {
  readonly maxEntries: number;
  readonly ttlMs: number;
  private readonly now: () => number;
  private readonly entries = new Map<number, ArpEntry>();

  constructor(opts: ArpCacheOptions) {
    this.now = opts.now;
    this.maxEntries = opts.maxEntries ?? 256;
    this.ttlMs = opts.ttlMs ?? 60_000;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) throw new InvalidArgumentError('maxEntries must be >= 1');
    if (!(this.ttlMs > 0)) throw new InvalidArgumentError('ttlMs must be > 0');
  }

  get size(): number {
    return this.entries.size;
  }

  lookup(ip: number): Uint8Array | undefined {
    const e = this.entries.get(ip);
    if (!e) return undefined;
    if (this.now() >= e.expiresAt) {
      this.entries.delete(ip);
      return undefined;
    }
    return e.mac;
  }

  has(ip: number): boolean {
    return this.lookup(ip) !== undefined;
  }

  /** Inserts or refreshes an entry (copying the MAC) and restarts its TTL. */
  update(ip: number, mac: Uint8Array): void {
    if (mac.length !== ETH_ADDR_LEN) throw new InvalidArgumentError('MAC must be 6 bytes');
    this.entries.delete(ip);
    if (this.entries.size >= this.maxEntries) {
      this.prune();
      if (this.entries.size >= this.maxEntries) {
        const oldest = this.entries.keys().next().value as number;
        this.entries.delete(oldest);
      }
    }
    this.entries.set(ip, { mac: mac.slice(), expiresAt: this.now() + this.ttlMs });
  }

  delete(ip: number): boolean {
    return this.entries.delete(ip);
  }

  /** Removes expired entries; returns how many. */
  prune(): number {
    const t = this.now();
    let n = 0;
    for (const [ip, e] of this.entries) {
      if (t >= e.expiresAt) {
        this.entries.delete(ip);
        n++;
      }
    }
    return n;
  }
}
