/**
 * The comparison's regression guard: each row of a run (modes, scaling) set against the same row
 * of a reference run — by default the committed one, docs/bench/run.json. A row is the same row
 * when its device, mode, transport and variant match; it is `regressed` when it did fewer than
 * 1/REGRESSION_FACTOR of the reference's operations per second.
 *
 * Why a factor and not a percentage: the machine running the bench is rarely the one that made
 * the reference, and a shared one is noisy (other processes take the CPUs), so an honest run can
 * land well below the reference. A lost wake-up or a notification storm costs an order of
 * magnitude — SV-IO over ws fell from 5,588 to 148 IOPS — and that is what the guard is for. A
 * reference row of 0 operations (it stalled) cannot be undercut and is not judged.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '@ringvisor/shared';

/** A row is regressed below 1/REGRESSION_FACTOR of its reference's rate. */
export const REGRESSION_FACTOR = 3;

/** What the guard reads of a row, in a run or in the reference. */
export interface ComparableRow {
  device: string;
  mode: string;
  transport: string;
  variant: string;
  opsPerSec: number;
}

/** A row's standing against the reference: its reference rate, this run's share of it. */
export interface AgainstReference {
  opsPerSec: number;
  ratio: number;
}

export interface Regression extends ComparableRow {
  suite: string;
  reference: number;
  ratio: number;
}

/** Where the reference rows came from and what was judged against them. */
export interface ReferenceSummary {
  file: string;
  factor: number;
  /** Rows of this run that had a row in the reference (and a rate above 0 there). */
  compared: number;
  regressions: Regression[];
}

export const rowKey = (r: ComparableRow): string => `${r.transport}|${r.device}|${r.mode}|${r.variant}`;

/** The committed run, if this checkout has it. */
export function defaultReferenceFile(): string | undefined {
  // dist/bench/ and src/bench/ are both four levels under the repository's root.
  const file = fileURLToPath(new URL('../../../../docs/bench/run.json', import.meta.url));
  return existsSync(file) ? file : undefined;
}

function comparable(x: unknown): x is ComparableRow {
  const r = x as Partial<ComparableRow> | null;
  return (
    typeof r === 'object' && r !== null &&
    typeof r.device === 'string' && typeof r.mode === 'string' && typeof r.transport === 'string' && typeof r.variant === 'string' &&
    typeof r.opsPerSec === 'number' && Number.isFinite(r.opsPerSec) && r.opsPerSec >= 0
  );
}

/**
 * The reference's rows per suite, from a bench JSON (`{ suites: { modes: { rows }, … } }`).
 * Rows that are not comparable are skipped; a file that holds no comparison at all is an error.
 */
export function parseReference(json: unknown, file: string): Map<string, ComparableRow[]> {
  const suites = (json as { suites?: unknown } | null)?.suites;
  const out = new Map<string, ComparableRow[]>();
  if (typeof suites === 'object' && suites !== null)
    for (const [name, s] of Object.entries(suites as Record<string, unknown>)) {
      const rows = (s as { rows?: unknown } | null)?.rows;
      if (Array.isArray(rows)) out.set(name, rows.filter(comparable));
    }
  if ([...out.values()].every((rows) => rows.length === 0)) throw new ConfigError(`${file}: not a bench run with comparison rows (--json of the modes or scaling suite)`);
  return out;
}

export function loadReference(file: string): Map<string, ComparableRow[]> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`reference run ${file}: ${(e as Error).message}`);
  }
  return parseReference(json, file);
}

/**
 * Judge a suite's rows against the reference's rows of the same suite: each row that has a
 * reference gets `reference` (that rate and this run's share of it) and `regressed`. Returns the
 * regressions, worst first, and how many rows were compared.
 */
export function judgeAgainstReference<R extends ComparableRow>(
  suite: string,
  rows: R[],
  reference: readonly ComparableRow[],
  factor = REGRESSION_FACTOR,
): { rows: Array<R & { reference?: AgainstReference; regressed?: boolean }>; compared: number; regressions: Regression[] } {
  const byKey = new Map(reference.map((r) => [rowKey(r), r]));
  let compared = 0;
  const regressions: Regression[] = [];
  const judged = rows.map((row) => {
    const ref = byKey.get(rowKey(row));
    if (!ref || ref.opsPerSec <= 0) return row;
    compared++;
    const ratio = row.opsPerSec / ref.opsPerSec;
    const regressed = row.opsPerSec * factor < ref.opsPerSec;
    if (regressed) regressions.push({ suite, device: row.device, mode: row.mode, transport: row.transport, variant: row.variant, opsPerSec: row.opsPerSec, reference: ref.opsPerSec, ratio });
    return { ...row, reference: { opsPerSec: ref.opsPerSec, ratio }, regressed };
  });
  regressions.sort((a, b) => a.ratio - b.ratio);
  return { rows: judged, compared, regressions };
}

/**
 * Judge a run's comparison suites (modes, scaling: whichever it has) against the reference's
 * rows of the same suite; each suite's rows are replaced by their judged copies (for --json).
 */
export function judgeRun(suites: Record<string, unknown>, reference: ReadonlyMap<string, readonly ComparableRow[]>, file: string, factor = REGRESSION_FACTOR): ReferenceSummary {
  const regressions: Regression[] = [];
  let compared = 0;
  for (const name of ['modes', 'scaling']) {
    const res = suites[name] as { rows?: unknown } | undefined;
    const rows: unknown = res?.rows;
    if (!res || !Array.isArray(rows) || !rows.every(comparable)) continue;
    const j = judgeAgainstReference(name, rows, reference.get(name) ?? [], factor);
    res.rows = j.rows;
    compared += j.compared;
    regressions.push(...j.regressions);
  }
  regressions.sort((a, b) => a.ratio - b.ratio);
  return { file, factor, compared, regressions };
}

/** The CLI's exit code for the guard: 3 when asked to fail and a row regressed, else 0. */
export function regressionExitCode(failOnRegression: boolean, summary: ReferenceSummary | undefined): 0 | 3 {
  return failOnRegression && summary !== undefined && summary.regressions.length > 0 ? 3 : 0;
}

/** One line per regression, for the terminal. */
export function regressionLines(regressions: readonly Regression[], factor = REGRESSION_FACTOR): string[] {
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  return regressions.map(
    (r) =>
      `REGRESSED ${r.transport} ${r.device} ${r.mode} (${r.variant}): ${n(r.opsPerSec)} ops/s, ` +
      `${r.ratio > 0 ? `${(1 / r.ratio).toFixed(1)}× below` : 'nothing against'} the reference's ${n(r.reference)} (flagged beyond ${factor}×)`,
  );
}
