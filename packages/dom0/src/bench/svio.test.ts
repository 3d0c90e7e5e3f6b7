/**
 * The SV-IO benchmark, short: one block workload and one scaling point, both modes. What the
 * mechanisms must show (speeds are for `npm run bench -- svio`): SV-IO makes no grant operation
 * and keeps dom0 off the path, its work shows up as the hardware's (the engine's cores); scaling
 * rows carry guests, cores and Jain's fairness.
 */
import { describe, expect, it } from 'vitest';
import { parseArgs } from './cli.js';
import { runSvioBench } from './svio.js';

describe('bench svio', () => {
  it('is a suite of the bench CLI', () => {
    expect(parseArgs(['svio']).suites).toEqual(['svio']);
  });

  it('measures SV-IO and PV, and scaling, with the mechanisms each uses', async () => {
    const lines: string[] = [];
    const r = await runSvioBench({ seconds: 1, rounds: 1, workloads: ['blk-4k'], scaling: [2], log: (l) => lines.push(l) });
    expect(r.rows.map((x) => `${x.mode}/${x.guests ?? '-'}`)).toEqual(['svio/-', 'pv/-', 'svio/2', 'svio/2', 'pv/2']);
    for (const x of r.rows) {
      expect(x.opsPerSec, lines.join('\n')).toBeGreaterThan(0);
      expect(Object.keys(x.perOp).sort()).toEqual(['bytesCopied', 'grantOps', 'notifications', 'suppressed', 'traps', 'worldSwitches']);
    }
    const [svio, pv] = r.rows;
    expect(svio.perOp.grantOps).toBe(0);
    expect(pv.perOp.grantOps).toBeGreaterThan(0.9);
    expect(svio.cpuUsPerOp.dom0).toBeLessThan(pv.cpuUsPerOp.dom0 / 5);
    expect(svio.cpuUsPerOp.hwsim).toBeGreaterThan(0);
    expect(svio.latencyUs.p99!).toBeGreaterThanOrEqual(svio.latencyUs.p50!);
    for (const x of r.rows.slice(2)) {
      expect(x.guests).toBe(2);
      expect(x.fairness).toBeGreaterThan(0.5);
      expect(x.fairness).toBeLessThanOrEqual(1);
    }
    expect(r.rows.slice(2).map((x) => x.cores)).toEqual([1, 2, 0]);
    expect(r.ratios['4 KiB random, qd 8'].opsPerSec).toBeGreaterThan(0);
  }, 120_000);
});
