/**
 * dom0's driver for the physical disk: the front end of the hwblk queue pair in dom0 memory.
 * Requests name machine frames (often a guest's frame that blkback grant-mapped), so the device
 * DMAs straight into guest memory — the zero-copy path of Xen's blkback.
 */
import {
  FrontRing,
  HWBLK_OP_WRITE,
  HW_STATUS_EIO,
  type MachineFrame,
  type PageSync,
  hwBlkProtocol,
  initSharedRing,
  type EventChannelGate,
  type GuestMemory,
  type HwBlkRequest,
  type HwStatusResponse,
} from '@ringvisor/shared';

interface Pending {
  req: HwBlkRequest;
  resolve: (status: number) => void;
}

export interface PhysicalDiskCounters {
  submitted: number;
  completed: number;
  errors: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
  queuedPeak: number;
  /** Requests resubmitted after a device reset. */
  resubmitted: number;
}

/**
 * Streaming DMA mappings, when the device does not share machine memory with dom0 (hwsim in its
 * own process): `toDevice` hands a buffer's current contents to the device before it is used;
 * `ringSync` mirrors a queue page. Absent on shared memory.
 */
export interface DriverDma {
  toDevice(frame: MachineFrame): void;
  /** `lateWake`: the device armed its event index behind requests already pushed — kick it. */
  ringSync(pfn: number, page: Uint8Array, lateWake: () => void): PageSync | undefined;
}

export class PhysicalDiskDriver {
  ring: FrontRing<HwBlkRequest, HwStatusResponse>;
  readonly counters: PhysicalDiskCounters = { submitted: 0, completed: 0, errors: 0, doorbells: 0, suppressed: 0, interrupts: 0, queuedPeak: 0, resubmitted: 0 };
  /** Set once the device reports its geometry. */
  sectors = 0;
  private nextId = 1;
  private readonly inflight = new Map<number, Pending>();
  private readonly backlog: Pending[] = [];

  constructor(
    private readonly memory: GuestMemory,
    readonly queuePfn: number,
    private readonly events: EventChannelGate,
    readonly port: number,
    private readonly dma?: DriverDma,
  ) {
    this.ring = this.freshRing();
    events.on(port, () => this.onInterrupt());
  }

  private freshRing(): FrontRing<HwBlkRequest, HwStatusResponse> {
    const page = this.memory.page(this.queuePfn);
    initSharedRing(page);
    const ring = new FrontRing(page, hwBlkProtocol, this.dma?.ringSync(this.queuePfn, page, () => this.doorbell()));
    // The device's copy of the queue page must start from the initialised ring (event indices 1).
    this.dma?.toDevice({ domid: 0, pfn: this.queuePfn });
    return ring;
  }

  /**
   * The device was reset (the hardware restarted): what it had consumed is gone with it, and the
   * ring's indices cannot say which requests it answered — it completes them out of order. As a
   * driver does after a controller reset, start the queue afresh and resubmit every request not
   * yet completed, in submission order; a request that had completed on the device but whose
   * completion was never seen is done twice (reads and writes of the same data are idempotent).
   * Call before the new device attaches the queue; `resume()` once it has.
   */
  resetQueue(): void {
    this.ring = this.freshRing();
    const pending = [...this.inflight.values()].sort((a, b) => a.req.id - b.req.id);
    this.inflight.clear();
    this.backlog.unshift(...pending);
    this.counters.resubmitted += pending.length;
  }

  /** After a reset, push the resubmitted requests to the new device, and kick it for any already pushed. */
  resume(): void {
    this.pump();
    if (this.inflight.size > 0) this.doorbell();
  }

  get outstanding(): number {
    return this.inflight.size + this.backlog.length;
  }

  /** Submit one request; resolves with the device status (0 OK). Never rejects. */
  submit(req: Omit<HwBlkRequest, 'id'>): Promise<number> {
    return new Promise((resolve) => {
      this.backlog.push({ req: { ...req, id: 0 }, resolve });
      this.counters.queuedPeak = Math.max(this.counters.queuedPeak, this.backlog.length);
      this.pump();
    });
  }

  private pump(): void {
    let n = 0;
    while (this.backlog.length > 0 && !this.ring.isFull()) {
      const p = this.backlog.shift()!;
      p.req.id = this.nextId;
      this.nextId = (this.nextId + 1) >>> 0 || 1;
      this.inflight.set(p.req.id, p);
      if (this.dma && p.req.op === HWBLK_OP_WRITE) for (const seg of p.req.segments) this.dma.toDevice({ domid: seg.domid, pfn: seg.pfn });
      this.ring.putRequest(p.req);
      n++;
    }
    if (n === 0) return;
    this.counters.submitted += n;
    if (this.ring.pushRequests()) this.doorbell();
    else this.counters.suppressed++;
  }

  private doorbell(): void {
    this.events.send(this.port);
    this.counters.doorbells++;
  }

  private onInterrupt(): void {
    this.counters.interrupts++;
    do {
      for (let i = 0; i < this.ring.size; i++) {
        const rsp = this.ring.takeResponse();
        if (!rsp) break;
        const p = this.inflight.get(rsp.id);
        if (!p) continue;
        this.inflight.delete(rsp.id);
        this.counters.completed++;
        if (rsp.status !== 0) this.counters.errors++;
        p.resolve(rsp.status);
      }
    } while (this.ring.finalCheckForResponses());
    this.pump();
  }

  /** Fail everything still waiting (the device went away). */
  abort(): void {
    for (const p of [...this.inflight.values(), ...this.backlog.splice(0)]) p.resolve(HW_STATUS_EIO);
    this.inflight.clear();
  }
}
