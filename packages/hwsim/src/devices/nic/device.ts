/**
 * PhysicalNic — the simulated Ethernet adapter: a MAC, a cable to a LanPort, and two
 * host-interface queues shared with dom0's driver (layouts in @ringvisor/shared hw/index.ts).
 *
 * tx queue: each request names a frame in memory ({domid, pfn, offset, len}). The NIC validates
 *   the private copy (14 ≤ len ≤ 1514, window inside the page, frame reachable by DMA), DMA-reads
 *   the bytes once into its own buffer (its FIFO), puts them on the wire and answers
 *   HW_STATUS_OK — or HW_STATUS_EIO for a bad request or when the link is down.
 * rx queue: requests are *empty buffers* posted by the driver. A frame from the wire is DMA-written
 *   into the next posted buffer, which is answered with status = bytes received. With no buffer
 *   posted the frame waits in a small bounded backlog (default 64 frames) that is drained when
 *   the driver posts buffers (the doorbell); when the backlog is full the frame is dropped and
 *   counted in `rxMissed`, as a real NIC counts missed frames when its descriptor ring is empty.
 *   A bad buffer (outside its page, unreachable, too small for the frame) is returned with
 *   HW_STATUS_EIO and the frame goes to the next buffer.
 *
 * One doorbell (event port) serves both queues, as does one interrupt, raised only when a push
 * says the driver asked for it. The NIC is always promiscuous: dom0's bridge needs every frame.
 * Link state: down (administratively, or no cable) drops tx with an error status and rx silently.
 */
import {
  errorFields,
  BackRing,
  ConfigError,
  ETH_MAX_FRAME,
  ETH_MIN_FRAME,
  HW_STATUS_EIO,
  HW_STATUS_OK,
  PAGE_SIZE,
  RogueRingError,
  hwNicRxProtocol,
  hwNicTxProtocol,
  type HwNicBuffer,
  type HwStatusResponse,
  type Logger,
  type MachineFrame,
} from '@ringvisor/shared';
import type { DmaEngine } from '../../dma/dma-engine.js';
import type { LanPort } from '../../lan/lan-port.js';
import { formatMac, parseMac } from '../../lan/mac.js';
import { QueueService, newQueueStats, type QueueStats } from '../queue-service.js';
import { newNicMetrics, type NicMetrics } from './metrics.js';

export const DEFAULT_RX_BACKLOG = 64;

export interface PhysicalNicOptions {
  /** Burned-in address, `aa:bb:cc:dd:ee:ff` (must be unicast). */
  mac: string;
  dma: DmaEngine;
  name?: string;
  /** Frames held while no rx buffer is posted (default 64; 0 = drop at once). */
  rxBacklog?: number;
  logger?: Logger;
}

export interface NicQueueFrames {
  tx: MachineFrame;
  rx: MachineFrame;
}

export interface NicStats extends NicMetrics {
  mac: string;
  link: 'up' | 'down';
  promiscuous: boolean;
  lanPort: string | null;
  queues: { attached: boolean; tx: QueueStats & { stopped: boolean }; rx: { stopped: boolean; stopReason: string | null; buffersUsed: number } };
}

export class PhysicalNic {
  readonly mac: string;
  readonly name: string;
  readonly promiscuous = true;
  readonly metrics: NicMetrics = newNicMetrics();
  private readonly dma: DmaEngine;
  private readonly logger: Logger | undefined;
  private readonly backlogCapacity: number;
  private lan: LanPort | undefined;
  private adminUp = true;
  private tx: QueueService<HwNicBuffer, HwStatusResponse> | undefined;
  private rx: BackRing<HwNicBuffer, HwStatusResponse> | undefined;
  private rxStopReason: string | undefined;
  private irq: (() => void) | undefined;
  private frames: NicQueueFrames | undefined;
  private backlog: Uint8Array[] = [];
  private draining = false;
  private drainScheduled: NodeJS.Immediate | undefined;

  constructor(options: PhysicalNicOptions) {
    const mac = parseMac(options.mac);
    this.mac = formatMac(mac);
    if (mac[0] & 1) throw new ConfigError(`NIC MAC ${this.mac} is a group (multicast) address`);
    this.name = options.name ?? 'nic0';
    this.dma = options.dma;
    this.logger = options.logger;
    this.backlogCapacity = options.rxBacklog ?? DEFAULT_RX_BACKLOG;
    if (!Number.isInteger(this.backlogCapacity) || this.backlogCapacity < 0) throw new ConfigError(`rxBacklog must be a non-negative integer, got ${this.backlogCapacity}`);
  }

  /** Plug the cable into a LAN port (replacing any earlier cable). */
  connect(port: LanPort): void {
    this.lan = port;
    port.onFrame((frame) => {
      if (this.lan === port) this.receive(frame);
    });
  }

  /** Unplug the cable: carrier lost. */
  disconnect(): void {
    this.lan = undefined;
    this.flushBacklog();
  }

  get lanPort(): LanPort | undefined {
    return this.lan;
  }

  /** Carrier: administratively up and a cable plugged in. */
  get linkUp(): boolean {
    return this.adminUp && this.lan !== undefined;
  }

  setLink(up: boolean): void {
    this.adminUp = up;
    if (!up) this.flushBacklog();
  }

  get queuesAttached(): boolean {
    return this.tx !== undefined;
  }

  /**
   * Start serving the driver's queues (both pages initialised by the driver). Replaces queues
   * attached earlier (a driver restart): frames waiting for the old rx queue are kept.
   */
  attachQueues(frames: NicQueueFrames, irq: () => void): void {
    const txPage = this.dma.ringPage(frames.tx, () => this.raise());
    const rxPage = this.dma.ringPage(frames.rx, () => this.raise());
    this.detachQueues('replaced', false);
    this.frames = { tx: { ...frames.tx }, rx: { ...frames.rx } };
    this.irq = irq;
    this.rx = BackRing.attach(rxPage.page, hwNicRxProtocol, rxPage.sync);
    this.rxStopReason = undefined;
    this.tx = new QueueService({
      ring: BackRing.attach(txPage.page, hwNicTxProtocol, txPage.sync),
      handle: (req) => ({ id: req.id, status: this.transmit(req) }),
      irq: () => this.raise(),
      onRogue: (e) => this.logger?.warn({ nic: this.name, err: errorFields(e) }, 'nic tx queue stopped: rogue driver'),
    });
    this.drainRx();
  }

  /** Stop serving the queues; frames waiting for rx buffers are dropped (counted rxDropped) if `dropBacklog`. */
  detachQueues(reason = 'detached', dropBacklog = true): void {
    this.tx?.stop(reason);
    this.tx = undefined;
    this.frames = undefined;
    this.rx = undefined;
    this.irq = undefined;
    if (this.drainScheduled) clearImmediate(this.drainScheduled);
    this.drainScheduled = undefined;
    if (dropBacklog) this.flushBacklog();
  }

  /** Whether either queue page lives in `domid`'s memory. */
  queuesIn(domid: number): boolean {
    return this.frames !== undefined && (this.frames.tx.domid === domid || this.frames.rx.domid === domid);
  }

  /** The doorbell: transmit what the driver queued, then fill newly posted rx buffers. */
  kick(): void {
    this.metrics.doorbells++;
    this.tx?.kick();
    this.drainRx();
  }

  /** A frame from the wire (our own copy, handed over by the LAN port). */
  receive(frame: Uint8Array): void {
    const m = this.metrics;
    if (!this.linkUp) {
      m.rxDropped++;
      return;
    }
    if (frame.byteLength < ETH_MIN_FRAME || frame.byteLength > ETH_MAX_FRAME) {
      m.rxErrors++;
      return;
    }
    if (!this.rx || this.rxStopReason !== undefined) {
      m.rxMissed++;
      return;
    }
    // Queue behind any frames already waiting (order is kept), deliver what buffers allow, then
    // enforce the bound by tail drop: a frame that found neither a buffer nor backlog room is missed.
    this.backlog.push(frame);
    this.drainRx();
    if (this.backlog.length > this.backlogCapacity) {
      this.backlog.pop();
      m.rxMissed++;
    }
    m.rxBacklog = this.backlog.length;
    if (m.rxBacklog > m.rxBacklogPeak) m.rxBacklogPeak = m.rxBacklog;
  }

  stats(): NicStats {
    return {
      ...this.metrics,
      mac: this.mac,
      link: this.linkUp ? 'up' : 'down',
      promiscuous: this.promiscuous,
      lanPort: this.lan?.name ?? null,
      queues: {
        attached: this.queuesAttached,
        tx: { ...(this.tx?.stats ?? newQueueStats()), stopped: this.tx?.stopped ?? false },
        rx: { stopped: this.rxStopReason !== undefined, stopReason: this.rxStopReason ?? null, buffersUsed: this.rx?.stats.consumed ?? 0 },
      },
    };
  }

  private raise(): void {
    this.metrics.irqs++;
    this.irq?.();
  }

  private flushBacklog(): void {
    this.metrics.rxDropped += this.backlog.length;
    this.backlog = [];
    this.metrics.rxBacklog = 0;
  }

  private transmit(req: HwNicBuffer): number {
    const m = this.metrics;
    const lan = this.lan;
    if (!this.linkUp || !lan) {
      m.txDropped++;
      return HW_STATUS_EIO;
    }
    const frame = { domid: req.domid, pfn: req.pfn };
    if (req.len < ETH_MIN_FRAME || req.len > ETH_MAX_FRAME || req.offset + req.len > PAGE_SIZE || !this.dma.reachable(frame)) {
      m.txErrors++;
      return HW_STATUS_EIO;
    }
    let bytes: Uint8Array;
    try {
      bytes = this.dma.read(frame, req.offset, req.len).slice(); // one DMA read into the NIC's FIFO
    } catch {
      m.txErrors++;
      return HW_STATUS_EIO;
    }
    lan.send(bytes);
    m.txPackets++;
    m.txBytes += bytes.byteLength;
    return HW_STATUS_OK;
  }

  /** Move backlog frames into posted rx buffers; at most one ring's worth per turn. */
  private drainRx(): void {
    const rx = this.rx;
    if (!rx || this.rxStopReason !== undefined || this.backlog.length === 0 || this.draining) return;
    this.draining = true;
    const m = this.metrics;
    let used = 0;
    try {
      while (this.backlog.length > 0 && used < rx.size) {
        if (rx.unconsumedRequests() === 0 && !rx.finalCheckForRequests()) break; // armed: the next post rings the doorbell
        const buf = rx.takeRequest();
        if (!buf) break;
        used++;
        const status = this.fill(buf, this.backlog[0]);
        if (status > 0) {
          this.backlog.shift();
          m.rxPackets++;
          m.rxBytes += status;
        } else {
          m.rxErrors++;
        }
        rx.putResponse({ id: buf.id, status });
      }
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.rxStopReason = e.message;
      this.logger?.warn({ nic: this.name, err: errorFields(e) }, 'nic rx queue stopped: rogue driver');
      this.flushBacklog();
    } finally {
      this.draining = false;
      m.rxBacklog = this.backlog.length;
    }
    if (rx.pushResponses()) this.raise();
    if (this.backlog.length > 0 && used === rx.size && this.rxStopReason === undefined && !this.drainScheduled)
      this.drainScheduled = setImmediate(() => {
        this.drainScheduled = undefined;
        this.drainRx();
      });
  }

  /** DMA one frame into one posted buffer; returns the response status. */
  private fill(buf: HwNicBuffer, frame: Uint8Array): number {
    const target = { domid: buf.domid, pfn: buf.pfn };
    if (buf.offset + buf.len > PAGE_SIZE || buf.len < frame.byteLength || !this.dma.reachable(target)) return HW_STATUS_EIO;
    try {
      this.dma.write(target, buf.offset, frame);
    } catch {
      return HW_STATUS_EIO;
    }
    return frame.byteLength;
  }
}
