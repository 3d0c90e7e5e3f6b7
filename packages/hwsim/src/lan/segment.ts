/**
 * LanSegment — a learning Ethernet switch (IEEE 802.1D transparent bridging, minus STP).
 *
 * For every frame entering on port P:
 *   1. runts (< 14 bytes, no Ethernet header) are dropped;
 *   2. a unicast source MAC is learned (or refreshed, or moved) as reachable through P;
 *   3. a group destination (multicast/broadcast bit set) is flooded to every port but P;
 *      a unicast destination learned on port Q ≠ P is forwarded to Q only; one learned on P
 *      itself is filtered (the station is on the ingress side already); an unknown one is
 *      flooded to every port but P.
 * A frame never leaves by its ingress port. Every egress port gets its own copy of the bytes.
 *
 * The MAC table is bounded (`macTableSize`, least recently refreshed entry evicted first) and
 * entries age out after `ageingMs` without traffic from that station, as in a Linux bridge.
 *
 * Delivery is synchronous: `send` returns after every egress port's listeners have run. A
 * listener that throws does not stop delivery to other ports; the failure is counted on its
 * port (`deliveryErrors`).
 */
import { InvalidArgumentError } from '@ringvisor/shared';
import type { LanPort } from './lan-port.js';
import { ETH_ALEN, ETH_HEADER_SIZE, formatMac, isGroupMac } from './mac.js';

export interface LanSegmentOptions {
  name?: string;
  /** Maximum learned stations (default 1024). */
  macTableSize?: number;
  /** A learned entry expires after this long without a frame from the station (default 300 000 ms). */
  ageingMs?: number;
  /** Clock in ms, injectable for tests (default Date.now). */
  clock?: () => number;
}

/** Per-port counters, from the switch's point of view: `in` = received from the port's device. */
export interface LanPortCounters {
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
  deliveryErrors: number;
}

export interface LanSegmentCounters {
  forwarded: number;
  flooded: number;
  filtered: number;
  runts: number;
  learned: number;
  moved: number;
  evicted: number;
  aged: number;
}

export interface LanSegmentStats {
  name: string;
  macTableSize: number;
  macTableCapacity: number;
  counters: LanSegmentCounters;
  ports: Record<string, LanPortCounters>;
}

export interface MacTableEntry {
  mac: string;
  port: string;
}

interface Learned {
  port: SegmentPort;
  seen: number;
}

class SegmentPort implements LanPort {
  readonly counters: LanPortCounters = { framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, deliveryErrors: 0 };
  readonly listeners: Array<(frame: Uint8Array) => void> = [];
  attached = true;

  constructor(
    readonly name: string,
    private readonly segment: LanSegment,
  ) {}

  send(frame: Uint8Array): void {
    if (this.attached) this.segment.ingress(this, frame);
  }

  onFrame(cb: (frame: Uint8Array) => void): void {
    this.listeners.push(cb);
  }

  deliver(frame: Uint8Array): void {
    this.counters.framesOut++;
    this.counters.bytesOut += frame.byteLength;
    if (this.listeners.length === 0) return;
    const copy = frame.slice(); // one private copy per egress port
    for (const cb of this.listeners) {
      try {
        cb(copy);
      } catch {
        this.counters.deliveryErrors++;
      }
    }
  }
}

export class LanSegment {
  readonly name: string;
  readonly macTableCapacity: number;
  readonly ageingMs: number;
  readonly counters: LanSegmentCounters = { forwarded: 0, flooded: 0, filtered: 0, runts: 0, learned: 0, moved: 0, evicted: 0, aged: 0 };
  private readonly ports = new Map<string, SegmentPort>();
  /** Insertion order = refresh order: the first entry is the least recently seen station. */
  private readonly table = new Map<string, Learned>();
  private readonly clock: () => number;

  constructor(options: LanSegmentOptions = {}) {
    this.name = options.name ?? 'lan0';
    this.macTableCapacity = options.macTableSize ?? 1024;
    this.ageingMs = options.ageingMs ?? 300_000;
    this.clock = options.clock ?? Date.now;
    if (!Number.isInteger(this.macTableCapacity) || this.macTableCapacity < 1)
      throw new InvalidArgumentError(`macTableSize must be a positive integer, got ${this.macTableCapacity}`);
    if (!(this.ageingMs > 0)) throw new InvalidArgumentError(`ageingMs must be positive, got ${this.ageingMs}`);
  }

  /** Plug a new device into the switch. Port names are unique per segment. */
  attach(name: string): LanPort {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('a LAN port needs a name');
    if (this.ports.has(name)) throw new InvalidArgumentError(`${this.name}: port ${name} is already attached`);
    const port = new SegmentPort(name, this);
    this.ports.set(name, port);
    return port;
  }

  /** Unplug a port: it stops sending and receiving, and the stations learned on it are forgotten. */
  detach(name: string): boolean {
    const port = this.ports.get(name);
    if (!port) return false;
    port.attached = false;
    this.ports.delete(name);
    for (const [mac, e] of this.table) if (e.port === port) this.table.delete(mac);
    return true;
  }

  portNames(): string[] {
    return [...this.ports.keys()];
  }

  /** The learned stations, least recently seen first (expired entries excluded). */
  macTable(): MacTableEntry[] {
    const now = this.clock();
    const out: MacTableEntry[] = [];
    for (const [mac, e] of this.table) if (now - e.seen <= this.ageingMs) out.push({ mac, port: e.port.name });
    return out;
  }

  stats(): LanSegmentStats {
    const ports: Record<string, LanPortCounters> = {};
    for (const [name, p] of this.ports) ports[name] = { ...p.counters };
    return { name: this.name, macTableSize: this.table.size, macTableCapacity: this.macTableCapacity, counters: { ...this.counters }, ports };
  }

  /** @internal entry point of SegmentPort.send */
  ingress(from: SegmentPort, frame: Uint8Array): void {
    from.counters.framesIn++;
    from.counters.bytesIn += frame.byteLength;
    if (frame.byteLength < ETH_HEADER_SIZE) {
      this.counters.runts++;
      return;
    }
    const now = this.clock();
    if (!isGroupMac(frame, ETH_ALEN)) this.learn(formatMac(frame, ETH_ALEN), from, now);

    if (!isGroupMac(frame, 0)) {
      const dst = this.lookup(formatMac(frame, 0), now);
      if (dst === from) {
        this.counters.filtered++;
        return;
      }
      if (dst) {
        this.counters.forwarded++;
        dst.deliver(frame);
        return;
      }
    }
    this.counters.flooded++;
    // Snapshot the port list: a listener may attach or detach ports while we deliver.
    for (const port of [...this.ports.values()]) if (port !== from && port.attached) port.deliver(frame);
  }

  private learn(mac: string, port: SegmentPort, now: number): void {
    const prev = this.table.get(mac);
    if (prev) {
      if (prev.port !== port) this.counters.moved++;
      this.table.delete(mac); // re-insert at the tail: most recently seen
    } else {
      this.counters.learned++;
      if (this.table.size >= this.macTableCapacity) {
        const oldest = this.table.keys().next();
        if (!oldest.done) {
          this.table.delete(oldest.value);
          this.counters.evicted++;
        }
      }
    }
    this.table.set(mac, { port, seen: now });
  }

  private lookup(mac: string, now: number): SegmentPort | undefined {
    const e = this.table.get(mac);
    if (!e) return undefined;
    if (now - e.seen > this.ageingMs) {
      this.table.delete(mac);
      this.counters.aged++;
      return undefined;
    }
    return e.port;
  }
}
