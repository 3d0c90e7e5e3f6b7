/**
 * VfNicDriver — the guest's driver for a NIC virtual function it was assigned (direct I/O).
 *
 * Two queues on frames of the guest's own memory (hwnic tx and rx layouts, addresses are guest
 * frame numbers), DMA buffers of 2 KiB (two per frame), the doorbell rung straight at the
 * hardware and the interrupt coming straight from it. Nothing goes through dom0: frames leave by
 * the function's port on the NIC's embedded switch.
 *
 * TX: a frame is copied into a free buffer, described by one request, pushed; the doorbell rings
 * only if the push crossed the device's req_event. Frames find no free buffer wait in a bounded
 * queue (then are dropped, counted). RX: every buffer is kept posted; a response's buffer is
 * copied out, handed to the stack and posted again. One interrupt serves both queues, and the
 * handler final-checks both rings before it returns.
 */
import {
  DeviceError,
  ETH_MAX_FRAME,
  FrontRing,
  HW_STATUS_OK,
  PAGE_SIZE,
  TimeoutError,
  VF_CTRL_ENABLE,
  VF_REG,
  VF_STATUS_ENABLED,
  hwNicRxProtocol,
  hwNicTxProtocol,
  initSharedRing,
  type FrameAllocator,
  type GuestMemory,
  type HwNicBuffer,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { DirectFunction } from '../../kernel/direct.js';
import { newVfNicMetrics, type VfNicMetrics } from './metrics.js';

const BUF_SIZE = 2048;
const BUFS_PER_PAGE = PAGE_SIZE / BUF_SIZE;
const TX_QUEUE_LIMIT = 256;

interface DmaBuffer {
  pfn: number;
  offset: number;
}

export interface VfNicOptions {
  fn: DirectFunction;
  memory: GuestMemory;
  frames: FrameAllocator;
  /** Buffers for each direction (default 128, at most the ring's 256). */
  buffers?: number;
  enableTimeoutMs?: number;
}

export class VfNicDriver {
  readonly metrics: VfNicMetrics = newVfNicMetrics();
  mac = '';
  private tx?: FrontRing<HwNicBuffer, HwStatusResponse>;
  private rx?: FrontRing<HwNicBuffer, HwStatusResponse>;
  private readonly txBufs: DmaBuffer[] = [];
  private readonly rxBufs: DmaBuffer[] = [];
  private readonly txFree: number[] = [];
  private readonly txQueue: Uint8Array[] = [];
  private receiver: (frame: Uint8Array) => void = () => {};
  private generation = 0;
  private lost: string | undefined;

  constructor(private readonly o: VfNicOptions) {}

  get fn(): DirectFunction {
    return this.o.fn;
  }

  onReceive(cb: (frame: Uint8Array) => void): void {
    this.receiver = cb;
  }

  async open(): Promise<void> {
    const { fn, memory, frames } = this.o;
    if (fn.regs.kind !== 'nic') throw new DeviceError(`direct vif ${fn.devid}: function ${fn.rid} is not a NIC function`);
    this.mac = fn.regs.mac;
    this.generation = fn.regs.read(VF_REG.GEN);
    const count = Math.min(this.o.buffers ?? 128, 256);
    const buffers = (list: DmaBuffer[]): void => {
      for (let i = 0; i < count; i += BUFS_PER_PAGE) {
        const pfn = frames.alloc();
        for (let j = 0; j < BUFS_PER_PAGE && i + j < count; j++) list.push({ pfn, offset: j * BUF_SIZE });
      }
    };
    buffers(this.txBufs);
    buffers(this.rxBufs);
    const ring = (protocol: typeof hwNicTxProtocol): { ring: FrontRing<HwNicBuffer, HwStatusResponse>; pfn: number } => {
      const pfn = frames.alloc();
      const page = memory.page(pfn);
      const sync = fn.ringSync(pfn, () => this.doorbell());
      initSharedRing(page, sync);
      return { ring: new FrontRing(page, protocol, sync), pfn };
    };
    const tx = ring(hwNicTxProtocol);
    const rx = ring(hwNicRxProtocol);
    this.tx = tx.ring;
    this.rx = rx.ring;
    for (let id = this.txBufs.length - 1; id >= 0; id--) this.txFree.push(id);
    this.rxBufs.forEach((b, id) => this.rx!.putRequest({ domid: 0, id, pfn: b.pfn, offset: b.offset, len: BUF_SIZE }));
    this.rx.pushRequests();
    fn.onInterrupt(() => this.onInterrupt());
    fn.regs.write(VF_REG.Q0, tx.pfn);
    fn.regs.write(VF_REG.Q1, rx.pfn);
    fn.regs.write(VF_REG.CTRL, VF_CTRL_ENABLE);
    this.doorbell();
    const deadline = performance.now() + (this.o.enableTimeoutMs ?? 5_000);
    while ((fn.regs.read(VF_REG.STATUS) & VF_STATUS_ENABLED) === 0) {
      if (performance.now() > deadline) throw new TimeoutError(`direct vif ${fn.devid}: function ${fn.rid} did not enable its queues (status 0x${fn.regs.read(VF_REG.STATUS).toString(16)})`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Queue a frame for transmission (dropped, counted, when the queue is full or the function is gone). */
  transmit(frame: Uint8Array): void {
    if (this.lost || !this.tx || frame.byteLength > ETH_MAX_FRAME) {
      this.metrics.txDropped++;
      return;
    }
    if (this.txQueue.length >= TX_QUEUE_LIMIT) {
      this.metrics.txDropped++;
      return;
    }
    this.txQueue.push(frame);
    this.pumpTx();
  }

  /** The function was taken away: stop using it (its buffers are released with the domain). */
  detach(reason: string): void {
    this.lost = reason;
    this.metrics.txDropped += this.txQueue.length;
    this.txQueue.length = 0;
  }

  private pumpTx(): void {
    const tx = this.tx!;
    const { memory, fn } = this.o;
    let n = 0;
    while (this.txQueue.length > 0 && this.txFree.length > 0 && !tx.isFull()) {
      const frame = this.txQueue.shift()!;
      const id = this.txFree.pop()!;
      const b = this.txBufs[id];
      memory.page(b.pfn).set(frame, b.offset);
      this.metrics.bytesCopied += frame.byteLength;
      fn.toDevice(b.pfn, b.offset, frame.byteLength);
      tx.putRequest({ domid: 0, id, pfn: b.pfn, offset: b.offset, len: frame.byteLength });
      this.metrics.txPackets++;
      this.metrics.txBytes += frame.byteLength;
      n++;
    }
    if (n === 0) return;
    if (tx.pushRequests()) this.doorbell();
    else this.metrics.suppressed++;
  }

  private doorbell(): void {
    if (this.lost) return;
    this.metrics.doorbells++;
    this.o.fn.doorbell();
  }

  private onInterrupt(): void {
    const tx = this.tx;
    const rx = this.rx;
    if (!tx || !rx || this.lost) return;
    this.metrics.interrupts++;
    const { regs } = this.o.fn;
    if (regs.read(VF_REG.GEN) !== this.generation || (regs.read(VF_REG.STATUS) & VF_STATUS_ENABLED) === 0) {
      this.detach(`function ${this.o.fn.rid} was reset`);
      return;
    }
    let reposted = 0;
    do {
      for (let i = 0; i < tx.size; i++) {
        const r = tx.takeResponse();
        if (!r) break;
        if (r.id >= this.txBufs.length) continue;
        if (r.status !== HW_STATUS_OK) this.metrics.txErrors++;
        this.txFree.push(r.id);
      }
      for (let i = 0; i < rx.size; i++) {
        const r = rx.takeResponse();
        if (!r) break;
        const b = this.rxBufs[r.id];
        if (!b) continue;
        if (r.status > 0 && r.status <= BUF_SIZE) {
          const frame = this.o.memory.page(b.pfn).slice(b.offset, b.offset + r.status);
          this.metrics.rxPackets++;
          this.metrics.rxBytes += r.status;
          this.metrics.bytesCopied += r.status;
          this.receiver(frame);
        } else this.metrics.rxErrors++;
        rx.putRequest({ domid: 0, id: r.id, pfn: b.pfn, offset: b.offset, len: BUF_SIZE });
        reposted++;
      }
    } while (tx.finalCheckForResponses() || rx.finalCheckForResponses());
    if (reposted > 0 && rx.pushRequests()) this.doorbell();
    this.pumpTx();
  }
}
