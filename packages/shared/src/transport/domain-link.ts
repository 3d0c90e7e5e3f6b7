/**
 * A guest across a link (ws transport): no shared memory between the guest and dom0, so what
 * threads mode gets from SharedArrayBuffers is carried in messages on the guest's control link.
 *
 *   topic        direction     payload                                   meaning
 *   mem.pages    both          PageUpdate[]                              ring pages mirrored (ring/mirror.ts);
 *                                                                        data written into a guest page by dom0
 *   gnt.grant    guest → dom0  { ref, remoteDom, pfn, readonly, data }   a grant made, with the page's contents
 *   gnt.end      guest → dom0  { ref }                                   a grant ended
 *   gnt.flags    dom0 → guest  { ref, inUse }                            GTF_READING/WRITING as dom0 set them
 *   evt          both          { port }                                  an event-channel send
 *
 * dom0 keeps a *mirror* of the guest's memory and grant table and runs the unchanged grant
 * authority on it: a grant arrives with its page (the grantee reads current data); a writable
 * mapping is written back on unmap and a copy into a guest page is shipped at once (a page lease);
 * ring pages are mirrored entry by entry. Everything a side sends goes out in the order it
 * happened — page updates are flushed before any other message — so a response never overtakes
 * the data it answers for, and an event never overtakes the ring update it announces.
 *
 * Trust: dom0 validates everything — the page ids name only the guest's own frames, grant
 * entries are written into the mirror only when not in use, and an `evt` names the guest's own
 * port, whose binding dom0 looks up itself.
 */
import { EventChannelError, InvalidArgumentError } from '../errors.js';
import { PAGE_SIZE, type GuestMemory } from '../memory/index.js';
import { GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING, type GrantTable, type RemoteGranter } from '../grant/index.js';
import { DOMID_HW, type EventChannelAuthority, type EventMemory, type EventRouting, type SendOutcome } from '../evtchn/index.js';
import { PageMirror, applyPageUpdates, type PageUpdate } from '../ring/mirror.js';
import type { PageSync } from '../ring/ring.js';
import type { RpcPeer } from './rpc.js';

export const DL_PAGES = 'mem.pages';
export const DL_GRANT = 'gnt.grant';
export const DL_END = 'gnt.end';
export const DL_FLAGS = 'gnt.flags';
export const DL_EVENT = 'evt';

export interface DomainLinkCounters {
  pageMessages: number;
  grantsShipped: number;
  grantBytesShipped: number;
  grantsReceived: number;
  eventsSent: number;
  eventsReceived: number;
  lateWakes: number;
  rejected: number;
}

function newCounters(): DomainLinkCounters {
  return { pageMessages: 0, grantsShipped: 0, grantBytesShipped: 0, grantsReceived: 0, eventsSent: 0, eventsReceived: 0, lateWakes: 0, rejected: 0 };
}

/** How a link names a page: a domain's frame, or a hardware page (`DOMID_HW`: register pages). */
export const pageId = (domid: number, pfn: number): string => `${domid}:${pfn}`;

/** Which pages a link end lets the peer write: (domid, pfn) → the local page, or undefined. */
export type PageResolver = (domid: number, pfn: number) => Uint8Array | undefined;

function resolvePageId(id: string, resolve: PageResolver): Uint8Array | undefined {
  const m = /^(\d{1,5}):(\d{1,10})$/.exec(id);
  return m ? resolve(Number(m[1]), Number(m[2])) : undefined;
}

/** Shared machinery of every end: the ordered outgoing stream and late-wake handlers. */
abstract class LinkEnd {
  readonly counters = newCounters();
  readonly mirror: PageMirror;
  protected readonly lateWakeHandlers = new Map<string, () => void>();

  constructor(
    readonly peer: RpcPeer,
    readonly domid: number,
    private readonly resolvePage: PageResolver,
  ) {
    this.mirror = new PageMirror((updates: PageUpdate[]) => {
      this.counters.pageMessages++;
      peer.notify(DL_PAGES, updates);
    });
    peer.on(DL_PAGES, (u) => this.receivePages(u));
  }

  /** Send a non-page message: pending page updates go first, so order is kept. */
  protected send(topic: string, payload: unknown): void {
    this.mirror.flush();
    this.peer.notify(topic, payload);
  }

  /**
   * Page updates recorded by another mirror of ours (a thread that writes pages this link
   * mirrors, e.g. an SV-IO core), sent in order after ours.
   */
  relayPages(updates: PageUpdate[]): void {
    this.counters.pageMessages++;
    this.send(DL_PAGES, updates);
  }

  ringSync(pfn: number, page: Uint8Array, domid = this.domid): PageSync & { lateWake?: () => void } {
    const id = pageId(domid, pfn);
    const base = this.mirror.syncFor(id, page);
    const handlers = this.lateWakeHandlers;
    return {
      wroteBytes: base.wroteBytes,
      storedIndex: base.storedIndex,
      set lateWake(fn: (() => void) | undefined) {
        if (fn) handlers.set(id, fn);
        else handlers.delete(id);
      },
      get lateWake() {
        return handlers.get(id);
      },
    };
  }

  private receivePages(u: unknown): void {
    const r = applyPageUpdates(u, (id) => resolvePageId(id, this.resolvePage));
    this.counters.rejected += r.rejected;
    for (const id of r.lateWakes) {
      const h = this.lateWakeHandlers.get(id);
      if (h) {
        this.counters.lateWakes++;
        h();
      }
    }
  }
}

/** A guest's link may only ever write that guest's own frames. */
function ownPages(domid: number, memory: GuestMemory): PageResolver {
  return (d, pfn) => (d === domid && memory.hasFrame(pfn) ? memory.page(pfn) : undefined);
}

/** The guest's end: ships its grants and events, applies dom0's writes and flags. */
export class GuestLinkEnd extends LinkEnd {
  constructor(
    peer: RpcPeer,
    domid: number,
    readonly memory: GuestMemory,
    grants: GrantTable,
    events: () => EventMemory,
  ) {
    super(peer, domid, ownPages(domid, memory));
    grants.hooks = {
      granted: (ref, remoteDom, pfn, readonly) => {
        const data = memory.page(pfn).slice();
        this.counters.grantsShipped++;
        this.counters.grantBytesShipped += data.byteLength;
        this.send(DL_GRANT, { ref, remoteDom, pfn, readonly, data });
      },
      ended: (ref) => this.send(DL_END, { ref }),
    };
    peer.on(DL_FLAGS, (p) => {
      const { ref, inUse } = (p ?? {}) as { ref?: unknown; inUse?: unknown };
      if (typeof ref === 'number' && typeof inUse === 'number') grants.setInUse(ref, inUse);
    });
    peer.on(DL_EVENT, (p) => {
      const port = (p as { port?: unknown } | null)?.port;
      if (typeof port !== 'number' || !Number.isInteger(port) || port <= 0) return;
      this.counters.eventsReceived++;
      events().setPending(domid, port);
    });
  }

  /** Event routing for the guest's gate: every send goes to the hypervisor, which validates it. */
  routing(): EventRouting {
    return {
      forward: (port): SendOutcome => {
        this.counters.eventsSent++;
        this.send(DL_EVENT, { port });
        return 'forwarded';
      },
    };
  }
}

/**
 * dom0's end for one guest: maintains the mirror of its memory and grant table, routes its
 * events, and is the RemoteGranter the grant authority reports to.
 */
export class RemoteGuestEnd extends LinkEnd implements RemoteGranter {
  private readonly table: Int32Array;

  constructor(
    peer: RpcPeer,
    domid: number,
    readonly memory: GuestMemory,
    grantTable: SharedArrayBuffer,
    private readonly authority: EventChannelAuthority,
    /** Deliver an event to a domain in this process, or across another link. */
    private readonly deliver: (domid: number, port: number) => void,
  ) {
    super(peer, domid, ownPages(domid, memory));
    this.table = new Int32Array(grantTable);
    peer.on(DL_GRANT, (p) => this.onGrant(p));
    peer.on(DL_END, (p) => this.onEnd(p));
    peer.on(DL_EVENT, (p) => this.onEvent(p));
  }

  // ---- RemoteGranter ---------------------------------------------------------------------------
  flagsChanged(ref: number, inUse: number): void {
    this.send(DL_FLAGS, { ref, inUse });
  }

  pageWritten(pfn: number, offset: number, length: number): void {
    this.mirror.wrote(pageId(this.domid, pfn), this.memory.page(pfn), offset, length);
  }

  /** An event for this guest: ordered after every page update already made for it. */
  sendEvent(port: number): SendOutcome {
    this.counters.eventsSent++;
    this.send(DL_EVENT, { port });
    return 'forwarded';
  }

  private onGrant(p: unknown): void {
    const g = (p ?? {}) as { ref?: unknown; remoteDom?: unknown; pfn?: unknown; readonly?: unknown; data?: unknown };
    const entries = this.table.length / 2;
    const ok =
      typeof g.ref === 'number' && Number.isInteger(g.ref) && g.ref >= 0 && g.ref < entries &&
      typeof g.remoteDom === 'number' && Number.isInteger(g.remoteDom) && g.remoteDom >= 0 && g.remoteDom <= 0xffff &&
      typeof g.pfn === 'number' && this.memory.hasFrame(g.pfn) &&
      g.data instanceof Uint8Array && g.data.byteLength === PAGE_SIZE;
    if (!ok) {
      this.counters.rejected++;
      return;
    }
    const ref = g.ref as number;
    const w = Atomics.load(this.table, ref * 2);
    if (w & (GTF_READING | GTF_WRITING)) {
      // Re-granting a ref still in use here would change a page under a mapping: refuse.
      this.counters.rejected++;
      return;
    }
    this.counters.grantsReceived++;
    this.memory.page(g.pfn as number).set(g.data as Uint8Array);
    Atomics.store(this.table, ref * 2 + 1, g.pfn as number);
    Atomics.store(this.table, ref * 2, (GTF_PERMIT_ACCESS | (g.readonly === true ? GTF_READONLY : 0)) | (((g.remoteDom as number) & 0xffff) << 16));
  }

  private onEnd(p: unknown): void {
    const ref = (p as { ref?: unknown } | null)?.ref;
    if (typeof ref !== 'number' || !Number.isInteger(ref) || ref < 0 || ref >= this.table.length / 2) {
      this.counters.rejected++;
      return;
    }
    for (;;) {
      const w = Atomics.load(this.table, ref * 2);
      if (w & (GTF_READING | GTF_WRITING)) {
        // Still mapped: the revoke fails, as it would on shared memory; tell the guest.
        this.send(DL_FLAGS, { ref, inUse: w & (GTF_READING | GTF_WRITING) });
        return;
      }
      if (Atomics.compareExchange(this.table, ref * 2, w, 0) === w) return;
    }
  }

  private onEvent(p: unknown): void {
    const port = (p as { port?: unknown } | null)?.port;
    if (typeof port !== 'number') {
      this.counters.rejected++;
      return;
    }
    try {
      const target = this.authority.resolveSend(this.domid, port);
      this.counters.eventsReceived++;
      this.deliver(target.domid, target.port);
    } catch (e) {
      if (!(e instanceof EventChannelError || e instanceof InvalidArgumentError)) throw e;
      this.counters.rejected++;
    }
  }
}

/**
 * Either end of dom0 ↔ hardware simulator when they are separate processes. The device reaches
 * machine memory by DMA; without shared memory that is a *streaming DMA mapping*, as Linux's
 * DMA API has one: before handing the device a buffer to read (a disk write, a frame to send)
 * the driver ships it (`toDevice`); whatever the device writes (a disk read, a received frame)
 * is shipped back before the completion that announces it. Device queue rings are mirrored.
 * Events travel as on a guest link; the hypervisor (dom0's end) resolves every send itself.
 */
export class MachineLinkEnd extends LinkEnd {
  constructor(
    peer: RpcPeer,
    private readonly resolve: PageResolver,
    private readonly onEvent: (port: number) => void,
  ) {
    super(peer, DOMID_HW, resolve);
    peer.on(DL_EVENT, (p) => {
      const port = (p as { port?: unknown } | null)?.port;
      if (typeof port !== 'number' || !Number.isInteger(port) || port <= 0) {
        this.counters.rejected++;
        return;
      }
      this.counters.eventsReceived++;
      this.onEvent(port);
    });
  }

  /** Bytes of machine frame (domid, pfn) changed here and must reach the other side. */
  wrote(domid: number, pfn: number, offset: number, length: number): void {
    const page = this.resolve(domid, pfn);
    if (page) this.mirror.wrote(pageId(domid, pfn), page, offset, length);
  }

  sendEvent(port: number): SendOutcome {
    this.counters.eventsSent++;
    this.send(DL_EVENT, { port });
    return 'forwarded';
  }

  routing(): EventRouting {
    return { forward: (port) => this.sendEvent(port) };
  }
}
