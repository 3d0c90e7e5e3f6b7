/** The control endpoint's refusals are counted exactly per reason, and logged at a bounded rate. */
import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Logger } from '@ringvisor/shared';
import { RefusalLog } from './refusal-log.js';

interface Line {
  msg: string;
  reason?: string;
  total?: number;
  suppressed?: number;
  remote?: string;
}

function capture(): { log: Logger; lines: () => Line[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(String(chunk));
      cb();
    },
  });
  return { log: pino({ level: 'warn' }, sink), lines: () => out.map((l) => JSON.parse(l) as Line) };
}

describe('RefusalLog', () => {
  it('counts every refusal per reason; writes a few lines per reason per window and sums the rest', () => {
    let now = 1_000_000;
    const { log, lines } = capture();
    const r = new RefusalLog(log, { windowMs: 10_000, now: () => now });
    for (let i = 0; i < 100; i++) r.refused('read-token', { remote: `10.0.0.${i % 3}` });
    expect(lines()).toHaveLength(3);
    expect(lines()[0]).toMatchObject({ reason: 'read-token', total: 1, remote: '10.0.0.0' });
    r.refused('foreign-origin');
    expect(lines()).toHaveLength(4); // another reason is not held back by the first
    now += 10_000; // the window ends: the next refusal writes its summary first
    r.refused('read-token', { remote: '10.9.9.9' });
    const summary = lines().find((l) => l.suppressed !== undefined);
    expect(summary).toMatchObject({ reason: 'read-token', suppressed: 97 });
    expect(lines().at(-1)).toMatchObject({ reason: 'read-token', total: 101, remote: '10.9.9.9' });
    expect(r.totals.get('read-token')).toBe(101);
    expect(r.totals.get('foreign-origin')).toBe(1);
    r.close();
  });

  it('close writes the summary of what the window held back', () => {
    const { log, lines } = capture();
    const r = new RefusalLog(log, { windowMs: 10_000, now: () => 0 });
    for (let i = 0; i < 5; i++) r.refused('timeout');
    r.close();
    expect(lines().filter((l) => l.msg === 'control endpoint refused a request')).toHaveLength(3);
    expect(lines().at(-1)).toMatchObject({ reason: 'timeout', suppressed: 2 });
  });
});
