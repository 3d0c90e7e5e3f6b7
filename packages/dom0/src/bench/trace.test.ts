/**
 * The trace benchmark, short: one round of each mode on the real default host. Every mode moves
 * guest I/O, the streaming subscriber really receives events from every runtime, the ratios are
 * the per-round ratios, and when it ends dom0's channels are left with no subscriber.
 */
import { describe, expect, it } from 'vitest';
import { TRACE_KINDS, traceChannel } from '@ringvisor/shared';
import { parseArgs } from './cli.js';
import { runTraceBench } from './trace.js';

describe('bench trace', () => {
  it('is a suite of the bench CLI', () => {
    expect(parseArgs(['trace']).suites).toEqual(['trace']);
  });

  it('measures the same host with tracing off, aggregated and streaming', async () => {
    const lines: string[] = [];
    const r = await runTraceBench({ seconds: 0.6, rounds: 1, log: (l) => lines.push(l) });
    for (const m of ['off', 'aggregated', 'streaming'] as const) expect(r.opsPerSec[m], lines.join('\n')).toBeGreaterThan(0);
    expect(r.ratios.aggregatedVsOff).toBeCloseTo(r.rounds[0].aggregated / r.rounds[0].off, 9);
    expect(r.ratios.streamingVsOff).toBeCloseTo(r.rounds[0].streaming / r.rounds[0].off, 9);
    expect(r.streamed.events).toBeGreaterThan(0);
    expect(r.targets.aggregatedRatio).toBe(0.95);
    for (const k of TRACE_KINDS) expect(traceChannel(k).hasSubscribers, k).toBe(false);
  }, 90_000);
});
