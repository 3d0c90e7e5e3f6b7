/**
 * SvioNetDriver — the guest's VIF driver for an SV-IO network interface. Everything crosses the
 * VIF's two queues: TX and RX_POST go out (sharing the outgoing queue's 32 slots), TX_DONE and
 * RX come in. Buffers are 2 KiB halves of the guest's own frames; the engine's core copies frames
 * out of and into them. A full outgoing queue parks what is left (the device is asked to say when
 * it frees a slot); frames beyond a bounded transmit queue are dropped and counted.
 */
import {
  ETH_MAX_FRAME,
  PAGE_SIZE,
  VIF_RX,
  VIF_RX_POST,
  VIF_TX,
  VIF_TX_DONE,
  vifMessage,
  loadRecord,
  saveRecord,
  StateError,
  StateRecordError,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type FrameAllocator,
  type GuestMemory,
} from '@ringvisor/shared';
import { VifDriver, drainIncoming, pushOutgoing, type OpenVif } from '../../kernel/svio.js';
import { newVifNetMetrics, type VifNetMetrics } from './metrics.js';
import { svioNetDriverLayout } from './state.js';

const BUF = 2048;
const TX_BUFFERS = 32;
const RX_BUFFERS = 64;
const TX_QUEUE_LIMIT = 256;

/**
 * Persistence (Device, state.ts): quiesce() stops the driver acting — answers wait on the incoming
 * queue, frames to send queue up; save() writes the record; `SvioNetDriver.restore` builds a fresh
 * driver on the same arguments (taking the record's buffers, allocating none), which attach() starts.
 */
export class SvioNetDriver extends VifDriver implements Device {
  /** Set while restore() builds an instance: the constructor then allocates and posts nothing. */
  private static restoring = false;

  readonly counters: VifNetMetrics = newVifNetMetrics();
  readonly mac: string;
  private readonly tx: Array<{ pfn: number; offset: number }> = [];
  private readonly rx: Array<{ pfn: number; offset: number }> = [];
  private readonly txFree: number[] = [];
  private readonly rxToPost: number[] = [];
  private readonly txQueue: Uint8Array[] = [];
  private receiver: (frame: Uint8Array) => void = () => {};

  constructor(
    vif: OpenVif,
    private readonly memory: GuestMemory,
    frames: FrameAllocator,
  ) {
    super(vif);
    this.mac = vif.regs.mac;
    if (SvioNetDriver.restoring) {
      this.quiesced = true;
      return;
    }
    const buffers = (n: number, list: Array<{ pfn: number; offset: number }>) => {
      for (let i = 0; i < n; i += PAGE_SIZE / BUF) {
        const pfn = frames.alloc();
        for (let j = 0; j < PAGE_SIZE / BUF; j++) list.push({ pfn, offset: j * BUF });
      }
    };
    buffers(TX_BUFFERS, this.tx);
    buffers(RX_BUFFERS, this.rx);
    for (let id = TX_BUFFERS - 1; id >= 0; id--) this.txFree.push(id);
    for (let id = 0; id < RX_BUFFERS; id++) this.rxToPost.push(id);
    this.pump();
  }

  /**
   * The network VIF was created again (a device reset, a hardware restart): every buffer is ours
   * again. Receive buffers are posted on the new VIF; frames the old one had not sent are lost,
   * as a NIC reset loses them (counted; the UDP checker sees them as lost during the fault).
   */
  reattach(vif: OpenVif): void {
    this.attachVif(vif);
    this.counters.recoveries++;
    this.counters.txLost += TX_BUFFERS - this.txFree.length;
    this.txFree.length = 0;
    for (let id = TX_BUFFERS - 1; id >= 0; id--) this.txFree.push(id);
    this.rxToPost.length = 0;
    for (let id = 0; id < RX_BUFFERS; id++) this.rxToPost.push(id);
    this.pump();
  }

  get identity(): DeviceIdentity {
    return { kind: 'net', mode: 'svio', side: 'guest', type: 'svio-net-driver', devid: this.vif.spec.devid };
  }

  /** The VIF is open when the driver is built; a restored driver starts here. */
  async attach(): Promise<void> {
    if (!this.quiesced) return;
    this.resume();
    this.vif.doorbell(); // the device may sleep on an event index set before the save
  }

  async stop(reason: string): Promise<void> {
    this.quiesced = true; // nothing more taken or sent; the buffers stay the guest's
    this.counters.txDropped += this.txQueue.length;
    this.txQueue.length = 0;
    void reason;
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return { ops: m.txPackets + m.rxPackets, bytes: m.txBytes + m.rxBytes, errors: m.txErrors + m.rxErrors + m.txDropped + m.unexpected, detail: { ...m } };
  }

  async quiesce(): Promise<void> {
    this.quiesced = true;
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.interrupt();
    this.pump();
  }

  save(): DeviceStateRecord {
    if (!this.quiesced) throw new StateError(`VIF ${this.vif.spec.vif}: save() needs the driver quiesced first`);
    const buf = (b: { pfn: number; offset: number }) => ({ pfn: b.pfn, offset: b.offset === 0 ? (0 as const) : (2048 as const) });
    return saveRecord(svioNetDriverLayout, `dom/svio-vif/${this.vif.spec.devid}`, {
      ...this.queueIndices(),
      tx: this.tx.map(buf),
      rx: this.rx.map(buf),
      txFree: [...this.txFree],
      rxToPost: [...this.rxToPost],
      txQueue: this.txQueue.map((f) => f.slice()),
      mac: this.mac,
      counters: { ...this.counters },
    });
  }

  /** A fresh driver on `args` (the constructor's) carrying on the saved one; attach() starts it. */
  static restore(args: ConstructorParameters<typeof SvioNetDriver>, record: unknown): SvioNetDriver {
    const s = loadRecord(svioNetDriverLayout, record);
    const [vif, memory] = args;
    VifDriver.checkQueues(vif, s);
    for (const b of [...s.tx, ...s.rx]) if (!memory.hasFrame(b.pfn)) throw new StateRecordError(`VIF ${vif.spec.vif}: buffer frame ${b.pfn} of the record is not the guest's`);
    SvioNetDriver.restoring = true;
    let d: SvioNetDriver;
    try {
      d = new SvioNetDriver(...args);
    } finally {
      SvioNetDriver.restoring = false;
    }
    d.tx.push(...s.tx.map((b) => ({ ...b })));
    d.rx.push(...s.rx.map((b) => ({ ...b })));
    d.txFree.push(...s.txFree);
    d.rxToPost.push(...s.rxToPost);
    d.txQueue.push(...s.txQueue.map((f) => f.slice()));
    Object.assign(d.counters, s.counters);
    return d;
  }

  onReceive(cb: (frame: Uint8Array) => void): void {
    this.receiver = cb;
  }

  /**
   * Queue a frame. False when it is too long (dropped) or the queue is full (busy: backpressure
   * from a slow VIF, not an error; the caller may try again later).
   */
  transmit(frame: Uint8Array): boolean {
    if (frame.byteLength > ETH_MAX_FRAME) {
      this.counters.txDropped++;
      return false;
    }
    if (this.txQueue.length >= TX_QUEUE_LIMIT) {
      this.counters.txBusy++;
      return false;
    }
    this.txQueue.push(frame);
    this.pump();
    return true;
  }

  /** Fill the outgoing queue: rx buffers to post, then frames to send; one push, one doorbell at most. */
  private pump(): void {
    if (this.quiesced) return;
    const { out } = this.vif;
    let n = 0;
    while (this.rxToPost.length > 0 && out.free() > 0) {
      const id = this.rxToPost.shift()!;
      const b = this.rx[id];
      out.put(vifMessage({ type: VIF_RX_POST, id, gfn: b.pfn, offset: b.offset, len: BUF }));
      n++;
    }
    while (this.txQueue.length > 0 && this.txFree.length > 0 && out.free() > 0) {
      const frame = this.txQueue.shift()!;
      const id = this.txFree.pop()!;
      const b = this.tx[id];
      this.memory.page(b.pfn).set(frame, b.offset);
      this.vif.toDevice(b.pfn, b.offset, frame.byteLength);
      this.counters.bytesCopied += frame.byteLength;
      out.put(vifMessage({ type: VIF_TX, id, gfn: b.pfn, offset: b.offset, len: frame.byteLength }));
      this.counters.txPackets++;
      this.counters.txBytes += frame.byteLength;
      n++;
    }
    if (n > 0) pushOutgoing(this.vif, this.counters);
    // Work left and no room: ask the device to say when it frees a slot (or go on if it just did).
    if ((this.rxToPost.length > 0 || (this.txQueue.length > 0 && this.txFree.length > 0)) && out.free() === 0 && out.finalCheckForSpace()) setImmediate(() => this.pump());
  }

  protected onInterrupt(): void {
    this.counters.interrupts++;
    drainIncoming(
      this.vif,
      (m) => {
        if (m.type === VIF_TX_DONE && m.id < TX_BUFFERS) {
          if (m.status !== 0) this.counters.txErrors++;
          this.txFree.push(m.id);
        } else if (m.type === VIF_RX && m.id < RX_BUFFERS) {
          const b = this.rx[m.id];
          if (m.status > 0 && m.status <= BUF) {
            const frame = this.memory.page(b.pfn).slice(b.offset, b.offset + m.status);
            this.counters.rxPackets++;
            this.counters.rxBytes += m.status;
            this.counters.bytesCopied += m.status;
            this.receiver(frame);
          } else this.counters.rxErrors++;
          this.rxToPost.push(m.id);
        } else this.counters.unexpected++;
      },
      this.counters,
    );
    this.pump();
  }
}
