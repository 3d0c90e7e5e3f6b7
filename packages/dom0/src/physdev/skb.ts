/**
 * Socket buffers of dom0's network path: each frame dom0 holds lives in a dom0 memory frame,
 * reference counted so one frame flooded to several ports is held once. The pool is bounded —
 * what guests can make dom0 buffer is bounded by it and by the per-vif queue limits.
 */
import { FrameAllocator, type GuestMemory } from '@ringvisor/shared';

export interface Skb {
  readonly pfn: number;
  len: number;
  refs: number;
}

export class SkbPool {
  private readonly free: number[] = [];
  allocated = 0;
  exhausted = 0;

  constructor(
    readonly memory: GuestMemory,
    frames: FrameAllocator,
    readonly capacity: number,
  ) {
    for (let i = 0; i < capacity; i++) this.free.push(frames.alloc());
  }

  get available(): number {
    return this.free.length;
  }

  alloc(): Skb | undefined {
    const pfn = this.free.pop();
    if (pfn === undefined) {
      this.exhausted++;
      return undefined;
    }
    this.allocated++;
    return { pfn, len: 0, refs: 1 };
  }

  data(skb: Skb): Uint8Array {
    return this.memory.page(skb.pfn).subarray(0, skb.len);
  }

  get(skb: Skb): Skb {
    skb.refs++;
    return skb;
  }

  put(skb: Skb): void {
    if (--skb.refs === 0) {
      this.free.push(skb.pfn);
      this.allocated--;
    }
  }
}
