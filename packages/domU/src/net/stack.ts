/**
 * A minimal single-interface host stack: Ethernet II, ARP, IPv4 and UDP.
 * Every destination is treated as on-link (no netmask, no gateway): guests of the
 * emulator sit on one virtual L2 segment. Sending to our own address is not supported.
 */
import { arpReply, arpRequest, ArpCache, ARP_OP_REQUEST, encodeArp, parseArp, type ArpDropReason } from './arp.js';
import {
  broadcastMac,
  buildFrame,
  ETH_ADDR_LEN,
  ETH_MAX_PAYLOAD,
  ETH_MIN_PAYLOAD,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  formatMac,
  isBroadcastMac,
  isMulticastMac,
  macEquals,
  parseFrame,
  type EthDropReason,
} from './ethernet.js';
import {
  buildIpv4,
  formatIp,
  IP_PROTO_UDP,
  IPV4_ANY,
  IPV4_BROADCAST,
  IPV4_HEADER_LEN,
  isMulticastIp,
  parseIp,
  parseIpv4,
  type Ipv4DropReason,
} from './ipv4.js';
import { buildUdp, parseUdp, UDP_HEADER_LEN, type UdpDropReason } from './udp.js';
import { InvalidArgumentError, BusyError } from '@ringvisor/shared';

/** Largest UDP payload that fits one Ethernet frame (no fragmentation). */
export const MAX_UDP_PAYLOAD = ETH_MAX_PAYLOAD - IPV4_HEADER_LEN - UDP_HEADER_LEN;

export type StackDropReason =
  | 'eth-not-for-us'
  | 'eth-bad-src'
  | 'eth-unknown-type'
  | 'arp-bad-sender'
  | 'arp-not-for-us'
  | 'ip-bad-src'
  | 'ip-not-for-us'
  | 'ip-unknown-protocol';

export type RxDropReason = EthDropReason | ArpDropReason | Ipv4DropReason | UdpDropReason | StackDropReason;

export const RX_DROP_REASONS: readonly RxDropReason[] = [
  'eth-truncated',
  'eth-oversize',
  'eth-not-ethernet-ii',
  'eth-not-for-us',
  'eth-bad-src',
  'eth-unknown-type',
  'arp-truncated',
  'arp-unsupported',
  'arp-bad-op',
  'arp-bad-sender',
  'arp-not-for-us',
  'ip-truncated',
  'ip-bad-version',
  'ip-bad-ihl',
  'ip-bad-checksum',
  'ip-bad-length',
  'ip-fragment',
  'ip-bad-src',
  'ip-not-for-us',
  'ip-unknown-protocol',
  'udp-truncated',
  'udp-bad-length',
  'udp-bad-checksum',
];

/**
 * 'device-busy': the NIC driver's transmit queue was full. That is backpressure from a slow
 * device (sendUdp returns false and the sender tries again later), not a fault of the device.
 */
export type TxDropReason = 'self' | 'pending-full' | 'pending-dests-full' | 'arp-unresolved' | 'device-busy';
export const TX_DROP_REASONS: readonly TxDropReason[] = ['self', 'pending-full', 'pending-dests-full', 'arp-unresolved', 'device-busy'];

export interface NetCounters {
  rxFrames: number;
  txFrames: number;
  /** Frames rejected before UDP demultiplexing; see rxDropReasons. */
  rxDropped: number;
  rxDropReasons: Record<RxDropReason, number>;
  arpRequestsSent: number;
  arpRepliesSent: number;
  udpDelivered: number;
  /** Valid UDP datagrams for a port nobody has bound (not included in rxDropped). */
  udpNoPort: number;
  /** Datagrams accepted by sendUdp and later discarded, or refused (sendUdp returned false). */
  txDropped: number;
  txDropReasons: Record<TxDropReason, number>;
}

export interface UdpSource {
  ip: string;
  port: number;
  mac: string;
}

/** `payload` is a view into the received frame: copy it to keep it past the call. */
export type UdpHandler = (src: UdpSource, payload: Uint8Array) => void;

export interface NetStackOptions {
  mac: Uint8Array;
  ip: string;
  /**
   * Hand a frame to the NIC driver. False: the driver refused it (its queue is full); the
   * stack then refuses the datagram too, so the sender sees the backpressure. void: accepted.
   */
  transmit: (frame: Uint8Array) => boolean | void;
  /** Milliseconds; defaults to Date.now. Only used for ARP cache expiry and ARP retries. */
  now?: () => number;
  /** Datagrams queued per unresolved destination (default 8). */
  maxPendingPerDest?: number;
  /** Unresolved destinations queued at once (default 64). */
  maxPendingDests?: number;
  arpCacheSize?: number;
  arpTtlMs?: number;
  /** Minimum gap between ARP requests for the same destination (default 1000 ms). */
  arpRetryMs?: number;
  /** Requests per resolution attempt before queued datagrams are dropped (default 3). */
  arpMaxRequests?: number;
}

interface Pending {
  packets: Uint8Array[];
  requestsSent: number;
  lastRequestAt: number;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${v}`);
  return v;
}

function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

export class NetStack {
  readonly mac: string;
  readonly ip: string;
  private readonly macBytes: Uint8Array;
  private readonly ipNum: number;
  private readonly transmitFn: (frame: Uint8Array) => boolean | void;
  private readonly now: () => number;
  private readonly maxPendingPerDest: number;
  private readonly maxPendingDests: number;
  private readonly arpRetryMs: number;
  private readonly arpMaxRequests: number;
  private readonly arp: ArpCache;
  private readonly pending = new Map<number, Pending>();
  private readonly ports = new Map<number, UdpHandler>();
  private ipId = 0;
  private readonly c: NetCounters = {
    rxFrames: 0,
    txFrames: 0,
    rxDropped: 0,
    rxDropReasons: zeroCounts(RX_DROP_REASONS),
    arpRequestsSent: 0,
    arpRepliesSent: 0,
    udpDelivered: 0,
    udpNoPort: 0,
    txDropped: 0,
    txDropReasons: zeroCounts(TX_DROP_REASONS),
  };

  constructor(opts: NetStackOptions) {
    if (opts.mac.length !== ETH_ADDR_LEN || isMulticastMac(opts.mac)) throw new InvalidArgumentError('mac must be a 6-byte unicast MAC');
    this.macBytes = opts.mac.slice();
    this.mac = formatMac(this.macBytes);
    this.ipNum = parseIp(opts.ip);
    if (this.ipNum === IPV4_ANY || this.ipNum === IPV4_BROADCAST || isMulticastIp(this.ipNum)) {
      throw new InvalidArgumentError(`ip must be a unicast address, got ${opts.ip}`);
    }
    this.ip = formatIp(this.ipNum);
    this.transmitFn = opts.transmit;
    this.now = opts.now ?? Date.now;
    this.maxPendingPerDest = positiveInt('maxPendingPerDest', opts.maxPendingPerDest ?? 8);
    this.maxPendingDests = positiveInt('maxPendingDests', opts.maxPendingDests ?? 64);
    this.arpRetryMs = opts.arpRetryMs ?? 1000;
    this.arpMaxRequests = positiveInt('arpMaxRequests', opts.arpMaxRequests ?? 3);
    this.arp = new ArpCache({ now: this.now, maxEntries: opts.arpCacheSize ?? 256, ttlMs: opts.arpTtlMs ?? 60_000 });
  }

  /** A snapshot; later traffic does not change it. */
  get counters(): NetCounters {
    return { ...this.c, rxDropReasons: { ...this.c.rxDropReasons }, txDropReasons: { ...this.c.txDropReasons } };
  }

  /** The cached MAC for `ip`, if resolved and not expired. */
  lookupArp(ip: string): string | undefined {
    const mac = this.arp.lookup(parseIp(ip));
    return mac && formatMac(mac);
  }

  bindUdp(port: number, handler: UdpHandler): void {
    if (!Number.isInteger(port) || port < 1 || port > 0xffff) throw new InvalidArgumentError(`invalid UDP port ${port}`);
    if (this.ports.has(port)) throw new BusyError(`UDP port ${port} already bound`);
    this.ports.set(port, handler);
  }

  unbindUdp(port: number): boolean {
    return this.ports.delete(port);
  }

  /**
   * Sends one datagram. Returns false if it was dropped (queue limits, own address);
   * true if transmitted or queued behind ARP resolution. Invalid arguments throw.
   */
  sendUdp(dstIp: string, dstPort: number, srcPort: number, payload: Uint8Array): boolean {
    const dst = parseIp(dstIp);
    if (dst === IPV4_ANY || isMulticastIp(dst)) throw new InvalidArgumentError(`unsupported destination ${dstIp}`);
    if (!Number.isInteger(dstPort) || dstPort < 1 || dstPort > 0xffff) throw new InvalidArgumentError(`invalid dstPort ${dstPort}`);
    if (!Number.isInteger(srcPort) || srcPort < 0 || srcPort > 0xffff) throw new InvalidArgumentError(`invalid srcPort ${srcPort}`);
    if (payload.length > MAX_UDP_PAYLOAD) throw new InvalidArgumentError(`UDP payload ${payload.length} > ${MAX_UDP_PAYLOAD}`);
    if (dst === this.ipNum) return this.txDrop('self');

    const udp = buildUdp({ srcIp: this.ipNum, dstIp: dst, srcPort, dstPort, payload });
    const packet = buildIpv4({ src: this.ipNum, dst, protocol: IP_PROTO_UDP, id: this.nextIpId(), payload: udp });
    if (dst === IPV4_BROADCAST) return this.send(broadcastMac(), ETHERTYPE_IPV4, packet);
    const mac = this.arp.lookup(dst);
    if (mac) return this.send(mac, ETHERTYPE_IPV4, packet);
    return this.enqueue(dst, packet);
  }

  /** Retries ARP for queued destinations and expires given-up queues. Optional housekeeping. */
  poll(): void {
    this.arp.prune();
    for (const [dst, p] of [...this.pending]) {
      if (this.pending.get(dst) !== p) continue; // resolved by an earlier iteration's re-entrant receive
      if (this.arpGaveUp(p)) this.dropPending(dst, p);
      else this.maybeRequest(dst, p);
    }
  }

  /** Never throws for any input bytes (UDP handlers' own exceptions do propagate). */
  receive(frame: Uint8Array): void {
    this.c.rxFrames++;
    const eth = parseFrame(frame);
    if (!eth.ok) return this.rxDrop(eth.reason);
    const { dst, src, ethertype, payload } = eth.value;
    if (!macEquals(dst, this.macBytes) && !isBroadcastMac(dst)) return this.rxDrop('eth-not-for-us');
    if (isMulticastMac(src)) return this.rxDrop('eth-bad-src');
    if (ethertype === ETHERTYPE_ARP) return this.receiveArp(payload);
    if (ethertype === ETHERTYPE_IPV4) return this.receiveIpv4(src, payload);
    return this.rxDrop('eth-unknown-type');
  }

  private receiveArp(payload: Uint8Array): void {
    const parsed = parseArp(payload);
    if (!parsed.ok) return this.rxDrop(parsed.reason);
    const pkt = parsed.value;
    const spa = pkt.senderIp;
    if (
      isMulticastMac(pkt.senderMac) ||
      spa === IPV4_ANY ||
      spa === IPV4_BROADCAST ||
      isMulticastIp(spa) ||
      spa === this.ipNum // someone claiming our address: never learn it
    ) {
      return this.rxDrop('arp-bad-sender');
    }
    const forUs = pkt.targetIp === this.ipNum;
    // RFC 826 merge: refresh a known (or awaited) sender from any ARP; add new senders only when addressed to us.
    const learn = forUs || this.arp.has(spa) || this.pending.has(spa);
    if (learn) this.arp.update(spa, pkt.senderMac);
    if (forUs && pkt.op === ARP_OP_REQUEST) {
      this.c.arpRepliesSent++;
      this.send(pkt.senderMac, ETHERTYPE_ARP, encodeArp(arpReply(pkt, this.macBytes)));
    }
    if (learn) this.flush(spa, pkt.senderMac);
    else this.rxDrop('arp-not-for-us');
  }

  private receiveIpv4(srcMac: Uint8Array, payload: Uint8Array): void {
    // Trailing bytes are only legitimate as minimum-frame padding.
    const maxTrailing = payload.length <= ETH_MIN_PAYLOAD ? payload.length : 0;
    const parsed = parseIpv4(payload, maxTrailing);
    if (!parsed.ok) return this.rxDrop(parsed.reason);
    const { header, payload: ipPayload } = parsed.value;
    if (header.src === IPV4_BROADCAST || isMulticastIp(header.src) || header.src === this.ipNum) {
      return this.rxDrop('ip-bad-src');
    }
    if (header.dst !== this.ipNum && header.dst !== IPV4_BROADCAST) return this.rxDrop('ip-not-for-us');
    if (header.protocol !== IP_PROTO_UDP) return this.rxDrop('ip-unknown-protocol');
    const udp = parseUdp(ipPayload, header.src, header.dst);
    if (!udp.ok) return this.rxDrop(udp.reason);
    const handler = this.ports.get(udp.value.dstPort);
    if (!handler) {
      this.c.udpNoPort++;
      return;
    }
    this.c.udpDelivered++;
    handler({ ip: formatIp(header.src), port: udp.value.srcPort, mac: formatMac(srcMac) }, udp.value.payload);
  }

  private enqueue(dst: number, packet: Uint8Array): boolean {
    let p = this.pending.get(dst);
    if (p && this.arpGaveUp(p)) {
      this.dropPending(dst, p);
      p = undefined;
    }
    if (!p) {
      if (this.pending.size >= this.maxPendingDests) return this.txDrop('pending-dests-full');
      p = { packets: [], requestsSent: 0, lastRequestAt: -Infinity };
      this.pending.set(dst, p);
    }
    if (p.packets.length >= this.maxPendingPerDest) return this.txDrop('pending-full');
    // Queue before requesting: a synchronous wire may deliver the reply (and flush) inside transmit.
    p.packets.push(packet);
    this.maybeRequest(dst, p);
    return true;
  }

  private arpGaveUp(p: Pending): boolean {
    return p.requestsSent >= this.arpMaxRequests && this.now() - p.lastRequestAt >= this.arpRetryMs;
  }

  private maybeRequest(dst: number, p: Pending): void {
    if (p.requestsSent >= this.arpMaxRequests || this.now() - p.lastRequestAt < this.arpRetryMs) return;
    p.requestsSent++;
    p.lastRequestAt = this.now();
    this.c.arpRequestsSent++;
    this.send(broadcastMac(), ETHERTYPE_ARP, encodeArp(arpRequest(this.macBytes, this.ipNum, dst)));
  }

  private dropPending(dst: number, p: Pending): void {
    this.pending.delete(dst);
    this.c.txDropped += p.packets.length;
    this.c.txDropReasons['arp-unresolved'] += p.packets.length;
  }

  private flush(dst: number, mac: Uint8Array): void {
    const p = this.pending.get(dst);
    if (!p) return;
    // Detach first: handlers reached re-entrantly through transmit may queue new packets.
    this.pending.delete(dst);
    for (const packet of p.packets) this.send(mac, ETHERTYPE_IPV4, packet);
  }

  /** False when the driver refused the frame (counted as a 'device-busy' drop). */
  private send(dstMac: Uint8Array, ethertype: number, payload: Uint8Array): boolean {
    const frame = buildFrame({ dst: dstMac, src: this.macBytes, ethertype, payload });
    if (this.transmitFn(frame) === false) return this.txDrop('device-busy');
    this.c.txFrames++;
    return true;
  }

  private nextIpId(): number {
    const id = this.ipId;
    this.ipId = (this.ipId + 1) & 0xffff;
    return id;
  }

  private rxDrop(reason: RxDropReason): void {
    this.c.rxDropped++;
    this.c.rxDropReasons[reason]++;
  }

  private txDrop(reason: TxDropReason): false {
    this.c.txDropped++;
    this.c.txDropReasons[reason]++;
    return false;
  }
}
