/**
 * pcnet — the guest's driver for the emulated AMD Am79C970A (PCnet-PCI II), following Linux
 * pcnet32 (drivers/net/ethernet/amd/pcnet32.c) access for access, in 16-bit WIO mode: a CSR is
 * reached by writing its number to RAP and then accessing RDP (2 port accesses), a BCR likewise
 * through BDP. Every PortIo call is a trap of this vCPU, so the sequence is the cost model.
 *
 * Memory: the init block, both descriptor rings (SWSTYLE 2, 16-byte descriptors) and the packet
 * buffers live in the guest's own frames; the chip reaches them by DMA at gpa = pfn*4096 + off.
 * Descriptors are written with plain stores and the OWN bit last (an Atomics store of the status
 * half, pcnet32's wmb()); the trap that follows (TDMD) orders them for the device model anyway.
 *
 * Per-packet port accesses (pcnet32's pattern; the numbers the emulation benchmarks explain):
 *  - transmit: fill the descriptor in memory, then RAP=0, RDP=IENA|TDMD — 2 writes.
 *  - interrupt (pcnet32_interrupt): read CSR0 (2), acknowledge by writing the bits back, which
 *    also clears IENA (2), mask every source in CSR3 (read 2 + write 2) and schedule the poll: 8.
 *  - poll (pcnet32_poll): reclaim tx and take rx descriptors — memory only — then unmask CSR3
 *    (read 2 + write 2) and write CSR0 = IENA (2): 6.
 *  So one interrupt costs 14 accesses however many frames it covers; a poll that used its whole
 *  budget is run again later with interrupts still masked (NAPI), costing nothing until it ends.
 */
import {
  DeviceError,
  InvalidArgumentError,
  PAGE_SIZE,
  StateError,
  StateRecordError,
  loadRecord,
  saveRecord,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type FrameAllocator,
  type GuestMemory,
  type PortIo,
} from '@ringvisor/shared';
import { PCNET_STATE, PCNET_TX_BACKLOG, type PcnetState } from './state.js';
import { newPcnetMetrics, type PcnetMetrics } from './metrics.js';

// WIO port offsets.
const RDP = 0x10;
const RAP = 0x12;
const RESET = 0x14;
const BDP = 0x16;
const DWIO_RAP = 0x14;
const DWIO_RESET = 0x18;
const DWIO_BDP = 0x1c;

const CSR0_INIT = 0x0001;
const CSR0_START = 0x0002;
const CSR0_STOP = 0x0004;
const CSR0_TXPOLL = 0x0008;
const CSR0_INTEN = 0x0040;
const CSR0_IDON = 0x0100;
const CSR0_MERR = 0x0800;
const CSR0_MISS = 0x1000;
const CSR0_BABL = 0x4000;
const CSR0_NORMAL = CSR0_START | CSR0_INTEN;
/** Bits pcnet32's handler loops on (ERR, MERR, RINT, TINT, IDON), and what its ack write leaves out (INIT, STRT, STOP, TDMD, IENA). */
const CSR0_INT_BITS = 0x8f00;
const CSR0_ACK_KEEP = ~0x004f;
/** CSR3: every interrupt source masked. */
const CSR3_MASK_ALL = 0x5f00;
const CSR4_AUTO_TX_PAD = 0x0915;

/** Descriptor status (upper half of word 1). */
const ST_OWN = 0x8000;
const ST_ERR = 0x4000;
const ST_TX_NEW = 0x8300; // OWN | STP | ENP

/** Receive buffer (pcnet32's PKT_BUF_SKB), two per frame. */
const PKT_BUF_SIZE = 1544;
const BUF_STRIDE = 2048;
const BUFS_PER_FRAME = PAGE_SIZE / BUF_STRIDE;
const DESC = 16;
const INIT_BLOCK_BYTES = 28;
const ETH_MIN = 14;
const ETH_MAX = 1514;
const ETH_FCS = 4;

/** Frames queued in the driver while the tx ring is full (Linux's default txqueuelen is 1000). */
const TX_BACKLOG = PCNET_TX_BACKLOG;
const MAX_INTERRUPT_WORK = 2; // pcnet32's max_interrupt_work
const IDON_POLLS = 100; // pcnet32_open polls CSR0 this many times
const IDON_WAITS = 50; // then (unlike pcnet32, which carries on) waits up to this many ms
/** Handler re-runs for interrupts that arrived while it ran (a synchronous wiring can re-enter). */
const MAX_HANDLER_ROUNDS = 4;

export interface PcnetDriverOptions {
  /** Every call is a trap; the vCPU blocks until the device model answers. */
  io: PortIo;
  /** I/O base of the chip's 32-byte window. */
  base: number;
  memory: GuestMemory;
  frames: FrameAllocator;
  /** Register the virtual IRQ handler (an event-channel upcall). */
  onInterrupt(handler: () => void): void;
  /** log2 of the ring sizes (0..9; default rx 5, tx 4: 32 and 16 entries, as pcnet32). */
  rxRingLog2?: number;
  txRingLog2?: number;
  /** The vif's device id in its guest (identity and the record's instance name); default 0. */
  devid?: number;
}

type State = 'new' | 'probed' | 'open' | 'closed';

/**
 * Persistence (the Device interface): quiesce() makes the driver touch the chip no more — frames
 * to send wait in its queue, an interrupt is remembered, a scheduled poll is held — and waits
 * for an open() in progress; save() writes the record (state.ts); `PcnetDriver.restore(options,
 * record)` builds a driver on the same memory and PortIo that owns the same frames and rings and
 * catches up: the remembered interrupt is handled, the poll scheduled, the queue sent.
 */
export class PcnetDriver implements Device {
  readonly counters: PcnetMetrics = newPcnetMetrics();
  readonly identity: DeviceIdentity;
  private paused = false;
  private stopped = false;
  /** An interrupt that came while quiesced: handled on resume (or by the restored driver). */
  private irqOwed = false;
  private pollTimer: NodeJS.Immediate | undefined;
  private opening: Promise<void> | undefined;
  chipVersion = 0;
  private readonly o: PcnetDriverOptions;
  private readonly view: DataView;
  private readonly u16: Uint16Array;
  private readonly rxSize: number;
  private readonly txSize: number;
  private readonly rxLog2: number;
  private readonly txLog2: number;
  private state: State = 'new';
  private hwaddr = new Uint8Array(6);
  private readonly pfns: number[] = [];
  private initBlock = 0;
  private rxRing = 0;
  private txRing = 0;
  private rxBufs: number[] = [];
  private txBufs: number[] = [];
  private readonly txLens: number[];
  private curRx = 0;
  private curTx = 0;
  private dirtyTx = 0;
  private napiScheduled = false;
  private inHandler = false;
  private irqPending = false;
  private irqRegistered = false;
  private receiver: (frame: Uint8Array) => void = () => {};

  constructor(o: PcnetDriverOptions) {
    this.rxLog2 = o.rxRingLog2 ?? 5; // pcnet32: RX_RING_SIZE 32, TX_RING_SIZE 16
    this.txLog2 = o.txRingLog2 ?? 4;
    for (const [name, v] of [['rxRingLog2', this.rxLog2], ['txRingLog2', this.txLog2]] as const)
      if (!Number.isInteger(v) || v < 0 || v > 9) throw new InvalidArgumentError(`pcnet ${name} must be 0..9 (the chip's largest ring is 512), got ${v}`);
    if (!Number.isInteger(o.base) || o.base < 0 || o.base + 0x20 > 0x10000) throw new InvalidArgumentError(`pcnet I/O base 0x${o.base.toString(16)} is outside the port space`);
    this.o = o;
    this.identity = { kind: 'net', mode: 'emulated', side: 'guest', type: PCNET_STATE.type, devid: o.devid ?? 0 };
    this.view = new DataView(o.memory.buffer);
    this.u16 = new Uint16Array(o.memory.buffer);
    this.rxSize = 1 << this.rxLog2;
    this.txSize = 1 << this.txLog2;
    this.txLens = new Array<number>(this.txSize).fill(0);
  }

  get mac(): Uint8Array {
    return this.hwaddr.slice();
  }

  onReceive(cb: (frame: Uint8Array) => void): void {
    this.receiver = cb;
  }

  // --- port access (pcnet32's pcnet32_wio_* helpers) ------------------------------------------

  private inw(off: number): number {
    this.counters.portAccesses++;
    this.counters.portReads++;
    return this.o.io.inw(this.o.base + off);
  }
  private inb(off: number): number {
    this.counters.portAccesses++;
    this.counters.portReads++;
    return this.o.io.inb(this.o.base + off);
  }
  private outw(off: number, v: number): void {
    this.counters.portAccesses++;
    this.counters.portWrites++;
    this.o.io.outw(this.o.base + off, v);
  }
  private inl(off: number): number {
    this.counters.portAccesses++;
    this.counters.portReads++;
    return this.o.io.inl(this.o.base + off);
  }
  private outl(off: number, v: number): void {
    this.counters.portAccesses++;
    this.counters.portWrites++;
    this.o.io.outl(this.o.base + off, v);
  }
  /**
   * The chip's two register maps (pcnet32_wio / pcnet32_dwio): 16-bit I/O at RDP 0x10, RAP 0x12,
   * RESET 0x14, BDP 0x16; or, once a 32-bit write switched it (only a hardware reset switches
   * back), 32-bit I/O at 0x10, 0x14, 0x18, 0x1c. Probe finds which one answers.
   */
  private dwio = false;
  private setRap(n: number): void {
    if (this.dwio) this.outl(DWIO_RAP, n);
    else this.outw(RAP, n);
  }
  private readRap(): number {
    return this.dwio ? this.inl(DWIO_RAP) & 0xffff : this.inw(RAP);
  }
  private readCsr(n: number): number {
    this.setRap(n);
    return this.dwio ? this.inl(RDP) & 0xffff : this.inw(RDP);
  }
  private writeCsr(n: number, v: number): void {
    this.setRap(n);
    if (this.dwio) this.outl(RDP, v & 0xffff);
    else this.outw(RDP, v & 0xffff);
  }
  private readBcr(n: number): number {
    this.setRap(n);
    return this.dwio ? this.inl(DWIO_BDP) & 0xffff : this.inw(BDP);
  }
  private writeBcr(n: number, v: number): void {
    this.setRap(n);
    if (this.dwio) this.outl(DWIO_BDP, v & 0xffff);
    else this.outw(BDP, v & 0xffff);
  }
  private reset(): void {
    if (this.dwio) this.inl(DWIO_RESET);
    else this.inw(RESET);
  }

  /** pcnet32_probe1's mode check: reset, CSR0 reads 0x0004, RAP reads back. */
  private answers(dwio: boolean): boolean {
    this.dwio = dwio;
    this.reset();
    if (this.readCsr(0) !== CSR0_STOP) return false;
    this.setRap(88);
    return this.readRap() === 88;
  }

  // --- probe, open, close ---------------------------------------------------------------------

  /** pcnet32_probe1: reset, check the chip answers in WIO mode, identify it, read its address. */
  probe(): { mac: Uint8Array; chipVersion: number } {
    if (this.state !== 'new') throw new DeviceError(`pcnet at 0x${this.o.base.toString(16)}: already probed`);
    const where = `pcnet at 0x${this.o.base.toString(16)}`;
    if (!this.answers(false) && !this.answers(true)) throw new DeviceError(`${where}: no chip answers in 16- or 32-bit I/O mode (CSR0 is not 0x0004 after reset)`);
    const id = (this.readCsr(88) | (this.readCsr(89) << 16)) >>> 0;
    if ((id & 0xfff) !== 0x003) throw new DeviceError(`${where}: unsupported chip id 0x${id.toString(16)}`);
    this.chipVersion = (id >>> 12) & 0xffff;
    // The address the chip loaded into CSR12-14 on reset, checked against the PROM (the PROM wins).
    const csrAddr = new Uint8Array(6);
    for (let i = 0; i < 3; i++) {
      const v = this.readCsr(12 + i);
      csrAddr[2 * i] = v & 0xff;
      csrAddr[2 * i + 1] = (v >> 8) & 0xff;
    }
    const prom = new Uint8Array(6);
    for (let i = 0; i < 6; i++) prom[i] = this.inb(i);
    const same = csrAddr.every((b, i) => b === prom[i]);
    this.hwaddr = !same || !validEther(csrAddr) ? (validEther(prom) ? prom : new Uint8Array(6)) : csrAddr;
    if (this.inb(14) !== 0x57 || this.inb(15) !== 0x57) throw new DeviceError(`${where}: APROM signature is not 'WW'`);
    // pcnet32 allocates the init block here and points the chip at it in 32-bit mode.
    this.initBlock = this.gpa(this.allocRun(1), 0);
    this.writeBcr(20, 2);
    this.writeCsr(1, this.initBlock & 0xffff);
    this.writeCsr(2, this.initBlock >>> 16);
    this.writeBcr(2, this.readBcr(2) | 0x1000); // enable LED writes
    this.state = 'probed';
    return { mac: this.mac, chipVersion: this.chipVersion };
  }

  /** pcnet32_open: reset, SWSTYLE 2, rings and buffers, INIT, wait for IDON, then IENA|STRT. */
  open(): Promise<void> {
    const p = this.doOpen();
    this.opening = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  private async doOpen(): Promise<void> {
    if (this.state !== 'probed') throw new DeviceError(`pcnet: open() needs a probed, closed device (state ${this.state})`);
    if (!validEther(this.hwaddr)) throw new DeviceError('pcnet: no valid station address');
    if (!this.irqRegistered) {
      this.o.onInterrupt(this.onIrq);
      this.irqRegistered = true;
    }
    this.reset();
    this.writeBcr(20, 2);
    this.writeBcr(2, (this.readBcr(2) & ~2) | 2); // autoselect the port
    this.writeBcr(9, this.readBcr(9) & ~3); // full duplex off (autoselect)
    this.writeCsr(124, this.readCsr(124) & ~0x10); // GPSI off
    this.setupRings();
    this.writeCsr(1, this.initBlock & 0xffff);
    this.writeCsr(2, this.initBlock >>> 16);
    this.writeCsr(4, CSR4_AUTO_TX_PAD);
    this.writeCsr(0, CSR0_INIT);
    let csr0 = 0;
    let idon = false;
    for (let i = 0; i < IDON_POLLS && !idon; i++) {
      csr0 = this.readCsr(0);
      idon = (csr0 & CSR0_IDON) !== 0;
      if (csr0 & CSR0_MERR) break;
    }
    for (let i = 0; i < IDON_WAITS && !idon && !(csr0 & CSR0_MERR); i++) {
      await new Promise((r) => setTimeout(r, 1));
      csr0 = this.readCsr(0);
      idon = (csr0 & CSR0_IDON) !== 0;
    }
    if (!idon) {
      this.writeCsr(0, CSR0_STOP);
      this.releaseRings();
      throw new DeviceError(`pcnet: initialisation failed (CSR0 0x${csr0.toString(16)}${csr0 & CSR0_MERR ? ', MERR: init block unreachable' : ''})`);
    }
    this.state = 'open';
    // IDON is left set (pcnet32: clearing it here upsets the '974): with IENA it raises the
    // first interrupt, which acknowledges it.
    this.writeCsr(0, CSR0_NORMAL);
  }

  /**
   * Bring back a chip left in an unknown state (by a hostile program on this vCPU, or a wedged
   * device): close, probe and open again — what `ip link set down/up` does.
   */
  async reopen(): Promise<void> {
    this.close();
    this.state = 'new';
    this.probe();
    await this.open();
  }

  /** pcnet32_close: read the missed-frame counter, STOP, back to 16-bit mode, free everything. */
  close(): void {
    if (this.state === 'closed' || this.state === 'new') return;
    if (this.state === 'open') {
      this.counters.rxMissedCounter = this.readCsr(112);
      this.writeCsr(0, CSR0_STOP);
      this.writeBcr(20, 4);
    }
    this.state = 'closed';
    this.backlog.length = 0;
    this.releaseRings();
    for (const pfn of this.pfns.splice(0)) this.o.frames.release(pfn);
    this.initBlock = 0;
  }

  // --- the Device interface -------------------------------------------------------------------

  /** Probe and open the chip (what guest boot does). */
  async attach(): Promise<void> {
    if (this.stopped) throw new StateError(`pcnet${this.identity.devid}: attach after stop`);
    if (this.state === 'new') this.probe();
    if (this.state === 'probed') await this.open();
  }

  /**
   * A running driver closes the chip and frees its frames. A quiesced one (its state saved, to
   * live on in a restored driver) is abandoned as it is: no access to the chip, nothing freed.
   */
  async stop(_reason: string): Promise<void> {
    if (this.stopped) return;
    if (!this.paused) this.close();
    this.stopped = true;
    this.paused = true;
    if (this.pollTimer) clearImmediate(this.pollTimer);
    this.pollTimer = undefined;
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.txPackets + m.rxPackets,
      bytes: m.txBytes + m.rxBytes,
      // Frames the NIC missed for want of a posted buffer are drops (detail.rxMissed), not errors.
      errors: m.txErrors + m.rxErrors - m.rxMissed + m.txDropped,
      detail: { ...m, txBacklog: this.backlog.length },
    };
  }

  async quiesce(): Promise<void> {
    this.paused = true;
    if (this.pollTimer) clearImmediate(this.pollTimer); // napiScheduled stays set: the poll is owed
    this.pollTimer = undefined;
    await this.opening;
  }

  resume(): void {
    if (this.stopped) return;
    this.paused = false;
    this.catchUp();
  }

  save(): DeviceStateRecord {
    if (!this.paused || this.stopped) throw new StateError(`pcnet${this.identity.devid}: save() needs a quiesced, running driver`);
    const state: PcnetState = {
      state: this.state,
      chipVersion: this.chipVersion,
      dwio: this.dwio,
      mac: this.hwaddr.slice(),
      pfns: [...this.pfns],
      initBlock: this.initBlock,
      rxRing: this.rxRing,
      txRing: this.txRing,
      rxLog2: this.rxLog2,
      txLog2: this.txLog2,
      rxBufs: [...this.rxBufs],
      txBufs: [...this.txBufs],
      txLens: [...this.txLens],
      curRx: this.curRx,
      curTx: this.curTx,
      dirtyTx: this.dirtyTx,
      napiScheduled: this.napiScheduled,
      irqOwed: this.irqOwed,
      backlog: this.backlog.map((f) => f.slice()),
    };
    return saveRecord(PCNET_STATE, `pcnet${this.identity.devid}`, state);
  }

  /**
   * A driver built with `options` (the same memory, allocator and PortIo; the chip restored
   * alongside) in the state `record` holds, running. The record is untrusted: rings or buffers
   * outside this guest's memory, or ring sizes other than the options', are refused
   * (StateRecordError) before anything is touched.
   */
  static restore(options: PcnetDriverOptions, record: unknown): PcnetDriver {
    const s = loadRecord(PCNET_STATE, record);
    const d = new PcnetDriver(options);
    const fail = (why: string): never => {
      throw new StateRecordError(`pcnet v${PCNET_STATE.version}: ${why}`);
    };
    if (s.rxLog2 !== d.rxLog2 || s.txLog2 !== d.txLog2) fail(`rings of 2^${s.rxLog2}/2^${s.txLog2} descriptors, this driver is built for 2^${d.rxLog2}/2^${d.txLog2}`);
    const size = options.memory.bytes.byteLength;
    const inside = (at: number, len: number) => at + len <= size;
    if (s.pfns.some((pfn) => !options.memory.hasFrame(pfn))) fail('a frame outside this guest');
    if (!inside(s.initBlock, INIT_BLOCK_BYTES) || !inside(s.rxRing, (1 << s.rxLog2) * DESC) || !inside(s.txRing, (1 << s.txLog2) * DESC)) fail('a ring or the init block outside guest memory');
    if ([...s.rxBufs, ...s.txBufs].some((b) => !inside(b, BUF_STRIDE))) fail('a buffer outside guest memory');
    d.state = s.state;
    d.chipVersion = s.chipVersion;
    d.dwio = s.dwio;
    d.hwaddr = s.mac.slice();
    d.pfns.push(...s.pfns);
    d.initBlock = s.initBlock;
    d.rxRing = s.rxRing;
    d.txRing = s.txRing;
    d.rxBufs = [...s.rxBufs];
    d.txBufs = [...s.txBufs];
    d.txLens.splice(0, d.txLens.length, ...s.txLens);
    d.curRx = s.curRx;
    d.curTx = s.curTx;
    d.dirtyTx = s.dirtyTx;
    d.napiScheduled = s.napiScheduled;
    d.irqOwed = s.irqOwed;
    d.backlog.push(...s.backlog.map((f) => f.slice()));
    if (s.state === 'open') {
      options.onInterrupt(d.onIrq);
      d.irqRegistered = true;
    }
    d.catchUp();
    return d;
  }

  /** After a pause or a restore: the owed interrupt, the held poll, the queued frames. */
  private catchUp(): void {
    if (this.state !== 'open') return;
    if (this.irqOwed) {
      this.irqOwed = false;
      this.onIrq();
    }
    if (this.napiScheduled && !this.inHandler && !this.pollTimer) this.pollTimer = setImmediate(this.poll);
    this.drainBacklog();
  }

  // --- transmit -------------------------------------------------------------------------------

  /**
   * Hand a frame to the device. When the tx ring is full the frame waits in a bounded queue (the
   * kernel's qdisc: Linux stops the queue rather than drop) and goes out as the poll reclaims
   * slots. False when closed or the length is bad (counted as dropped), or when the queue is full
   * too (counted as busy: backpressure from a device slower than its sender, not a fault).
   */
  transmit(frame: Uint8Array): boolean {
    const m = this.counters;
    if (this.state !== 'open' || this.stopped || frame.byteLength < ETH_MIN || frame.byteLength > ETH_MAX) {
      m.txDropped++;
      return false;
    }
    // Quiesced: the frame waits in the queue (and in the record) instead of reaching the chip.
    if (!this.paused && this.backlog.length === 0 && this.startXmit(frame)) return true;
    if (this.backlog.length >= TX_BACKLOG) {
      m.txBusy++;
      return false;
    }
    this.backlog.push(frame.slice());
    m.txBacklogged++;
    return true;
  }

  /** Frames waiting for a free tx slot (bounded by TX_BACKLOG). */
  private readonly backlog: Uint8Array[] = [];

  private drainBacklog(): void {
    while (!this.paused && this.backlog.length > 0 && this.state === 'open' && this.startXmit(this.backlog[0])) this.backlog.shift();
  }

  /**
   * pcnet32_start_xmit: copy the frame into the slot's buffer, fill the descriptor with OWN last,
   * then RAP=0, RDP=IENA|TDMD. False when the ring is full.
   */
  private startXmit(frame: Uint8Array): boolean {
    const m = this.counters;
    // The ring is full when every slot awaits reclaim; reclaiming reads only memory (no trap).
    if (this.curTx - this.dirtyTx >= this.txSize) this.txReclaim();
    if (this.curTx - this.dirtyTx >= this.txSize) return false;
    const entry = this.curTx & (this.txSize - 1);
    const at = this.txRing + entry * DESC;
    const buf = this.txBufs[entry];
    this.o.memory.bytes.set(frame, buf);
    const v = this.view;
    v.setUint16(at + 4, -frame.byteLength & 0xffff, true); // BCNT, two's complement (ONES = 1111)
    v.setUint32(at + 8, 0, true);
    v.setUint32(at, buf, true);
    Atomics.store(this.u16, (at + 6) >> 1, ST_TX_NEW); // OWN last
    // dma_sync_single_for_device: the buffer and its descriptor are the chip's now.
    this.o.io.syncForDevice?.(buf, frame.byteLength);
    this.o.io.syncForDevice?.(at, DESC);
    this.txLens[entry] = frame.byteLength;
    this.curTx++;
    m.txQueued++;
    this.writeCsr(0, CSR0_INTEN | CSR0_TXPOLL);
    return true;
  }

  // --- interrupt and poll ---------------------------------------------------------------------

  private onIrq = (): void => {
    if (this.state !== 'open' || this.stopped) return;
    if (this.paused) {
      this.irqOwed = true;
      return;
    }
    if (this.inHandler) {
      this.irqPending = true; // a wiring that raises synchronously from inside our own access
      return;
    }
    this.inHandler = true;
    try {
      let rounds = 0;
      do {
        this.irqPending = false;
        this.interrupt();
      } while (this.irqPending && this.state === 'open' && ++rounds < MAX_HANDLER_ROUNDS);
    } finally {
      this.inHandler = false;
    }
  };

  /** pcnet32_interrupt: read CSR0, acknowledge what is set, mask every source, schedule the poll. */
  private interrupt(): void {
    const m = this.counters;
    m.interrupts++;
    let csr0 = this.readCsr(0);
    if (!(csr0 & CSR0_INT_BITS)) m.spuriousInterrupts++;
    let bogus = MAX_INTERRUPT_WORK;
    let scheduled = false;
    while (csr0 & CSR0_INT_BITS && --bogus >= 0) {
      if (csr0 === 0xffff) break; // the device is gone
      this.writeCsr(0, csr0 & CSR0_ACK_KEEP);
      if (csr0 & CSR0_BABL) m.txErrors++;
      if (csr0 & CSR0_MISS) {
        m.rxMissed++;
        m.rxErrors++;
      }
      if (csr0 & CSR0_MERR) m.merr++;
      if (!this.napiScheduled) {
        this.writeCsr(3, this.readCsr(3) | CSR3_MASK_ALL);
        this.napiScheduled = true;
        scheduled = true;
        break;
      }
      csr0 = this.readCsr(0);
    }
    if (scheduled) this.poll();
  }

  /** pcnet32_poll: rx up to the budget, tx reclaim; then unmask and re-enable, or run again later. */
  private poll = (): void => {
    this.pollTimer = undefined;
    if (this.paused) return; // still scheduled: resume() (or the restored driver) runs it
    if (this.state !== 'open') {
      this.napiScheduled = false;
      return;
    }
    this.counters.polls++;
    const budget = Math.max(1, this.rxSize >> 1); // pcnet32's napi weight: half the rx ring
    const work = this.rx(budget);
    this.txReclaim();
    this.drainBacklog();
    if (this.state !== 'open') return; // closed by a receive callback
    if (work < budget) {
      this.napiScheduled = false;
      this.writeCsr(3, this.readCsr(3) & 0x00ff);
      this.writeCsr(0, CSR0_INTEN);
    } else {
      this.counters.pollsRescheduled++;
      this.pollTimer = setImmediate(this.poll); // still scheduled: interrupts stay masked meanwhile
    }
  };

  /** pcnet32_rx: take every descriptor the chip handed back, up to the budget, and re-arm it. */
  private rx(budget: number): number {
    const m = this.counters;
    const v = this.view;
    let n = 0;
    while (n < budget) {
      const entry = this.curRx & (this.rxSize - 1);
      const at = this.rxRing + entry * DESC;
      const status = Atomics.load(this.u16, (at + 6) >> 1);
      if (status & ST_OWN) break;
      n++;
      let frame: Uint8Array | undefined;
      if (status >> 8 !== 0x03) m.rxErrors++; // error bits, or not a whole frame (STP|ENP) in one buffer
      else {
        const len = (v.getUint32(at + 8, true) & 0xfff) - ETH_FCS;
        if (len < ETH_MIN || len > PKT_BUF_SIZE - ETH_FCS) m.rxErrors++;
        else frame = this.o.memory.bytes.slice(this.rxBufs[entry], this.rxBufs[entry] + len);
      }
      // Re-arm before handing the frame up: the callback may transmit, or take its time.
      v.setUint16(at + 4, -PKT_BUF_SIZE & 0xffff, true);
      Atomics.store(this.u16, (at + 6) >> 1, ST_OWN);
      this.o.io.syncForDevice?.(at, DESC);
      this.curRx++;
      if (frame) {
        m.rxPackets++;
        m.rxBytes += frame.byteLength;
        this.receiver(frame);
        if (this.state !== 'open') break;
      }
    }
    return n;
  }

  /** pcnet32_tx: reclaim descriptors the chip handed back, in order. */
  private txReclaim(): void {
    const m = this.counters;
    const v = this.view;
    while (this.dirtyTx !== this.curTx) {
      const entry = this.dirtyTx & (this.txSize - 1);
      const at = this.txRing + entry * DESC;
      const status = Atomics.load(this.u16, (at + 6) >> 1);
      if (status & ST_OWN) break; // not sent yet
      v.setUint32(at, 0, true);
      if (status & ST_ERR) {
        // pcnet32 also resets and restarts the chip on UFLO (TMD2 bit 30). The emulated chip
        // never underflows (it waits for a whole chain), so an error is only counted here.
        m.txErrors++;
      } else {
        m.txPackets++;
        m.txBytes += this.txLens[entry];
      }
      this.dirtyTx++;
    }
  }

  // --- memory ---------------------------------------------------------------------------------

  private gpa(pfn: number, off: number): number {
    return pfn * PAGE_SIZE + off;
  }

  /** pcnet32_init_ring plus the init block: rx descriptors owned by the chip, tx ones by us. */
  private setupRings(): void {
    this.releaseRings();
    const ringFrames = (n: number) => Math.ceil((n * DESC) / PAGE_SIZE);
    this.rxRing = this.gpa(this.allocRun(ringFrames(this.rxSize)), 0);
    this.txRing = this.gpa(this.allocRun(ringFrames(this.txSize)), 0);
    const buffers = (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i += BUFS_PER_FRAME) {
        const pfn = this.allocRun(1);
        for (let j = 0; j < BUFS_PER_FRAME && i + j < n; j++) out.push(this.gpa(pfn, j * BUF_STRIDE));
      }
      return out;
    };
    this.rxBufs = buffers(this.rxSize);
    this.txBufs = buffers(this.txSize);
    this.curRx = this.curTx = this.dirtyTx = 0;
    this.napiScheduled = false;
    const v = this.view;
    const bytes = this.o.memory.bytes;
    bytes.fill(0, this.rxRing, this.rxRing + this.rxSize * DESC);
    bytes.fill(0, this.txRing, this.txRing + this.txSize * DESC);
    for (let i = 0; i < this.rxSize; i++) {
      const at = this.rxRing + i * DESC;
      v.setUint32(at, this.rxBufs[i], true);
      v.setUint16(at + 4, -PKT_BUF_SIZE & 0xffff, true);
      Atomics.store(this.u16, (at + 6) >> 1, ST_OWN);
    }
    // SWSTYLE 2 init block: MODE 0, TLEN/RLEN, PADR, no multicast, ring bases.
    const ib = this.initBlock;
    v.setUint16(ib, 0, true);
    v.setUint16(ib + 2, (this.txLog2 << 12) | (this.rxLog2 << 4), true);
    bytes.set(this.hwaddr, ib + 4);
    v.setUint16(ib + 10, 0, true);
    v.setUint32(ib + 12, 0, true);
    v.setUint32(ib + 16, 0, true);
    v.setUint32(ib + 20, this.rxRing, true);
    v.setUint32(ib + 24, this.txRing, true);
    // Everything the chip will read at INIT and after: the init block and both rings.
    this.o.io.syncForDevice?.(ib, INIT_BLOCK_BYTES);
    this.o.io.syncForDevice?.(this.rxRing, this.rxSize * DESC);
    this.o.io.syncForDevice?.(this.txRing, this.txSize * DESC);
  }

  /** Give back the rings' and buffers' frames (the init block frame stays until close). */
  private releaseRings(): void {
    const keep = this.initBlock ? Math.floor(this.initBlock / PAGE_SIZE) : -1;
    for (let i = this.pfns.length - 1; i >= 0; i--) {
      if (this.pfns[i] === keep) continue;
      this.o.frames.release(this.pfns[i]);
      this.pfns.splice(i, 1);
    }
    this.rxBufs = [];
    this.txBufs = [];
  }

  /** `n` physically contiguous frames (a ring must be contiguous for the chip); returns the first. */
  private allocRun(n: number): number {
    const taken: number[] = [];
    try {
      for (let tries = 0; tries < n + 64; tries++) {
        taken.push(this.o.frames.alloc());
        const sorted = [...taken].sort((a, b) => a - b);
        for (let i = 0; i + n <= sorted.length; i++) {
          if (sorted[i + n - 1] - sorted[i] !== n - 1) continue;
          const run = sorted.slice(i, i + n);
          for (const pfn of taken) if (!run.includes(pfn)) this.o.frames.release(pfn);
          this.pfns.push(...run);
          return run[0];
        }
      }
    } catch (e) {
      for (const pfn of taken) this.o.frames.release(pfn);
      throw new DeviceError(`pcnet: out of guest memory for rings and buffers`, { cause: e });
    }
    for (const pfn of taken) this.o.frames.release(pfn);
    throw new DeviceError(`pcnet: no ${n} contiguous free frames for a descriptor ring`);
  }
}

/** A unicast, non-zero Ethernet address (Linux is_valid_ether_addr). */
function validEther(a: Uint8Array): boolean {
  return (a[0] & 1) === 0 && a.some((b) => b !== 0);
}
