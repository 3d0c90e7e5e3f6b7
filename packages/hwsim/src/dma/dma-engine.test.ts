import { describe, expect, it } from 'vitest';
import { DeviceError, GuestMemory, InvalidArgumentError, PAGE_SIZE } from '@ringvisor/shared';
import { DmaEngine } from './dma-engine.js';

describe('DmaEngine', () => {
  it('reads and writes attached memory through views and counts every transfer', () => {
    const dma = new DmaEngine();
    const mem = GuestMemory.allocate(3, 4);
    dma.attachMemory(3, mem);
    dma.write({ domid: 3, pfn: 2 }, 100, Uint8Array.of(1, 2, 3));
    expect([...mem.page(2).subarray(100, 103)]).toEqual([1, 2, 3]);
    const view = dma.read({ domid: 3, pfn: 2 }, 100, 3);
    expect([...view]).toEqual([1, 2, 3]);
    mem.page(2)[101] = 9; // a view, not a copy
    expect(view[1]).toBe(9);
    const w = dma.writeView({ domid: 3, pfn: 1 }, 0, PAGE_SIZE);
    w.fill(7);
    expect(mem.page(1)[4095]).toBe(7);
    expect(dma.page({ domid: 3, pfn: 0 }).byteLength).toBe(PAGE_SIZE);
    expect(dma.counters).toEqual({ reads: 1, bytesRead: 3, writes: 2, bytesWritten: 3 + PAGE_SIZE, maps: 1, faults: 0 });
  });

  it('faults on an unattached domain, a pfn out of range, or a window outside the page', () => {
    const dma = new DmaEngine();
    dma.attachMemory(1, GuestMemory.allocate(1, 2));
    expect(() => dma.read({ domid: 2, pfn: 0 }, 0, 1)).toThrow(DeviceError);
    expect(() => dma.page({ domid: 1, pfn: 2 })).toThrow(/pfn 2 outside/);
    expect(() => dma.write({ domid: 1, pfn: 1 }, 4090, new Uint8Array(7))).toThrow(/window 4090\+7/);
    expect(() => dma.read({ domid: 1, pfn: 0 }, -1, 1)).toThrow(DeviceError);
    expect(dma.counters.faults).toBe(4);
    expect(dma.counters.reads + dma.counters.writes + dma.counters.maps).toBe(0);
    expect(dma.lastFault).toMatchObject({ domid: 1, pfn: 0, access: 'read' });
    expect(dma.reachable({ domid: 1, pfn: 1 })).toBe(true);
    expect(dma.reachable({ domid: 1, pfn: 2 })).toBe(false);
    expect(dma.reachable({ domid: 2, pfn: 0 })).toBe(false);
  });

  it('detached memory is no longer reachable', () => {
    const dma = new DmaEngine();
    dma.attachMemory(4, GuestMemory.allocate(4, 1));
    expect(dma.attachedDomains()).toEqual([4]);
    expect(dma.detachMemory(4)).toBe(true);
    expect(dma.detachMemory(4)).toBe(false);
    expect(() => dma.read({ domid: 4, pfn: 0 }, 0, 1)).toThrow(/no memory attached/);
  });

  it('refuses memory attached under another domain id', () => {
    const dma = new DmaEngine();
    expect(() => dma.attachMemory(5, GuestMemory.allocate(6, 1))).toThrow(InvalidArgumentError);
    expect(dma.isAttached(5)).toBe(false);
  });
});
