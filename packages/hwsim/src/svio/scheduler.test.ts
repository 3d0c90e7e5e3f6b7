/**
 * The SV-IO core's QoS scheduler on its own: deficit round robin by weight over VIFs that always
 * have work (the backlogged case the proportionality guarantee is about), VIFs that run dry, and
 * the credit limit's parking.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { QUANTUM, VifScheduler, type Schedulable, type TurnEnd } from './scheduler.js';

/** A VIF with an endless (or limited) supply of messages of the given costs, charged as admitted. */
class FakeVif implements Schedulable {
  served = 0;
  messages = 0;
  stopReason: string | undefined;
  private i = 0;
  constructor(
    readonly id: number,
    private readonly costs: number[],
    private left = Infinity,
  ) {}
  turn(admit: (cost: number) => boolean): TurnEnd {
    for (let n = 0; n < 32; n++) {
      if (this.left <= 0) return 'idle';
      const c = this.costs[this.i % this.costs.length];
      if (!admit(c)) return 'budget';
      this.i++;
      this.left--;
      this.served += c;
      this.messages++;
    }
    return this.left > 0 ? 'budget' : 'idle';
  }
}

async function rounds(s: VifScheduler, n: number): Promise<void> {
  while (s.rounds < n) await new Promise((r) => setImmediate(r));
}

describe('SV-IO QoS scheduler', () => {
  it('property: backlogged VIFs are served in proportion to their weights, within 10%', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ weight: fc.integer({ min: 10, max: 1000 }), costs: fc.array(fc.integer({ min: 64, max: QUANTUM }), { minLength: 1, maxLength: 4 }) }), { minLength: 2, maxLength: 5 }),
        async (specs) => {
          const s = new VifScheduler();
          const vifs = specs.map((x, i) => new FakeVif(i + 1, x.costs));
          vifs.forEach((v, i) => s.add(v, { weight: specs[i].weight }));
          // The first wake runs a round at once (an idle core serves a doorbell straight away),
          // before the others have woken: measure from the second round on.
          vifs.forEach((v) => s.wake(v.id));
          await rounds(s, 2);
          const base = vifs.map((v) => v.served);
          // Long enough that the smallest share is many of the largest messages.
          const wmin = Math.min(...specs.map((x) => x.weight));
          await rounds(s, 2 + Math.ceil((40 * QUANTUM * 100) / (QUANTUM * wmin)));
          s.stop();
          const got = vifs.map((v, i) => v.served - base[i]);
          const total = got.reduce((a, b) => a + b, 0);
          const W = specs.reduce((a, x) => a + x.weight, 0);
          for (const [i, b] of got.entries()) {
            const want = specs[i].weight / W;
            expect(Math.abs(b / total - want) / want).toBeLessThan(0.1);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('a VIF that runs dry leaves the round and keeps no deficit; work arriving wakes it', async () => {
    const s = new VifScheduler();
    const busy = new FakeVif(1, [4096]);
    const brief = new FakeVif(2, [4096], 3);
    s.add(busy, { weight: 100 });
    s.add(brief, { weight: 100 });
    s.wake(1);
    s.wake(2);
    await rounds(s, 50);
    expect(brief.messages).toBe(3);
    const [m0, r0] = [busy.messages, s.rounds];
    await rounds(s, 60);
    // Alone, the busy one takes the whole core: its full quantum each round, no more.
    expect(busy.messages - m0).toBe(((s.rounds - r0) * QUANTUM) / 4096);
    s.stop();
  });

  it('a credit limit parks a VIF until its window replenishes, whatever its weight', async () => {
    const s = new VifScheduler();
    const v = new FakeVif(1, [1000]);
    s.add(v, { weight: 1000, rate: { bytes: 10_000, usec: 20_000 } });
    s.wake(1);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 110));
    const windows = Math.floor((performance.now() - t0) / 20) + 1;
    expect(v.served).toBeGreaterThan(0);
    expect(v.served).toBeLessThanOrEqual(windows * 10_000);
    expect(s.counters(1)!.throttled).toBeGreaterThan(0);
    s.stop();
  });

  it('a stopped VIF (a rogue ring) leaves the scheduler', async () => {
    const s = new VifScheduler();
    const v = new FakeVif(1, [64]);
    s.add(v, { weight: 100 });
    v.stopReason = 'rogue';
    s.wake(1);
    expect(s.counters(1)).toBeUndefined();
    s.stop();
  });
});
