#!/usr/bin/env node
/**
 * ringvisor benchmarks.
 *
 *   node packages/dom0/dist/bench/cli.js [suite...] [--quick] [--json FILE] [--svg FILE] [--seconds N]
 *        [--transport T,…] [--mode M,…] [--workload TEXT]… [--reference FILE | --no-reference] [--fail-on-regression]
 *
 * Suites: ring, transport, trace, emulation, direct, svio, modes, scaling. With no suite, every
 * suite runs; with --quick and no suite, the comparison (modes and scaling) in its quick form.
 * --transport, --mode and --workload narrow the modes suite (and alone select it).
 * Prints a table; with --json writes `{ "machine": { "cpus", "node" }, "suites": { "<suite>": { … } }, "reference"? }`;
 * with --svg, the comparison's charts. The comparison's rows are judged against a reference run
 * (regression.ts; default docs/bench/run.json): rows more than 3× below it are printed and marked
 * `regressed` in the JSON.
 * Exit codes: 0 ok, 1 a benchmark failed, 2 usage error, 3 --fail-on-regression and a row regressed.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt, machine, runRingBench, type RingBenchResult } from './ring.js';
import { runTransportBench, type TransportBenchResult } from './transport.js';
import { runTraceBench, type TraceBenchResult } from './trace.js';
import { runEmulationBench, type EmulationBenchResult } from './emulation.js';
import { runDirectBench, type DirectBenchResult } from './direct.js';
import { runSvioBench, type SvioBenchResult } from './svio.js';
import { runModesBench, variantOf, workloads, type ModesBenchResult, type ModesRow } from './modes.js';
import { runScalingBench, type ScalingBenchResult, type ScalingRow } from './scaling.js';
import { comparisonSvg } from './svg.js';
import { IO_MODES, rowsIn, type BenchTarget, type BenchTransport, type IoMode } from './measure.js';
import { REGRESSION_FACTOR, defaultReferenceFile, judgeRun, loadReference, regressionExitCode, regressionLines, type ComparableRow, type ReferenceSummary } from './regression.js';
import { UsageError } from '@ringvisor/shared';

interface Suite {
  describe: string;
  run(seconds: number | undefined, log: (line: string) => void, quick: boolean, args: CliArgs): Promise<Record<string, unknown>>;
  table(result: Record<string, unknown>): string[][];
  warnings(result: Record<string, unknown>): string[];
}

/** The run's targets (docs/benchmarks.md) as table rows. */
function targetRows(targets: BenchTarget[]): string[][] {
  return targets.map((t) => [`target: ${t.name}`, `${t.met === null ? 'not measured' : t.met ? 'met' : 'MISSED'} — ${t.detail}`]);
}

const SUITES: Record<string, Suite> = {
  ring: {
    describe: 'Xen-layout blkif ring between two threads vs a raw SAB ring and postMessage',
    run: (seconds, log) => runRingBench({ seconds, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as RingBenchResult;
      const rows = [
        [`ring round trips (best: ≤${r.roundTripBatch} per push)`, `${fmt(r.roundTripsPerSec)}/s`],
        ...Object.entries(r.roundTripsByBatch).map(([b, v]) => [`  ≤${b} per push`, `${fmt(v)}/s`]),
        ['ring one-way entries', `${fmt(r.oneWayEntriesPerSec)}/s`],
        ['raw SAB SPSC ring entries (baseline)', `${fmt(r.rawSabEntriesPerSec)}/s`],
        ['postMessage messages (baseline)', `${fmt(r.postMessagePerSec)}/s`],
        ['round trips / postMessage', `${r.ratios.roundTripVsPostMessage.toFixed(2)}×`],
        ['one-way / raw SAB ring', `${r.ratios.oneWayVsRawSab.toFixed(2)}×`],
      ];
      return rows;
    },
    warnings(res) {
      const r = res as unknown as RingBenchResult;
      return Object.entries(r.quality)
        .filter(([, q]) => q.disturbed)
        .map(([k, q]) => `${k}: other processes used ${q.otherCores?.toFixed(2)} cores in every one of ${q.attempts} windows; the figure is unreliable`);
    },
  },
  transport: {
    describe: 'a netif ring mirrored between two processes over ws vs raw ws + msgpackr',
    run: (seconds, log) => runTransportBench({ seconds, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as TransportBenchResult;
      const ow = r.detail.oneWay;
      return [
        [`ring entries over ws, one-way (${r.setup.ringSlots}-slot netif tx ring)`, `${fmt(r.wsEntriesPerSec)}/s`],
        [`raw ws + msgpackr records (baseline, ${r.setup.rawRecordsPerFrame} per frame)`, `${fmt(r.rawWsPerSec)}/s`],
        [`raw ws + msgpackr, ≤${r.setup.ringSlots} records in flight`, `${fmt(r.rawWsRingWindowPerSec)}/s`],
        ['ring round trips over ws', `${fmt(r.roundTripsPerSec)}/s`],
        ['one-way / raw ws', `${r.ratios.vsRaw.toFixed(2)}×`],
        [`one-way / raw ws with ≤${r.setup.ringSlots} in flight`, `${r.ratios.vsRingWindow.toFixed(2)}×`],
        ['  requests per page message (one-way)', ow.entriesPerPageMessage.toFixed(1)],
        ['  ws frames per entry (one-way)', ow.framesPerEntry.toFixed(4)],
        ['  CPU cores front + back (one-way)', `${ow.cpuCores.front.toFixed(2)} + ${ow.cpuCores.back.toFixed(2)}`],
      ];
    },
    warnings(res) {
      const r = res as unknown as TransportBenchResult;
      const out = Object.entries(r.quality)
        .filter(([, q]) => q.disturbed)
        .map(([k, q]) => `${k}: other processes used ${q.otherCores?.toFixed(2)} cores in every one of ${q.attempts} windows; the figure is unreliable`);
      if (!r.targets.entriesMet) out.push(`ring over ws moved ${fmt(r.wsEntriesPerSec)} entries/s, below the target of ${fmt(r.targets.entriesPerSec)}/s`);
      if (!r.targets.ratioMet)
        out.push(`ring over ws reached ${(r.ratio * 100).toFixed(0)}% of the raw ws baseline, below the target of ${(r.targets.ratio * 100).toFixed(0)}%`);
      return out;
    },
  },
  trace: {
    describe: 'what watching costs: the default host with tracing off, aggregated (views), and streaming every event',
    run: (seconds, log) => runTraceBench({ seconds, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as TraceBenchResult;
      return [
        [`guest I/O ops, tracing off (${r.setup.guests} guests; median of ${r.setup.rounds} rounds)`, `${fmt(r.opsPerSec.off)}/s`],
        ['guest I/O ops, aggregated (Observatory + live dashboard feed)', `${fmt(r.opsPerSec.aggregated)}/s`],
        ['guest I/O ops, streaming every event to a subscriber', `${fmt(r.opsPerSec.streaming)}/s`],
        ['aggregated / off', `${r.ratios.aggregatedVsOff.toFixed(3)}×`],
        ['streaming / off', `${r.ratios.streamingVsOff.toFixed(3)}×`],
        ['  events streamed', `${fmt(r.streamed.eventsPerSec)}/s`],
        ['  events dropped (subscriber behind)', String(r.streamed.dropped)],
      ];
    },
    warnings(res) {
      const r = res as unknown as TraceBenchResult;
      return r.targets.met ? [] : [`aggregated tracing kept ${(r.ratios.aggregatedVsOff * 100).toFixed(1)}% of the untraced throughput, below the target of ${r.targets.aggregatedRatio * 100}%`];
    },
  },
  emulation: {
    describe: 'full emulation (Lance in dom0; hosted VMApp with the VMM optimisations off/on) vs PV, per frame and per round trip',
    run: (seconds, log) => runEmulationBench({ seconds, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as EmulationBenchResult;
      const out: string[][] = [];
      for (const row of r.rows) {
        const cpu = row.cpuUsPerOp.dom0 + row.cpuUsPerOp.guest + row.cpuUsPerOp.vmapp;
        const lat = row.latencyUs.p50 !== null ? `, p50 ${row.latencyUs.p50} µs` : '';
        out.push([
          `${row.direction.padEnd(8)} ${row.mode} (${row.variant})`,
          `${fmt(row.opsPerSec)}/s (${row.vsPv.opsPerSec.toFixed(2)}× pv), ${row.perOp.traps.toFixed(1)} traps, ${row.perOp.worldSwitches.toFixed(1)} switches, ${cpu.toFixed(0)} µs CPU (${row.vsPv.cpuPerOp.toFixed(1)}× pv) per op${lat}`,
        ]);
      }
      return out;
    },
    warnings(res) {
      const r = res as unknown as EmulationBenchResult;
      const out: string[] = [];
      for (const row of r.rows) if (row.ops < 50) out.push(`${row.direction} ${row.mode} (${row.variant}): only ${row.ops} ops in the window; its per-op figures are noisy`);
      return out;
    },
  },
  direct: {
    describe: 'direct I/O (a virtual function behind the IOMMU) vs native (IOMMU pass-through) vs PV, net and block: throughput, latency, CPU per op per runtime',
    run: (seconds, log) => runDirectBench({ seconds, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as DirectBenchResult;
      return r.rows.map((row) => {
        const lat = row.latencyUs.p50 !== null ? `, p50/p99 ${row.latencyUs.p50}/${row.latencyUs.p99} µs` : '';
        const c = row.cpuUsPerOp;
        return [
          `${row.workload.padEnd(8)} ${row.mode.padEnd(6)} (${row.variant})`,
          `${fmt(row.opsPerSec)}/s (${row.vsNative.opsPerSec.toFixed(2)}× native)${lat}; CPU µs/op hwsim ${c.hwsim.toFixed(1)} dom0 ${c.dom0.toFixed(1)} guest ${c.guest.toFixed(1)}; ${row.perOp.notifications.toFixed(2)} notif, ${row.perOp.grantOps.toFixed(2)} grant ops, ${row.perOp.iommuPages.toFixed(2)} IOMMU pages per op`,
        ];
      });
    },
    warnings(res) {
      const r = res as unknown as DirectBenchResult;
      const out = rowsIn(r.rows, 'direct').filter((row) => row.vsNative.opsPerSec < r.targets.directVsNative).map((row) => `${row.workload}: direct reached ${(row.vsNative.opsPerSec * 100).toFixed(0)}% of native, below the ${r.targets.directVsNative * 100}% target`);
      for (const row of r.rows) if (row.ops < 50) out.push(`${row.workload} ${row.mode}: only ${row.ops} ops in the window; its per-op figures are noisy`);
      return out;
    },
  },
  svio: {
    describe: 'SV-IO (VIFs on the device\'s own cores) vs PV (host-centric) for net and block, and scaling with 1–8 guests and 1–2 engine cores',
    run: (seconds, log) => runSvioBench({ seconds, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as SvioBenchResult;
      return r.rows.map((row) => {
        const lat = row.latencyUs.p50 !== null ? `, p50/p99 ${row.latencyUs.p50}/${row.latencyUs.p99} µs` : '';
        const c = row.cpuUsPerOp;
        const fair = row.fairness !== undefined ? `, fairness ${row.fairness.toFixed(3)}` : '';
        return [`${row.device} ${row.mode.padEnd(4)} (${row.variant})`, `${fmt(row.opsPerSec)}/s${lat}${fair}; CPU µs/op hwsim ${c.hwsim.toFixed(1)} dom0 ${c.dom0.toFixed(1)} guest ${c.guest.toFixed(1)}; ${row.perOp.notifications.toFixed(2)} notif, ${row.perOp.grantOps.toFixed(2)} grant ops per op`];
      });
    },
    warnings(res) {
      const r = res as unknown as SvioBenchResult;
      return r.rows.filter((row) => row.ops < 50).map((row) => `${row.device} ${row.mode} (${row.variant}): only ${row.ops} ops in the window; its per-op figures are noisy`);
    },
  },
  modes: {
    describe: 'the comparison: native, emulated (dom0, hosted), PV, direct and SV-IO for net (frame sizes, echo) and block (4 KiB random, 64 KiB sequential, read and write, queue depths), in both transports',
    run: (seconds, log, quick, args) =>
      runModesBench({
        ...(seconds !== undefined ? { seconds } : {}),
        quick,
        log,
        ...(args.transports ? { transports: args.transports } : {}),
        ...(args.modes ? { modes: args.modes } : {}),
        ...(args.workloads ? { only: workloads(quick).filter((w) => args.workloads!.some((t) => variantOf(w).includes(t))) } : {}),
      }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as ModesBenchResult;
      return [
        ...r.rows.map((row) => {
          const l = row.latencyUs;
          const lat = l.p50 !== null ? `, p50/p99/p99.9 ${l.p50}/${l.p99}/${l.p999} µs` : '';
          const c = row.cpuUsPerOp;
          const p = row.perOp;
          const rate = row.device === 'net' ? `${fmt(row.opsPerSec)} pkt/s ${row.gbitPerSec.toFixed(3)} Gbit/s` : `${fmt(row.opsPerSec)} IOPS ${(row.bytesPerSec / 1e6).toFixed(1)} MB/s`;
          return [
            `${row.transport.padEnd(7)} ${row.device} ${row.mode.padEnd(15)} ${row.variant}`,
            `${rate} (${row.vsNative.opsPerSec.toFixed(2)}× native)${lat}; CPU µs/op hw ${c.hwsim.toFixed(1)} dom0 ${c.dom0.toFixed(1)} guest ${(c.guest + c.peer).toFixed(1)}${c.vmapp ? ` vmapp ${c.vmapp.toFixed(1)}` : ''}; per op ${p.traps.toFixed(1)} traps ${p.worldSwitches.toFixed(1)} switches ${p.notifications.toFixed(2)} notif (${p.suppressed.toFixed(2)} suppressed) ${fmt(p.bytesCopied)} B copied ${p.grantOps.toFixed(2)} grant ops ${p.dmaTranslations.toFixed(2)} DMA translations`,
          ];
        }),
        ...targetRows(r.targets),
      ];
    },
    warnings(res) {
      const r = res as unknown as ModesBenchResult;
      return r.rows.filter((row) => row.ops < 30).map((row) => `${row.transport} ${row.device} ${row.mode} (${row.variant}): only ${row.ops} ops in the window; its per-op figures are noisy`);
    },
  },
  scaling: {
    describe: '1 → 64 guests sharing one disk (PV, SV-IO): aggregate and per-guest throughput, Jain\'s fairness; SV-IO weights on one engine core',
    run: (seconds, log, quick) => runScalingBench({ ...(seconds !== undefined ? { seconds } : {}), quick, log }) as unknown as Promise<Record<string, unknown>>,
    table(res) {
      const r = res as unknown as ScalingBenchResult;
      return [
        ...r.rows.map((row) => [
          `${row.mode.padEnd(4)} ${row.variant}`,
          `${fmt(row.opsPerSec)} IOPS, per guest ${fmt(row.perGuestOpsPerSec.min)}–${fmt(row.perGuestOpsPerSec.max)}, fairness ${row.fairness.toFixed(3)}; CPU µs/op hw ${row.cpuUsPerOp.hwsim.toFixed(1)} dom0 ${row.cpuUsPerOp.dom0.toFixed(1)} guest ${row.cpuUsPerOp.guest.toFixed(1)}${row.shares ? `; shares ${row.shares.map((s) => `${(100 * s.share).toFixed(1)}%/${(100 * s.want).toFixed(1)}%`).join(' ')}` : ''}`,
        ]),
        ...targetRows(r.targets),
      ];
    },
    warnings: () => [],
  },
};

export interface CliArgs {
  suites: string[];
  json?: string;
  svg?: string;
  seconds?: number;
  quick: boolean;
  help: boolean;
  /** The modes suite narrowed: these transports, modes, workloads (a workload's name contains one of the texts). */
  transports?: BenchTransport[];
  modes?: IoMode[];
  workloads?: string[];
  /** The run to judge the comparison against: a file, none (null), or the committed run (undefined). */
  reference?: string | null;
  failOnRegression: boolean;
}

export { UsageError };

export function parseArgs(argv: string[]): CliArgs {
  const out: CliArgs = { suites: [], help: false, quick: false, failOnRegression: false };
  const list = <T extends string>(v: string, known: readonly T[], what: string): T[] =>
    v.split(',').map((x) => {
      if (!(known as readonly string[]).includes(x)) throw new UsageError(`unknown ${what} ${JSON.stringify(x)}; known: ${known.join(', ')}`);
      return x as T;
    });
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const eq = a.indexOf('=');
      if (eq >= 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '-h' || a === '--help') out.help = true;
    else if (a === '--json' || a.startsWith('--json=')) out.json = value();
    else if (a === '--svg' || a.startsWith('--svg=')) out.svg = value();
    else if (a === '--quick') out.quick = true;
    else if (a === '--transport' || a.startsWith('--transport=')) out.transports = list<BenchTransport>(value(), ['threads', 'ws'], 'transport');
    else if (a === '--mode' || a.startsWith('--mode=')) out.modes = list<IoMode>(value(), IO_MODES, 'mode');
    else if (a === '--workload' || a.startsWith('--workload=')) (out.workloads ??= []).push(value());
    else if (a === '--reference' || a.startsWith('--reference=')) out.reference = value();
    else if (a === '--no-reference') out.reference = null;
    else if (a === '--fail-on-regression') out.failOnRegression = true;
    else if (a === '--seconds' || a.startsWith('--seconds=')) {
      const v = value();
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--seconds must be a positive number, not ${JSON.stringify(v)}`);
      out.seconds = n;
    } else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else if (!(a in SUITES)) throw new UsageError(`unknown suite ${JSON.stringify(a)}; known suites: ${Object.keys(SUITES).join(', ')}`);
    else if (!out.suites.includes(a)) out.suites.push(a);
  }
  const narrowed = out.transports !== undefined || out.modes !== undefined || out.workloads !== undefined;
  if (narrowed && out.suites.length > 0 && !out.suites.includes('modes')) throw new UsageError('--transport, --mode and --workload narrow the modes suite: run it');
  if (out.suites.length === 0) out.suites = narrowed ? ['modes'] : out.quick ? ['modes', 'scaling'] : Object.keys(SUITES);
  if (out.workloads) {
    const names = workloads(out.quick).map(variantOf);
    for (const t of out.workloads) if (!names.some((n) => n.includes(t))) throw new UsageError(`--workload ${JSON.stringify(t)} names none of this run's workloads: ${names.join('; ')}`);
  }
  if (out.failOnRegression && out.reference === null) throw new UsageError('--fail-on-regression needs a reference run (not --no-reference)');
  if (out.svg && !out.suites.some((x) => x === 'modes' || x === 'scaling')) throw new UsageError('--svg draws the comparison: run the modes or scaling suite with it');
  return out;
}

function usage(): string {
  return [
    'usage: bench [suite...] [--quick] [--json FILE] [--svg FILE] [--seconds N] [--transport T,…] [--mode M,…] [--workload TEXT]…',
    '             [--reference FILE | --no-reference] [--fail-on-regression]',
    '',
    'suites:',
    ...Object.entries(SUITES).map(([name, s]) => `  ${name.padEnd(10)} ${s.describe}`),
    '',
    '  --quick        shorter windows, one round, fewer shapes; with no suite named: the comparison (modes, scaling) only',
    '  --json FILE    also write the results as JSON',
    '  --svg FILE     also draw the comparison (modes, scaling) as SVG charts',
    '  --seconds N    length of each measurement window (default: ring 1, transport 2, trace 2, emulation 2, direct 2, modes 2)',
    '',
    'narrowing the comparison (modes; given alone, they select it):',
    '  --transport T,…   threads, ws',
    `  --mode M,…        ${IO_MODES.join(', ')}`,
    "  --workload TEXT   workloads whose name contains TEXT (repeatable), e.g. 'echo', '4 KiB random read'",
    '',
    'regression guard (modes, scaling):',
    `  --reference FILE      judge each row against the same row (device, mode, transport, variant) of this run's JSON;`,
    `                        default: docs/bench/run.json, the committed run. Rows below 1/${REGRESSION_FACTOR} of it are printed`,
    '                        and marked `regressed` in --json',
    '  --no-reference        do not judge',
    '  --fail-on-regression  exit 3 when a row regressed',
    '',
    'exit codes: 0 ok, 1 a benchmark failed, 2 usage error, 3 a row regressed (--fail-on-regression)',
  ].join('\n');
}

function printTable(title: string, rows: string[][]): void {
  const w = Math.max(...rows.map((r) => r[0].length));
  const v = Math.max(...rows.map((r) => r[1].length));
  // Short figures are right-aligned; sentences (the comparison's rows) read better left-aligned.
  const long = v > 60;
  process.stdout.write(`\n${title}\n${'─'.repeat(Math.min(w + v + 4, 160))}\n`);
  for (const [k, val] of rows) process.stdout.write(`${k.padEnd(w)}    ${long ? val : val.padStart(v)}\n`);
}

export async function main(argv: string[]): Promise<number> {
  let args: CliArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n${usage()}\n`);
      return 2;
    }
    throw e;
  }
  if (args.help) {
    process.stdout.write(usage() + '\n');
    return 0;
  }
  const judged = args.suites.filter((x) => x === 'modes' || x === 'scaling');
  const referenceFile = judged.length === 0 || args.reference === null ? undefined : (args.reference ?? defaultReferenceFile());
  let reference: Map<string, ComparableRow[]> | undefined;
  if (referenceFile) {
    try {
      reference = loadReference(resolve(referenceFile));
    } catch (e) {
      process.stderr.write(`bench: ${(e as Error).message}\n`);
      return 2;
    }
  } else if (args.failOnRegression && judged.length > 0) {
    process.stderr.write('bench: --fail-on-regression: no reference run (docs/bench/run.json is not in this checkout; name one with --reference)\n');
    return 2;
  }
  const m = machine();
  process.stdout.write(`ringvisor bench — ${m.cpus} CPUs, Node ${m.node}\n`);
  const suites: Record<string, Record<string, unknown>> = {};
  for (const name of args.suites) {
    const suite = SUITES[name];
    try {
      const res = await suite.run(args.seconds, (line) => process.stderr.write(`  [${name}] ${line}\n`), args.quick, args);
      suites[name] = res;
      printTable(name, suite.table(res));
      for (const w of suite.warnings(res)) process.stdout.write(`warning: ${w}\n`);
    } catch (e) {
      process.stderr.write(`bench: suite ${name} failed: ${e instanceof Error ? e.message : String(e)}\n`);
      return 1;
    }
  }
  let judgement: ReferenceSummary | undefined;
  if (reference && referenceFile) {
    judgement = judgeRun(suites, reference, resolve(referenceFile));
    process.stdout.write(`\nagainst ${judgement.file}: ${judgement.compared} rows compared, ${judgement.regressions.length} more than ${judgement.factor}× below it\n`);
    for (const line of regressionLines(judgement.regressions, judgement.factor)) process.stdout.write(`${line}\n`);
  }
  if (args.json) {
    const file = resolve(args.json);
    writeFileSync(file, JSON.stringify({ machine: m, suites, ...(judgement ? { reference: judgement } : {}) }, null, 2) + '\n');
    process.stdout.write(`\nwrote ${file}\n`);
  }
  if (args.svg) {
    const file = resolve(args.svg);
    const modes = (suites.modes as unknown as ModesBenchResult | undefined)?.rows as ModesRow[] | undefined;
    const scaling = (suites.scaling as unknown as ScalingBenchResult | undefined)?.rows as ScalingRow[] | undefined;
    writeFileSync(file, comparisonSvg({ ...(modes ? { modes } : {}), ...(scaling ? { scaling } : {}), caption: `ringvisor bench${args.quick ? ' --quick' : ''}, ${m.cpus} CPUs, Node ${m.node}, ${new Date().toISOString().slice(0, 10)}` }));
    process.stdout.write(`wrote ${file}\n`);
  }
  return regressionExitCode(args.failOnRegression, judgement);
}

const invoked = process.argv[1] ? resolve(process.argv[1]) : '';
if (invoked === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
