/**
 * Trace events — what every layer publishes so ring traffic can be watched.
 *
 * One `node:diagnostics_channel` channel per event kind (the undici model): a publish site checks
 * `hasSubscribers` first, so with nobody listening a trace point costs one property load and
 * allocates nothing. Live views do not subscribe to the per-entry channels at all: they sample
 * the counters every mechanism keeps (ring indices, notifications, grant ops) once a second.
 * Only a stream (`ringvisor trace`, `--pcap`) subscribes, and pays for what it asked for.
 *
 * Channels are per thread (diagnostics_channel is per isolate): events published in a guest
 * worker or another process are forwarded over that runtime's control link when dom0 subscribes
 * (see TraceForwarder), so a subscriber in dom0 sees the cluster.
 *
 * Ring events are per batch, not per entry, as ring.h pushes: `before`/`after` are the index
 * before and after the batch. A subscriber that wants the entries reads them synchronously with
 * `entries()` while the slots still hold them.
 */
import diagnostics from 'node:diagnostics_channel';
import { decimalU64s } from '../util/u64.js';
import { InvalidArgumentError } from '../errors.js';

/** Where an event happened: host (dom0's host name), domain id and device ("vbd0", "vif1"). */
export interface TraceWhere {
  host: string;
  domid: number;
  device?: string;
}

export interface RingLabel extends TraceWhere {
  device: string;
  /** Which ring of the device: "blk", "tx", "rx". */
  ring: string;
  /** Which end published: the frontend (guest) or the backend (dom0). */
  side: 'front' | 'back';
}

interface Stamp {
  /** Wall-clock milliseconds with sub-millisecond precision. */
  t: number;
}

export type TraceEvent =
  | (Stamp & RingLabel & { kind: 'ring.push'; half: 'req' | 'rsp'; before: number; after: number; notify: boolean; entries?: (() => unknown[]) | unknown[] })
  | (Stamp & RingLabel & { kind: 'ring.consume'; half: 'req' | 'rsp'; before: number; after: number; entries?: (() => unknown[]) | unknown[] })
  | (Stamp & TraceWhere & { kind: 'evtchn.send'; port: number; outcome: string })
  | (Stamp & TraceWhere & { kind: 'evtchn.deliver'; port: number })
  | (Stamp & TraceWhere & { kind: 'evtchn.suppressed'; port: number })
  | (Stamp & TraceWhere & { kind: 'grant.map' | 'grant.unmap'; granter: number; ref: number; writable?: boolean; status: number })
  | (Stamp & TraceWhere & { kind: 'grant.copy'; bytes: number; status: number })
  | (Stamp & TraceWhere & { kind: 'trap'; port: number; size: number; write: boolean; value?: number })
  | (Stamp & TraceWhere & { kind: 'world-switch'; to: 'guest' | 'hypervisor' | 'dom0' })
  | (Stamp & TraceWhere & { kind: 'dma'; pfn: number; bytes: number; write: boolean })
  | (Stamp & TraceWhere & { kind: 'iommu.fault'; address: number; reason: string })
  | (Stamp & TraceWhere & { kind: 'direct'; action: 'assign' | 'reclaim' | 'flr'; function: string })
  | (Stamp & TraceWhere & { kind: 'xenbus.state'; side: 'front' | 'back'; state: number; stateName: string })
  | (Stamp & TraceWhere & { kind: 'fault'; fault: string; detail: Record<string, unknown> })
  | (Stamp & TraceWhere & { kind: 'process'; runtime: string; role: string; state: 'up' | 'down'; pid?: number; code?: number })
  | (Stamp & TraceWhere & { kind: 'frame'; iface: string; dir: 'tx' | 'rx'; len: number; frame?: Uint8Array });

export type TraceKind = TraceEvent['kind'];

export const TRACE_KINDS: readonly TraceKind[] = [
  'ring.push',
  'ring.consume',
  'evtchn.send',
  'evtchn.deliver',
  'evtchn.suppressed',
  'grant.map',
  'grant.unmap',
  'grant.copy',
  'trap',
  'world-switch',
  'dma',
  'iommu.fault',
  'direct',
  'xenbus.state',
  'fault',
  'process',
  'frame',
];

/** Kinds rare enough that live views keep all of them (the timeline). */
export const TIMELINE_KINDS: readonly TraceKind[] = ['xenbus.state', 'fault', 'process', 'iommu.fault', 'direct'];

export type TraceChannel = diagnostics.Channel;

const channels = new Map<TraceKind, TraceChannel>(TRACE_KINDS.map((k) => [k, diagnostics.channel(`ringvisor:${k}`)]));

/** The channel of one kind (stable across the thread; `hasSubscribers` is the fast check). */
export function traceChannel(kind: TraceKind): TraceChannel {
  return channels.get(kind)!;
}

/** Frequently used channels, resolved once. */
export const ringPushChannel = traceChannel('ring.push');
export const ringConsumeChannel = traceChannel('ring.consume');
export const evtSendChannel = traceChannel('evtchn.send');
export const evtDeliverChannel = traceChannel('evtchn.deliver');
export const evtSuppressedChannel = traceChannel('evtchn.suppressed');
export const frameChannel = traceChannel('frame');

const origin = performance.timeOrigin;
/** Wall-clock ms, sub-ms precision (performance.now based: monotonic within a run). */
export function traceNow(): number {
  return origin + performance.now();
}

/** Publish an event of its kind (call sites on hot paths check `hasSubscribers` first). */
export function publishTrace(ev: TraceEvent): void {
  const ch = channels.get(ev.kind)!;
  if (ch.hasSubscribers) ch.publish(ev);
}

/** A filter as `ringvisor trace` takes it: every given field must match. */
export interface TraceFilter {
  kinds?: TraceKind[];
  host?: string;
  domid?: number;
  device?: string;
  ring?: string;
}

export function matchesFilter(ev: TraceEvent, f: TraceFilter): boolean {
  if (f.kinds && f.kinds.length && !f.kinds.includes(ev.kind)) return false;
  if (f.host !== undefined && ev.host !== f.host) return false;
  if (f.domid !== undefined && ev.domid !== f.domid) return false;
  if (f.device !== undefined && ev.device !== f.device) return false;
  if (f.ring !== undefined && (!('ring' in ev) || ev.ring !== f.ring)) return false;
  return true;
}

/**
 * A plain, serialisable copy of an event (what crosses a link or becomes a JSON line): ring
 * entries decoded now, their u64 fields (exact bigints) as decimal strings — JSON has no bigint,
 * and a forwarded batch is re-served as JSON — frame bytes (base64) kept only if asked (pcap).
 */
export function serializeTrace(ev: TraceEvent, keepFrames: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ev)) {
    // Forwarded events carry entries already decoded; local ones decode now.
    if (k === 'entries') out.entries = decimalU64s(typeof v === 'function' ? (v as () => unknown[])() : v);
    else if (k === 'frame') {
      if (keepFrames) out.frame = Buffer.from(v as Uint8Array).toString('base64');
    } else out[k] = v;
  }
  return out;
}

/**
 * Subscribe to some kinds; returns the unsubscribe function. Subscribers run synchronously at
 * the publish site: copy what you need and return.
 */
export function subscribeTrace(kinds: readonly TraceKind[], fn: (ev: TraceEvent) => void): () => void {
  const handler = (msg: unknown) => fn(msg as TraceEvent);
  const subs = kinds.map((k) => {
    const ch = channels.get(k);
    if (!ch) throw new InvalidArgumentError(`unknown trace kind ${k}`);
    ch.subscribe(handler);
    return ch;
  });
  return () => {
    for (const ch of subs) ch.unsubscribe(handler);
  };
}

/**
 * A bounded buffer between synchronous publishers and an asynchronous consumer (a socket, a
 * file): events beyond `limit` per flush are counted as dropped rather than queued without end,
 * so a slow reader can never exhaust dom0's memory.
 */
export class TraceBuffer {
  private items: Array<Record<string, unknown>> = [];
  dropped = 0;

  constructor(readonly limit = 20_000) {}

  push(item: Record<string, unknown>): void {
    if (this.items.length >= this.limit) this.dropped++;
    else this.items.push(item);
  }

  take(): { events: Array<Record<string, unknown>>; dropped: number } {
    const out = { events: this.items, dropped: this.dropped };
    this.items = [];
    this.dropped = 0;
    return out;
  }

  get length(): number {
    return this.items.length;
  }
}
