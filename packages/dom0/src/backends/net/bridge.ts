/**
 * dom0's software bridge (Linux's `xenbr0`): vifs and the physical NIC's uplink are ports; the
 * bridge learns source MACs and forwards unicast to the learned port, floods otherwise, and never
 * sends a frame back out of the port it came from. The MAC table is bounded.
 */
import type { Skb, SkbPool } from '../../physdev/skb.js';

export interface BridgePort {
  readonly name: string;
  /** Take one reference of `skb` (the port releases it when done). */
  deliver(skb: Skb): void;
}

export interface BridgeCounters {
  forwarded: number;
  flooded: number;
  filtered: number;
  learned: number;
  tableFull: number;
}

const MAX_MACS = 4096;

function macKey(frame: Uint8Array, off: number): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += frame[off + i].toString(16).padStart(2, '0');
  return s;
}

export class SoftwareBridge {
  private readonly ports = new Set<BridgePort>();
  private readonly table = new Map<string, BridgePort>();
  readonly counters: BridgeCounters = { forwarded: 0, flooded: 0, filtered: 0, learned: 0, tableFull: 0 };

  constructor(readonly pool: SkbPool) {}

  add(port: BridgePort): void {
    this.ports.add(port);
  }

  /** Forget every learned MAC (the bridge's owner restarted): frames flood until learned again. */
  forgetLearned(): void {
    this.table.clear();
  }

  remove(port: BridgePort): void {
    this.ports.delete(port);
    for (const [k, p] of this.table) if (p === port) this.table.delete(k);
  }

  /** A frame entered the bridge on `from`; consumes the caller's reference to `skb`. */
  input(from: BridgePort, skb: Skb): void {
    const frame = this.pool.data(skb);
    if (frame.byteLength < 14) {
      this.pool.put(skb);
      return;
    }
    const src = macKey(frame, 6);
    if (!(frame[6] & 1)) {
      if (this.table.get(src) !== from) {
        if (this.table.size >= MAX_MACS && !this.table.has(src)) this.counters.tableFull++;
        else {
          this.table.set(src, from);
          this.counters.learned++;
        }
      }
    }
    const dst = frame[0] & 1 ? undefined : this.table.get(macKey(frame, 0));
    if (dst === from) this.counters.filtered++;
    else if (dst) {
      this.counters.forwarded++;
      dst.deliver(this.pool.get(skb));
    } else {
      this.counters.flooded++;
      for (const p of this.ports) if (p !== from) p.deliver(this.pool.get(skb));
    }
    this.pool.put(skb);
  }
}
