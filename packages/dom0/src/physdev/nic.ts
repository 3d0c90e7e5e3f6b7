/**
 * dom0's driver for the physical NIC: front end of the hwnic tx and rx queues. Transmit hands
 * the device an skb's dom0 frame to DMA from; receive keeps the rx queue stocked with empty skbs
 * the device DMAs into.
 */
import {
  FrontRing,
  hwNicRxProtocol,
  hwNicTxProtocol,
  initSharedRing,
  frameChannel,
  traceNow,
  type EventChannelGate,
  type GuestMemory,
  type HwNicBuffer,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { Skb, SkbPool } from './skb.js';
import type { DriverDma } from './disk.js';

export interface PhysicalNicCounters {
  txFrames: number;
  txBytes: number;
  txErrors: number;
  txDropped: number;
  rxFrames: number;
  rxBytes: number;
  rxNoBuffer: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
  /** Frames handed to a device that was then reset (a hardware restart): dropped, as on a NIC reset. */
  txLostInReset: number;
}

const MAX_TX_BACKLOG = 256;

export class PhysicalNicDriver {
  // Set by freshQueues: at construction, and again after a reset (the hardware restarted).
  tx!: FrontRing<HwNicBuffer, HwStatusResponse>;
  rx!: FrontRing<HwNicBuffer, HwStatusResponse>;
  readonly counters: PhysicalNicCounters = {
    txFrames: 0,
    txBytes: 0,
    txErrors: 0,
    txDropped: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxNoBuffer: 0,
    doorbells: 0,
    suppressed: 0,
    interrupts: 0,
    txLostInReset: 0,
  };
  private readonly txSlots: Array<Skb | undefined> = [];
  private readonly txFreeIds: number[] = [];
  private readonly txBacklog: Skb[] = [];
  private readonly rxSlots: Array<Skb | undefined> = [];
  /** rx ids whose buffer could not be replaced (pool empty); refilled on later interrupts. */
  private readonly rxEmpty: number[] = [];
  private receiver: (skb: Skb) => void = (skb) => this.pool.put(skb);

  constructor(
    private readonly memory: GuestMemory,
    private readonly txPfn: number,
    private readonly rxPfn: number,
    private readonly events: EventChannelGate,
    readonly port: number,
    readonly mac: string,
    private readonly pool: SkbPool,
    private readonly rxBuffers = 64,
    private readonly dma?: DriverDma,
  ) {
    this.freshQueues();
    events.on(port, () => this.onInterrupt());
    this.kick(this.rx.pushRequests());
  }

  /** Initialised tx and rx queues (the device's copies start from them), every rx buffer posted. */
  private freshQueues(): void {
    for (const pfn of [this.txPfn, this.rxPfn]) {
      initSharedRing(this.memory.page(pfn));
      this.dma?.toDevice({ domid: 0, pfn });
    }
    const queue = (pfn: number, protocol: typeof hwNicTxProtocol) =>
      new FrontRing(this.memory.page(pfn), protocol, this.dma?.ringSync(pfn, this.memory.page(pfn), () => this.kick(true)));
    this.tx = queue(this.txPfn, hwNicTxProtocol);
    this.rx = queue(this.rxPfn, hwNicRxProtocol);
    this.txFreeIds.length = 0;
    for (let i = this.tx.size - 1; i >= 0; i--) this.txFreeIds.push(i);
    this.rxEmpty.length = 0;
    for (let id = 0; id < Math.min(this.rxBuffers, this.rx.size); id++) this.postRx(id);
  }

  /**
   * The device was reset (the hardware restarted) and forgot its queues. As a driver does after
   * a NIC reset, start them afresh: frames handed to the old device and not answered are dropped
   * (counted — what was on the wire is lost, and UDP's users see a loss, never a damaged frame),
   * every rx buffer is posted again. Call before the new device attaches; `resume()` once it has.
   */
  resetQueues(): void {
    for (let id = 0; id < this.txSlots.length; id++) {
      const skb = this.txSlots[id];
      if (!skb) continue;
      this.txSlots[id] = undefined;
      this.pool.put(skb);
      this.counters.txLostInReset++;
    }
    for (let id = 0; id < this.rxSlots.length; id++) {
      const skb = this.rxSlots[id];
      this.rxSlots[id] = undefined;
      if (skb) this.pool.put(skb);
    }
    this.freshQueues();
  }

  /** After a reset: publish the posted rx buffers and the transmit backlog to the new device. */
  resume(): void {
    this.kick(this.rx.pushRequests());
    this.pumpTx();
  }

  /** Names this NIC in frame trace events (captures): e.g. { host: "host0", iface: "host0/peth0" }. */
  traceLabel?: { host: string; iface: string };

  private traceFrame(dir: 'tx' | 'rx', skb: Skb): void {
    if (!this.traceLabel) return;
    const frame = this.pool.data(skb);
    frameChannel.publish({ kind: 'frame', t: traceNow(), host: this.traceLabel.host, domid: 0, device: 'peth0', iface: this.traceLabel.iface, dir, len: frame.length, frame });
  }

  onReceive(cb: (skb: Skb) => void): void {
    this.receiver = cb;
  }

  /** Transmit; takes one reference of `skb` (released when the device is done with it). */
  transmit(skb: Skb): void {
    if (this.txBacklog.length >= MAX_TX_BACKLOG) {
      this.counters.txDropped++;
      this.pool.put(skb);
      return;
    }
    if (frameChannel.hasSubscribers) this.traceFrame('tx', skb);
    this.txBacklog.push(skb);
    this.pumpTx();
  }

  private pumpTx(): void {
    let n = 0;
    while (this.txBacklog.length > 0 && this.txFreeIds.length > 0 && !this.tx.isFull()) {
      const skb = this.txBacklog.shift()!;
      const id = this.txFreeIds.pop()!;
      this.txSlots[id] = skb;
      this.dma?.toDevice({ domid: 0, pfn: skb.pfn });
      this.tx.putRequest({ domid: 0, id, pfn: skb.pfn, offset: 0, len: skb.len });
      this.counters.txFrames++;
      this.counters.txBytes += skb.len;
      n++;
    }
    if (n > 0) this.kick(this.tx.pushRequests());
  }

  private postRx(id: number): boolean {
    const skb = this.pool.alloc();
    if (!skb) {
      this.counters.rxNoBuffer++;
      this.rxEmpty.push(id);
      return false;
    }
    this.rxSlots[id] = skb;
    this.rx.putRequest({ domid: 0, id, pfn: skb.pfn, offset: 0, len: 4096 });
    return true;
  }

  private kick(notify: boolean): void {
    if (notify) {
      this.events.send(this.port);
      this.counters.doorbells++;
    } else this.counters.suppressed++;
  }

  private onInterrupt(): void {
    this.counters.interrupts++;
    do {
      for (let i = 0; i < this.tx.size; i++) {
        const rsp = this.tx.takeResponse();
        if (!rsp) break;
        const skb = this.txSlots[rsp.id];
        if (!skb) continue;
        this.txSlots[rsp.id] = undefined;
        this.txFreeIds.push(rsp.id);
        if (rsp.status !== 0) this.counters.txErrors++;
        this.pool.put(skb);
      }
    } while (this.tx.finalCheckForResponses());
    let reposted = 0;
    do {
      for (let i = 0; i < this.rx.size; i++) {
        const rsp = this.rx.takeResponse();
        if (!rsp) break;
        const skb = this.rxSlots[rsp.id];
        this.rxSlots[rsp.id] = undefined;
        if (skb) {
          if (rsp.status > 0) {
            skb.len = rsp.status;
            this.counters.rxFrames++;
            this.counters.rxBytes += rsp.status;
            if (frameChannel.hasSubscribers) this.traceFrame('rx', skb);
            this.receiver(skb);
          } else this.pool.put(skb);
        }
        if (this.postRx(rsp.id)) reposted++;
      }
    } while (this.rx.finalCheckForResponses());
    for (let n = this.rxEmpty.length; n > 0 && this.pool.available > 0; n--) if (this.postRx(this.rxEmpty.shift()!)) reposted++;
    if (reposted > 0) this.kick(this.rx.pushRequests());
    this.pumpTx();
  }
}
