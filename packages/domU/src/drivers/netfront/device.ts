/**
 * netfront — the guest's para-virtual NIC driver (Linux xen-netfront's shape), rx-copy mode.
 *
 * TX: each frame is copied into a transmit buffer frame, granted read-only to the backend, and
 * described by one tx request; the grant ends when its response arrives.
 * RX: the driver keeps the rx ring stocked with empty buffer frames granted writable to the
 * backend; the backend grant-copies each received frame into one of them. A consumed buffer is
 * re-posted with the same grant (the backend never maps it, so the grant stays valid).
 * One event channel serves both rings (no split event channels).
 *
 * Persistence (Device): quiesce() stops posting frames (transmit() queues them) and stops
 * collecting responses; save() records the rings' private indices and every buffer (state.ts).
 * NetFront.restore carries on from that record on the same kernel: frames already on the tx ring
 * are sent by the backend once, rx buffers already posted are filled once.
 */
import {
  errorFields,
  DeviceError,
  StateRecordError,
  loadRecord,
  saveRecord,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  ETH_MAX_FRAME,
  ETH_MIN_FRAME,
  FrontRing,
  NETIF_RSP_OKAY,
  PAGE_SIZE,
  RogueRingError,
  XenbusState,
  initSharedRing,
  inTransaction,
  netifRxProtocol,
  netifTxProtocol,
  type NetifRxRequest,
  type NetifRxResponse,
  type NetifTxRequest,
  type NetifTxResponse,
} from '@ringvisor/shared';
import type { GuestKernel } from '../../kernel/kernel.js';
import { XenbusFrontend } from '../../kernel/xenbus-frontend.js';
import { newNetfrontMetrics, type NetfrontMetrics } from './metrics.js';
import { NETFRONT_STATE, NETFRONT_TX_QUEUE_LIMIT, type NetfrontSavedState } from './state.js';

/** Frames waiting for a free tx slot before new ones are dropped (Linux's txqueuelen is 1000). */
const TX_QUEUE_LIMIT = NETFRONT_TX_QUEUE_LIMIT;

interface Buffer {
  pfn: number;
  gref: number;
}

export interface NetfrontOptions {
  /** Transmit buffers (frames in flight towards the backend at once). */
  txBuffers?: number;
  /** Receive buffers kept posted on the rx ring. */
  rxBuffers?: number;
}

export class NetFront implements Device {
  readonly xb: XenbusFrontend;
  /** What this frontend counts; `metrics()` maps it onto ops/bytes/errors. */
  readonly counters: NetfrontMetrics = newNetfrontMetrics();
  readonly identity: DeviceIdentity;
  /** Set by quiesce(): nothing goes onto a ring and no response is collected until resume(). */
  private quiesced = false;
  mac = '';
  connected = false;
  private tx?: FrontRing<NetifTxRequest, NetifTxResponse>;
  private rx?: FrontRing<NetifRxRequest, NetifRxResponse>;
  private readonly ringPfns: number[] = [];
  private readonly ringRefs: number[] = [];
  private port = -1;
  private readonly txFree: number[] = [];
  private readonly txInFlight = new Map<number, Buffer>();
  private readonly rxBufs: Buffer[] = [];
  private readonly txBuffers: Buffer[] = [];
  private readonly txQueue: Uint8Array[] = [];
  private readonly txBufCount: number;
  private readonly rxBufCount: number;
  private receiver: (frame: Uint8Array) => void = () => {};
  private txDrainWaiters: Array<() => void> = [];

  constructor(
    readonly kernel: GuestKernel,
    readonly devid: number,
    opts: NetfrontOptions = {},
  ) {
    this.xb = new XenbusFrontend(kernel.store, kernel.domid, 'vif', devid);
    this.txBufCount = Math.min(opts.txBuffers ?? 128, 256);
    this.rxBufCount = Math.min(opts.rxBuffers ?? 64, 256);
    this.identity = { kind: 'net', mode: 'pv', side: 'guest', type: 'netfront', devid };
  }

  /** The device's counters mapped onto ops/bytes/errors (what guest stats show for a pv vif). */
  metrics(): DeviceMetrics {
    const m = this.counters;
    return { ops: m.txPackets + m.rxPackets, bytes: m.txBytes + m.rxBytes, errors: m.txErrors + m.rxErrors + m.txDropped, detail: { ...m } };
  }

  attach(): Promise<void> {
    return this.connect();
  }

  stop(_reason: string): Promise<void> {
    return this.disconnect();
  }

  onReceive(cb: (frame: Uint8Array) => void): void {
    this.receiver = cb;
  }

  async connect(): Promise<void> {
    const { kernel, xb } = this;
    await xb.probe();
    this.mac = (await xb.backendValue('mac')) ?? (await kernel.store.read(`${xb.dir}/mac`));
    await xb.setState(XenbusState.Initialising);
    await xb.waitBackend((s) => s === XenbusState.InitWait);
    for (let i = 0; i < this.txBufCount; i++) this.txFree.push(i);
    await this.handshake();
    this.unwatch = await xb.watchBackend((s) => this.onBackendState(s));
  }

  private unwatch?: () => Promise<void>;
  private recovering = false;

  /** The backend went away and came back (restart): reconnect, as xennet's netback-changed does. */
  private onBackendState(s: XenbusState): void {
    if (!this.connected || this.recovering || this.quiesced) return;
    if (s === XenbusState.Closing || s === XenbusState.Closed || s === XenbusState.InitWait || s === XenbusState.Initialising)
      void this.recover().catch((e) => this.kernel.log.error({ err: e, devid: this.devid }, 'netfront recovery failed'));
  }

  /**
   * Reconnect to a restarted backend: collect what the old rings answered, drop the frames still
   * in flight (a NIC reset loses them; the datagram layer above copes), give back every grant and
   * page of the old rings and buffers, and handshake again with fresh rings. Queued frames wait.
   */
  private async recover(): Promise<void> {
    this.recovering = true;
    this.connected = false;
    this.counters.recoveries++;
    try {
      try {
        this.reapTx();
      } catch {
        /* a broken old ring: everything in flight is dropped below */
      }
      const { kernel } = this;
      for (const [id, b] of this.txInFlight) {
        if (b.gref >= 0 && !kernel.grants.endAccess(b.gref)) this.counters.leakedGrants++;
        b.gref = -1;
        this.txFree.push(id);
        this.counters.txDropped++;
      }
      this.txInFlight.clear();
      for (const b of this.rxBufs.splice(0)) {
        if (!kernel.grants.endAccess(b.gref)) this.counters.leakedGrants++;
        kernel.frames.release(b.pfn);
      }
      for (const r of this.ringRefs.splice(0)) if (!kernel.grants.endAccess(r)) this.counters.leakedGrants++;
      for (const pfn of this.ringPfns.splice(0)) kernel.frames.release(pfn);
      if (this.port >= 0) {
        kernel.events.off(this.port);
        await kernel.closePort(this.port).catch(() => {});
        this.port = -1;
      }
      this.tx = undefined;
      this.rx = undefined;
      await this.xb.setState(XenbusState.Closed);
      await this.xb.waitBackend((s) => s === XenbusState.InitWait, 60_000);
      await this.handshake();
      // Frames that waited meanwhile go out now.
      let posted = 0;
      while (this.txQueue.length > 0 && this.post(this.txQueue[0])) {
        this.txQueue.shift();
        posted++;
      }
      if (posted > 0) this.kickTx();
    } finally {
      this.recovering = false;
    }
  }

  /** Grant fresh rings, bind a channel, publish them, wait for Connected, stock the rx ring. */
  private async handshake(): Promise<void> {
    const { kernel, xb } = this;
    const rings: Array<FrontRing<NetifTxRequest, NetifTxResponse> | FrontRing<NetifRxRequest, NetifRxResponse>> = [];
    for (const protocol of [netifTxProtocol, netifRxProtocol] as const) {
      const pfn = kernel.frames.alloc();
      const page = kernel.memory.page(pfn);
      page.fill(0);
      initSharedRing(page);
      this.ringPfns.push(pfn);
      this.ringRefs.push(kernel.grants.grantAccess(xb.backendId, pfn, false));
      this.counters.grantOps++;
      const sync = kernel.ringSync(pfn, () => this.kick());
      rings.push(protocol === netifTxProtocol ? new FrontRing(page, netifTxProtocol, sync) : new FrontRing(page, netifRxProtocol, sync));
    }
    this.tx = rings[0] as FrontRing<NetifTxRequest, NetifTxResponse>;
    this.rx = rings[1] as FrontRing<NetifRxRequest, NetifRxResponse>;
    kernel.labelRing(this.tx, `vif${this.devid}`, 'tx');
    kernel.labelRing(this.rx, `vif${this.devid}`, 'rx');
    this.port = await kernel.allocUnboundPort(xb.backendId);
    kernel.events.on(this.port, () => this.onEvent());
    await inTransaction(kernel.store, async (t) => {
      await kernel.store.write(`${xb.dir}/tx-ring-ref`, String(this.ringRefs[0]), t);
      await kernel.store.write(`${xb.dir}/rx-ring-ref`, String(this.ringRefs[1]), t);
      await kernel.store.write(`${xb.dir}/event-channel`, String(this.port), t);
      await kernel.store.write(`${xb.dir}/request-rx-copy`, '1', t);
      await kernel.store.write(`${xb.dir}/state`, String(XenbusState.Initialised), t);
    });
    await xb.waitBackend((s) => s === XenbusState.Connected);
    // Stock the rx ring before announcing Connected, so the first frame finds a buffer.
    for (let id = 0; id < this.rxBufCount; id++) {
      const pfn = kernel.frames.alloc();
      this.rxBufs.push({ pfn, gref: kernel.grants.grantAccess(xb.backendId, pfn, false) });
      this.counters.grantOps++;
      this.rx.putRequest({ id, gref: this.rxBufs[id].gref });
    }
    this.pushRx();
    await xb.setState(XenbusState.Connected);
    this.connected = true;
  }

  /**
   * Transmit one Ethernet frame. When the ring or the buffers are exhausted the frame waits in a
   * bounded queue (the qdisc in front of a stopped netdev queue) and goes out as responses free
   * slots; only when that queue is full is the frame refused and false returned (counted as busy:
   * backpressure from a slow backend, not an error).
   */
  transmit(frame: Uint8Array): boolean {
    if (!this.connected || !this.tx) return false;
    if (frame.byteLength < ETH_MIN_FRAME || frame.byteLength > ETH_MAX_FRAME) throw new DeviceError(`frame of ${frame.byteLength} bytes`);
    if (this.txQueue.length > 0 || this.quiesced || !this.post(frame)) {
      if (this.txQueue.length >= TX_QUEUE_LIMIT) {
        this.counters.txBusy++;
        return false;
      }
      this.txQueue.push(frame.slice());
      this.counters.txQueued++;
      return true;
    }
    this.kickTx();
    return true;
  }

  private kickTx(): void {
    if (this.tx!.pushRequests()) this.kick();
    else this.counters.suppressed++;
  }

  private kick(): void {
    if (this.port < 0) return;
    if (this.kernel.notifyRemote(this.port)) this.counters.notifications++;
    else this.counters.lostNotifications++;
  }

  /** Put one frame on the ring (unpublished); false when no slot or buffer is free. */
  private post(frame: Uint8Array): boolean {
    const ring = this.tx!;
    const id = this.txFree.pop();
    if (id === undefined || ring.isFull()) {
      if (id !== undefined) this.txFree.push(id);
      return false;
    }
    let buf = this.txBuffers[id];
    if (!buf) {
      buf = { pfn: this.kernel.frames.alloc(), gref: -1 };
      this.txBuffers[id] = buf;
    }
    this.kernel.memory.page(buf.pfn).set(frame);
    buf.gref = this.kernel.grants.grantAccess(this.xb.backendId, buf.pfn, true);
    this.counters.grantOps++;
    this.txInFlight.set(id, buf);
    ring.putRequest({ gref: buf.gref, offset: 0, flags: 0, id, size: frame.byteLength });
    this.counters.txPackets++;
    this.counters.txBytes += frame.byteLength;
    return true;
  }

  /** Free transmit slots right now. */
  get txAvailable(): number {
    return this.tx ? Math.min(this.txFree.length, this.tx.freeRequests()) : 0;
  }

  private pushRx(): void {
    if (this.rx!.pushRequests()) this.kick();
    else this.counters.suppressed++;
  }

  private onEvent(): void {
    this.counters.events++;
    this.service();
  }

  /** Collect both rings' responses (an event, or the look a resumed driver takes). */
  private service(): void {
    if (!this.tx || !this.rx || this.quiesced) return;
    try {
      this.reapTx();
      this.receive();
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.counters.rogueResponses++;
      this.connected = false;
      this.kernel.log.error({ devid: this.devid, err: errorFields(e) }, 'netback published impossible responses; vif stopped');
    }
  }

  private reapTx(): void {
    const ring = this.tx!;
    do {
      for (let i = 0; i < ring.size; i++) {
        const rsp = ring.takeResponse();
        if (!rsp) break;
        const buf = this.txInFlight.get(rsp.id);
        if (!buf) {
          this.counters.unexpectedResponses++;
          continue;
        }
        this.txInFlight.delete(rsp.id);
        if (!this.kernel.grants.endAccess(buf.gref)) this.counters.leakedGrants++;
        this.counters.grantOps++;
        buf.gref = -1;
        this.txFree.push(rsp.id);
        if (rsp.status !== NETIF_RSP_OKAY) this.counters.txErrors++;
      }
    } while (ring.finalCheckForResponses());
    ring.traceConsumed();
    let posted = 0;
    while (this.txQueue.length > 0 && this.post(this.txQueue[0])) {
      this.txQueue.shift();
      posted++;
    }
    if (posted > 0) this.kickTx();
    if (this.txInFlight.size === 0 && this.txQueue.length === 0) for (const w of this.txDrainWaiters.splice(0)) w();
  }

  private receive(): void {
    const ring = this.rx!;
    let reposted = 0;
    do {
      for (let i = 0; i < ring.size; i++) {
        const rsp = ring.takeResponse();
        if (!rsp) break;
        const buf = this.rxBufs[rsp.id];
        if (!buf) {
          this.counters.unexpectedResponses++;
          continue;
        }
        if (rsp.status > 0 && rsp.offset + rsp.status <= PAGE_SIZE) {
          const frame = this.kernel.memory.page(buf.pfn).slice(rsp.offset, rsp.offset + rsp.status);
          this.counters.rxPackets++;
          this.counters.rxBytes += frame.byteLength;
          this.receiver(frame);
        } else this.counters.rxErrors++;
        ring.putRequest({ id: rsp.id, gref: buf.gref });
        reposted++;
      }
    } while (ring.finalCheckForResponses());
    ring.traceConsumed();
    if (reposted > 0) this.pushRx();
  }

  /** Wait until every transmitted frame has been answered by the backend. */
  async drainTx(timeoutMs = 5_000): Promise<void> {
    if (this.txInFlight.size === 0 && this.txQueue.length === 0) return;
    await Promise.race([
      new Promise<void>((r) => this.txDrainWaiters.push(r)),
      new Promise<void>((r) => setTimeout(r, timeoutMs).unref()),
    ]);
  }

  // ---- persistence ---------------------------------------------------------------------------

  /** Stop posting frames (transmit() queues them) and collecting responses; nothing else to wait for. */
  async quiesce(): Promise<void> {
    if (!this.connected || !this.tx || !this.rx || this.recovering) throw new DeviceError(`vif ${this.devid}: only a connected frontend can be quiesced`);
    this.quiesced = true;
  }

  /** Carry on: collect what the backend answered meanwhile, then send what queued. */
  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    if (!this.connected || !this.tx || !this.rx) return;
    this.service();
    let posted = 0;
    while (this.txQueue.length > 0 && this.post(this.txQueue[0])) {
      this.txQueue.shift();
      posted++;
    }
    if (posted > 0) this.kickTx();
  }

  /** The record of a quiesced frontend (state.ts says what it holds and why). */
  save(): DeviceStateRecord {
    const { tx, rx } = this;
    if (!this.quiesced || !tx || !rx) throw new DeviceError(`vif ${this.devid}: save() needs a quiesced, connected frontend`);
    const state: NetfrontSavedState = {
      devid: this.devid,
      backendId: this.xb.backendId,
      backendDir: this.xb.backendDir,
      mac: this.mac,
      port: this.port,
      tx: { pfn: this.ringPfns[0], ref: this.ringRefs[0], reqProdPvt: tx.reqProdPvt, rspCons: tx.rspCons },
      rx: { pfn: this.ringPfns[1], ref: this.ringRefs[1], reqProdPvt: rx.reqProdPvt, rspCons: rx.rspCons },
      txBufCount: this.txBufCount,
      txFree: [...this.txFree],
      txInFlight: [...this.txInFlight].map(([id, b]) => ({ id, gref: b.gref })),
      txBuffers: this.txBuffers.flatMap((b, id) => (b ? [{ id, pfn: b.pfn }] : [])),
      txQueue: this.txQueue.map((f) => f.slice()),
      rxBufs: this.rxBufs.map((b) => ({ pfn: b.pfn, gref: b.gref })),
      counters: { ...this.counters },
    };
    return saveRecord(NETFRONT_STATE, `dom${this.kernel.domid}/vif/${this.devid}`, state);
  }

  /**
   * A fresh frontend from a saved record, on the same kernel as the saved one; checked completely
   * before anything is built (a bad record throws StateRecordError, nothing changed). It comes
   * back quiesced: bind the receiver (onReceive) first, then resume(). Drop the saved instance
   * with abandon().
   */
  static async restore(args: ConstructorParameters<typeof NetFront>, record: unknown): Promise<NetFront> {
    const [kernel, devid] = args;
    const st = loadRecord(NETFRONT_STATE, record);
    if (st.devid !== devid) throw new StateRecordError(`netfront: the record is of vif ${st.devid}, not ${devid}`);
    const pfns = [st.tx.pfn, st.rx.pfn, ...st.txBuffers.map((b) => b.pfn), ...st.rxBufs.map((b) => b.pfn)];
    const bad = pfns.find((p) => p < 1 || p >= kernel.memory.frames);
    if (bad !== undefined) throw new StateRecordError(`netfront: frame ${bad} is outside domain ${kernel.domid}'s ${kernel.memory.frames} frames`);
    const f = new NetFront(kernel, devid, { txBuffers: st.txBufCount, rxBuffers: st.rxBufs.length });
    f.xb.backendId = st.backendId;
    f.xb.backendDir = st.backendDir;
    f.mac = st.mac;
    f.port = st.port;
    f.ringPfns.push(st.tx.pfn, st.rx.pfn);
    f.ringRefs.push(st.tx.ref, st.rx.ref);
    f.txFree.push(...st.txFree);
    for (const b of st.txBuffers) f.txBuffers[b.id] = { pfn: b.pfn, gref: -1 };
    for (const t of st.txInFlight) {
      const b = f.txBuffers[t.id];
      b.gref = t.gref;
      f.txInFlight.set(t.id, b);
    }
    f.txQueue.push(...st.txQueue.map((q) => q.slice()));
    f.rxBufs.push(...st.rxBufs.map((b) => ({ pfn: b.pfn, gref: b.gref })));
    for (const [k, v] of Object.entries(st.counters)) if (k in f.counters) f.counters[k as keyof NetfrontMetrics] = v;
    f.tx = FrontRing.resume(kernel.memory.page(st.tx.pfn), netifTxProtocol, st.tx, kernel.ringSync(st.tx.pfn, () => f.kick()));
    f.rx = FrontRing.resume(kernel.memory.page(st.rx.pfn), netifRxProtocol, st.rx, kernel.ringSync(st.rx.pfn, () => f.kick()));
    kernel.labelRing(f.tx, `vif${devid}`, 'tx');
    kernel.labelRing(f.rx, `vif${devid}`, 'rx');
    f.quiesced = true;
    f.connected = true;
    kernel.events.on(f.port, () => f.onEvent());
    f.unwatch = await f.xb.watchBackend((s) => f.onBackendState(s));
    return f;
  }

  /** Drop a saved frontend without touching what its successor owns: only its store watch goes. */
  async abandon(): Promise<void> {
    this.quiesced = true;
    this.connected = false;
    await this.unwatch?.();
    this.unwatch = undefined;
  }

  async disconnect(): Promise<void> {
    this.resume();
    await this.unwatch?.();
    this.unwatch = undefined;
    await this.drainTx();
    this.connected = false;
    await this.xb.setState(XenbusState.Closing);
    await this.xb.waitBackend((s) => s === XenbusState.Closing || s === XenbusState.Closed, 10_000).catch(() => {});
    if (this.port >= 0) await this.kernel.closePort(this.port).catch(() => {});
    this.port = -1;
    for (const b of [...this.rxBufs, ...this.txInFlight.values()])
      if (b.gref >= 0 && !this.kernel.grants.endAccess(b.gref)) this.counters.leakedGrants++;
    for (const r of this.ringRefs) if (!this.kernel.grants.endAccess(r)) this.counters.leakedGrants++;
    await this.xb.setState(XenbusState.Closed);
  }
}
