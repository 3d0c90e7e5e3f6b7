/**
 * The I/O request slot: how a trapped port access travels from a vCPU to the device model's
 * owner and back (Xen's `struct ioreq` in the shared ioreq page, one slot per vCPU).
 *
 * Layout (Int32 words of a SharedArrayBuffer, one 64-byte slot per vCPU):
 *
 *   word 0  state   NONE 0 → READY 1 (vCPU) → INPROCESS 2 (server) → RESP_READY 3 (server) → NONE (vCPU)
 *   word 1  seq     incremented by the vCPU for every request (a server can tell a new access from
 *                   the one it just answered, and trace it)
 *   word 2  port    x86 I/O port, 0..0xffff
 *   word 3  size    1, 2 or 4
 *   word 4  dir     IO_DIR_OUT 0 / IO_DIR_IN 1
 *   word 5  data    the value written (OUT), or the value read (IN, written by the server)
 *   word 6  polling 1 while the server is polling the slot (written by the server only)
 *   word 7  pre-port  −1, or a port a VMM wrote without forwarding (a hosted VMM's shadow of the
 *                     Lance RAP): the server applies that 16-bit write before this access
 *   word 8  pre-data  the value of that deferred write
 *   word 9  doorbell  bumped by the vCPU's kick when the server waits on the slot itself (a
 *                     hosted VMApp) rather than on an event channel
 *
 * Who writes what, and why the order matters:
 *  - The vCPU fills port/size/dir/data, then stores state = READY (an Atomics store: everything
 *    before it is visible to whoever reads READY), then kicks the server (an event-channel send,
 *    as Xen notifies the ioreq server on a per-vCPU port) unless the server says it is polling,
 *    then blocks in `Atomics.wait` while the state is READY or INPROCESS. Nothing else runs on
 *    that vCPU meanwhile: that is the trap.
 *  - A server that stops polling stores polling = 0 and then re-reads the state. With the
 *    vCPU's "store READY, then load polling" this is ring.h's final check: at least one side
 *    sees the other's store, so a request is never left without a kick or a poll.
 *  - The server claims the request with compare-exchange READY → INPROCESS (a spurious or
 *    repeated kick finds nothing to claim), handles it, writes data, then stores RESP_READY and
 *    notifies the slot. The vCPU reads data only after it has seen RESP_READY.
 *  - The vCPU stores NONE once it has taken the answer; only then may it fill the slot again.
 *
 * A vCPU whose server never answers (dom0 gone) does not hang forever: after `deadlineMs` the
 * access completes as a read of a floating bus (all ones) and is counted as `timeouts`.
 */
import { IO_DIR_IN, IO_DIR_OUT, PortIoInstructions, floatingBus, ioMask, type IoSize } from './index.js';

export const IOREQ_SLOT_BYTES = 64;
export const IOREQ_NONE = 0;
export const IOREQ_READY = 1;
export const IOREQ_INPROCESS = 2;
export const IOREQ_RESP_READY = 3;

const W_STATE = 0;
const W_SEQ = 1;
const W_PORT = 2;
const W_SIZE = 3;
const W_DIR = 4;
const W_DATA = 5;
const W_POLLING = 6;
const W_PRE_PORT = 7;
const W_PRE_DATA = 8;
export const IOREQ_DOORBELL_WORD = 9;

export function createIoReqSlot(): SharedArrayBuffer {
  const slot = new SharedArrayBuffer(IOREQ_SLOT_BYTES);
  new Int32Array(slot)[W_PRE_PORT] = -1;
  return slot;
}

/**
 * A kick that needs no event channel: bump the slot's doorbell and wake whoever waits on it (a
 * hosted VMApp thread sleeping in `Atomics.waitAsync` on the doorbell word).
 */
export function doorbellKick(slot: SharedArrayBuffer): () => void {
  const w = new Int32Array(slot, 0, IOREQ_SLOT_BYTES / 4);
  return () => {
    Atomics.add(w, IOREQ_DOORBELL_WORD, 1);
    Atomics.notify(w, IOREQ_DOORBELL_WORD);
  };
}

/** One access as the server sees it, read once from the slot. */
export interface IoReq {
  /** A write the vCPU's VMM deferred and this access carries (applied first). */
  pre?: { port: number; data: number };
  seq: number;
  port: number;
  size: IoSize;
  dir: typeof IO_DIR_OUT | typeof IO_DIR_IN;
  data: number;
}

/** What an ioreq server counts (dom0's, or a hosted VMApp's). */
export interface IoReqServerCounters {
  /** Port accesses handled (each one a trap of the guest's vCPU). */
  traps: number;
  /** Context changes the traps caused: out of the guest's world to the device model and back. */
  worldSwitches: number;
  reads: number;
  writes: number;
  /** Accesses claimed while polling (no wake-up needed). */
  polled: number;
  /** Wake-ups of the server (event deliveries that found work, plus polls). */
  wakeups: number;
  /** Accesses to ports no device decodes (read as all ones, writes dropped). */
  unassigned: number;
  /** Device model handlers that threw (a bug: the access still completed). */
  handlerErrors: number;
  /** Writes a hosted VMM handled itself and deferred onto a forwarded access (no trap of their own). */
  deferredWrites: number;
}

export interface VcpuTrapCounters {
  /** Port accesses this vCPU made, each one a trap. */
  traps: number;
  /** Accesses that got no answer before the deadline (the server is gone). */
  timeouts: number;
  /** Microseconds this vCPU spent blocked in traps. */
  blockedUs: number;
  /** Event-channel kicks sent to the server, and kicks skipped because it was polling. */
  kicks: number;
  kicksSuppressed: number;
}

/**
 * The vCPU side: port I/O instructions that block the calling thread until answered. `kick`
 * notifies the server that a request is READY (an event-channel send to the ioreq port).
 */
export class VcpuPortIo extends PortIoInstructions {
  readonly counters: VcpuTrapCounters = { traps: 0, timeouts: 0, blockedUs: 0, kicks: 0, kicksSuppressed: 0 };
  private readonly w: Int32Array;
  private seq = 0;
  /** Set after a timeout: the server is gone, later accesses fail at once instead of waiting again. */
  private dead = false;

  constructor(
    slot: SharedArrayBuffer,
    private readonly kick: () => void,
    private readonly deadlineMs = 10_000,
    /** Spin this long for the answer before blocking in Atomics.wait (0: block at once). */
    private readonly spinUs = 20,
    /** Across a link: where syncForDevice ranges wait for the next trap to carry them. */
    private readonly syncList?: DmaSyncList,
  ) {
    super();
    this.w = new Int32Array(slot, 0, IOREQ_SLOT_BYTES / 4);
  }

  override syncForDevice(gpa: number, len: number): void {
    this.syncList?.add(gpa, len);
  }

  /**
   * One trapped access. `pre`: a 16-bit write the caller (a hosted VMM) handled itself and defers
   * to this forwarded access (it rides in the same request, no trap of its own).
   */
  access(port: number, size: IoSize, dir: number, value: number, pre?: { port: number; data: number }): number {
    this.counters.traps++;
    if (this.dead) {
      this.counters.timeouts++;
      return floatingBus(size);
    }
    const w = this.w;
    const t0 = performance.now();
    this.seq = (this.seq + 1) | 0;
    w[W_SEQ] = this.seq;
    w[W_PORT] = port & 0xffff;
    w[W_SIZE] = size;
    w[W_DIR] = dir;
    w[W_DATA] = ioMask(value, size) | 0;
    w[W_PRE_PORT] = pre ? pre.port & 0xffff : -1;
    w[W_PRE_DATA] = pre ? pre.data & 0xffff : 0;
    Atomics.store(w, W_STATE, IOREQ_READY);
    if (Atomics.load(w, W_POLLING) === 0) {
      this.counters.kicks++;
      this.kick();
    } else this.counters.kicksSuppressed++;
    const deadline = t0 + this.deadlineMs;
    // A polling server answers within microseconds: spin briefly before sleeping.
    const spinEnd = t0 + this.spinUs / 1000;
    while (Atomics.load(w, W_STATE) !== IOREQ_RESP_READY && performance.now() < spinEnd);
    for (;;) {
      const s = Atomics.load(w, W_STATE);
      if (s === IOREQ_RESP_READY) break;
      const left = deadline - performance.now();
      if (left <= 0) {
        // Take the request back if the server never claimed it; if it did, it may still answer
        // into the slot, which the next access overwrites only after this NONE store.
        Atomics.store(w, W_STATE, IOREQ_NONE);
        this.dead = true;
        this.counters.timeouts++;
        this.counters.blockedUs += (performance.now() - t0) * 1000;
        return floatingBus(size);
      }
      Atomics.wait(w, W_STATE, s, left);
    }
    const data = ioMask(Atomics.load(w, W_DATA), size);
    Atomics.store(w, W_STATE, IOREQ_NONE);
    this.counters.blockedUs += (performance.now() - t0) * 1000;
    return dir === IO_DIR_IN ? data : 0;
  }

}

/**
 * The server side of one slot: claim a READY request, let `handle` answer it, publish the answer.
 * Returns false when there was nothing to claim (a spurious or polled kick).
 */
export class IoReqSlotServer {
  private readonly w: Int32Array;
  constructor(slot: SharedArrayBuffer) {
    this.w = new Int32Array(slot, 0, IOREQ_SLOT_BYTES / 4);
  }

  /** Announce (or stop announcing) that this server polls the slot, so the vCPU need not kick. */
  setPolling(on: boolean): void {
    Atomics.store(this.w, W_POLLING, on ? 1 : 0);
  }

  /** True when a request is waiting to be claimed. */
  ready(): boolean {
    return Atomics.load(this.w, W_STATE) === IOREQ_READY;
  }

  serve(handle: (req: IoReq) => number): boolean {
    const req = this.claim();
    if (!req) return false;
    let data = 0;
    let failed = false;
    let failure: unknown;
    try {
      data = req.dir === IO_DIR_IN ? ioMask(handle(req), req.size) : (handle(req), 0);
    } catch (e) {
      // A device model must not throw on guest input; if one does, the access still completes
      // (as a floating bus) so the vCPU is not left blocked, and the error goes to the caller.
      data = floatingBus(req.size);
      failed = true;
      failure = e;
    }
    this.complete(data);
    if (failed) throw failure;
    return true;
  }

  /** Claim a READY request (READY → INPROCESS) and read it once into a private copy. */
  claim(): IoReq | undefined {
    const w = this.w;
    if (Atomics.compareExchange(w, W_STATE, IOREQ_READY, IOREQ_INPROCESS) !== IOREQ_READY) return undefined;
    // One read of each field: the guest could rewrite the slot meanwhile.
    const rawSize = w[W_SIZE];
    const size: IoSize = rawSize === 1 || rawSize === 2 || rawSize === 4 ? rawSize : 1;
    const prePort = w[W_PRE_PORT];
    return {
      seq: w[W_SEQ],
      port: w[W_PORT] & 0xffff,
      size,
      dir: w[W_DIR] === IO_DIR_IN ? IO_DIR_IN : IO_DIR_OUT,
      data: ioMask(w[W_DATA], size),
      ...(prePort >= 0 ? { pre: { port: prePort & 0xffff, data: w[W_PRE_DATA] & 0xffff } } : {}),
    };
  }

  /** Answer the claimed request: data first, then RESP_READY, then wake the vCPU. */
  complete(data: number): void {
    const w = this.w;
    w[W_DATA] = data | 0;
    Atomics.store(w, W_STATE, IOREQ_RESP_READY);
    Atomics.notify(w, W_STATE);
  }
}

/**
 * DMA sync list: the ranges a vCPU's driver handed to a device since the last trap
 * (`syncForDevice`), read by whoever carries the trap across a link (it ships those bytes with the
 * request, so the device model's copy of guest memory is current when it acts on it).
 *
 *   word 0      count of ranges (the vCPU writes; the carrier resets it to 0 once shipped)
 *   word 1+2i   gpa of range i;  word 2+2i  its length
 *
 * Only the vCPU thread appends, and only while no request of its is in flight; the carrier reads
 * and resets it while the vCPU is blocked in that request — so the two never overlap.
 */
export const DMA_SYNC_RANGES = 256;

export function createDmaSyncList(): SharedArrayBuffer {
  return new SharedArrayBuffer((1 + 2 * DMA_SYNC_RANGES) * 4);
}

export class DmaSyncList {
  private readonly w: Int32Array;
  constructor(buffer: SharedArrayBuffer) {
    this.w = new Int32Array(buffer);
  }
  add(gpa: number, len: number): void {
    const w = this.w;
    const n = w[0];
    if (n < DMA_SYNC_RANGES) {
      w[1 + 2 * n] = gpa | 0;
      w[2 + 2 * n] = len | 0;
      w[0] = n + 1;
      return;
    }
    // Full: fold everything into one range covering them all (more bytes, nothing missed).
    let lo = gpa;
    let hi = gpa + len;
    for (let i = 0; i < n; i++) {
      lo = Math.min(lo, w[1 + 2 * i] >>> 0);
      hi = Math.max(hi, (w[1 + 2 * i] >>> 0) + (w[2 + 2 * i] >>> 0));
    }
    w[1] = lo | 0;
    w[2] = (hi - lo) | 0;
    w[0] = 1;
  }
  /** Take the ranges listed so far (and empty the list). */
  take(): Array<{ gpa: number; len: number }> {
    const w = this.w;
    const n = Math.min(w[0], DMA_SYNC_RANGES);
    const out: Array<{ gpa: number; len: number }> = [];
    for (let i = 0; i < n; i++) out.push({ gpa: w[1 + 2 * i] >>> 0, len: w[2 + 2 * i] >>> 0 });
    w[0] = 0;
    return out;
  }
}
