/** Refusals are counted exactly and logged at most once per interval per reason. */
import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Logger } from '@ringvisor/shared';
import { RateLimitedRefusalLog } from './refusal-log.js';

function capture(): { log: Logger; lines: () => Array<{ reason: string; count: number; total: number; remote?: string }> } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(String(chunk));
      cb();
    },
  });
  return { log: pino({ level: 'warn' }, sink), lines: () => out.map((l) => JSON.parse(l) as { reason: string; count: number; total: number; remote?: string }) };
}

describe('RateLimitedRefusalLog', () => {
  it('logs a reason when it first happens, then one line per interval carrying the count it stands for', () => {
    let now = 1_000_000;
    const { log, lines } = capture();
    const r = new RateLimitedRefusalLog(log, 10_000, () => now);
    for (let i = 0; i < 100; i++) r.refused('read-token', { remote: `10.0.0.${i % 3}` });
    expect(lines()).toEqual([expect.objectContaining({ reason: 'read-token', count: 1, total: 1, remote: '10.0.0.0' })]);
    r.refused('foreign-origin');
    expect(lines()).toHaveLength(2); // another reason is not held back by the first
    now += 5_000;
    for (let i = 0; i < 50; i++) r.refused('read-token');
    expect(lines()).toHaveLength(2);
    now += 5_000;
    r.refused('read-token', { remote: '10.9.9.9' });
    expect(lines()[2]).toMatchObject({ reason: 'read-token', count: 150, total: 151, remote: '10.9.9.9' });
    r.flush();
    expect(lines()).toHaveLength(3); // nothing left unreported
    expect(r.totals.get('read-token')).toBe(151);
    expect(r.lines).toBe(3);
    r.close();
  });

  it('close reports what is pending', () => {
    let now = 0;
    const { log, lines } = capture();
    const r = new RateLimitedRefusalLog(log, 10_000, () => now);
    r.refused('timeout');
    now += 1;
    r.refused('timeout');
    r.refused('timeout');
    r.close();
    expect(lines().map((l) => l.count)).toEqual([1, 2]);
  });
});
