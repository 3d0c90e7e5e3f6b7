/**
 * `ringvisor` — the toolstack CLI (as `xl` lives in dom0).
 *
 *   ringvisor up [--config FILE] [--duration S] [--json FILE] [--seed N]
 *
 * Mistakes print what was wrong and how to fix it, and exit 2.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import {
  CONTROL_PING,
  ConfigError,
  EXIT,
  RingvisorError,
  RpcPeer,
  StateError,
  connect,
  createLogger,
  deriveDomainKey,
  deriveReadToken,
  formatDomainKey,
  TRACE_KINDS,
  generateSecretFile,
  readSecretFile,
  runtimeEntry,
  secretFromEnv,
  startRuntimeWorker,
} from '@ringvisor/shared';
import { randomBytes } from 'node:crypto';
import { defaultConfig, loadConfigFile, type ClusterConfig } from '../config.js';
import { Host, type HostOptions, type RuntimeCrash } from '../host.js';
import { chaosStateLocation, claimState, configStateLocation, stateRoot, sweepChaosState, type StateLocation } from '../state.js';
import { renderTop, summarize, type RunSummary, type TopRow } from '../summary.js';
import { FaultInjector } from '../../faults/injector.js';
import { loadPlanFile, type FaultPlan } from '../../faults/plan.js';
import { generatePlan } from '../../faults/generate.js';
import { chaosAttached } from './chaos-attach.js';
import { Campaign } from '../../faults/campaign.js';
import { parse as parseYaml } from 'yaml';
import { Observatory } from '../../observe/observatory.js';
import { ControlServer } from '../../observe/server.js';
import { captureLocalFrames } from '../../observe/capture.js';
import * as views from './views.js';
import { DEFAULT_OBSERVE, UsageError, ControlEndpointError, listenControl, postAction, resolveControl, parseListen, removeControlFile, stateDir, writeControlFile, type ListenAt } from './endpoint.js';
import type { GuestStats, Logger } from '@ringvisor/shared';

const USAGE = `usage: ringvisor <command> [options]

commands:
  up        start a cluster and run its workloads (default: one host, five guests in three I/O modes:
            guest1-3 para-virtualized, guest4 emulated (Lance NIC, ATA disk), guest5 direct I/O)
  list      the running cluster's domains (xl list)
  top       live per-domain figures (xentop); -b -n N for batch output, -d S between iterations
  rings     every ring's indices, occupancy and verdict BUSY / IDLE / STUCK (xen-ringwatch)
  trace     stream trace events as JSON Lines: --kind K (repeatable: ${TRACE_KINDS.join(', ')}) --host H
            --domain NAME|ID --device vif0 --ring tx --count N --duration S; --pcap FILE writes
            every NIC's frames as pcapng instead
  backend   pause|resume DOMAIN DEVICE: stop or restart a backend consuming its rings (admin)
  direct    list | faults | reclaim|assign DOMAIN DEVICE: direct devices' functions (requester id,
            state, DMA blocked); the IOMMU's fault records; take a function back (bus master off,
            FLR, IOMMU teardown) or assign one (admin)
  svio      list | qos DOMAIN DEVICE --weight N [--rate BYTES,USEC]: the SV-IO engine's VIFs (core,
            weight, credit limit, queue state, counters); set a VIF's QoS share and limit (admin)
  bench     [suite...] [--quick] [--json FILE] [--svg FILE] [--seconds N]: the benchmarks (npm run bench);
            --quick with no suite: the comparison of every I/O design (modes, scaling), under 5 minutes;
            --transport/--mode/--workload narrow it; rows more than 3× below the committed run
            (docs/bench/run.json, or --reference FILE) are flagged, --fail-on-regression exits 3
  chaos     --plan FILE | --random N  [--seed N] [--json FILE] [--transport T] [--config F] [--duration S]:
            run a fault campaign (a plan, or N seeded random scenarios), heal, check; with
            --attach URL[,URL] against a running cluster through its dom0s' control endpoints;
            exit 1 when a checker fails (plans: examples/faults/)
  fault     inject SPEC [--for S] | heal [ID] | list: faults into a running cluster (admin)
  token     print the read token (dashboard: http://HOST:PORT/?token=…) derived from the cluster secret
  key       --host NAME --domain N: print guest N of host NAME's domain key (hex), the one credential
            its process gets (RINGVISOR_DOMAIN_KEY); it opens that guest's own links and nothing else
  help      show this text

view commands find the cluster through .ringvisor/control.json (or --url http://HOST:PORT,
RINGVISOR_CONTROL_URL) and authenticate with the cluster secret (.ringvisor/secret,
RINGVISOR_SECRET or --secret-file; read-only views also accept RINGVISOR_READ_TOKEN).
--json prints machine-readable output.

ringvisor up options:
  --config FILE     cluster config (YAML or JSON); default: the embedded five-guest host (above)
  --duration S      run for S seconds, then shut down cleanly (default: until Ctrl-C)
  --json FILE       write the run summary (per guest, per device ops/bytes/errors, integrity) at exit
  --seed N          seed for every workload (same seed, same schedule)
  --transport T     threads (default: every runtime a thread of this process, real shared memory)
                    or ws (every guest its own process on an authenticated WebSocket to dom0)
  --secret-file F   the cluster secret (created, mode 0600, if missing; default .ringvisor/secret)
  --observe H:P     the control endpoint: dashboard, /metrics, views (default 127.0.0.1:7070)
  --pcap FILE       capture every frame crossing a vif or the physical NIC to FILE (pcapng)
  A second Ctrl-C / SIGTERM forces the exit (children killed by pid). Exit codes: 0 clean,
  1 a check failed, 2 usage, 3 a runtime crashed and the run recovered, 4 forced exit
  (5: a runtime that lost its dom0).

runtimes (ws transport; started by \`up --transport ws\` or by docker compose):
  dom0 --config FILE [--listen HOST:PORT] [--lan ws://SWITCH:PORT]
                                            this host's dom0 and hardware; waits for the config's guests
  switch [--listen HOST:PORT]               the LAN switch joining several hosts' physical NICs
  domu --id N --dom0 ws://HOST:PORT         a guest; its domain key (only) in RINGVISOR_DOMAIN_KEY
                                            or --key-file FILE (see \`ringvisor key\`)
  health [--url ws://HOST:PORT]             exit 0 when dom0 answers an authenticated ping
  (the other runtimes take the cluster secret from RINGVISOR_SECRET, hex, or --secret-file FILE)
`;


interface UpArgs {
  config: ClusterConfig;
  durationSec: number;
  json?: string;
  transport: 'threads' | 'ws';
  secretFile: string;
  observe: ListenAt;
  pcap?: string;
  /** The config's own state directory (its disk images), claimed for the run. */
  state: StateLocation;
}

/** A line about the state directories (a leftover set aside), where the user sees it. */
function sayState(prefix: string): (line: string) => void {
  return (line) => process.stderr.write(`${prefix}: ${line}\n`);
}

/**
 * node:util's parseArgs (strict), with a mistake reported as a UsageError that names the command
 * and shows the usage — every command parses its flags through here.
 */
function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>({ strict: true, ...config });
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message}\n\n${USAGE}`);
  }
}

/** `--transport` (or a plan's transport): "threads" or "ws". */
function parseTransport(value: string | undefined): 'threads' | 'ws' {
  const t = value ?? 'threads';
  if (t !== 'threads' && t !== 'ws') throw new UsageError(`--transport must be "threads" or "ws", got ${JSON.stringify(t)}`);
  return t;
}

function parseUp(argv: string[]): UpArgs {
  const { values } = parseCommandArgs('up', {
    args: argv,
    options: {
      config: { type: 'string' },
      duration: { type: 'string' },
      json: { type: 'string' },
      seed: { type: 'string' },
      transport: { type: 'string' },
      'secret-file': { type: 'string' },
      observe: { type: 'string' },
      pcap: { type: 'string' },
    },
  });
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds, got ${JSON.stringify(values.duration)}`);
  const transport = parseTransport(values.transport);
  const state = configStateLocation(values.config);
  const config = values.config ? loadConfigFile(values.config, { diskDir: state.dir }) : defaultConfig({ transport, diskDir: state.dir });
  if (values.seed !== undefined) {
    const seed = Number(values.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a non-negative integer, got ${JSON.stringify(values.seed)}`);
    config.seed = seed;
  }
  return {
    config,
    durationSec,
    transport,
    state,
    secretFile: values['secret-file'] ?? join(stateDir(), 'secret'),
    observe: parseListen('--observe', values.observe ?? process.env.RINGVISOR_OBSERVE ?? DEFAULT_OBSERVE),
    ...(values.json ? { json: values.json } : {}),
    ...(values.pcap ? { pcap: values.pcap } : {}),
  };
}

async function up(argv: string[]): Promise<number> {
  const { config, durationSec, json, transport, secretFile, observe, pcap, state } = parseUp(argv);
  // The cluster secret: authenticates runtimes (ws) and the control endpoint (both transports).
  mkdirSync(dirname(secretFile), { recursive: true });
  const secret = await generateSecretFile(secretFile);
  const ws: HostOptions['ws'] = transport === 'ws' ? { secret } : undefined;
  // Owned until the run ends; if it dies outright, its dead pid frees the state for the next run.
  const claim = claimState(state, config, sayState('ringvisor'));
  const code = await runHost({ config, durationSec, transport, secret, observe, ...(pcap ? { pcap } : {}), ...(json ? { json } : {}), ...(ws ? { ws } : {}) });
  claim.release();
  return code;
}

/**
 * `ringvisor chaos --plan FILE [--seed N] [--json FILE] [--transport T]`: start a cluster, run its
 * workloads under the plan, heal, drain, check; exit 1 when a checker fails (the report is documented in docs/faults.md).
 */
async function chaos(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('chaos', {
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
  if (values.attach) {
    const urls = values.attach.split(',').filter(Boolean);
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
  // A campaign that passed leaves nothing behind; a failed one's disks stay to be looked at (a
  // campaign that died outright leaves its dead pid as owner: the next campaign sweeps it).
  const passed = run.exitCode === 0 && report.verdict === 'pass';
  claim.release({ remove: passed });
  if (!passed) process.stdout.write(`chaos: the campaign's disks are kept in ${state.dir} for inspection (the next campaign here removes them)\n`);
  return run.exitCode !== 0 ? run.exitCode : report.verdict === 'pass' ? 0 : 1;
}

/** The cluster secret for a command run by the operator: --secret-file, RINGVISOR_SECRET, or `up`'s state directory. */
async function operatorSecret(command: string, secretFile: string | undefined): Promise<Uint8Array> {
  if (secretFile) return readSecretFile(secretFile);
  if (process.env.RINGVISOR_SECRET) return secretFromEnv();
  return readSecretFile(join(stateDir(), 'secret')).catch(() => {
    throw new UsageError(`ringvisor ${command}: no cluster secret (set RINGVISOR_SECRET, pass --secret-file, or run in the directory of \`ringvisor up\`)`);
  });
}

/** `ringvisor token`: the read token for dashboards and read-only views (derived from the cluster secret). */
async function token(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('token', { args: argv, options: { 'secret-file': { type: 'string' } } });
  const secret = await operatorSecret('token', values['secret-file']);
  process.stdout.write(deriveReadToken(secret) + '\n');
  return 0;
}

/**
 * `ringvisor key --host NAME --domain N`: guest N of host NAME's domain key (hex), the only
 * credential its process gets (RINGVISOR_DOMAIN_KEY). It opens that guest's own connections and
 * nothing else; see auth.ts for the derivation.
 */
async function key(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('key', { args: argv, options: { host: { type: 'string' }, domain: { type: 'string' }, 'secret-file': { type: 'string' } } });
  const domid = Number(values.domain);
  if (values.host === undefined || values.domain === undefined || !Number.isInteger(domid))
    throw new UsageError('usage: ringvisor key --host NAME --domain N  (NAME: the host\'s name in the cluster config, host0 when unnamed; N: the guest\'s domain id, its 1-based position in the host\'s guests)');
  const secret = await operatorSecret('key', values['secret-file']);
  let domainKey;
  try {
    domainKey = deriveDomainKey(secret, values.host, domid);
  } catch (e) {
    throw new UsageError(`ringvisor key: ${(e as Error).message}`);
  }
  process.stdout.write(formatDomainKey(domainKey) + '\n');
  return 0;
}

/** `ringvisor fault inject|heal|list`: faults into a running cluster (admin). */
async function fault(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs('fault', { args: argv, options: { url: { type: 'string' }, 'secret-file': { type: 'string' }, for: { type: 'string' } }, allowPositionals: true });
  const [action, arg] = positionals;
  const c = await resolveControl({ ...(values.url ? { url: values.url } : {}), ...(values['secret-file'] ? { secretFile: values['secret-file'] } : {}) });
  if (action === 'inject') {
    if (!arg) throw new UsageError(`usage: ringvisor fault inject '{"who":{"domain":"guest1","device":"vbd51712"},"what":{"kind":"backend.pause"}}' [--for S]`);
    let spec: unknown;
    try {
      spec = parseYaml(arg);
    } catch (e) {
      throw new UsageError(`ringvisor fault inject: the fault must be JSON or YAML: ${(e as Error).message}`);
    }
    if (values.for !== undefined) {
      const s = Number(values.for);
      if (!(s > 0)) throw new UsageError('--for must be a positive number of seconds');
      spec = { ...(spec as object), when: { ...((spec as { when?: object }).when ?? {}), for: s } };
    }
    const r = await postAction<{ key: string }>(c, '/api/fault/inject', { fault: spec });
    process.stdout.write(`injected ${r.key}\n`);
    return 0;
  }
  if (action === 'heal') {
    const r = await postAction<{ healed: number }>(c, '/api/fault/heal', arg ? { id: arg } : {});
    process.stdout.write(`healed ${r.healed} fault(s)\n`);
    return 0;
  }
  if (action === 'list') {
    const r = await postAction<{ active: Array<{ key: string; kind: string; host: string; who: unknown }> }>(c, '/api/fault/list', {});
    for (const a of r.active) process.stdout.write(`${a.key}  ${a.kind}  ${a.host}  ${JSON.stringify(a.who)}\n`);
    if (r.active.length === 0) process.stdout.write('no active faults\n');
    return 0;
  }
  throw new UsageError('usage: ringvisor fault inject SPEC [--for S] | heal [ID] | list');
}

/** `ringvisor dom0`: this host's dom0 and hardware as a service; guests are started elsewhere. */
async function dom0(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('dom0', {
    args: argv,
    options: {
      config: { type: 'string' },
      listen: { type: 'string' },
      lan: { type: 'string' },
      json: { type: 'string' },
      'secret-file': { type: 'string' },
      duration: { type: 'string' },
      observe: { type: 'string' },
      pcap: { type: 'string' },
    },
  });
  const configPath = values.config ?? process.env.RINGVISOR_CONFIG;
  if (!configPath) throw new UsageError('ringvisor dom0: --config FILE (or RINGVISOR_CONFIG) is required');
  const listenAt = values.listen ?? process.env.RINGVISOR_LISTEN ?? '127.0.0.1:7000';
  const m = /^(.+):(\d+)$/.exec(listenAt);
  if (!m) throw new UsageError(`--listen must be HOST:PORT (e.g. 0.0.0.0:7000), got ${JSON.stringify(listenAt)}`);
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds`);
  const lanUrl = values.lan ?? process.env.RINGVISOR_LAN_URL;
  const state = configStateLocation(configPath);
  const config = loadConfigFile(configPath, { diskDir: state.dir });
  const claim = claimState(state, config, sayState('ringvisor'));
  const code = await runHost({
    config,
    durationSec,
    transport: 'ws',
    secret,
    observe: parseListen('--observe', values.observe ?? process.env.RINGVISOR_OBSERVE ?? DEFAULT_OBSERVE),
    ...(values.pcap ? { pcap: values.pcap } : {}),
    ws: { secret, host: m[1], port: Number(m[2]), spawn: false },
    ...(lanUrl ? { lan: { url: lanUrl, secret } } : {}),
    ...(values.json ? { json: values.json } : {}),
  });
  claim.release();
  return code;
}

/** `ringvisor health --url ws://…`: exit 0 when a dom0 answers an authenticated ping (for healthchecks). */
async function health(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('health', { args: argv, options: { url: { type: 'string' }, 'secret-file': { type: 'string' }, timeout: { type: 'string' } } });
  const url = values.url ?? process.env.RINGVISOR_DOM0_URL ?? 'ws://127.0.0.1:7000';
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const timeoutMs = Number(values.timeout ?? 3000);
  try {
    const link = await connect({ url, secret, role: 'control', domid: 0, timeoutMs });
    const peer = new RpcPeer(link, 'health');
    const info = await peer.call<{ host: string; guests: number; ready: number }>(CONTROL_PING, {}, timeoutMs);
    process.stdout.write(`ok ${info.host}: ${info.ready}/${info.guests} guests ready\n`);
    link.close('done');
    return 0;
  } catch (e) {
    process.stderr.write(`unhealthy: ${(e as Error).message}\n`);
    return 1;
  }
}

export interface RunOptions {
  config: ClusterConfig;
  durationSec: number;
  transport: 'threads' | 'ws';
  /** Cluster secret: the admin credential of the control endpoint (its read token derives from it). */
  secret: Uint8Array;
  observe: ListenAt;
  pcap?: string;
  json?: string;
  ws?: HostOptions['ws'];
  /** A switch runtime started elsewhere (docker compose) to cable this host's NIC to. */
  lan?: { url: string; secret: Uint8Array };
  /** Drives the run while the cluster is up (chaos); when it resolves the run shuts down. */
  drive?: (c: { hosts: Host[]; injector: FaultInjector; log: Logger }) => Promise<void>;
  /** Seed for fault draws (chaos). */
  faultSeed?: number;
  /** No periodic table (chaos prints its own progress). */
  quiet?: boolean;
}

async function runHost(o: RunOptions): Promise<number> {
  return (await runCluster(o)).exitCode;
}

export interface ClusterRunResult {
  exitCode: number;
  hosts: Host[];
  finals: GuestStats[][];
  summary: RunSummary;
  injector: FaultInjector;
  durationSec: number;
}

/** Bring a cluster up, run it (for a duration, until a signal, or while `drive` runs), shut it down. */
export async function runCluster(o: RunOptions): Promise<ClusterRunResult> {
  const { config, durationSec, json, transport, ws } = o;
  const log = createLogger('dom0');
  // Several hosts in one run share a LAN through a switch runtime (a worker here, by entry point).
  let lanSwitch: { url: string; secret: Uint8Array; stop(): Promise<void> } | undefined;
  if (o.lan) lanSwitch = { ...o.lan, stop: async () => {} };
  else if (config.hosts.length > 1) lanSwitch = await startSwitchWorker(ws?.secret ?? new Uint8Array(randomBytes(32)));
  const clusterIps = new Map<string, string>();
  for (const h of config.hosts) for (const g of h.guests) for (const d of g.devices) if (d.type === 'vif') clusterIps.set(g.name, d.ip);
  const hosts = config.hosts.map(
    (hc) =>
      new Host(hc, {
        seed: config.seed,
        log: log.child({ host: hc.name }),
        clusterIps,
        ...(ws ? { ws } : {}),
        ...(lanSwitch ? { lan: { url: lanSwitch.url, secret: lanSwitch.secret, hostIndex: hc.index } } : {}),
      }),
  );
  const obs = new Observatory(hosts, transport);
  const injector = new FaultInjector(hosts, log.child({ part: 'faults' }), o.faultSeed ?? config.seed);
  const control = new ControlServer(obs, { ...o.observe, readToken: deriveReadToken(o.secret), adminSecret: o.secret, log: log.child({ part: 'control' }), injector });
  await listenControl(control, o.observe, log);
  const capture = o.pcap ? captureLocalFrames(o.pcap) : undefined;
  obs.start();
  const tty = process.stdout.isTTY === true;
  let stopRequested: (() => void) | undefined;
  const stopped = new Promise<void>((r) => (stopRequested = r));
  const t0 = Date.now();
  let exitCode: number = EXIT.OK;
  const finals: GuestStats[][] = [];
  let forcing = false;
  /**
   * The way out whatever hangs: every child process of every host SIGKILLed by pid (no orphans),
   * the summary written with the last figures known, exit EXIT.FORCED. Reached by a second
   * signal or by the drain overrunning DRAIN_LIMIT_MS.
   */
  const forceExit = (why: string): void => {
    if (forcing) return;
    forcing = true;
    const killed = hosts.flatMap((h) => h.killChildren());
    process.stderr.write(`ringvisor: ${why}: forcing the exit${killed.length ? `, killed pids ${killed.join(' ')}` : ''} (exit ${EXIT.FORCED})\n`);
    log.error({ why, killed }, 'forced exit');
    try {
      const summary = buildSummary(hosts.map((h, i) => finals[i] ?? h.guests.map((g) => g.lastStats!)), 'forced', EXIT.FORCED);
      if (json) writeFileSync(json, JSON.stringify(summary, null, 2) + '\n');
      removeControlFile(control);
    } catch (e) {
      log.error({ err: e }, 'summary at forced exit failed');
    }
    process.exit(EXIT.FORCED);
  };
  let signals = 0;
  const onSignal = (sig: string) => {
    signals++;
    if (signals > 1) return forceExit(`second ${sig}`);
    log.info({ signal: sig }, 'shutting down');
    process.stdout.write(`ringvisor: ${sig}: shutting down (send it again to force the exit)\n`);
    stopRequested?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // An unplanned death, said where the operator looks (the log has the details).
  const sayCrash = (c: RuntimeCrash, phase: 'noticed' | 'recovered') => {
    const how = c.exit.signal ?? (c.exit.code !== null ? `exit ${c.exit.code}` : 'link closed');
    const who = `${c.host}: ${c.runtime === 'hwsim' ? 'hardware simulator' : `guest ${c.name}`}${c.pid ? ` (pid ${c.pid})` : ''}`;
    const doing = c.recovery === 'failed' ? 'leaving it down' : c.runtime === 'hwsim' ? 'restarting the hardware' : 'reclaiming its domain';
    if (phase === 'noticed') process.stdout.write(`ringvisor: ${who} died unplanned (${how}); ${doing}\n`);
    else if (c.recovery === 'failed') process.stdout.write(`ringvisor: ${who}: recovery failed after ${c.recoveryMs} ms: ${c.error}\n`);
    else process.stdout.write(`ringvisor: ${who}: ${c.recovery === 'restarted' ? 'hardware restarted' : 'domain reclaimed'} in ${c.recoveryMs} ms\n`);
  };
  for (const h of hosts) h.onCrash = sayCrash;
  let drainTimer: NodeJS.Timeout | undefined;
  try {
    // Workloads start only once every host is up: no flow starts towards a guest still booting.
    for (const h of hosts) await h.start(false);
    for (const h of hosts) await h.startWorkloads();
    if (!tty) for (const h of hosts) process.stdout.write(`ringvisor: host ${h.config.name} up with ${h.guests.length} guests (${transport} transport)\n`);
    // ws: every runtime's process, for operators (and tests) who need to find one.
    for (const h of hosts)
      if (h.hwsim?.pid)
        process.stdout.write(`ringvisor: host ${h.config.name} pids: dom0 ${process.pid}, hwsim ${h.hwsim.pid}${h.guests.map((g) => (g.pid ? `, ${g.config.name} ${g.pid}` : '')).join('')}\n`);
    writeControlFile(control.url);
    process.stdout.write(`ringvisor: dashboard ${control.dashboardUrl}\n`);
    const timer = Number.isFinite(durationSec) ? setTimeout(() => stopRequested?.(), durationSec * 1000) : undefined;
    if (o.drive)
      o.drive({ hosts, injector, log }).then(
        () => stopRequested?.(),
        (e) => {
          exitCode = 1;
          log.error({ err: e }, 'run driver failed');
          process.stderr.write(`ringvisor: ${(e as Error).message}\n`);
          stopRequested?.();
        },
      );
    let prev: GuestStats[][] = [];
    const onSnapshot = () => {
      {
        const all = hosts.map((h) => obs.guestStats.get(h) ?? []);
        const up = Math.round((Date.now() - t0) / 1000);
        const tables = hosts.map((h, hi) => {
          const rows: TopRow[] = h.guests.map((g, i) => ({
            name: g.config.name,
            domid: g.domain.domid,
            state: g.domain.state,
            memKiB: g.config.memoryMiB * 1024,
            stats: all[hi][i],
            prev: prev[hi]?.[i],
          }));
          return renderTop(h.config.name, up, rows, 1);
        });
        if (tty) process.stdout.write('\x1b[H\x1b[2J' + tables.join('\n\n') + `\n\ndashboard: ${control.dashboardUrl}\n`);
        else process.stdout.write(tables.map((t) => t.split('\n').slice(2).map((l) => `[${up}s] ${l}`).join('\n')).join('\n') + '\n');
        prev = all;
      }
    };
    if (!o.quiet) obs.on('snapshot', onSnapshot);
    await stopped;
    obs.off('snapshot', onSnapshot);
    if (timer) clearTimeout(timer);
  } catch (e) {
    exitCode = 1;
    log.error({ err: e }, 'cluster failed');
    process.stderr.write(`ringvisor: ${(e as Error).message}\n`);
  } finally {
    // The drain is bounded whatever died: past DRAIN_LIMIT_MS the exit is forced.
    drainTimer = setTimeout(() => forceExit(`the shutdown drain took more than ${DRAIN_LIMIT_MS / 1000} s`), DRAIN_LIMIT_MS);
    // Whatever is still injected is healed before the drain (a campaign heals before it checks).
    await injector.healAll().catch((e) => log.error({ err: e }, 'healing faults failed'));
    // Quiesce every host before any closes, so cross-host flows drain too.
    for (const h of hosts) await h.quiesce().catch(() => {});
    for (const h of hosts)
      finals.push(
        await h.stop().catch((e) => {
          exitCode = 1;
          log.error({ err: e }, 'shutdown failed');
          return [] as GuestStats[];
        }),
      );
    await lanSwitch?.stop();
    obs.stop();
    await control.close();
    if (capture) {
      capture.stop();
      process.stdout.write(`ringvisor: captured ${capture.capture.frames} frames on ${capture.capture.perInterface.size} interfaces to ${o.pcap}\n`);
    }
    removeControlFile(control);
    clearTimeout(drainTimer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const crashes = hosts.flatMap((h) => h.crashes);
  const integrityFailed = (s: RunSummary) => s.integrity.failures > 0 || s.guests.some((g) => g.state === 'failed');
  let summary = buildSummary(finals, 'clean', exitCode);
  if (!o.drive && exitCode === EXIT.OK && integrityFailed(summary)) exitCode = EXIT.FAILED;
  // A crash the run recovered from still says so (unless something worse already did).
  if (!o.drive && exitCode === EXIT.OK && crashes.length > 0) exitCode = crashes.some((c) => c.recovery === 'failed') ? EXIT.FAILED : EXIT.RECOVERED;
  summary = { ...summary, outcome: exitCode === EXIT.OK ? 'clean' : exitCode === EXIT.RECOVERED ? 'recovered' : 'failed', exitCode };
  if (json) writeFileSync(json, JSON.stringify(summary, null, 2) + '\n');
  process.stdout.write(
    `ringvisor: ${summary.guests.length} guests, ${summary.guests.reduce((a, g) => a + g.ops, 0)} ops, integrity checked ${summary.integrity.checked}, failures ${summary.integrity.failures}` +
      `${crashes.length ? `, ${crashes.length} runtime crash${crashes.length > 1 ? 'es' : ''} (${crashes.map((c) => `${c.name} ${c.recovery ?? 'unrecovered'}`).join(', ')})` : ''}; exit ${exitCode}\n`,
  );
  return { exitCode, hosts, finals, summary, injector, durationSec: (Date.now() - t0) / 1000 };

  /** The run summary from the figures at hand (at a forced exit: the last ones polled). */
  function buildSummary(perHostFinals: GuestStats[][], outcome: RunSummary['outcome'], code: number): RunSummary {
    return summarize(
      transport,
      (Date.now() - t0) / 1000,
      hosts.map((h, i) => ({
        host: h.config.name,
        guests: perHostFinals[i] ?? [],
        pids: new Map(h.guests.flatMap((g) => (g.pid ? [[g.config.name, g.pid] as [string, number]] : []))),
        crashed: new Map(h.crashedGuests().map(({ handle, crash }) => [handle.config.name, crash.exit] as const)),
      })),
      Object.fromEntries(
        hosts.map((h) => [
          h.config.name,
          {
            disk: h.disk?.counters,
            nic: h.nic?.counters,
            bridge: h.bridge?.counters,
            grants: Object.fromEntries(h.hv.grants.counters),
            // dom0's own ioreq servers count into the hypervisor's counters; hosted VMApps count their own.
            traps: h.hv.counters.traps + h.platforms().reduce((a, p) => a + (p.placement === 'hosted' ? p.stats().ioreq.traps : 0), 0),
            worldSwitches: h.hv.counters.worldSwitches + h.platforms().reduce((a, p) => a + (p.placement === 'hosted' ? p.stats().ioreq.worldSwitches : 0), 0),
            ...(h.platforms().length ? { emulated: h.platforms().map((p) => p.stats()) } : {}),
            ...(h.hardwareStats?.uplink ? { uplink: h.hardwareStats.uplink } : {}),
            // Direct I/O: the functions as the hardware counted them, the IOMMU, and reclaims made.
            ...directSummary(h),
            // SV-IO: every VIF as the engine's cores counted it, and the cores' busy time.
            ...(h.svioStats ? { svio: h.svioStats } : {}),
            // The hardware simulator's process (ws) and how often it was restarted (faults and crashes).
            hwsim: { ...(h.hwsim?.pid ? { pid: h.hwsim.pid } : {}), restarts: h.restartedHardware },
          },
        ]),
      ),
      hosts.flatMap((h) => h.crashes),
      outcome,
      code,
    );
  }
}

/**
 * How long `up` lets its whole shutdown drain (heal faults, quiesce, final read-back, stop
 * runtimes) take before it forces the exit. Each step of a host has its own bound; this one also
 * holds when something without one stalls (a backend waiting for a device that never answers).
 */
const DRAIN_LIMIT_MS = 60_000;

/** Direct I/O in the run summary: the functions ever assigned as the hardware counted them, the IOMMU, reclaims. */
function directSummary(h: Host): { direct?: Record<string, unknown> } {
  const sriov = h.hardwareStats?.sriov as { functions: Array<{ counters: { assigns: number } }>; iommu: unknown } | undefined;
  const used = sriov?.functions.filter((f) => f.counters.assigns > 0) ?? [];
  if (!sriov || used.length === 0) return {};
  return { direct: { functions: used, iommu: sriov.iommu, reclaimed: h.reclaimedFunctions.map(({ bar: _bar, request: _request, ...f }) => f) } };
}

/** The LAN switch as a worker thread, started by its entry point in the hwsim package. */
async function startSwitchWorker(secret: Uint8Array): Promise<{ url: string; secret: Uint8Array; stop(): Promise<void> }> {
  const worker = startRuntimeWorker(runtimeEntry(import.meta.url, 'hwsim', 'switch.worker'), { workerData: { secret } });
  const url = await new Promise<string>((resolve, reject) => {
    worker.once('message', (m: { url: string }) => resolve(m.url));
    worker.once('error', reject);
  });
  return {
    url,
    secret,
    stop: async () => {
      worker.postMessage('stop');
      await Promise.race([new Promise((r) => worker.once('exit', r)), new Promise((r) => setTimeout(r, 3000).unref())]);
      await worker.terminate();
    },
  };
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'up':
        return await up(rest);
      case 'dom0':
        return await dom0(rest);
      case 'health':
        return await health(rest);
      case 'list':
        return await views.list(rest);
      case 'top':
        return await views.top(rest);
      case 'rings':
        return await views.rings(rest);
      case 'trace':
        return await views.trace(rest);
      case 'backend':
        return await views.backend(rest);
      case 'direct':
        return await views.direct(rest);
      case 'svio':
        return await views.svio(rest);
      case 'chaos':
        return await chaos(rest);
      case 'bench': {
        // The benchmarks (npm run bench is the same program): loaded only when asked for.
        const bench = await import('../../bench/cli.js');
        return await bench.main(rest);
      }
      case 'token':
        return await token(rest);
      case 'key':
        return await key(rest);
      case 'fault':
        return await fault(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return 0;
      default:
        throw new UsageError(`unknown command "${cmd}"\n\n${USAGE}`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof ControlEndpointError || e instanceof StateError) {
      process.stderr.write(`ringvisor: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
