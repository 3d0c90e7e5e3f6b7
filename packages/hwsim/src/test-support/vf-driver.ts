/**
 * A minimal guest driver for one virtual function, for tests only (excluded from the build):
 * what a domU's direct-I/O driver does, with nothing else. It owns a region of the owner's
 * memory, puts its rings there, programs Q0/Q1 with I/O page numbers (= its guest frame
 * numbers), sets CTRL.ENABLE and rings the doorbell; then it posts rx buffers, transmits frames
 * and submits hwblk requests, and collects responses.
 *
 * `windows` records every byte range of the owner's memory the driver handed to the device
 * (rings, rx buffers, read targets) or wrote itself (tx frames, write sources): the only places
 * a correct device may have changed.
 */
import {
  FrontRing,
  HWBLK_OP_FLUSH,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  PAGE_SIZE,
  SECTOR_SIZE,
  VF_CTRL_ENABLE,
  VF_REG,
  VfRegisters,
  hwBlkProtocol,
  hwNicRxProtocol,
  hwNicTxProtocol,
  initSharedRing,
  type GuestMemory,
  type HwBlkRequest,
  type HwBlkSegment,
  type HwNicBuffer,
  type HwStatusResponse,
} from '@ringvisor/shared';

/** Bytes [start, end) of the owner's memory (guest-physical addresses). */
export interface Window {
  start: number;
  end: number;
}

export interface VfDriverOptions {
  /** The owner's memory. */
  mem: GuestMemory;
  /** The function's register page (BAR0). */
  bar: SharedArrayBuffer;
  /** The doorbell (an event to the hardware). */
  doorbell: () => void;
  /** Frames [firstFrame, endFrame) are the driver's to allocate (default 1 .. the memory's end). */
  firstFrame?: number;
  endFrame?: number;
  /** First request id (so two drivers' requests can be told apart). */
  idBase?: number;
}

type Ring = FrontRing<HwNicBuffer, HwStatusResponse>;

export class VfDriver {
  readonly mem: GuestMemory;
  readonly regs: VfRegisters;
  readonly windows: Window[] = [];
  /** Every page the driver allocated, in order. */
  readonly pages: number[] = [];
  readonly rxPosted = new Map<number, HwNicBuffer>();
  readonly ids = new Set<number>();
  doorbells = 0;
  tx?: Ring;
  rx?: Ring;
  blk?: FrontRing<HwBlkRequest, HwStatusResponse>;
  private nextFrame: number;
  private readonly endFrame: number;
  private nextId: number;
  private holding = false;

  constructor(private readonly o: VfDriverOptions) {
    this.mem = o.mem;
    this.regs = new VfRegisters(new Uint8Array(o.bar));
    this.nextFrame = o.firstFrame ?? 1;
    this.endFrame = Math.min(o.endFrame ?? this.mem.frames, this.mem.frames);
    this.nextId = o.idBase ?? 0;
  }

  allocPage(): number {
    if (this.nextFrame >= this.endFrame) throw new Error(`driver out of frames (${this.endFrame})`);
    const pfn = this.nextFrame++;
    this.pages.push(pfn);
    return pfn;
  }

  /** A fresh id (u16: the hwnic layouts carry 16-bit ids). */
  id(): number {
    const id = this.nextId++ & 0xffff;
    this.ids.add(id);
    return id;
  }

  /** Frames still free for this driver. */
  get framesLeft(): number {
    return this.endFrame - this.nextFrame;
  }

  ringDoorbell(): void {
    this.doorbells++;
    this.o.doorbell();
  }

  /** Run `f` with every push deferred, then publish all queues at once (one doorbell at most). */
  batch(f: () => void): void {
    this.holding = true;
    try {
      f();
    } finally {
      this.holding = false;
    }
    let ring = false;
    for (const r of [this.tx, this.rx, this.blk]) if (r?.pushRequests()) ring = true;
    if (ring) this.ringDoorbell();
  }

  private push(ring: { pushRequests(): boolean }): void {
    if (!this.holding && ring.pushRequests()) this.ringDoorbell();
  }

  /** Rings in the owner's memory, Q0/Q1, CTRL.ENABLE, doorbell. */
  enable(): void {
    const ring = (reg: number): Uint8Array => {
      const pfn = this.allocPage();
      const page = this.mem.page(pfn);
      initSharedRing(page);
      this.window(pfn * PAGE_SIZE, PAGE_SIZE);
      this.regs.write(reg, pfn); // an I/O page number: the guest frame number
      return page;
    };
    if (this.regs.kind === 'nic') {
      this.tx = new FrontRing(ring(VF_REG.Q0), hwNicTxProtocol);
      this.rx = new FrontRing(ring(VF_REG.Q1), hwNicRxProtocol);
    } else if (this.regs.kind === 'disk') {
      this.blk = new FrontRing(ring(VF_REG.Q0), hwBlkProtocol);
    } else throw new Error(`register page has no function kind (ID 0x${this.regs.read(VF_REG.ID).toString(16)})`);
    this.regs.write(VF_REG.CTRL, VF_CTRL_ENABLE);
    this.ringDoorbell();
  }

  /** Post `n` empty rx buffers, each at offset 0 of a page of its own. */
  postRx(n: number, capacity = 2048): HwNicBuffer[] {
    const bufs: HwNicBuffer[] = [];
    for (let i = 0; i < n; i++) bufs.push({ domid: 0, id: this.id(), pfn: this.allocPage(), offset: 0, len: capacity });
    return this.post(bufs);
  }

  /** Post rx descriptors as given (a test may name addresses outside the owner's memory). */
  post(bufs: HwNicBuffer[]): HwNicBuffer[] {
    const rx = this.need(this.rx, 'rx');
    for (const b of bufs) {
      rx.putRequest(b);
      this.rxPosted.set(b.id, b);
      if (b.domid === 0 && b.pfn < this.mem.frames) this.window(b.pfn * PAGE_SIZE + b.offset, b.len);
    }
    this.push(rx);
    return bufs;
  }

  /** Put `frame` in a fresh page and transmit it; `override` changes the request (rogue tests). */
  transmit(frame: Uint8Array, override: Partial<HwNicBuffer> = {}): number {
    const tx = this.need(this.tx, 'tx');
    const pfn = this.allocPage();
    this.mem.page(pfn).set(frame);
    this.window(pfn * PAGE_SIZE, frame.byteLength);
    const id = this.id();
    tx.putRequest({ domid: 0, id, pfn, offset: 0, len: frame.byteLength, ...override });
    this.push(tx);
    return id;
  }

  /** Submit one hwblk request as given. Read targets are recorded as device-writable windows. */
  submit(op: number, sector: number | bigint, segments: HwBlkSegment[], id = this.id()): number {
    const blk = this.need(this.blk, 'disk');
    if (op === HWBLK_OP_READ)
      for (const s of segments)
        if (s.domid === 0 && s.pfn < this.mem.frames && s.firstSect <= s.lastSect)
          this.window(s.pfn * PAGE_SIZE + s.firstSect * SECTOR_SIZE, (s.lastSect - s.firstSect + 1) * SECTOR_SIZE);
    blk.putRequest({ op, id, sector: BigInt(sector), segments });
    this.push(blk);
    return id;
  }

  /** Read whole pages from `sector` into fresh pages. */
  read(sector: number, pages = 1): { id: number; pfns: number[] } {
    const pfns = Array.from({ length: pages }, () => this.allocPage());
    return { id: this.submit(HWBLK_OP_READ, sector, pfns.map((pfn) => ({ domid: 0, pfn, firstSect: 0, lastSect: 7 }))), pfns };
  }

  /** Write `data` (whole pages) at `sector` from fresh pages. */
  write(sector: number, data: Uint8Array): { id: number; pfns: number[] } {
    const pfns: number[] = [];
    for (let at = 0; at < data.byteLength; at += PAGE_SIZE) {
      const pfn = this.allocPage();
      this.mem.page(pfn).set(data.subarray(at, at + PAGE_SIZE));
      this.window(pfn * PAGE_SIZE, PAGE_SIZE);
      pfns.push(pfn);
    }
    return { id: this.submit(HWBLK_OP_WRITE, sector, pfns.map((pfn) => ({ domid: 0, pfn, firstSect: 0, lastSect: 7 }))), pfns };
  }

  flush(): number {
    return this.submit(HWBLK_OP_FLUSH, 0, []);
  }

  txResponses(): HwStatusResponse[] {
    return drain(this.tx);
  }

  rxResponses(): HwStatusResponse[] {
    return drain(this.rx);
  }

  blkResponses(): HwStatusResponse[] {
    return drain(this.blk);
  }

  /** The bytes a completed rx response says landed in its buffer. */
  received(rsp: HwStatusResponse): Uint8Array {
    const b = this.rxPosted.get(rsp.id);
    if (!b) throw new Error(`rx response for id ${rsp.id}, which this driver never posted`);
    return this.mem.page(b.pfn).slice(b.offset, b.offset + Math.max(0, rsp.status));
  }

  pageBytes(pfns: number[]): Uint8Array {
    const out = new Uint8Array(pfns.length * PAGE_SIZE);
    pfns.forEach((pfn, i) => out.set(this.mem.page(pfn), i * PAGE_SIZE));
    return out;
  }

  private window(start: number, len: number): void {
    this.windows.push({ start, end: start + len });
  }

  private need<T>(ring: T | undefined, what: string): T {
    if (!ring) throw new Error(`the ${what} queue is not enabled`);
    return ring;
  }
}

function drain<Req>(ring: FrontRing<Req, HwStatusResponse> | undefined): HwStatusResponse[] {
  const out: HwStatusResponse[] = [];
  if (!ring) return out;
  do for (let r = ring.takeResponse(); r !== undefined; r = ring.takeResponse()) out.push(r);
  while (ring.finalCheckForResponses());
  return out;
}

/**
 * Pages of `now` that differ from `before` outside `windows` (sorted, each once): the device's
 * stray writes. An empty result means every change lies where the driver allowed one.
 */
export function strayPages(now: Uint8Array, before: Uint8Array, windows: readonly Window[] = []): number[] {
  if (now.byteLength !== before.byteLength || now.byteLength % 4 !== 0) throw new Error('compare whole, equal-sized memories');
  const a = new Int32Array(now.buffer, now.byteOffset, now.byteLength / 4);
  const b = new Int32Array(before.buffer, before.byteOffset, before.byteLength / 4);
  const pages = new Set<number>();
  for (let w = 0; w < a.length; w++) {
    if (a[w] === b[w]) continue;
    for (let i = w * 4; i < w * 4 + 4; i++)
      if (now[i] !== before[i] && !windows.some((x) => i >= x.start && i < x.end)) pages.add(Math.floor(i / PAGE_SIZE));
  }
  return [...pages].sort((x, y) => x - y);
}

/** Fill memory with a pattern no device writes by accident; returns a copy to compare against. */
export function fillCanary(bytes: Uint8Array, seed: number): Uint8Array {
  for (let i = 0; i < bytes.byteLength; i++) bytes[i] = (Math.imul(i, 2654435761) >>> 24) ^ seed ^ 0xa5;
  return bytes.slice();
}
