/**
 * What an emulated disk stores into: the guest's region of the physical disk, reached through
 * dom0's physical disk driver like blkback's requests — but through bounce frames in dom0's own
 * memory, because the device model holds the sector data itself (the guest moves it with PIO),
 * where blkback lets the disk DMA straight into the guest's granted frames.
 */
import { HWBLK_MAX_SEGMENTS, HWBLK_OP_FLUSH, HWBLK_OP_READ, HWBLK_OP_WRITE, PAGE_SIZE, SECTOR_SIZE, SECTORS_PER_PAGE, type FrameAllocator, type GuestMemory } from '@ringvisor/shared';
import type { PhysicalDiskDriver } from '../physdev/disk.js';
import type { AtaBacking } from '@ringvisor/shared';

/** ATA's largest transfer: 256 sectors. */
const MAX_SECTORS = 256;

export class PhysicalDiskBacking implements AtaBacking {
  private readonly bounce: number[] = [];
  /** Bytes copied between the bounce frames and the device model's buffers. */
  bytesCopied = 0;

  constructor(
    private readonly disk: PhysicalDiskDriver,
    private readonly dom0: GuestMemory,
    private readonly frames: FrameAllocator,
    private readonly region: { start: number; sectors: number },
  ) {
    for (let i = 0; i < (MAX_SECTORS * SECTOR_SIZE) / PAGE_SIZE; i++) this.bounce.push(frames.alloc());
  }

  get sectors(): number {
    return this.region.sectors;
  }

  release(): void {
    for (const pfn of this.bounce.splice(0)) this.frames.release(pfn);
  }

  private valid(lba: number, count: number): boolean {
    return Number.isInteger(lba) && Number.isInteger(count) && count >= 1 && count <= MAX_SECTORS && lba >= 0 && lba + count <= this.region.sectors && this.bounce.length > 0;
  }

  /** Submit `count` sectors at `lba` in requests of at most HWBLK_MAX_SEGMENTS bounce frames. */
  private async transfer(op: number, lba: number, count: number): Promise<number> {
    const jobs: Array<Promise<number>> = [];
    const sectorsPerRequest = HWBLK_MAX_SEGMENTS * SECTORS_PER_PAGE;
    for (let done = 0; done < count; done += sectorsPerRequest) {
      const n = Math.min(sectorsPerRequest, count - done);
      const segments = [];
      for (let s = 0; s < n; s += SECTORS_PER_PAGE) {
        const inPage = Math.min(SECTORS_PER_PAGE, n - s);
        segments.push({ domid: 0, pfn: this.bounce[(done + s) / SECTORS_PER_PAGE], firstSect: 0, lastSect: inPage - 1 });
      }
      jobs.push(this.disk.submit({ op, sector: BigInt(this.region.start + lba + done), segments }));
    }
    const statuses = await Promise.all(jobs);
    return statuses.find((s) => s !== 0) ?? 0;
  }

  private page(i: number): Uint8Array {
    return this.dom0.page(this.bounce[i]);
  }

  async read(lba: number, count: number): Promise<Uint8Array | number> {
    if (!this.valid(lba, count)) return -1;
    const st = await this.transfer(HWBLK_OP_READ, lba, count);
    if (st !== 0) return st;
    const out = new Uint8Array(count * SECTOR_SIZE);
    for (let off = 0; off < out.length; off += PAGE_SIZE) out.set(this.page(off / PAGE_SIZE).subarray(0, Math.min(PAGE_SIZE, out.length - off)), off);
    this.bytesCopied += out.length;
    return out;
  }

  async write(lba: number, data: Uint8Array): Promise<number> {
    const count = data.length / SECTOR_SIZE;
    if (!this.valid(lba, count)) return -1;
    for (let off = 0; off < data.length; off += PAGE_SIZE) this.page(off / PAGE_SIZE).set(data.subarray(off, Math.min(off + PAGE_SIZE, data.length)));
    this.bytesCopied += data.length;
    return this.transfer(HWBLK_OP_WRITE, lba, count);
  }

  flush(): Promise<number> {
    return this.disk.submit({ op: HWBLK_OP_FLUSH, sector: 0n, segments: [] });
  }
}
