/**
 * The direct-I/O benchmark, short: native, direct and PV for one net and one block workload on a
 * real host, one round each. What the mechanisms must show (not how fast — speed targets live in
 * `npm run bench -- direct`): direct translates every DMA through the IOMMU and native none; PV
 * makes grant operations and direct none; dom0 works for PV and stays off the direct path.
 */
import { describe, expect, it } from 'vitest';
import { parseArgs } from './cli.js';
import { runDirectBench } from './direct.js';

describe('bench direct', () => {
  it('is a suite of the bench CLI', () => {
    expect(parseArgs(['direct']).suites).toEqual(['direct']);
  });

  it('measures native, direct and pv for echo and 4 KiB block I/O, with the mechanisms each uses', async () => {
    const lines: string[] = [];
    const r = await runDirectBench({ seconds: 1, rounds: 1, workloads: ['net-echo', 'blk-4k'], log: (l) => lines.push(l) });
    expect(r.rows.map((x) => `${x.workload}/${x.mode}`)).toEqual(['net-echo/native', 'net-echo/direct', 'net-echo/pv', 'blk-4k/native', 'blk-4k/direct', 'blk-4k/pv']);
    for (const x of r.rows) {
      expect(x.opsPerSec, lines.join('\n')).toBeGreaterThan(0);
      expect(x.latencyUs.p50, x.workload).toBeGreaterThan(0);
      expect(x.latencyUs.p99!).toBeGreaterThanOrEqual(x.latencyUs.p50!);
      expect(Object.keys(x.cpuUsPerOp)).toEqual(expect.arrayContaining(['hwsim', 'dom0', 'guest']));
      expect(x.perOp.notifications).toBeGreaterThan(0);
    }
    const row = (w: string, m: string) => r.rows.find((x) => x.workload === w && x.mode === m)!;
    for (const w of ['net-echo', 'blk-4k']) {
      const native = row(w, 'native');
      const direct = row(w, 'direct');
      const pv = row(w, 'pv');
      expect(native.vsNative.opsPerSec).toBe(1);
      // Every direct DMA was translated (an echo moves four buffers: tx and rx on each side; a
      // 4 KiB block one page); pass-through translates nothing.
      expect(direct.perOp.iommuPages).toBeGreaterThanOrEqual(w === 'net-echo' ? 3.5 : 0.9);
      expect(native.perOp.iommuPages).toBe(0);
      expect(pv.perOp.iommuPages).toBe(0);
      // PV's data path is dom0's grant operations; direct makes none.
      expect(pv.perOp.grantOps).toBeGreaterThan(0.9);
      expect(direct.perOp.grantOps).toBe(0);
      // dom0 works for every PV op and for (almost) no direct one.
      expect(direct.cpuUsPerOp.dom0).toBeLessThan(pv.cpuUsPerOp.dom0 / 10);
    }
  }, 120_000);
});
