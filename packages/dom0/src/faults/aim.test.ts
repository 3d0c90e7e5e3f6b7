import { describe, expect, it } from 'vitest';
import { aimAtOneInstance } from './aim.js';

/** A target whose instance may be replaced while an attempt is in flight. */
function target(replaceDuring: number[]) {
  let generation = 0;
  let attempts = 0;
  return {
    generation: () => generation,
    ready: async () => true,
    attempt: async () => {
      const n = attempts++;
      // The attack reaches this instance; a replacement lands before its answer is judged.
      if (replaceDuring.includes(n)) generation++;
      return { attempt: n, stopped: !replaceDuring.includes(n) };
    },
    get attempts() {
      return attempts;
    },
  };
}

describe('aimAtOneInstance (a verdict is taken on the instance it was aimed at)', () => {
  it('judges the first attempt when nothing replaced the target', async () => {
    const t = target([]);
    expect(await aimAtOneInstance(t)).toEqual({ judged: true, result: { attempt: 0, stopped: true }, reaimed: 0 });
    expect(t.attempts).toBe(1);
  });

  it('an attempt whose target was replaced meanwhile is not judged: it is aimed again at the new one', async () => {
    // The old VIF's "not stopped" would have been a false breach; the verdict comes from attempt 1.
    const t = target([0]);
    expect(await aimAtOneInstance(t)).toEqual({ judged: true, result: { attempt: 1, stopped: true }, reaimed: 1 });
  });

  it('no verdict (never a breach) when the target is replaced under every attempt, bounded', async () => {
    const t = target([0, 1, 2, 3, 4]);
    expect(await aimAtOneInstance({ ...t, attempt: t.attempt, tries: 3 })).toEqual({ judged: false, reaimed: 2 });
    expect(t.attempts).toBe(3);
  });

  it('does not attempt while the target is away, and gives up if it never comes back', async () => {
    let attempts = 0;
    const out = await aimAtOneInstance({
      generation: () => 0,
      ready: async () => false,
      attempt: async () => ++attempts,
    });
    expect(out).toEqual({ judged: false, reaimed: 0 });
    expect(attempts).toBe(0);
  });

  it('waits out a target that is between instances (generation unknown) before attempting', async () => {
    const gens: Array<number | undefined> = [undefined, 1, 1];
    let i = 0;
    const out = await aimAtOneInstance({ generation: () => gens[Math.min(i++, gens.length - 1)], ready: async () => true, attempt: async () => 'hit' });
    expect(out).toEqual({ judged: true, result: 'hit', reaimed: 1 });
  });
});
