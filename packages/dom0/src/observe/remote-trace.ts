/**
 * Cluster-wide tracing: while at least one trace stream is open, every runtime of every host
 * (guests, the hardware simulator) forwards its trace events over its control link, and dom0
 * re-publishes them on its own channels — so a stream sees frontend ring pushes, guest event
 * sends and device DMA next to dom0's own events. With no stream open, nothing is forwarded.
 * Each forwarded event is pinned to the host and (for a guest) the domain its link proved.
 */
import { errorFields, TRACE_KINDS, TraceForwardContract, acceptForwardedEvent, contractClient, onNotify, republishTrace, type Logger, type RpcPeer } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';

interface Source {
  peer: RpcPeer;
  host: string;
  /** A guest's domain; undefined for the hardware (its DMA events name the target domain). */
  domid?: number;
  /** A guest's name: its forwarded frames are captured as `<name>/<vif>`. */
  name?: string;
}

export class RemoteTraceHub {
  private users = 0;
  private readonly listening = new WeakSet<RpcPeer>();
  /** Forwarded events accepted and rejected (malformed or unknown), for views. */
  readonly counters = { accepted: 0, rejected: 0, dropped: 0 };

  constructor(
    readonly hosts: Host[],
    readonly log: Logger,
  ) {}

  private sources(): Source[] {
    const out: Source[] = [];
    for (const h of this.hosts) {
      if (h.hwsim && !h.hwsimDown) out.push({ peer: h.hwsim.peer, host: h.config.name });
      for (const g of h.guests) if (g.peer && !g.peer.closed && !g.down) out.push({ peer: g.peer, host: h.config.name, domid: g.domain.domid, name: g.config.name });
      // Hosted VMApps in dom0's process (threads) trace in their own threads; a guest's own VMApp
      // (ws) comes through the guest's link.
      for (const p of h.platforms()) {
        const peer = p.vmappTraceSource;
        if (peer && !peer.closed) out.push({ peer, host: h.config.name, domid: p.domain.domid });
      }
    }
    return out;
  }

  /** A stream opened: start forwarding everywhere (first user only). */
  acquire(): void {
    if (this.users++ > 0) return;
    for (const s of this.sources()) {
      if (!this.listening.has(s.peer)) {
        this.listening.add(s.peer);
        // A batch outside the contract counts as rejected; each event of one is checked again below.
        onNotify(s.peer, TraceForwardContract.notifications.events, (p) => this.receive(s, p), () => void this.counters.rejected++);
      }
      contractClient(TraceForwardContract, s.peer).subscribe({ kinds: [...TRACE_KINDS] }).catch((e) => this.log.debug({ err: errorFields(e) }, 'runtime did not start forwarding'));
    }
  }

  /** A stream closed: stop forwarding when it was the last. */
  release(): void {
    if (this.users === 0 || --this.users > 0) return;
    for (const s of this.sources()) contractClient(TraceForwardContract, s.peer).unsubscribe().catch(() => {});
  }

  private receive(s: Source, p: { events: unknown[]; dropped: number }): void {
    this.counters.dropped += p.dropped;
    for (const raw of p.events.slice(0, 20_000)) {
      const ev = acceptForwardedEvent(raw, s.host, s.domid, s.name);
      if (!ev) {
        this.counters.rejected++;
        continue;
      }
      this.counters.accepted++;
      republishTrace(ev);
    }
  }
}
