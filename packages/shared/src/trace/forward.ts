/**
 * Trace forwarding: diagnostics channels are per thread, so a runtime that is not dom0's thread
 * (a guest, the hardware simulator — worker or process) forwards its events over its control
 * link while dom0 asks it to, and only then.
 *
 *   dom0 → runtime   call   trace.subscribe   { kinds }   start (or change) forwarding
 *   dom0 → runtime   call   trace.unsubscribe {}          stop; the runtime's channels go quiet
 *   runtime → dom0   notify trace.events      { events, dropped }   a batch every 100 ms
 *
 * The runtime decodes ring entries at the publish site (before the slots are reused) and bounds
 * its buffer (TraceBuffer): a stalled link drops events, counted, never memory. dom0 trusts none
 * of it: it re-labels each event with the host and domain the link proved (see
 * acceptForwardedEvent) before anyone sees it.
 */
import type { RpcPeer } from '../transport/rpc.js';
import { InvalidArgumentError } from '../errors.js';
import { TRACE_KINDS, TraceBuffer, serializeTrace, subscribeTrace, traceChannel, type TraceEvent, type TraceKind } from './index.js';

export const TRACE_SUBSCRIBE = 'trace.subscribe';
export const TRACE_UNSUBSCRIBE = 'trace.unsubscribe';
export const TRACE_EVENTS = 'trace.events';

const FORWARD_FLUSH_MS = 100;
/**
 * Kinds a runtime never forwards. (Frames are forwarded, bytes and all: most are captured where
 * dom0 sees them — vifs, models, the physical NIC — but a direct NIC's never pass dom0, so its
 * guest's driver publishes them; dom0 names their interface after the guest the link proved.)
 */
const NOT_FORWARDED: readonly TraceKind[] = [];
/** Largest frame a forwarded event may carry (an Ethernet frame, with room to spare). */
const MAX_FORWARDED_FRAME = 2048;

/** Runtime side: answer dom0's subscribe/unsubscribe on `peer`. */
export function serveTraceForwarding(peer: RpcPeer, o: { downstream?: () => RpcPeer[] } = {}): void {
  let stop: (() => void) | undefined;
  const end = () => {
    stop?.();
    stop = undefined;
  };
  const listening = new WeakSet<RpcPeer>();
  peer.handle(TRACE_SUBSCRIBE, (p) => {
    const kinds = (p as { kinds?: unknown }).kinds;
    if (!Array.isArray(kinds) || !kinds.every((k) => TRACE_KINDS.includes(k as TraceKind))) throw new InvalidArgumentError('trace.subscribe: kinds must be trace kinds');
    end();
    const wanted = (kinds as TraceKind[]).filter((k) => !NOT_FORWARDED.includes(k));
    const buf = new TraceBuffer(10_000);
    const unsubscribe = subscribeTrace(wanted, (ev) => buf.push(serializeTrace(ev, ev.kind === 'frame')));
    const timer = setInterval(() => {
      if (buf.length || buf.dropped) peer.notify(TRACE_EVENTS, buf.take());
    }, FORWARD_FLUSH_MS);
    timer.unref();
    // Runtimes this one carries (a VMApp thread in a guest's process): their events are
    // re-published here, so the subscription above forwards them with this runtime's own.
    const below = o.downstream?.() ?? [];
    for (const d of below) {
      if (!listening.has(d)) {
        listening.add(d);
        d.on(TRACE_EVENTS, (q) => {
          const events = (q as { events?: unknown }).events;
          if (!Array.isArray(events)) return;
          for (const raw of events.slice(0, 20_000)) {
            const ev = acceptForwardedEvent(raw, (raw as { host?: string }).host ?? '', (raw as { domid?: number }).domid);
            if (ev) republishTrace(ev);
          }
        });
      }
      d.call(TRACE_SUBSCRIBE, { kinds: wanted }, 5_000).catch(() => undefined);
    }
    stop = () => {
      unsubscribe();
      clearInterval(timer);
      for (const d of below) d.call(TRACE_UNSUBSCRIBE, {}, 5_000).catch(() => undefined);
    };
    return wanted;
  });
  peer.handle(TRACE_UNSUBSCRIBE, () => end());
  peer.link.onClose(end);
}

/**
 * dom0 side: validate one forwarded event and pin it to what the link proved: the host it came
 * through and, for a guest, its own domain id — and a frame's interface to `<guest>/<vif>`, so a
 * guest can only ever add frames to its own interface of a capture. Returns undefined for
 * anything malformed.
 */
export function acceptForwardedEvent(raw: unknown, host: string, domid?: number, guest?: string): TraceEvent | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const ev = raw as Record<string, unknown>;
  if (!TRACE_KINDS.includes(ev.kind as TraceKind) || NOT_FORWARDED.includes(ev.kind as TraceKind)) return undefined;
  if (typeof ev.t !== 'number' || !Number.isFinite(ev.t)) return undefined;
  const out: Record<string, unknown> = { ...ev, host, ...(domid !== undefined ? { domid } : {}) };
  if (typeof out.domid !== 'number') return undefined;
  if (ev.kind === 'frame') {
    if (typeof ev.device !== 'string' || !/^vif\d+$/.test(ev.device) || (ev.dir !== 'tx' && ev.dir !== 'rx') || typeof ev.len !== 'number') return undefined;
    if (guest !== undefined) out.iface = `${guest}/${ev.device}`;
    else if (typeof ev.iface !== 'string') return undefined;
    if (typeof ev.frame === 'string') {
      const bytes = Buffer.from(ev.frame, 'base64');
      if (bytes.byteLength > MAX_FORWARDED_FRAME) return undefined;
      out.frame = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } else if (ev.frame !== undefined) return undefined;
  }
  return out as unknown as TraceEvent;
}

/** Publish a forwarded (already serialised) event on this thread's channel of its kind. */
export function republishTrace(ev: TraceEvent): void {
  const ch = traceChannel(ev.kind);
  if (ch.hasSubscribers) ch.publish(ev);
}
