import { pino, type Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { RateLimitedLog } from './rate-limit.js';

function capture(): { lines: Array<{ msg: string; peer?: string; suppressed?: number; peers?: number }>; log: Logger } {
  const lines: Array<{ msg: string; peer?: string; suppressed?: number }> = [];
  return { lines, log: pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as { msg: string }) }) };
}

describe('RateLimitedLog', () => {
  it('writes the first lines of a key per window, then counts, then says how many it suppressed', () => {
    const { lines, log } = capture();
    let now = 1_000_000;
    const rl = new RateLimitedLog({ log, windowMs: 10_000, perKey: 3, perWindow: 20, now: () => now });
    const written = Array.from({ length: 3600 }, (_, i) => rl.warn('127.0.0.2', { peer: '127.0.0.2', i }, 'refused'));
    expect(written.filter(Boolean)).toHaveLength(3);
    expect(written.slice(0, 3)).toEqual([true, true, true]);
    expect(lines).toHaveLength(3);
    expect(rl.suppressed).toBe(3597);
    expect(rl.total).toBe(3600);
    // another address still gets its own lines
    expect(rl.warn('127.0.0.1', {}, 'refused')).toBe(true);
    // the next window starts with a summary of the last one
    now += 10_000;
    expect(rl.warn('127.0.0.2', {}, 'refused')).toBe(true);
    expect(lines.map((l) => l.msg)).toEqual(['refused', 'refused', 'refused', 'refused', '3597 more refusals from 127.0.0.2 suppressed in the last 10 s', 'refused']);
    expect(lines[4]).toMatchObject({ peer: '127.0.0.2', suppressed: 3597 });
    expect(rl.suppressed).toBe(0);
  });

  it('bounds the lines of a window over many addresses, and sums the addresses beyond the summaries', () => {
    const { lines, log } = capture();
    const now = 0;
    const rl = new RateLimitedLog({ log, windowMs: 10_000, perKey: 3, perWindow: 20, maxSummaries: 5, maxKeys: 100, now: () => now });
    for (let a = 0; a < 1000; a++) for (let k = 0; k < 4; k++) rl.warn(`10.0.${a >> 8}.${a & 0xff}`, {}, 'refused');
    expect(lines).toHaveLength(20);
    rl.flush();
    // 5 addresses named, the rest (including the shared bucket past maxKeys) in one line
    expect(lines).toHaveLength(26);
    const summaries = lines.slice(20);
    expect(summaries.slice(0, 5).every((l) => /^\d+ more refusals from .+ suppressed in the last 1 s$/.test(l.msg))).toBe(true);
    expect(summaries[5].msg).toMatch(/^\d+ more refusals from \d+ other addresses suppressed in the last 1 s$/);
    const counted = summaries.reduce((s, l) => s + (l.suppressed ?? 0), 0);
    expect(counted + 20).toBe(4000);
    rl.flush();
    expect(lines).toHaveLength(26); // nothing to say for an empty window
  });

  it('writes the summary when the window ends even if nothing else comes', async () => {
    const { lines, log } = capture();
    const rl = new RateLimitedLog({ log, windowMs: 50, perKey: 1 });
    rl.warn('a', {}, 'refused');
    rl.warn('a', {}, 'refused');
    await expect.poll(() => lines.length).toBe(2);
    expect(lines[1].msg).toMatch(/^1 more refusals from a suppressed/);
  });
});
