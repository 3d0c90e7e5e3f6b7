import { describe, expect, it } from 'vitest';
import { FrameAllocator, GuestMemory, TxCredit, parseRate } from '@ringvisor/shared';
import { SoftwareBridge, type BridgePort } from './bridge.js';
import { SkbPool, type Skb } from '../../physdev/skb.js';

function setup() {
  const mem = GuestMemory.allocate(0, 64);
  const pool = new SkbPool(mem, new FrameAllocator(mem), 32);
  const bridge = new SoftwareBridge(pool);
  const got = new Map<string, number[]>();
  const port = (name: string): BridgePort => {
    got.set(name, []);
    return {
      name,
      deliver(skb: Skb) {
        got.get(name)!.push(pool.data(skb)[5]);
        pool.put(skb);
      },
    };
  };
  const frame = (dst: number, src: number, tag: number): Skb => {
    const skb = pool.alloc()!;
    skb.len = 60;
    const d = pool.data(skb);
    d.fill(0);
    d.set(dst === 0xff ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : [0, 0x16, 0x3e, 0, 0, dst], 0);
    d.set([0, 0x16, 0x3e, 0, 0, src], 6);
    d[5] = dst === 0xff ? tag : dst;
    d[20] = tag;
    return skb;
  };
  return { pool, bridge, got, port, frame };
}

describe('SoftwareBridge', () => {
  it('floods unknown and broadcast destinations to every other port, then forwards learned unicast', () => {
    const { pool, bridge, got, port, frame } = setup();
    const a = port('a');
    const b = port('b');
    const c = port('c');
    [a, b, c].forEach((p) => bridge.add(p));
    const before = pool.available;
    bridge.input(a, frame(0xff, 1, 0xaa)); // broadcast from MAC …01 on a
    expect(got.get('a')).toEqual([]);
    expect(got.get('b')).toEqual([0xaa]);
    expect(got.get('c')).toEqual([0xaa]);
    bridge.input(b, frame(1, 2, 0)); // to …01: learned on a
    expect(got.get('a')).toEqual([1]);
    expect(got.get('c')).toEqual([0xaa]);
    expect(bridge.counters.forwarded).toBe(1);
    expect(bridge.counters.flooded).toBe(1);
    // Every reference was released: the pool is whole again.
    expect(pool.available).toBe(before);
  });

  it('never sends a frame back out of its ingress port, and forgets a removed port', () => {
    const { bridge, got, port, frame } = setup();
    const a = port('a');
    const b = port('b');
    bridge.add(a);
    bridge.add(b);
    bridge.input(a, frame(0xff, 1, 1));
    bridge.input(a, frame(1, 3, 0)); // destination …01 is on a itself
    expect(got.get('a')).toEqual([]);
    expect(bridge.counters.filtered).toBe(1);
    bridge.remove(a);
    bridge.input(b, frame(1, 2, 0)); // …01 no longer known: flooded to nobody else
    expect(got.get('a')).toEqual([]);
  });
});

describe('TxCredit (netback rate)', () => {
  it('parses bytes,usec and rejects nonsense with a hint', () => {
    expect(parseRate('125000,10000')).toEqual({ bytes: 125000, usec: 10000 });
    expect(() => parseRate('fast')).toThrow(/bytes,usec/);
    expect(() => parseRate('0,10000')).toThrow(/bytes ≥ 1/);
  });

  it('allows at most `bytes` per window and replenishes on the next window', () => {
    let now = 0;
    const c = new TxCredit({ bytes: 3000, usec: 10_000 }, () => now);
    expect(c.take(1500)).toBe(true);
    expect(c.take(1500)).toBe(true);
    expect(c.take(60)).toBe(false);
    expect(c.msUntilReplenish()).toBe(10);
    now = 9.9;
    expect(c.take(60)).toBe(false);
    now = 10;
    expect(c.take(1500)).toBe(true);
    expect(c.throttled).toBe(2);
  });

  it('lets a packet larger than a whole window through once the window is fresh', () => {
    let now = 0;
    const c = new TxCredit({ bytes: 1000, usec: 1000 }, () => now);
    expect(c.take(1514)).toBe(true);
    expect(c.take(60)).toBe(false);
    now = 1;
    expect(c.take(60)).toBe(true);
  });

  it('is unlimited without a rate', () => {
    const c = new TxCredit(undefined);
    for (let i = 0; i < 1000; i++) expect(c.take(1514)).toBe(true);
  });
});
