/**
 * `ringvisor chaos --plan FILE | --random N [--seed N] [--json FILE] [--transport T]`: start a
 * cluster, run its workloads under the plan, heal, drain, check; or, with --attach, run the plan
 * against a running cluster through its dom0s' control endpoints. Exit 1 when a checker fails
 * (the report is documented in docs/faults.md).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createLogger, generateSecretFile } from '@ringvisor/shared';
import { defaultConfig, loadConfigFile } from '../../config.js';
import { chaosStateLocation, claimState, configStateLocation, stateRoot, sweepChaosState } from '../../state.js';
import { runCluster } from '../../cluster.js';
import { loadPlanFile, type FaultPlan } from '../../../faults/plan.js';
import { generatePlan } from '../../../faults/generate.js';
import { Campaign } from '../../../faults/campaign.js';
import { chaosAttached } from '../chaos-attach.js';
import { DEFAULT_OBSERVE, UsageError, parseListen, resolveControl, stateDir } from '../endpoint.js';
import { parseCommandArgs, parseTransport, sayState } from '../args.js';

type ChaosValues = ReturnType<typeof parseChaosArgs>['values'];
type CampaignReport = ReturnType<Campaign['report']>;

function parseChaosArgs(argv: string[]) {
  return parseCommandArgs('chaos', {
    args: argv,
    options: {
      plan: { type: 'string' },
      random: { type: 'string' },
      attach: { type: 'string' },
      seed: { type: 'string' },
      duration: { type: 'string' },
      json: { type: 'string' },
      transport: { type: 'string' },
      config: { type: 'string' },
      observe: { type: 'string' },
      'secret-file': { type: 'string' },
    },
  });
}

/** The plan (from --plan, or --random N seeded scenarios), with --duration applied, and the seed to run it with. */
function planFromArgs(values: ChaosValues): { plan: FaultPlan; seed: number } {
  if (!values.plan === !values.random) throw new UsageError('ringvisor chaos: give --plan FILE (examples/faults/ has a library of plans) or --random N (a seeded campaign of N scenarios)');
  let plan: FaultPlan;
  if (values.plan) plan = loadPlanFile(values.plan);
  else {
    const n = Number(values.random);
    if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new UsageError(`--random must be a number of scenarios in 1..10000, got ${JSON.stringify(values.random)}`);
    const t = parseTransport(values.transport);
    const seedArg = values.seed === undefined ? 1 : Number(values.seed);
    plan = generatePlan({ seed: seedArg, scenarios: n, transport: t, config: values.config ? loadConfigFile(values.config) : defaultConfig({ transport: t }) });
    if (values.config) plan.cluster = values.config;
  }
  if (values.duration !== undefined) {
    const d = Number(values.duration);
    if (!(d > 0)) throw new UsageError(`--duration must be a positive number of seconds, got ${JSON.stringify(values.duration)}`);
    plan.duration = d;
  }
  let seed = plan.seed;
  if (values.seed !== undefined) {
    seed = Number(values.seed);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UsageError(`--seed must be an integer in 0..4294967295, got ${JSON.stringify(values.seed)}`);
  }
  return { plan, seed };
}

/** `ringvisor chaos`: see the file's head. */
export async function chaos(argv: string[]): Promise<number> {
  const { values } = parseChaosArgs(argv);
  const { plan, seed } = planFromArgs(values);
  if (values.attach) return chaosAgainstRunningCluster(plan, seed, values.attach, values);
  return chaosOnOwnCluster(plan, seed, values);
}

/** --attach URL[,URL]: the plan against a running cluster, through its dom0s' control endpoints. */
async function chaosAgainstRunningCluster(plan: FaultPlan, seed: number, attach: string, values: ChaosValues): Promise<number> {
  const urls = attach.split(',').filter(Boolean);
  const endpoints = await Promise.all(urls.map((url) => resolveControl({ url, ...(values['secret-file'] ? { secretFile: values['secret-file'] } : {}) })));
  process.stdout.write(`chaos: plan ${plan.name}, seed ${seed}, attached to ${urls.join(', ')}\n`);
  const report = await chaosAttached(plan, seed, endpoints, (line) => process.stdout.write(`chaos: ${line}\n`));
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(
    `chaos: verdict ${report.verdict.toUpperCase()}${report.reasons.length ? ` — ${report.reasons.join('; ')}` : ''}\n` +
      `  faults    ${report.faults.length} injected, ${report.faults.filter((f) => f.error).length} refused\n` +
      `  integrity checked ${report.checkers.integrity.checked}, failures ${report.checkers.integrity.failures}\n` +
      `  recovery  ${report.recoveryMs.length ? `${Math.min(...report.recoveryMs)}–${Math.max(...report.recoveryMs)} ms` : 'n/a'}; liveness ${report.livenessMs === null ? 'FAILED' : `${report.livenessMs} ms`}\n` +
      `  (${report.note})\n`,
  );
  return report.verdict === 'pass' ? 0 : 1;
}

/** A cluster of the campaign's own, on blank disks, driven by the campaign until it has healed and checked. */
async function chaosOnOwnCluster(plan: FaultPlan, seed: number, values: ChaosValues): Promise<number> {
  const transport = parseTransport(values.transport ?? plan.transport);
  const configPath = values.config ?? plan.cluster;
  // Every campaign run on blank disks of its own (its ledger then knows every block's history),
  // never on what `up` or another campaign left; what finished campaigns left goes first.
  const root = stateRoot();
  sweepChaosState(root, sayState('chaos'));
  const state = chaosStateLocation(plan.name, configStateLocation(configPath, root).config, root);
  const config = configPath ? loadConfigFile(configPath, { diskDir: state.dir }) : defaultConfig({ transport, diskDir: state.dir });
  config.seed = seed;
  const secretFile = values['secret-file'] ?? join(stateDir(), 'secret');
  mkdirSync(dirname(secretFile), { recursive: true });
  const secret = await generateSecretFile(secretFile);
  const tty = process.stdout.isTTY === true;
  const campaign = new Campaign(plan, seed, createLogger('chaos'), (line) => process.stdout.write(`${tty ? '\x1b[2K' : ''}chaos: ${line}\n`));
  process.stdout.write(`chaos: plan ${plan.name}, seed ${seed}, ${plan.faults.length} faults, ${plan.duration}s under faults, ${transport} transport\n`);
  const claim = claimState(state, config, sayState('chaos'));
  const run = await runCluster({
    config,
    durationSec: Infinity,
    transport,
    secret,
    faultSeed: seed,
    quiet: true,
    observe: parseListen('--observe', values.observe ?? process.env.RINGVISOR_OBSERVE ?? DEFAULT_OBSERVE),
    ...(transport === 'ws' ? { ws: { secret } } : {}),
    drive: ({ hosts, injector }) => campaign.drive(hosts, injector),
  });
  const report = campaign.report({ transport, hosts: run.hosts, finals: run.finals, injector: run.injector, durationSec: run.durationSec });
  // A cluster that never ran proved nothing: that is a failed campaign, not a clean one.
  if (run.exitCode !== 0 && report.verdict === 'pass') {
    report.verdict = 'fail';
    report.reasons.push(`the cluster failed (exit ${run.exitCode}; its error is above): what ran proves nothing`);
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n');
  printCampaignReport(report);
  // A campaign that passed leaves nothing behind; a failed one's disks stay to be looked at (a
  // campaign that died outright leaves its dead pid as owner: the next campaign sweeps it).
  const passed = run.exitCode === 0 && report.verdict === 'pass';
  claim.release({ remove: passed });
  if (!passed) process.stdout.write(`chaos: the campaign's disks are kept in ${state.dir} for inspection (the next campaign here removes them)\n`);
  return run.exitCode !== 0 ? run.exitCode : report.verdict === 'pass' ? 0 : 1;
}

function printCampaignReport(report: CampaignReport): void {
  const b = report.checkers.block;
  const n = report.checkers.net;
  process.stdout.write(
    [
      `chaos: verdict ${report.verdict.toUpperCase()}${report.reasons.length ? ` — ${report.reasons.join('; ')}` : ''}`,
      `  faults    ${report.faults.length} injected (${[...new Set(report.faults.map((f) => f.kind))].join(', ') || 'none'}), ${report.faults.filter((f) => f.error).length} could not be`,
      `  block     ok ${b.ok}  lost ${b.lost}  stale ${b.stale}  torn ${b.torn}  misdirected ${b.misdirected}  unexpected ${b.unexpected}  indeterminate ${b.indeterminate}${b.unflushed ? `  unflushed ${b.unflushed} (a power loss took them before a flush did)` : ''}`,
      `  net       lost ${n.lost}  duplicated ${n.duplicated}  reordered ${n.reordered}  corrupted ${n.corrupted}`,
      `  isolation breaches ${report.checkers.isolation.breaches}`,
      `  recovery  ${report.recoveryMs.length ? `${Math.min(...report.recoveryMs)}–${Math.max(...report.recoveryMs)} ms after heals` : 'no healed fault to time'}; liveness ${report.livenessMs === null ? 'FAILED' : `${report.livenessMs} ms`}`,
    ].join('\n') + '\n',
  );
}
