/**
 * The transport benchmark end to end, from sources, with short windows: both processes start, every
 * entry is checked (a wrong one fails the run), the result has the documented JSON shape, the counts hang
 * together, and the backend process is gone afterwards.
 */
import { describe, expect, it } from 'vitest';
import { parseArgs } from './cli.js';
import { runTransportBench } from './transport.js';
import { processAlive } from '@ringvisor/shared';

describe('bench transport', () => {
  it('is a suite of the bench CLI', () => {
    expect(parseArgs(['transport', '--json', 'x.json']).suites).toEqual(['transport']);
  });

  it('moves ring entries between two processes over ws and measures the raw baseline', async () => {
    const lines: string[] = [];
    const r = await runTransportBench({ seconds: 0.3, warmupMs: 100, log: (l) => lines.push(l) });
    const pid = Number(/backend process pid (\d+)/.exec(lines.join('\n'))?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(processAlive(pid)).toBe(false);

    for (const v of [r.wsEntriesPerSec, r.rawWsPerSec, r.rawWsRingWindowPerSec, r.roundTripsPerSec]) expect(v).toBeGreaterThan(0);
    expect(r.ratio).toBeCloseTo(r.wsEntriesPerSec / r.rawWsPerSec, 9);
    expect(r.setup.ringSlots).toBe(256);
    expect(r.targets).toMatchObject({ entriesPerSec: 1_000_000, ratio: 0.7 });

    const ow = r.detail.oneWay;
    expect(ow.entries).toBeGreaterThan(0);
    // Batching: one page message carries many requests, one ws frame many entries.
    expect(ow.entriesPerPageMessage).toBeGreaterThan(8);
    expect(ow.framesPerEntry).toBeLessThan(0.5);
    // Kicks really cross the link in both directions, and nothing was refused.
    expect(ow.frontToBack.events).toBeGreaterThan(0);
    expect(ow.backToFront.events).toBeGreaterThan(0);
    expect(ow.frontToBack.pageMessages).toBeGreaterThan(0);
    expect(r.detail.roundTrip.entries).toBeGreaterThan(0);
    expect(r.detail.raw.records).toBeGreaterThan(0);
    expect(r.detail.rawRingWindow.windowRecords).toBe(256);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  }, 60_000);
});
