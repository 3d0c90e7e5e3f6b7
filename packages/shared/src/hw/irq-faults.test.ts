/**
 * InterruptFaults: a fault drops or delays only its domain's interrupts, ignores kicks with
 * lostToModel, ends by itself after forMs, and its counts outlive its clearing.
 */
import { describe, expect, it } from 'vitest';
import { InterruptFaults, parseInterruptFault, sumInterruptFaultCounts } from './irq-faults.js';

describe('InterruptFaults', () => {
  it('drops, delays and ignores kicks for the faulted domain only, and counts what it did', async () => {
    const f = new InterruptFaults();
    const raised: number[] = [];
    f.set(5, { lostToGuest: 1, lostToModel: 1, delayMs: 0, seed: 1 });
    f.deliver(5, () => raised.push(5));
    f.deliver(6, () => raised.push(6));
    expect(f.dropKick(5)).toBe(true);
    expect(f.dropKick(6)).toBe(false);
    expect(raised).toEqual([6]);
    f.set(5, { lostToGuest: 0, delayMs: 10, seed: 1 }); // a new fault: counts start again
    f.deliver(5, () => raised.push(5));
    expect(raised).toEqual([6]);
    await new Promise((r) => setTimeout(r, 30));
    expect(raised).toEqual([6, 5]);
    f.set(5, undefined);
    f.deliver(5, () => raised.push(5));
    expect(raised).toEqual([6, 5, 5]);
    expect(f.countsOf(5)).toEqual({ irqsLost: 0, irqsDelayed: 1, kicksLost: 0 });
    expect(f.allCounts()).toEqual([{ domid: 5, irqsLost: 0, irqsDelayed: 1, kicksLost: 0 }]);
  });

  it('ends by itself after forMs', async () => {
    const f = new InterruptFaults();
    let n = 0;
    f.set(1, { lostToGuest: 1, delayMs: 0, seed: 2, forMs: 20 });
    f.deliver(1, () => n++);
    await new Promise((r) => setTimeout(r, 40));
    f.deliver(1, () => n++);
    expect(n).toBe(1);
    expect(f.countsOf(1).irqsLost).toBe(1);
  });

  it('parses the wire form, says what is wrong, and sums counts', () => {
    expect(parseInterruptFault(null, 'x')).toBeUndefined();
    expect(parseInterruptFault({ lostToGuest: 0.5, seed: 3 }, 'x')).toEqual({ lostToGuest: 0.5, delayMs: 0, seed: 3 });
    expect(() => parseInterruptFault({ lostToGuest: 2, seed: 3 }, 'x')).toThrow(/x\.lostToGuest: a probability 0\.\.1, got 2/);
    expect(() => parseInterruptFault({ delayMs: -1, seed: 3 }, 'x')).toThrow(/x\.delayMs/);
    expect(() => parseInterruptFault({ lostToGuest: 0 }, 'x')).toThrow(/x\.seed: an integer/);
    expect(sumInterruptFaultCounts({ irqsLost: 1, irqsDelayed: 2, kicksLost: 3 }, { irqsLost: 1, irqsDelayed: 0, kicksLost: 0 })).toEqual({ irqsLost: 2, irqsDelayed: 2, kicksLost: 3 });
  });
});
