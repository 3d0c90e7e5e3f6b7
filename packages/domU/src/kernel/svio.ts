/**
 * The guest kernel's side of an SV-IO VIF: the access API (shared/src/svio/access.ts). Open by
 * id: both queues initialised on frames of the guest's own memory, OPEN_ID / OUT_PFN / IN_PFN
 * written, then CTRL.OPEN, then the doorbell; the engine answers in STATUS. The VIF's doorbell
 * and its interrupt are the guest's end of one event channel with the hardware (dom0 runs nothing
 * on this path). Across processes the same steps run over the guest's direct link to the
 * hardware, which mirrors the register page, the queues and the buffers (openVif's transport).
 */
import {
  QueueConsumer,
  QueueProducer,
  SVIO_CTRL_OPEN,
  SVIO_REG,
  SVIO_STATUS_ERROR,
  SVIO_STATUS_OPEN,
  SvioRegisters,
  TimeoutError,
  DeviceError,
  StateRecordError,
  QUEUE_CONS,
  QUEUE_PROD,
  initMessageQueue,
  vifCodec,
  type VifMessage,
} from '@ringvisor/shared';
import type { GuestKernel } from './kernel.js';
import type { VifTransport } from './direct-link.js';

export interface VifSpec {
  kind: 'net' | 'blk' | 'cam';
  devid: number;
  vif: number;
  port: number;
  page?: SharedArrayBuffer;
}

export interface OpenVif {
  readonly spec: VifSpec;
  readonly regs: SvioRegisters;
  readonly out: QueueProducer<VifMessage>;
  readonly inq: QueueConsumer<VifMessage>;
  readonly counters: { doorbells: number; interrupts: number };
  doorbell(): void;
  onInterrupt(handler: () => void): void;
  /**
   * Bytes of our memory the device is about to read (a frame to send, data to write): across
   * processes they are shipped before the push that hands them over; with shared memory, nothing.
   */
  toDevice(pfn: number, offset: number, length: number): void;
}

/**
 * Open a VIF. With shared memory (threads) the register page is the engine's own (`spec.page`);
 * across processes (ws) `transport` mirrors it, the queues and the buffers over the guest's
 * direct link to the hardware (kernel/direct-link.ts), and every doorbell is an event on it.
 */
// The bound on an open is for a device that never answers, not for a slow one: a loaded machine
// (a hardware restart re-opening every VIF at once) takes seconds.
export async function openVif(kernel: GuestKernel, spec: VifSpec, transport?: VifTransport, timeoutMs = 15_000): Promise<OpenVif> {
  const page = spec.page ? new Uint8Array(spec.page) : transport?.page;
  if (!page) throw new DeviceError(`VIF ${spec.vif}: no register page and no direct link to the hardware`);
  const regs = new SvioRegisters(page);
  if (!spec.page && transport) {
    regs.sync = transport.regsSync;
    // The device's registers (id, kind, MAC, size…) arrive over the link first.
    const deadline = performance.now() + timeoutMs;
    while (regs.read(SVIO_REG.VIF_ID) !== spec.vif) {
      if (performance.now() > deadline) throw new TimeoutError(`VIF ${spec.vif}: its register page never arrived over the direct link`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  const mirrored = !spec.page && transport ? transport : undefined;
  const counters = { doorbells: 0, interrupts: 0 };
  // Opening goes through the engine (the event channel); once open, kicks go to the VIF's core
  // (threads: the KICK word; ws: every doorbell is the event, forwarded by the engine).
  let open = false;
  const doorbell = () => {
    counters.doorbells++;
    if (mirrored) mirrored.ring();
    else if (open) regs.kick();
    else kernel.notifyRemote(spec.port);
  };
  const outPfn = kernel.frames.alloc();
  const inPfn = kernel.frames.alloc();
  // ws: the device armed an event index we had already passed — ring on its behalf (ring/mirror.ts).
  const outSync = mirrored?.queueSync(outPfn, doorbell);
  const inSync = mirrored?.queueSync(inPfn, doorbell);
  initMessageQueue(kernel.memory.page(outPfn), outSync);
  initMessageQueue(kernel.memory.page(inPfn), inSync);
  regs.write(SVIO_REG.OPEN_ID, spec.vif);
  regs.write(SVIO_REG.OUT_PFN, outPfn);
  regs.write(SVIO_REG.IN_PFN, inPfn);
  regs.write(SVIO_REG.CTRL, SVIO_CTRL_OPEN);
  doorbell();
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const st = regs.read(SVIO_REG.STATUS);
    if (st & SVIO_STATUS_OPEN) {
      open = true;
      break;
    }
    if (st & SVIO_STATUS_ERROR) throw new DeviceError(`VIF ${spec.vif}: the engine refused the open (code ${regs.read(SVIO_REG.ERRCODE)})`);
    if (performance.now() > deadline) throw new TimeoutError(`VIF ${spec.vif}: not open after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
  return {
    spec,
    regs,
    out: new QueueProducer(kernel.memory.page(outPfn), vifCodec, outSync),
    inq: new QueueConsumer(kernel.memory.page(inPfn), vifCodec, inSync),
    counters,
    doorbell,
    toDevice: mirrored ? (pfn, offset, length) => mirrored.toDevice(pfn, offset, length) : () => {},
    onInterrupt: (handler) =>
      kernel.events.on(spec.port, () => {
        counters.interrupts++;
        handler();
      }),
  };
}

/**
 * A VIF driver's interrupt handler's loop: take every incoming message (bounded by the queue),
 * give the slots back — ringing the device if it waits for room — and final-check before leaving.
 */
export function drainIncoming(vif: OpenVif, handle: (m: VifMessage) => void, counters: { doorbells: number }): void {
  const { inq } = vif;
  do {
    for (let i = 0; i < inq.size; i++) {
      const m = inq.take();
      if (!m) break;
      handle(m);
    }
    if (inq.release()) {
      counters.doorbells++;
      vif.doorbell();
    }
  } while (inq.finalCheck());
}

/** Publish what the driver put on the outgoing queue; ring only if the device asked. */
export function pushOutgoing(vif: OpenVif, counters: { doorbells: number; suppressed: number }): void {
  if (vif.out.push()) {
    counters.doorbells++;
    vif.doorbell();
  } else counters.suppressed++;
}

/**
 * What the three VIF drivers share: the VIF they drive now (a reset hands them a new one), its
 * interrupt bound to the driver's handler, and holding the answers back — a hostile driver's
 * flood (svio-misbehave.ts): they wait on the incoming queue meanwhile, none is lost.
 */
export abstract class VifDriver {
  private held = false;
  /** Between quiesce() and resume() (Device): the VIF's answers wait on the incoming queue. */
  protected quiesced = false;

  protected constructor(protected vif: OpenVif) {
    vif.onInterrupt(() => this.interrupt());
  }

  /** The VIF the driver drives now. */
  get currentVif(): OpenVif {
    return this.vif;
  }

  /** Stop taking the VIF's answers (true) or go on (false). */
  holdInterrupts(on: boolean): void {
    this.held = on;
    if (!on) this.interrupt();
  }

  /** Drive a VIF created again (the driver then starts its own state over). */
  protected attachVif(vif: OpenVif): void {
    this.vif = vif;
    vif.onInterrupt(() => this.interrupt());
  }

  /** Take the VIF's answers (the interrupt handler). */
  protected abstract onInterrupt(): void;

  /** The queue indices this driver publishes (outgoing prod, incoming cons), for its record. */
  protected queueIndices(): { outProd: number; inCons: number } {
    return { outProd: this.vif.out.page.load(QUEUE_PROD), inCons: this.vif.inq.page.load(QUEUE_CONS) };
  }

  /** A record's queue indices must be the VIF's queues' (else it is not of this memory). */
  protected static checkQueues(vif: OpenVif, s: { outProd: number; inCons: number }): void {
    const outProd = vif.out.page.load(QUEUE_PROD);
    const inCons = vif.inq.page.load(QUEUE_CONS);
    if (outProd !== s.outProd || inCons !== s.inCons)
      throw new StateRecordError(`VIF ${vif.spec.vif}: the record's queue indices (prod ${s.outProd}, cons ${s.inCons}) are not the queues' (${outProd}, ${inCons})`);
  }

  protected interrupt(): void {
    if (!this.held && !this.quiesced) this.onInterrupt();
  }
}
