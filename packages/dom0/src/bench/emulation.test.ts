/**
 * The emulation benchmark, short: every mode in one direction each on a real host. Emulated
 * modes trap, PV does not; the hosted VMM's optimisations take world switches away; rows carry
 * the DESIGN §8 shape and their ratio to pv.
 */
import { describe, expect, it } from 'vitest';
import { parseArgs } from './cli.js';
import { runEmulationBench } from './emulation.js';

describe('bench emulation', () => {
  it('is a suite of the bench CLI', () => {
    expect(parseArgs(['emulation']).suites).toEqual(['emulation']);
  });

  it('measures pv, emulated in dom0 and hosted with each optimisation, per frame received one at a time', async () => {
    const lines: string[] = [];
    const r = await runEmulationBench({ seconds: 1, directions: ['rx-paced'], log: (l) => lines.push(l) });
    const row = (mode: string, variant?: string) => r.rows.find((x) => x.mode === mode && (variant === undefined || x.variant === variant))!;
    expect(r.rows.map((x) => `${x.mode}/${x.variant}`)).toHaveLength(5);
    for (const x of r.rows) {
      expect(x.opsPerSec, lines.join('\n')).toBeGreaterThan(0);
      expect(Object.keys(x.perOp).sort()).toEqual(['bytesCopied', 'grantOps', 'notifications', 'suppressed', 'traps', 'worldSwitches']);
      expect(Object.keys(x.cpuUsPerOp)).toEqual(expect.arrayContaining(['hwsim', 'dom0', 'guest']));
    }
    const pv = row('pv');
    expect(pv.perOp.traps).toBe(0);
    expect(pv.perOp.grantOps).toBeGreaterThan(0);
    expect(pv.vsPv.opsPerSec).toBe(1);
    // A frame received on its own costs the pcnet32 interrupt path: at least 14 port accesses.
    // (The window's two edges can each cut one frame's interrupt off from its frame.)
    const atLeast14 = (ops: number) => (14 * (ops - 2)) / ops;
    const dom0 = row('emulated');
    expect(dom0.perOp.traps).toBeGreaterThanOrEqual(atLeast14(dom0.ops));
    expect(dom0.perOp.worldSwitches).toBeCloseTo(2 * dom0.perOp.traps, 6);
    // Hosted: every access forwarded without the optimisations; vmmIo keeps RAP and status reads home.
    const none = row('emulated-hosted', 'no optimisations');
    const vmmIo = row('emulated-hosted', 'vmmIo');
    expect(none.perOp.traps).toBeGreaterThanOrEqual(atLeast14(none.ops));
    expect(vmmIo.perOp.worldSwitches).toBeLessThan(none.perOp.worldSwitches / 2);
  }, 120_000);
});
