/**
 * Guest pseudo-physical memory. Each domain owns one SharedArrayBuffer of 4 KiB frames; a frame
 * number (pfn) indexes it. Nothing outside the domain touches it except through a grant mapping
 * or copy (the hypervisor's grant authority) or device DMA (hwsim's DMA engine).
 *
 * A *machine frame* names a frame anywhere on the host: the owning domain plus its pfn. Devices
 * and the DMA engine work in machine frames, as real hardware works in machine addresses.
 */
import { InvalidArgumentError } from '../errors.js';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;
export const SECTOR_SIZE = 512;
export const SECTORS_PER_PAGE = PAGE_SIZE / SECTOR_SIZE;

export interface MachineFrame {
  domid: number;
  pfn: number;
}

export class GuestMemory {
  readonly frames: number;
  readonly bytes: Uint8Array;

  constructor(
    readonly domid: number,
    readonly buffer: SharedArrayBuffer,
  ) {
    if (buffer.byteLength % PAGE_SIZE !== 0) throw new InvalidArgumentError('guest memory must be whole pages');
    this.frames = buffer.byteLength / PAGE_SIZE;
    this.bytes = new Uint8Array(buffer);
  }

  static allocate(domid: number, frames: number): GuestMemory {
    return new GuestMemory(domid, new SharedArrayBuffer(frames * PAGE_SIZE));
  }

  hasFrame(pfn: number): boolean {
    return Number.isInteger(pfn) && pfn >= 0 && pfn < this.frames;
  }

  /** A view of one frame; throws on a frame the domain does not own. */
  page(pfn: number): Uint8Array {
    if (!this.hasFrame(pfn)) throw new InvalidArgumentError(`pfn ${pfn} outside domain ${this.domid}'s ${this.frames} frames`);
    return new Uint8Array(this.buffer, pfn * PAGE_SIZE, PAGE_SIZE);
  }
}

/**
 * A guest kernel's frame allocator: hands out free pfns of its own memory. Frame 0 is never
 * handed out so that 0 can mean "no frame" in debugging output.
 */
export class FrameAllocator {
  private readonly free: number[] = [];
  constructor(readonly memory: GuestMemory, firstFrame = 1) {
    for (let pfn = memory.frames - 1; pfn >= firstFrame; pfn--) this.free.push(pfn);
  }
  get available(): number {
    return this.free.length;
  }
  alloc(): number {
    const pfn = this.free.pop();
    if (pfn === undefined) throw new InvalidArgumentError(`domain ${this.memory.domid} is out of memory`);
    return pfn;
  }
  release(pfn: number): void {
    this.free.push(pfn);
  }

  /** `n` consecutive free frames (a buffer larger than a page a device fills in one go); the first. */
  allocRun(n: number): number {
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`a run of ${n} frames`);
    const set = new Set(this.free);
    for (const start of [...this.free].sort((a, b) => a - b)) {
      let ok = true;
      for (let i = 1; i < n && ok; i++) ok = set.has(start + i);
      if (!ok) continue;
      const run = new Set(Array.from({ length: n }, (_, i) => start + i));
      const keep = this.free.filter((p) => !run.has(p));
      this.free.length = 0;
      this.free.push(...keep);
      return start;
    }
    throw new InvalidArgumentError(`domain ${this.memory.domid} has no ${n} consecutive free frames`);
  }
}
