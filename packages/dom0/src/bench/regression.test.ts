/**
 * The comparison's regression guard on synthetic rows (no benchmark runs here): which rows are
 * the same row, where "more than 3× below" starts, what the JSON carries, the exit code, the
 * committed run as the default reference, and the CLI options that narrow the modes suite.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@ringvisor/shared';
import { parseArgs, UsageError } from './cli.js';
import { REGRESSION_FACTOR, defaultReferenceFile, judgeAgainstReference, judgeRun, loadReference, parseReference, regressionExitCode, regressionLines, type ComparableRow } from './regression.js';

const row = (transport: string, device: string, mode: string, variant: string, opsPerSec: number): ComparableRow => ({ transport, device, mode, variant, opsPerSec });

const REFERENCE: ComparableRow[] = [
  row('ws', 'blk', 'svio', '4 KiB random read, qd 8', 5_588),
  row('ws', 'net', 'svio', 'echo 106 B frames', 234),
  row('ws', 'net', 'direct', 'echo 106 B frames', 0), // stalled in the reference: cannot be undercut
  row('threads', 'blk', 'svio', '4 KiB random read, qd 8', 22_635),
  row('threads', 'blk', 'emulated', '4 KiB random read, qd 8 (ATA: qd 1)', 300),
];

describe('bench regression guard', () => {
  it('flags a row more than 3× below the same device/mode/transport/variant of the reference, and only those', () => {
    const run = [
      row('ws', 'blk', 'svio', '4 KiB random read, qd 8', 148), // the regression this guard was made for
      row('ws', 'net', 'svio', 'echo 106 B frames', 6),
      row('ws', 'net', 'direct', 'echo 106 B frames', 500),
      row('threads', 'blk', 'svio', '4 KiB random read, qd 8', 22_635 / 3), // exactly a third: not beyond 3×
      row('threads', 'blk', 'emulated', '4 KiB random read, qd 8 (ATA: qd 1)', 99), // just beyond
      row('ws', 'blk', 'svio', '64 KiB sequential write, qd 8', 1), // not in the reference
      row('threads', 'blk', 'svio', '4 KiB random read, qd 1', 1), // another variant: not the same row
    ];
    const j = judgeAgainstReference('modes', run, REFERENCE);
    expect(j.compared).toBe(4); // the stalled reference row and the two unknown ones are not judged
    expect(j.regressions.map((r) => [r.transport, r.device, r.mode, r.variant, r.reference])).toEqual([
      ['ws', 'net', 'svio', 'echo 106 B frames', 234], // worst first: 6/234
      ['ws', 'blk', 'svio', '4 KiB random read, qd 8', 5_588],
      ['threads', 'blk', 'emulated', '4 KiB random read, qd 8 (ATA: qd 1)', 300],
    ]);
    expect(j.regressions[1].ratio).toBeCloseTo(148 / 5_588, 9);
    // Each judged row says where it stands; rows without a reference are left as they were.
    expect(j.rows.map((r) => r.regressed)).toEqual([true, true, undefined, false, true, undefined, undefined]);
    expect(j.rows[0].reference).toEqual({ opsPerSec: 5_588, ratio: 148 / 5_588 });
    expect(j.rows[5]).toEqual(run[5]);
    expect(regressionLines(j.regressions)[1]).toBe('REGRESSED ws blk svio (4 KiB random read, qd 8): 148 ops/s, 37.8× below the reference\'s 5,588 (flagged beyond 3×)');
    expect(REGRESSION_FACTOR).toBe(3);
  });

  it('judges a whole run (modes and scaling), marks its JSON rows, and sets the exit code under --fail-on-regression', () => {
    const suites: Record<string, unknown> = {
      modes: { rows: [{ ...row('ws', 'blk', 'svio', '4 KiB random read, qd 8', 6_000), latencyUs: { p50: 1 } }, row('ws', 'net', 'svio', 'echo 106 B frames', 50)] },
      scaling: { rows: [row('threads', 'blk', 'svio', '1 guest, 4 KiB random read, qd 4', 1_000)] },
      ring: { roundTripsPerSec: 1 },
    };
    const reference = new Map([
      ['modes', REFERENCE],
      ['scaling', [row('threads', 'blk', 'svio', '1 guest, 4 KiB random read, qd 4', 15_007)]],
    ]);
    const s = judgeRun(suites, reference, '/ref.json');
    expect(s.compared).toBe(3);
    expect(s.regressions.map((r) => `${r.suite} ${r.variant}`)).toEqual(['scaling 1 guest, 4 KiB random read, qd 4', 'modes echo 106 B frames']);
    const modes = (suites.modes as { rows: Array<{ regressed?: boolean; latencyUs?: unknown }> }).rows;
    expect(modes.map((r) => r.regressed)).toEqual([false, true]);
    expect(modes[0].latencyUs).toEqual({ p50: 1 }); // the row keeps everything else
    expect(JSON.parse(JSON.stringify(suites)).modes.rows[1]).toMatchObject({ regressed: true, reference: { opsPerSec: 234 } });
    expect(regressionExitCode(true, s)).toBe(3);
    expect(regressionExitCode(false, s)).toBe(0);
    expect(regressionExitCode(true, { ...s, regressions: [] })).toBe(0);
    expect(regressionExitCode(true, undefined)).toBe(0);
  });

  it('reads a reference from a bench JSON, the committed run by default', () => {
    const committed = defaultReferenceFile();
    expect(committed).toMatch(/docs\/bench\/run\.json$/);
    const ref = loadReference(committed!);
    const svio = ref.get('modes')!.find((r) => r.transport === 'ws' && r.mode === 'svio' && r.variant === '4 KiB random read, qd 8');
    expect(svio!.opsPerSec).toBeGreaterThan(1_000);
    expect(ref.get('scaling')!.length).toBeGreaterThan(0);
    // Malformed rows are skipped; a file with no comparison at all is refused, with its name.
    expect(parseReference({ suites: { modes: { rows: [REFERENCE[0], { device: 'blk' }, null] } } }, 'x.json').get('modes')).toEqual([REFERENCE[0]]);
    expect(() => parseReference({ suites: { ring: { roundTripsPerSec: 1 } } }, 'ring.json')).toThrow(ConfigError);
    const dir = mkdtempSync(join(tmpdir(), 'rv-bench-ref-'));
    try {
      writeFileSync(join(dir, 'bad.json'), '{ not json');
      expect(() => loadReference(join(dir, 'bad.json'))).toThrow(/bad\.json/);
      expect(() => loadReference(join(dir, 'missing.json'))).toThrow(ConfigError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('CLI: narrowing the modes suite, the reference and --fail-on-regression', () => {
    const a = parseArgs(['--quick', '--transport', 'ws', '--mode', 'svio', '--workload', 'echo', '--workload=4 KiB random read', '--fail-on-regression']);
    expect(a).toMatchObject({ suites: ['modes'], transports: ['ws'], modes: ['svio'], workloads: ['echo', '4 KiB random read'], failOnRegression: true, quick: true });
    expect(a.reference).toBeUndefined(); // the committed run
    expect(parseArgs(['modes', '--mode=direct,svio', '--reference', 'old.json']).modes).toEqual(['direct', 'svio']);
    expect(parseArgs(['modes', '--reference', 'old.json']).reference).toBe('old.json');
    expect(parseArgs(['--quick', '--no-reference']).reference).toBeNull();
    expect(parseArgs(['--quick']).failOnRegression).toBe(false);
    expect(() => parseArgs(['--mode', 'svio,warp'])).toThrow(/unknown mode "warp"/);
    expect(() => parseArgs(['--transport', 'carrier-pigeon'])).toThrow(UsageError);
    expect(() => parseArgs(['ring', '--mode', 'svio'])).toThrow(/narrow the modes suite/);
    expect(() => parseArgs(['--quick', '--workload', '4 KiB random write'])).toThrow(/names none of this run's workloads/); // not in the quick matrix
    expect(parseArgs(['--workload', '4 KiB random write']).workloads).toEqual(['4 KiB random write']);
    expect(() => parseArgs(['--quick', '--no-reference', '--fail-on-regression'])).toThrow(/needs a reference/);
  });
});
