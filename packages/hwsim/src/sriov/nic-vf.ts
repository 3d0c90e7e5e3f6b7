/**
 * NicVf — a virtual function of the physical NIC. The NIC's embedded switch (an SR-IOV VEB) is
 * modelled by giving each VF its own port on the host's LAN segment: frames between a VF and the
 * PF (dom0's bridge, so PV and emulated guests) or another VF cross the segment as between two
 * stations. Unlike the PF (promiscuous, for dom0's bridge) a VF takes only frames for its own
 * MAC, broadcast and multicast.
 *
 * Queues (in the owner's memory, hwnic layouts with the domid field reserved = 0):
 *   tx (Q0): each request names a frame at I/O address pfn·4096 + offset; the VF DMA-reads it
 *     once into its FIFO and puts it on the wire. Bad request or blocked DMA: HW_STATUS_EIO.
 *   rx (Q1): requests are empty buffers. At each doorbell the VF *prefetches* every posted
 *     descriptor into its on-device cache (as real NICs do); a frame from the wire is DMA-written
 *     into the buffer of the oldest cached descriptor, answered with status = bytes. The cache is
 *     what makes reclaim dangerous: descriptors the old owner posted stay in the device until a
 *     function-level reset drops them — without one, the next owner's memory would receive the
 *     old owner's traffic at the old owner's addresses.
 * Frames with no cached buffer wait in a small bounded backlog (missed when it is full).
 */
import {
  BackRing,
  ETH_MAX_FRAME,
  ETH_MIN_FRAME,
  HW_STATUS_EIO,
  HW_STATUS_OK,
  PAGE_SIZE,
  RogueRingError,
  VF_REG,
  hwNicRxProtocol,
  hwNicTxProtocol,
  loadRecord,
  saveRecord,
  type DeviceMetrics,
  type DeviceStateRecord,
  type HwNicBuffer,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { LanPort } from '../lan/lan-port.js';
import { formatMac, parseMac } from '../lan/mac.js';
import { QueueService } from '../devices/queue-service.js';
import { DmaBlocked, VirtualFunction, type FunctionEnv } from './function.js';
import { nicVfLayout, type NicVfState } from './state.js';

export const VF_RX_BACKLOG = 64;

export interface NicVfMetrics {
  txPackets: number;
  txBytes: number;
  txErrors: number;
  rxPackets: number;
  rxBytes: number;
  rxErrors: number;
  /** Frames with no buffer and no backlog room, or arriving while the queues were not enabled. */
  rxMissed: number;
  /** Unicast frames for another station (flooded by the switch) that the VF's filter dropped. */
  rxFiltered: number;
  /** Descriptors prefetched into the device and not yet used. */
  rxCached: number;
}

function encodeBuffer(b: HwNicBuffer): Uint8Array {
  const bytes = new Uint8Array(hwNicRxProtocol.request.size);
  hwNicRxProtocol.request.encode(new DataView(bytes.buffer), 0, b);
  return bytes;
}

function decodeBuffer(bytes: Uint8Array): HwNicBuffer {
  return hwNicRxProtocol.request.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
}

export class NicVf extends VirtualFunction {
  readonly io: NicVfMetrics = { txPackets: 0, txBytes: 0, txErrors: 0, rxPackets: 0, rxBytes: 0, rxErrors: 0, rxMissed: 0, rxFiltered: 0, rxCached: 0 };
  private macAddr = '00:00:00:00:00:00';
  private macBytes: Uint8Array = new Uint8Array(6);
  private tx: QueueService<HwNicBuffer, HwStatusResponse> | undefined;
  private rx: BackRing<HwNicBuffer, HwStatusResponse> | undefined;
  private rxCache: HwNicBuffer[] = [];
  private backlog: Uint8Array[] = [];

  constructor(
    index: number,
    rid: number,
    env: FunctionEnv,
    private readonly port: LanPort,
    /** The physical port's carrier (the VFs share the PF's cable). */
    private readonly linkUp: () => boolean,
    /** The register page the owner maps (default: a fresh one). */
    bar?: SharedArrayBuffer,
  ) {
    super('nic', rid, index, env, bar);
    port.onFrame((f) => this.receive(f));
  }

  /**
   * A fresh function from `args` (the constructor's) carrying on the saved one's I/O: both queues
   * reattached at the record's indices, its prefetched rx descriptors and waiting frames held
   * again. Throws StateRecordError for a record that does not check or does not match this
   * environment; `args`' bar is then untouched.
   */
  static restore(args: ConstructorParameters<typeof NicVf>, record: unknown): NicVf {
    const s = loadRecord(nicVfLayout, record);
    const [index, rid, env, port, linkUp, bar] = args;
    // A record this environment refuses leaves the fresh function quiesced for good: the frames
    // its port listener still hears are counted missed, and nothing else happens.
    const fn = new NicVf(index, rid, env, port, linkUp);
    fn.setMac(s.mac);
    fn.restoreFunction(
      s,
      () => {
        fn.attachQueues();
        VirtualFunction.restoreIndices(fn.tx!.ring, s.tx!, `${fn.name} tx`);
        VirtualFunction.restoreIndices(fn.rx!, s.rx!, `${fn.name} rx`);
        fn.rxCache = s.rxCache.map(decodeBuffer);
        fn.backlog = s.backlog.map((b) => b.slice());
      },
      bar,
    );
    Object.assign(fn.io, s.io);
    return fn;
  }

  save(): DeviceStateRecord {
    this.requireQuiesced();
    const q = (reg: number, ring: { size: number; reqCons: number; rspProdPvt: number } | undefined) => (ring ? VirtualFunction.queueState(this.regs.read(reg), ring) : null);
    const state: NicVfState = {
      ...this.saveFunction(),
      mac: this.macAddr,
      tx: q(VF_REG.Q0, this.tx?.ring),
      rx: q(VF_REG.Q1, this.rx),
      rxCache: this.rxCache.map(encodeBuffer),
      backlog: this.backlog.map((f) => f.slice()),
      io: { ...this.io },
    };
    return saveRecord(nicVfLayout, this.instanceName, state);
  }

  metrics(): DeviceMetrics {
    const m = this.io;
    return { ops: m.txPackets + m.rxPackets, bytes: m.txBytes + m.rxBytes, errors: m.txErrors + m.rxErrors, detail: { ...m, ...this.counters } };
  }

  /** The tx queue's pass (QueueService) is stopped and rebuilt on the same ring at resume. */
  protected cancelTurns(): void {
    this.tx?.stop('quiesced');
  }

  protected serveHeld(): void {
    this.kick();
  }

  get mac(): string {
    return this.macAddr;
  }

  /** The PF driver sets a VF's MAC before handing it out (`ip link set … vf N mac …`). */
  setMac(mac: string): void {
    this.macBytes = parseMac(mac);
    this.macAddr = formatMac(this.macBytes);
    this.describe();
  }

  protected describe(): void {
    // Also called from VirtualFunction's constructor, before this class's fields are initialised.
    this.regs.mac = this.macAddr ?? '00:00:00:00:00:00';
  }

  protected attachQueues(): void {
    const txPage = this.ringPage(this.regs.read(VF_REG.Q0));
    const rxPage = this.ringPage(this.regs.read(VF_REG.Q1));
    this.tx = this.txService(BackRing.attach(txPage.page, hwNicTxProtocol, txPage.sync));
    this.rx = BackRing.attach(rxPage.page, hwNicRxProtocol, rxPage.sync);
  }

  private txService(ring: BackRing<HwNicBuffer, HwStatusResponse>): QueueService<HwNicBuffer, HwStatusResponse> {
    return new QueueService({
      ring,
      handle: (req) => ({ id: req.id, status: this.transmit(req) }),
      irq: () => this.raise(),
      onRogue: (e) => this.stopWithError(`tx: ${e.message}`),
    });
  }

  protected resetQueues(): void {
    this.tx?.stop('reset');
    this.tx = undefined;
    this.rx = undefined;
    this.io.rxMissed += this.backlog.length;
    this.backlog = [];
    this.rxCache = [];
    this.io.rxCached = 0;
  }

  protected kick(): void {
    // A queue stopped by quiesce() (not by a rogue driver) is served again on the same ring.
    if (this.tx?.stopReason === 'quiesced') this.tx = this.txService(this.tx.ring);
    this.tx?.kick();
    this.prefetch();
    this.drain();
  }

  private transmit(req: HwNicBuffer): number {
    const m = this.io;
    if (!this.linkUp() || req.domid !== 0 || req.len < ETH_MIN_FRAME || req.len > ETH_MAX_FRAME || req.offset + req.len > PAGE_SIZE) {
      m.txErrors++;
      return HW_STATUS_EIO;
    }
    let frame: Uint8Array;
    try {
      const [view] = this.dmaRead(req.pfn * PAGE_SIZE + req.offset, req.len);
      frame = view.slice(); // one DMA read into the FIFO
    } catch (e) {
      if (!(e instanceof DmaBlocked)) throw e;
      m.txErrors++;
      return HW_STATUS_EIO;
    }
    this.port.send(frame);
    m.txPackets++;
    m.txBytes += frame.byteLength;
    return HW_STATUS_OK;
  }

  /** Take every posted rx descriptor into the device's cache (bounded by the ring). */
  private prefetch(): void {
    const rx = this.rx;
    if (!rx) return;
    try {
      for (let n = 0; n < rx.size && this.rxCache.length < rx.size; n++) {
        const d = rx.takeRequest();
        if (!d) break;
        this.rxCache.push(d);
      }
      // Arm req_event when drained, so the driver's next post rings the doorbell.
      if (this.rxCache.length < rx.size && rx.finalCheckForRequests()) setImmediate(() => this.enabled && !this.quiesced && this.kick());
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.stopWithError(`rx: ${e.message}`);
    }
    this.io.rxCached = this.rxCache.length;
  }

  private receive(frame: Uint8Array): void {
    const m = this.io;
    if (frame.byteLength < ETH_MIN_FRAME || frame.byteLength > ETH_MAX_FRAME) return;
    const group = (frame[0] & 1) !== 0;
    if (!group) {
      for (let i = 0; i < 6; i++)
        if (frame[i] !== this.macBytes[i]) {
          m.rxFiltered++;
          return;
        }
    }
    // A quiesced function is a paused device: what the wire brings meanwhile is missed.
    if (this.owner === null || !this.enabled || this.quiesced || !this.linkUp()) {
      m.rxMissed++;
      return;
    }
    this.backlog.push(frame);
    if (this.backlog.length > VF_RX_BACKLOG) {
      this.backlog.shift();
      m.rxMissed++;
    }
    this.drain();
  }

  /** Move waiting frames into cached buffers; one response push (and interrupt) per pass. */
  private drain(): void {
    const rx = this.rx;
    if (!rx || this.backlog.length === 0 || this.rxCache.length === 0) return;
    const m = this.io;
    let answered = 0;
    while (this.backlog.length > 0 && this.rxCache.length > 0) {
      const d = this.rxCache.shift()!;
      const frame = this.backlog[0];
      let status: number = HW_STATUS_EIO;
      if (d.domid === 0 && d.offset + d.len <= PAGE_SIZE && d.len >= frame.byteLength) {
        try {
          this.dmaWrite(d.pfn * PAGE_SIZE + d.offset, frame);
          status = frame.byteLength;
        } catch (e) {
          if (!(e instanceof DmaBlocked)) throw e;
        }
      }
      if (status > 0) {
        this.backlog.shift();
        m.rxPackets++;
        m.rxBytes += status;
      } else m.rxErrors++;
      rx.putResponse({ id: d.id, status });
      answered++;
    }
    m.rxCached = this.rxCache.length;
    if (answered > 0 && rx.pushResponses()) this.raise();
  }
}
