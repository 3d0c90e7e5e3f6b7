/**
 * A frontend driven directly by a test, built only from shared primitives (grant table, ring,
 * event gate, store as the guest's domid). It can do everything a real frontend does — and
 * everything a hostile one might: write garbage entries, forge indices, name grants it never
 * issued, storm the event channel.
 */
import {
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

export class RawGuest {
  readonly grants: GrantTable;
  readonly frames: FrameAllocator;
  readonly events: EventChannelGate;
  readonly store: LocalStoreClient;

  constructor(
    readonly hv: Hypervisor,
    readonly domain: Domain,
  ) {
    this.grants = new GrantTable(domain.grantTable, domain.domid);
    this.frames = new FrameAllocator(domain.memory);
    this.events = new EventChannelGate(hv.eventMemory, domain.domid);
    this.store = new LocalStoreClient(hv.store, domain.domid);
    this.events.start();
  }

  get domid(): number {
    return this.domain.domid;
  }

  page(pfn: number): Uint8Array {
    return this.domain.memory.page(pfn);
  }

  /** A fresh frame granted to dom0. */
  grantFrame(readonly: boolean): { pfn: number; gref: number } {
    const pfn = this.frames.alloc();
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
    const { pfn, gref } = g.grantFrame(false);
    initSharedRing(g.page(pfn));
    this.ring = new FrontRing(g.page(pfn), blkifProtocol);
    this.port = g.hv.evtchn.allocUnbound(g.domid, 0);
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

  /** A well-formed one-page write or read of 8 sectors at `sector`. */
  rw(op: typeof BLKIF_OP_READ | typeof BLKIF_OP_WRITE, id: number, sector: number, gref: number): BlkifRequest {
    return { operation: op, nrSegments: 1, handle: this.devid, id, sectorNumber: sector, segments: [{ gref, firstSect: 0, lastSect: 7 }] };
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
    const t = g.grantFrame(false);
    const r = g.grantFrame(false);
    initSharedRing(g.page(t.pfn));
    initSharedRing(g.page(r.pfn));
    this.tx = new FrontRing(g.page(t.pfn), netifTxProtocol);
    this.rx = new FrontRing(g.page(r.pfn), netifRxProtocol);
    this.port = g.hv.evtchn.allocUnbound(g.domid, 0);
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
