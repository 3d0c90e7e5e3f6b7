/**
 * netback — one guest vif, a port on dom0's software bridge (copying netback, as Linux's).
 *
 * TX (guest → world): take a tx request (private copy), validate it, charge it to the vif's
 * credit, grant-copy the frame out of the guest's page into an skb in dom0 memory, answer the
 * request, and hand the skb to the bridge.
 * RX (world → guest): frames the bridge delivers wait in a bounded per-vif queue; each is
 * grant-copied into the next empty buffer the guest posted on the rx ring. A guest that stops
 * posting buffers loses frames (counted), never makes dom0 hold more than the queue limit.
 *
 * Both rings share one event channel. Each pass handles at most one ring's worth of each and
 * then yields, so one busy guest cannot starve another.
 */
import {
  BackRing,
  NETIF_RSP_ERROR,
  NETIF_RSP_OKAY,
  RSP_PROD,
  RogueRingError,
  XenbusState,
  GNTST_okay,
  netifRxProtocol,
  netifTxProtocol,
  type GrantMapping,
  type Logger,
  type NetifRxRequest,
  type NetifRxResponse,
  type NetifTxRequest,
  type NetifTxResponse,
} from '@ringvisor/shared';
import type { Hypervisor } from '../../hypervisor/hypervisor.js';
import type { Skb } from '../../drivers/skb.js';
import type { BridgePort, SoftwareBridge } from './bridge.js';
import { TxCredit, parseRate } from './credit.js';
import { XenbusBackend } from '../xenbus-backend.js';
import { newNetbackMetrics, type NetbackMetrics } from './metrics.js';
import { validateTxRequest } from './request.js';

export const NETBACK_RX_QUEUE_LIMIT = 256;

export type NetbackState = 'init' | 'waiting' | 'connected' | 'rogue' | 'closing' | 'closed';

export class NetBackend implements BridgePort {
  readonly name: string;
  readonly metrics: NetbackMetrics = newNetbackMetrics();
  state: NetbackState = 'init';
  readonly xb: XenbusBackend;
  private tx?: BackRing<NetifTxRequest, NetifTxResponse>;
  private rx?: BackRing<NetifRxRequest, NetifRxResponse>;
  private maps: GrantMapping[] = [];
  private port = -1;
  private scheduled = false;
  private creditTimer?: NodeJS.Timeout;
  private stalledTx?: NetifTxRequest;
  private credit = new TxCredit(undefined);
  private readonly rxQueue: Skb[] = [];
  private readonly log: Logger;

  constructor(
    readonly hv: Hypervisor,
    readonly bridge: SoftwareBridge,
    readonly frontDomid: number,
    readonly devid: number,
    log: Logger,
  ) {
    this.name = `vif${frontDomid}.${devid}`;
    this.xb = new XenbusBackend(hv.dom0Store, 'vif', frontDomid, devid);
    this.log = log.child({ backend: 'vif', domid: frontDomid, devid });
  }

  get ringStats(): { tx?: BackRing<NetifTxRequest, NetifTxResponse>['stats']; rx?: BackRing<NetifRxRequest, NetifRxResponse>['stats'] } {
    return { tx: this.tx?.stats, rx: this.rx?.stats };
  }

  get rxQueued(): number {
    return this.rxQueue.length;
  }

  async start(): Promise<void> {
    const s = this.hv.dom0Store;
    await s.write(`${this.xb.dir}/feature-rx-copy`, '1');
    await s.write(`${this.xb.dir}/feature-sg`, '0');
    const rate = await s.tryRead(`${this.xb.dir}/rate`);
    this.credit = new TxCredit(rate ? parseRate(rate) : undefined);
    await this.xb.setState(XenbusState.InitWait);
    this.state = 'waiting';
    await this.xb.watchFrontend((fs) => void this.onFrontendState(fs).catch((e) => this.log.error({ err: e }, 'netback state change failed')));
  }

  private async onFrontendState(fs: XenbusState): Promise<void> {
    if (fs === XenbusState.Initialised && this.state === 'waiting') await this.connect();
    else if ((fs === XenbusState.Closing || fs === XenbusState.Closed) && (this.state === 'connected' || this.state === 'rogue')) {
      this.disconnect();
      await this.xb.setState(XenbusState.Closing);
      await this.xb.setState(XenbusState.Closed);
    } else if (fs === XenbusState.Initialising && this.state === 'closed') {
      this.state = 'waiting';
      await this.xb.setState(XenbusState.InitWait);
    }
  }

  private async connect(): Promise<void> {
    try {
      const txRef = await this.xb.frontendInt('tx-ring-ref');
      const rxRef = await this.xb.frontendInt('rx-ring-ref');
      const evtchn = await this.xb.frontendInt('event-channel');
      const txMap = this.hv.grants.map(0, this.frontDomid, txRef, true);
      this.maps.push(txMap);
      const rxMap = this.hv.grants.map(0, this.frontDomid, rxRef, true);
      this.maps.push(rxMap);
      this.metrics.grantMaps += 2;
      this.tx = BackRing.attach(txMap.bytes, netifTxProtocol, txMap.sync);
      this.rx = BackRing.attach(rxMap.bytes, netifRxProtocol, rxMap.sync);
      for (const m of [txMap, rxMap]) if (m.sync) m.sync.lateWake = () => this.notify(true);
      this.port = this.hv.evtchn.bindInterdomain(0, this.frontDomid, evtchn);
      this.hv.dom0Events.on(this.port, () => {
        this.metrics.events++;
        this.kick();
      });
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'frontend handshake rejected');
      this.releaseRings();
      this.state = 'closed';
      await this.xb.setState(XenbusState.Closed);
      return;
    }
    this.state = 'connected';
    this.bridge.add(this);
    await this.xb.setState(XenbusState.Connected);
    this.kick();
  }

  /** Bridge → this guest. Takes one reference of `skb`. */
  deliver(skb: Skb): void {
    if (this.state !== 'connected' || this.rxQueue.length >= NETBACK_RX_QUEUE_LIMIT) {
      this.metrics.rxDropped++;
      this.bridge.pool.put(skb);
      return;
    }
    this.rxQueue.push(skb);
    this.kick();
  }

  kick(): void {
    if (this.scheduled || this.state !== 'connected') return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.process();
    });
  }

  private process(): void {
    if (this.state !== 'connected' || !this.tx || !this.rx) return;
    try {
      const txMore = this.processTx(this.tx);
      const rxMore = this.processRx(this.rx);
      if (txMore || rxMore) {
        this.metrics.yields++;
        this.kick();
      }
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.state = 'rogue';
      this.metrics.rogue++;
      this.bridge.remove(this);
      this.log.warn({ err: e.message }, 'rogue frontend: vif stopped');
    }
  }

  /** One bounded pass over the tx ring; true if work remains. */
  private processTx(ring: BackRing<NetifTxRequest, NetifTxResponse>): boolean {
    let budget = ring.size;
    let answered = 0;
    for (;;) {
      while (budget > 0) {
        const req = this.stalledTx ?? ring.takeRequest();
        if (!req) break;
        this.stalledTx = undefined;
        const v = validateTxRequest(req);
        if (v.ok && !this.credit.take(req.size)) {
          // Out of credit: keep the request and come back when the window replenishes.
          this.stalledTx = req;
          this.metrics.throttled++;
          this.armCreditTimer();
          break;
        }
        budget--;
        answered++;
        ring.putResponse({ id: req.id, status: v.ok ? this.transmitOne(req) : NETIF_RSP_ERROR });
        if (!v.ok) this.metrics.txErrors++;
      }
      if (this.stalledTx || budget === 0) break;
      if (!ring.finalCheckForRequests()) break;
    }
    if (answered > 0) this.notify(ring.pushResponses());
    return budget === 0;
  }

  private armCreditTimer(): void {
    if (this.creditTimer) return;
    this.creditTimer = setTimeout(() => {
      this.creditTimer = undefined;
      this.kick();
    }, Math.max(1, Math.ceil(this.credit.msUntilReplenish())));
    this.creditTimer.unref();
  }

  private transmitOne(req: NetifTxRequest): number {
    const pool = this.bridge.pool;
    const skb = pool.alloc();
    if (!skb) return NETIF_RSP_ERROR;
    const [st] = this.hv.grants.copy(0, [
      { source: { ref: req.gref, domid: this.frontDomid, offset: req.offset }, dest: { pfn: skb.pfn, domid: 0, offset: 0 }, len: req.size },
    ]);
    this.metrics.grantCopies++;
    if (st !== GNTST_okay) {
      pool.put(skb);
      this.metrics.txErrors++;
      return NETIF_RSP_ERROR;
    }
    this.metrics.bytesCopied += req.size;
    skb.len = req.size;
    this.metrics.txPackets++;
    this.metrics.txBytes += req.size;
    this.bridge.input(this, skb);
    return NETIF_RSP_OKAY;
  }

  /** One bounded pass moving queued frames into posted rx buffers; true if work remains. */
  private processRx(ring: BackRing<NetifRxRequest, NetifRxResponse>): boolean {
    let budget = ring.size;
    let answered = 0;
    const pool = this.bridge.pool;
    while (budget > 0 && this.rxQueue.length > 0) {
      const req = ring.takeRequest();
      if (!req) {
        if (ring.finalCheckForRequests()) continue;
        break;
      }
      budget--;
      answered++;
      const skb = this.rxQueue.shift()!;
      const [st] = this.hv.grants.copy(0, [
        { source: { pfn: skb.pfn, domid: 0, offset: 0 }, dest: { ref: req.gref, domid: this.frontDomid, offset: 0 }, len: skb.len },
      ]);
      this.metrics.grantCopies++;
      if (st === GNTST_okay) {
        this.metrics.bytesCopied += skb.len;
        this.metrics.rxPackets++;
        this.metrics.rxBytes += skb.len;
        ring.putResponse({ id: req.id, offset: 0, flags: 0, status: skb.len });
      } else {
        this.metrics.rxErrors++;
        ring.putResponse({ id: req.id, offset: 0, flags: 0, status: NETIF_RSP_ERROR });
      }
      pool.put(skb);
    }
    if (answered > 0) this.notify(ring.pushResponses());
    return budget === 0 && this.rxQueue.length > 0;
  }

  private notify(needed: boolean): void {
    if (needed && this.port >= 0) {
      this.hv.dom0Events.send(this.port);
      this.metrics.notifications++;
    } else this.metrics.suppressed++;
  }

  disconnect(): void {
    if (this.state === 'closed') return;
    this.state = 'closing';
    this.bridge.remove(this);
    if (this.creditTimer) clearTimeout(this.creditTimer);
    this.creditTimer = undefined;
    for (const skb of this.rxQueue.splice(0)) this.bridge.pool.put(skb);
    if (this.tx && this.tx.rspProdPvt !== this.tx.page.load(RSP_PROD)) this.tx.pushResponses();
    this.releaseRings();
    this.state = 'closed';
  }

  private releaseRings(): void {
    if (this.port >= 0) {
      this.hv.dom0Events.off(this.port);
      try {
        this.hv.evtchn.close(0, this.port);
      } catch {
        /* guest already gone */
      }
      this.port = -1;
    }
    for (const m of this.maps) {
      try {
        this.hv.grants.unmap(0, m.handle);
      } catch {
        /* guest destroyed */
      }
    }
    this.maps = [];
    this.tx = undefined;
    this.rx = undefined;
  }

  async destroy(): Promise<void> {
    await this.xb.stopWatching();
    this.disconnect();
  }
}
