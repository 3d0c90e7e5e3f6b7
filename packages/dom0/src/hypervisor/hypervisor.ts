/**
 * The hypervisor core, which ringvisor places in Domain 0's runtime: domain lifecycle, guest
 * memory, the event-channel authority, the grant authority and the store. Guests reach it only
 * through hypercalls bound to their own domid (bindGuestHypercalls); nothing a guest sends can
 * name another domain as the actor.
 */
import {
  DOMID_HW,
  DomainError,
  HypercallContract,
  notify,
  serveContract,
  EventChannelAuthority,
  EventChannelGate,
  GrantAuthority,
  GuestMemory,
  InvalidArgumentError,
  LocalStoreClient,
  MAX_DOMAINS,
  PAGE_SIZE,
  MachineLinkEnd,
  RemoteGuestEnd,
  RpcPeer,
  Store,
  type RemoteGranter,
  StoreError,
  createEventMemory,
  createGrantTableMemory,
  XENBUS_STATE_NAMES,
  GrantError,
  GNTST_bad_domain,
  traceChannel,
  traceNow,
  type Logger,
} from '@ringvisor/shared';

const xenbusStateChannel = traceChannel('xenbus.state');

export type DomainState = 'created' | 'running' | 'shutdown' | 'dying' | 'crashed';

export interface Domain {
  readonly domid: number;
  readonly name: string;
  /** The domain's memory — or, for a guest across a link, dom0's mirror of it. */
  readonly memory: GuestMemory;
  readonly grantTable: SharedArrayBuffer;
  state: DomainState;
  readonly createdAt: number;
  /** Created for a guest across a link (ws). */
  readonly linked: boolean;
  /** Set while that guest is attached. */
  link?: RemoteGuestEnd;
}

export interface DomainInfo {
  domid: number;
  name: string;
  memoryKiB: number;
  state: DomainState;
  uptimeSec: number;
}

export class Hypervisor {
  readonly eventMemory: SharedArrayBuffer = createEventMemory();
  readonly evtchn = new EventChannelAuthority(this.eventMemory);
  readonly grants = new GrantAuthority();
  readonly store = new Store();
  readonly domains = new Map<number, Domain>();
  /** dom0's own view of its event channels (backends and physical drivers use it). */
  readonly dom0Events: EventChannelGate;
  readonly dom0Store: LocalStoreClient;
  private nextDomid = 1;

  /**
   * Mechanisms the hypervisor itself performs, counted so results can be explained: a trap is
   * a guest access to an emulated device register; a world switch is a change of the running
   * context (guest → hypervisor → device model and back).
   */
  readonly counters = { traps: 0, worldSwitches: 0 };

  constructor(
    readonly log: Logger,
    dom0MemoryFrames = 4096,
    /** This host's name, in trace events and views. */
    readonly host = 'host0',
  ) {
    this.createDomainWithId(0, 'Domain-0', dom0MemoryFrames);
    this.evtchn.createDomain(DOMID_HW);
    this.dom0Events = new EventChannelGate(this.eventMemory, 0, {
      deliver: (domid, port) => (domid === DOMID_HW ? this.hardwareLink?.sendEvent(port) : this.domains.get(domid)?.link?.sendEvent(port)),
    });
    this.dom0Events.traceHost = host;
    this.grants.traceHost = host;
    this.dom0Store = new LocalStoreClient(this.store, 0);
    this.traceXenbusStates();
  }

  /**
   * Every xenbus state write (either half of any device) becomes a `xenbus.state` trace event:
   * dom0 watches the whole domain tree, as the store sees every write.
   */
  private traceXenbusStates(): void {
    const front = /^\/local\/domain\/(\d+)\/device\/(\w+)\/(\d+)\/state$/;
    const back = /^\/local\/domain\/0\/backend\/(\w+)\/(\d+)\/(\d+)\/state$/;
    this.store.watch(0, '/local/domain', 'rv-trace', (path) => {
      if (!xenbusStateChannel.hasSubscribers) return;
      const f = front.exec(path);
      const b = f ? undefined : back.exec(path);
      if (!f && !b) return;
      const raw = this.store.tryRead(0, path);
      const state = raw === undefined ? 0 : Number(raw);
      xenbusStateChannel.publish({
        kind: 'xenbus.state',
        t: traceNow(),
        host: this.host,
        domid: Number(f ? f[1] : b![2]),
        device: f ? `${f[2]}${f[3]}` : `${b![1]}${b![3]}`,
        side: f ? 'front' : 'back',
        state,
        stateName: XENBUS_STATE_NAMES[state] ?? String(raw),
      });
    });
  }

  get dom0(): Domain {
    return this.domains.get(0)!;
  }

  private createDomainWithId(domid: number, name: string, frames: number, linked = false): Domain {
    const memory = GuestMemory.allocate(domid, frames);
    const grantTable = createGrantTableMemory();
    const d: Domain = { domid, name, memory, grantTable, state: 'created', createdAt: Date.now(), linked };
    this.domains.set(domid, d);
    this.evtchn.createDomain(domid);
    // Reports go to the guest's link once one is attached; with shared memory there is none.
    const remote: RemoteGranter = {
      flagsChanged: (ref, inUse) => d.link?.flagsChanged(ref, inUse),
      pageWritten: (pfn, off, len) => d.link?.pageWritten(pfn, off, len),
      ringSync: (pfn, page) => {
        // The guest's link is gone (its runtime died or was cut off): nothing to map into. The
        // backend gets a grant error for that request — never an exception that takes dom0 down.
        if (!d.link) throw new GrantError(`domain ${domid} has no runtime attached`, GNTST_bad_domain);
        return d.link.ringSync(pfn, page);
      },
    };
    this.grants.registerDomain(domid, memory, grantTable, linked ? remote : undefined);
    this.store.write(0, `/local/domain/${domid}/name`, name);
    this.store.write(0, `/local/domain/${domid}/domid`, String(domid));
    this.store.write(0, `/local/domain/${domid}/memory/target`, String((frames * PAGE_SIZE) / 1024));
    return d;
  }

  /** `linked`: the guest will run across a link (ws) and `memory` is dom0's mirror of it. */
  createDomain(name: string, memoryMiB: number, linked = false): Domain {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new InvalidArgumentError(`bad domain name ${JSON.stringify(name)}`);
    if ([...this.domains.values()].some((d) => d.name === name)) throw new DomainError(`a domain named ${name} exists`);
    if (!Number.isInteger(memoryMiB) || memoryMiB < 1 || memoryMiB > 4096) throw new InvalidArgumentError(`memory ${memoryMiB} MiB out of range 1..4096`);
    let domid = this.nextDomid;
    while (this.domains.has(domid)) domid++;
    if (domid >= DOMID_HW) throw new DomainError(`no free domain ids (max ${MAX_DOMAINS - 2} guests)`);
    this.nextDomid = domid + 1;
    const d = this.createDomainWithId(domid, name, (memoryMiB * 1024 * 1024) / PAGE_SIZE, linked);
    this.log.info({ domid, name, memoryMiB }, 'domain created');
    return d;
  }

  /** Reclaim everything a domain held: ports, grants mapped by others, store watches, store nodes. */
  destroyDomain(domid: number): void {
    const d = this.domains.get(domid);
    if (!d || domid === 0) throw new DomainError(`no guest domain ${domid}`);
    d.state = 'dying';
    this.evtchn.destroyDomain(domid);
    this.grants.unregisterDomain(domid);
    this.store.releaseDomain(domid);
    try {
      this.store.rm(0, `/local/domain/${domid}`);
    } catch (e) {
      if (!(e instanceof StoreError)) throw e;
    }
    this.domains.delete(domid);
    this.log.info({ domid, name: d.name }, 'domain destroyed');
  }

  list(): DomainInfo[] {
    const now = Date.now();
    return [...this.domains.values()].map((d) => ({
      domid: d.domid,
      name: d.name,
      memoryKiB: d.memory.buffer.byteLength / 1024,
      state: d.state,
      uptimeSec: Math.round((now - d.createdAt) / 1000),
    }));
  }

  /**
   * Attach a guest that runs across a link (ws transport): from now on its grants, ring pages
   * and events travel on `peer`, and `domain.memory` is dom0's mirror of its memory.
   */
  attachLinkedGuest(peer: RpcPeer, domid: number): RemoteGuestEnd {
    const d = this.domains.get(domid);
    if (!d || domid === 0) throw new DomainError(`no guest domain ${domid}`);
    if (!d.linked) throw new DomainError(`domain ${domid} was not created for a linked guest`);
    if (d.link) throw new DomainError(`domain ${domid} already has a guest attached`);
    d.link = new RemoteGuestEnd(peer, domid, d.memory, d.grantTable, this.evtchn, (td, tp) => this.deliverEvent(td, tp));
    this.bindGuestHypercalls(peer, domid);
    peer.link.onClose(() => {
      if (this.domains.get(domid) === d) d.link = undefined;
    });
    return d.link;
  }

  /** Deliver an event the hypervisor routed: to a domain in this process or across its link. */
  deliverEvent(domid: number, port: number): void {
    const link = domid === DOMID_HW ? this.hardwareLink : this.domains.get(domid)?.link;
    if (link) link.sendEvent(port);
    else this.evtchn.mem.setPending(domid, port);
  }

  /** The hardware simulator when it runs across a link (its own process). */
  hardwareLink?: MachineLinkEnd;

  /**
   * Attach the hardware across a link: it may write (by DMA) any frame of any domain in this
   * host — dom0's memory or a guest's (or dom0's mirror of it) — and its events are resolved here.
   */
  attachHardware(peer: RpcPeer): MachineLinkEnd {
    const link = new MachineLinkEnd(
      peer,
      (domid, pfn) => {
        const m = this.domains.get(domid)?.memory;
        return m && m.hasFrame(pfn) ? m.page(pfn) : undefined;
      },
      (port) => {
        try {
          const t = this.evtchn.resolveSend(DOMID_HW, port);
          this.deliverEvent(t.domid, t.port);
        } catch {
          link.counters.rejected++;
        }
      },
    );
    this.hardwareLink = link;
    peer.link.onClose(() => {
      if (this.hardwareLink === link) this.hardwareLink = undefined;
    });
    return link;
  }

  /**
   * Bind a connection's hypercalls to the domain it speaks for. Every handler uses `domid`
   * from this closure, never from the message.
   */
  bindGuestHypercalls(peer: RpcPeer, domid: number): void {
    const s = this.store;
    // Params are checked against HypercallContract before any handler runs.
    serveContract(peer, HypercallContract, {
      evtchnAllocUnbound: (p) => this.evtchn.allocUnbound(domid, p.remoteDom),
      evtchnBindInterdomain: (p) => this.evtchn.bindInterdomain(domid, p.remoteDom, p.remotePort),
      evtchnClose: (p) => this.evtchn.close(domid, p.port),
      evtchnStatus: (p) => this.evtchn.status(domid, p.port),
      storeRead: (p) => s.read(domid, p.path, p.tx),
      storeTryRead: (p) => s.tryRead(domid, p.path, p.tx) ?? null,
      storeWrite: (p) => s.write(domid, p.path, p.value, p.tx),
      storeMkdir: (p) => s.mkdir(domid, p.path, p.tx),
      storeRm: (p) => s.rm(domid, p.path, p.tx),
      storeDirectory: (p) => s.directory(domid, p.path, p.tx),
      storeWatch: ({ path, token }) => s.watch(domid, path, token, (changed) => notify(peer, HypercallContract.notifications.storeWatchFired, { token, path: changed })),
      storeUnwatch: (p) => s.unwatch(domid, p.path, p.token),
      storeTxStart: () => s.transactionStart(domid),
      storeTxEnd: (p) => s.transactionEnd(domid, p.tx, p.commit),
    });
  }
}
