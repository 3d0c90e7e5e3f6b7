/**
 * A frontend driven directly by a test, built only from shared primitives (grant table, ring,
 * event gate, store as the guest's domid). It can do everything a real frontend does — and
 * everything a hostile one might: write garbage entries, forge indices, name grants it never
 * issued, storm the event channel.
 */
import { MessageChannel } from 'node:worker_threads';
import {
  GuestLinkEnd,
  GuestMemory,
  PortLink,
  RemoteStoreClient,
  RpcPeer,
  createEventMemory,
  createGrantTableMemory,
  type PageSync,
  type StoreClient,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  EventChannelGate,
  FrameAllocator,
  FrontRing,
  GrantTable,
  LocalStoreClient,
  REQ_PROD,
  XenbusState,
  blkifProtocol,
  frontendPath,
  initSharedRing,
  netifRxProtocol,
  netifTxProtocol,
  waitForState,
  type BlkifRequest,
  type BlkifResponse,
  type NetifRxRequest,
  type NetifRxResponse,
  type NetifTxRequest,
  type NetifTxResponse,
} from '@ringvisor/shared';
import type { Hypervisor, Domain } from '../../src/hypervisor/hypervisor.js';

/**
 * The guest side, in either transport: `shared` works on the hypervisor's shared memory (threads);
 * `linked` keeps its own memory and reaches dom0 only through a domain link (the ws data path),
 * over a MessagePort here.
 */
export class RawGuest {
  readonly grants: GrantTable;
  readonly frames: FrameAllocator;
  readonly events: EventChannelGate;
  readonly store: StoreClient;
  readonly memory: GuestMemory;
  private readonly link?: GuestLinkEnd;
  private readonly hypercalls?: RpcPeer;

  constructor(
    readonly hv: Hypervisor,
    readonly domain: Domain,
    readonly mode: 'shared' | 'linked' = 'shared',
  ) {
    if (mode === 'shared') {
      this.memory = domain.memory;
      this.grants = new GrantTable(domain.grantTable, domain.domid);
      this.events = new EventChannelGate(hv.eventMemory, domain.domid);
      this.store = new LocalStoreClient(hv.store, domain.domid);
    } else {
      const { port1, port2 } = new MessageChannel();
      hv.attachLinkedGuest(new RpcPeer(new PortLink(port1), `dom0-for-${domain.domid}`), domain.domid);
      const peer = new RpcPeer(new PortLink(port2), `raw-guest-${domain.domid}`);
      this.hypercalls = peer;
      this.memory = GuestMemory.allocate(domain.domid, domain.memory.frames);
      this.grants = new GrantTable(createGrantTableMemory(), domain.domid);
      this.link = new GuestLinkEnd(peer, domain.domid, this.memory, this.grants, () => this.events.mem);
      this.events = new EventChannelGate(createEventMemory(), domain.domid, this.link.routing());
      this.store = new RemoteStoreClient(peer, domain.domid);
    }
    this.frames = new FrameAllocator(this.memory);
    this.events.start();
  }

  get domid(): number {
    return this.domain.domid;
  }

  page(pfn: number): Uint8Array {
    return this.memory.page(pfn);
  }

  /** EVTCHNOP_alloc_unbound for dom0, as a hypercall in either transport. */
  async allocUnbound(): Promise<number> {
    return this.hypercalls ? this.hypercalls.call<number>('evtchn.allocUnbound', { remoteDom: 0 }) : this.hv.evtchn.allocUnbound(this.domid, 0);
  }

  /** The PageSync for a ring on our frame (linked mode), with its late wake. */
  ringSync(pfn: number, lateWake: () => void): PageSync | undefined {
    if (!this.link) return undefined;
    const sync = this.link.ringSync(pfn, this.page(pfn));
    sync.lateWake = lateWake;
    return sync;
  }

  close(): void {
    this.events.stop();
    this.hypercalls?.close('test done');
  }

  /**
   * A fresh frame granted to dom0, filled first: across a link a grant carries the page's
   * contents as they are when it is made (a lease), so data goes in before the grant.
   */
  grantFrame(readonly: boolean, fill?: (page: Uint8Array) => void): { pfn: number; gref: number } {
    const pfn = this.frames.alloc();
    fill?.(this.page(pfn));
    return { pfn, gref: this.grants.grantAccess(0, pfn, readonly) };
  }
}

/** Wait until `pred` holds, yielding to the event loop (backends run on it). Bounded. */
export async function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

export class RawBlkFront {
  ring!: FrontRing<BlkifRequest, BlkifResponse>;
  port = -1;
  readonly responses: BlkifResponse[] = [];
  private readonly dir: string;

  constructor(
    readonly g: RawGuest,
    readonly devid: number,
  ) {
    this.dir = frontendPath(g.domid, 'vbd', devid);
  }

  async connect(): Promise<void> {
    const { g } = this;
    const backend = await g.store.read(`${this.dir}/backend`);
    await waitForState(g.store, backend, (s) => s === XenbusState.InitWait);
    const pfn = g.frames.alloc();
    initSharedRing(g.page(pfn));
    this.ring = new FrontRing(g.page(pfn), blkifProtocol, g.ringSync(pfn, () => g.events.send(this.port)));
    const gref = g.grants.grantAccess(0, pfn, false);
    this.port = await g.allocUnbound();
    g.events.on(this.port, () => this.collect());
    await g.store.write(`${this.dir}/ring-ref`, String(gref));
    await g.store.write(`${this.dir}/event-channel`, String(this.port));
    await g.store.write(`${this.dir}/state`, String(XenbusState.Initialised));
    await waitForState(g.store, backend, (s) => s === XenbusState.Connected);
    await g.store.write(`${this.dir}/state`, String(XenbusState.Connected));
  }

  collect(): void {
    do {
      for (;;) {
        const r = this.ring.takeResponse();
        if (!r) break;
        this.responses.push(r);
      }
    } while (this.ring.finalCheckForResponses());
  }

  /** Put raw requests on the ring and kick the backend if the ring says so. */
  submit(...reqs: BlkifRequest[]): void {
    for (const r of reqs) this.ring.putRequest(r);
    if (this.ring.pushRequests()) this.g.events.send(this.port);
  }

  async request(req: BlkifRequest): Promise<BlkifResponse> {
    this.submit(req);
    await until(() => this.responses.some((r) => r.id === req.id), `response to request ${req.id}`);
    return this.responses.find((r) => r.id === req.id)!;
  }

  /** A well-formed one-page write or read of 8 sectors at `sector` (u64 id and sector: any size). */
  rw(op: typeof BLKIF_OP_READ | typeof BLKIF_OP_WRITE, id: number | bigint, sector: number | bigint, gref: number): BlkifRequest {
    return { operation: op, nrSegments: 1, handle: this.devid, id: BigInt(id), sectorNumber: BigInt(sector), segments: [{ gref, firstSect: 0, lastSect: 7 }] };
  }

  /** Forge req_prod directly in the shared page (a buggy or malicious frontend). */
  forgeReqProd(value: number): void {
    this.ring.page.store(REQ_PROD, value);
    this.g.events.send(this.port);
  }
}

export class RawNetFront {
  tx!: FrontRing<NetifTxRequest, NetifTxResponse>;
  rx!: FrontRing<NetifRxRequest, NetifRxResponse>;
  port = -1;
  readonly txResponses: NetifTxResponse[] = [];
  readonly rxResponses: NetifRxResponse[] = [];
  private readonly dir: string;

  constructor(
    readonly g: RawGuest,
    readonly devid: number,
  ) {
    this.dir = frontendPath(g.domid, 'vif', devid);
  }

  async connect(): Promise<void> {
    const { g } = this;
    const backend = await g.store.read(`${this.dir}/backend`);
    await waitForState(g.store, backend, (s) => s === XenbusState.InitWait);
    const tpfn = g.frames.alloc();
    const rpfn = g.frames.alloc();
    initSharedRing(g.page(tpfn));
    initSharedRing(g.page(rpfn));
    this.tx = new FrontRing(g.page(tpfn), netifTxProtocol, g.ringSync(tpfn, () => g.events.send(this.port)));
    this.rx = new FrontRing(g.page(rpfn), netifRxProtocol, g.ringSync(rpfn, () => g.events.send(this.port)));
    const t = { gref: g.grants.grantAccess(0, tpfn, false) };
    const r = { gref: g.grants.grantAccess(0, rpfn, false) };
    this.port = await g.allocUnbound();
    g.events.on(this.port, () => this.collect());
    await g.store.write(`${this.dir}/tx-ring-ref`, String(t.gref));
    await g.store.write(`${this.dir}/rx-ring-ref`, String(r.gref));
    await g.store.write(`${this.dir}/event-channel`, String(this.port));
    await g.store.write(`${this.dir}/state`, String(XenbusState.Initialised));
    await waitForState(g.store, backend, (s) => s === XenbusState.Connected);
    await g.store.write(`${this.dir}/state`, String(XenbusState.Connected));
  }

  collect(): void {
    for (const [ring, out] of [
      [this.tx, this.txResponses],
      [this.rx, this.rxResponses],
    ] as const) {
      do {
        for (;;) {
          const x = (ring as FrontRing<unknown, NetifTxResponse | NetifRxResponse>).takeResponse();
          if (!x) break;
          (out as Array<NetifTxResponse | NetifRxResponse>).push(x);
        }
      } while ((ring as FrontRing<unknown, unknown>).finalCheckForResponses());
    }
  }

  sendTx(...reqs: NetifTxRequest[]): void {
    for (const r of reqs) this.tx.putRequest(r);
    if (this.tx.pushRequests()) this.g.events.send(this.port);
  }

  postRx(...reqs: NetifRxRequest[]): void {
    for (const r of reqs) this.rx.putRequest(r);
    if (this.rx.pushRequests()) this.g.events.send(this.port);
  }
}
