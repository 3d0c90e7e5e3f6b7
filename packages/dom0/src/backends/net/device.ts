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
 *
 * Persistence: netback's work is synchronous (grant copies), so quiesce() only stops the passes;
 * save() records the rings' private indices, a tx request held for credit, and the frames queued
 * for the guest (state.ts). NetBackend.restore maps the same rings and carries on.
 */
import {
  BackRing,
  NETIF_RSP_ERROR,
  NETIF_RSP_OKAY,
  RSP_PROD,
  RogueRingError,
  GNTST_okay,
  netifRxProtocol,
  netifTxProtocol,
  type Logger,
  type NetifRxRequest,
  type NetifRxResponse,
  type NetifTxRequest,
  type NetifTxResponse,
  frameChannel,
  traceNow,
  TxCredit,
  parseRate,
  DeviceError,
  StateRecordError,
  loadRecord,
  saveRecord,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
} from '@ringvisor/shared';
import type { Hypervisor } from '../../hypervisor/hypervisor.js';
import type { Skb } from '../../physdev/skb.js';
import type { BridgePort, SoftwareBridge } from './bridge.js';
import { SplitBackend } from '../split-backend.js';
import { newNetbackMetrics, type NetbackMetrics } from './metrics.js';
import { validateTxRequest } from './request.js';
import { NETBACK_RX_QUEUE_LIMIT, NETBACK_STATE, type NetbackSavedState } from './state.js';

export { NETBACK_RX_QUEUE_LIMIT };

export class NetBackend extends SplitBackend<NetbackMetrics> implements BridgePort {
  readonly name: string;
  readonly identity: DeviceIdentity;
  /** The frontend's grant references of the tx and rx ring pages (for save). */
  private ringRefs = { tx: -1, rx: -1 };
  private tx?: BackRing<NetifTxRequest, NetifTxResponse>;
  private rx?: BackRing<NetifRxRequest, NetifRxResponse>;
  private creditTimer?: NodeJS.Timeout;
  private stalledTx?: NetifTxRequest;
  private credit = new TxCredit(undefined);
  private readonly rxQueue: Skb[] = [];

  constructor(
    hv: Hypervisor,
    readonly bridge: SoftwareBridge,
    frontDomid: number,
    devid: number,
    log: Logger,
  ) {
    super(hv, 'vif', frontDomid, devid, newNetbackMetrics(), log);
    this.name = `vif${frontDomid}.${devid}`;
    this.identity = { kind: 'net', mode: 'pv', side: 'dom0', type: 'netback', devid };
  }

  /** Frames carried either way, their bytes, and every frame lost or refused. */
  metrics(): DeviceMetrics {
    const m = this.counters;
    return { ops: m.txPackets + m.rxPackets, bytes: m.txBytes + m.rxBytes, errors: m.txErrors + m.rxErrors + m.rxDropped, detail: { ...m, rxQueued: this.rxQueue.length, state: this.state } };
  }

  /** Nothing netback starts outlives a pass (grant copies are synchronous). */
  protected async drainBacking(): Promise<void> {}

  /** The record of a quiesced backend (state.ts says what it holds and why). */
  save(): DeviceStateRecord {
    const link = this.savedLink();
    const { tx, rx } = this;
    if (!tx || !rx) throw new DeviceError(`${this.device}: no rings to save`);
    const ring = (r: BackRing<unknown, unknown>, ref: number) => ({ ref, reqCons: r.reqCons, rspProdPvt: r.rspProdPvt, rspProd: r.page.load(RSP_PROD) });
    const state: NetbackSavedState = {
      ...link,
      tx: ring(tx as BackRing<unknown, unknown>, this.ringRefs.tx),
      rx: ring(rx as BackRing<unknown, unknown>, this.ringRefs.rx),
      stalledTx: this.stalledTx ? { ...this.stalledTx } : null,
      rxQueue: this.rxQueue.map((skb) => this.bridge.pool.data(skb).slice()),
      counters: { ...this.counters },
    };
    return saveRecord(NETBACK_STATE, `dom${this.frontDomid}/vif/${this.devid}`, state);
  }

  /**
   * A fresh backend from a saved record, with the saved one's constructor arguments; the record
   * is checked completely first (StateRecordError, nothing mapped, bound or queued). It comes back
   * quiesced, on the bridge; resume() carries on. Drop the saved instance with abandon() (which
   * takes it off the bridge).
   */
  static async restore(args: ConstructorParameters<typeof NetBackend>, record: unknown): Promise<NetBackend> {
    const [hv, bridge, frontDomid, devid, log] = args;
    const st = loadRecord(NETBACK_STATE, record);
    if (st.frontDomid !== frontDomid || st.devid !== devid) throw new StateRecordError(`netback: the record is of domain ${st.frontDomid} vif ${st.devid}, not domain ${frontDomid} vif ${devid}`);
    if (bridge.pool.available < st.rxQueue.length) throw new StateRecordError(`netback: ${st.rxQueue.length} queued frames, ${bridge.pool.available} free skbs`);
    const b = new NetBackend(hv, bridge, frontDomid, devid, log);
    const rate = await hv.dom0Store.tryRead(`${b.xb.dir}/rate`);
    b.credit = new TxCredit(rate ? parseRate(rate) : undefined);
    for (const [k, v] of Object.entries(st.counters)) if (k in b.counters) b.counters[k as keyof NetbackMetrics] = v;
    const tx = b.mapRing(st.tx.ref);
    const rx = b.mapRing(st.rx.ref);
    b.ringRefs = { tx: st.tx.ref, rx: st.rx.ref };
    b.tx = BackRing.resume(tx.bytes, netifTxProtocol, st.tx, tx.sync);
    b.rx = BackRing.resume(rx.bytes, netifRxProtocol, st.rx, rx.sync);
    b.labelRing(b.tx as BackRing<unknown, unknown>, 'tx');
    b.labelRing(b.rx as BackRing<unknown, unknown>, 'rx');
    b.stalledTx = st.stalledTx ? { ...st.stalledTx } : undefined;
    for (const frame of st.rxQueue) {
      const skb = bridge.pool.alloc()!;
      skb.len = frame.byteLength;
      bridge.pool.data(skb).set(frame);
      b.rxQueue.push(skb);
    }
    bridge.add(b);
    await b.restoreLink(st);
    return b;
  }

  override async abandon(): Promise<void> {
    this.bridge.remove(this);
    if (this.creditTimer) clearTimeout(this.creditTimer);
    this.creditTimer = undefined;
    for (const skb of this.rxQueue.splice(0)) this.bridge.pool.put(skb);
    await super.abandon();
  }

  get ringStats(): { tx?: BackRing<NetifTxRequest, NetifTxResponse>['stats']; rx?: BackRing<NetifRxRequest, NetifRxResponse>['stats'] } {
    return { tx: this.tx?.stats, rx: this.rx?.stats };
  }

  get rxQueued(): number {
    return this.rxQueue.length;
  }

  protected features(): Record<string, string> {
    return { 'feature-rx-copy': '1', 'feature-sg': '0' };
  }

  override async start(): Promise<void> {
    const rate = await this.hv.dom0Store.tryRead(`${this.xb.dir}/rate`);
    this.credit = new TxCredit(rate ? parseRate(rate) : undefined);
    await super.start();
  }

  protected async attachRings(): Promise<void> {
    this.ringRefs = { tx: await this.xb.frontendInt('tx-ring-ref'), rx: await this.xb.frontendInt('rx-ring-ref') };
    const tx = this.mapRing(this.ringRefs.tx);
    const rx = this.mapRing(this.ringRefs.rx);
    this.tx = BackRing.attach(tx.bytes, netifTxProtocol, tx.sync);
    this.rx = BackRing.attach(rx.bytes, netifRxProtocol, rx.sync);
    this.labelRing(this.tx as BackRing<unknown, unknown>, 'tx');
    this.labelRing(this.rx as BackRing<unknown, unknown>, 'rx');
    this.bridge.add(this);
  }

  rings(): Array<{ name: string; ring: BackRing<unknown, unknown> }> {
    const out: Array<{ name: string; ring: BackRing<unknown, unknown> }> = [];
    if (this.tx) out.push({ name: 'tx', ring: this.tx as BackRing<unknown, unknown> });
    if (this.rx) out.push({ name: 'rx', ring: this.rx as BackRing<unknown, unknown> });
    return out;
  }

  /** A frame crossing this vif (tx: from the guest), for captures. */
  private traceFrame(dir: 'tx' | 'rx', frame: Uint8Array): void {
    const domain = this.hv.domains.get(this.frontDomid)?.name ?? `dom${this.frontDomid}`;
    frameChannel.publish({ kind: 'frame', t: traceNow(), host: this.hv.host, domid: this.frontDomid, device: this.device, iface: `${domain}/${this.device}`, dir, len: frame.length, frame });
  }

  /** Bridge → this guest. Takes one reference of `skb`. */
  deliver(skb: Skb): void {
    if (this.state !== 'connected' || this.rxQueue.length >= NETBACK_RX_QUEUE_LIMIT) {
      this.counters.rxDropped++;
      this.bridge.pool.put(skb);
      return;
    }
    this.rxQueue.push(skb);
    this.kick();
  }

  protected process(): boolean {
    if (!this.tx || !this.rx) return false;
    try {
      const txMore = this.processTx(this.tx);
      const rxMore = this.processRx(this.rx);
      if (txMore || rxMore) this.counters.yields++;
      return txMore || rxMore;
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.bridge.remove(this);
      this.stopRogue(e.message);
      return false;
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
          this.counters.throttled++;
          this.armCreditTimer();
          break;
        }
        budget--;
        answered++;
        ring.putResponse({ id: req.id, status: v.ok ? this.transmitOne(req) : NETIF_RSP_ERROR });
        if (!v.ok) this.counters.txErrors++;
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
    this.counters.grantCopies++;
    if (st !== GNTST_okay) {
      pool.put(skb);
      this.counters.txErrors++;
      return NETIF_RSP_ERROR;
    }
    this.counters.bytesCopied += req.size;
    skb.len = req.size;
    this.counters.txPackets++;
    this.counters.txBytes += req.size;
    if (frameChannel.hasSubscribers) this.traceFrame('tx', pool.data(skb));
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
      this.counters.grantCopies++;
      if (st === GNTST_okay) {
        this.counters.bytesCopied += skb.len;
        this.counters.rxPackets++;
        this.counters.rxBytes += skb.len;
        if (frameChannel.hasSubscribers) this.traceFrame('rx', pool.data(skb));
        ring.putResponse({ id: req.id, offset: 0, flags: 0, status: skb.len });
      } else {
        this.counters.rxErrors++;
        ring.putResponse({ id: req.id, offset: 0, flags: 0, status: NETIF_RSP_ERROR });
      }
      pool.put(skb);
    }
    if (answered > 0) this.notify(ring.pushResponses());
    return budget === 0 && this.rxQueue.length > 0;
  }

  protected async detachRings(): Promise<void> {
    this.bridge.remove(this);
    if (this.creditTimer) clearTimeout(this.creditTimer);
    this.creditTimer = undefined;
    for (const skb of this.rxQueue.splice(0)) this.bridge.pool.put(skb);
    if (this.tx && this.tx.rspProdPvt !== this.tx.page.load(RSP_PROD)) this.tx.pushResponses();
    this.tx = undefined;
    this.rx = undefined;
  }
}
