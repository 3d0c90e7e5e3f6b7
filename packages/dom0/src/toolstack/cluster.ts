/**
 * A cluster run: every host of the config brought up (sharing a LAN switch when there are
 * several), watched by one Observatory and served by one control endpoint, run for a duration,
 * until a signal, or while a driver (a chaos campaign) runs — then healed, drained, stopped, and
 * summed up. `ringvisor up`, `ringvisor dom0` and `ringvisor chaos` all run a cluster through here.
 */
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { EXIT, createLogger, deriveReadToken, runtimeEntry, startRuntimeWorker, type GuestStats, type Logger } from '@ringvisor/shared';
import type { ClusterConfig } from './config.js';
import { Host, type HostOptions, type RuntimeCrash } from './host.js';
import { renderTop, summarize, type RunSummary, type TopRow } from './summary.js';
import { FaultInjector } from '../faults/injector.js';
import { Observatory } from '../observe/observatory.js';
import { ControlServer } from '../observe/server.js';
import { captureLocalFrames } from '../observe/capture.js';
import { listenControl, removeControlFile, writeControlFile, type ListenAt } from './cli/endpoint.js';
import { vifsOf } from './device-kinds.js';

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

export interface ClusterRunResult {
  exitCode: number;
  hosts: Host[];
  finals: GuestStats[][];
  summary: RunSummary;
  injector: FaultInjector;
  durationSec: number;
}

/**
 * How long `up` lets its whole shutdown drain (heal faults, quiesce, final read-back, stop
 * runtimes) take before it forces the exit. Each step of a host has its own bound; this one also
 * holds when something without one stalls (a backend waiting for a device that never answers).
 */
const DRAIN_LIMIT_MS = 60_000;

/** A cluster run's exit code. */
export async function runHost(o: RunOptions): Promise<number> {
  return (await runCluster(o)).exitCode;
}

/** Bring a cluster up, run it (for a duration, until a signal, or while `drive` runs), shut it down. */
export async function runCluster(o: RunOptions): Promise<ClusterRunResult> {
  const log = createLogger('dom0');
  const lanSwitch = await cableLan(o);
  const run = new ClusterRun(o, log, createHosts(o, log, lanSwitch), lanSwitch);
  return run.run();
}

type LanSwitch = { url: string; secret: Uint8Array; stop(): Promise<void> };

/** Several hosts in one run share a LAN through a switch runtime (a worker here, by entry point, unless one runs elsewhere). */
async function cableLan(o: RunOptions): Promise<LanSwitch | undefined> {
  if (o.lan) return { ...o.lan, stop: async () => {} };
  if (o.config.hosts.length > 1) return startSwitchWorker(o.ws?.secret ?? new Uint8Array(randomBytes(32)));
  return undefined;
}

function createHosts(o: RunOptions, log: Logger, lanSwitch: LanSwitch | undefined): Host[] {
  const { config, ws } = o;
  const clusterIps = new Map<string, string>();
  for (const h of config.hosts) for (const g of h.guests) for (const d of vifsOf(g.devices)) clusterIps.set(g.name, d.ip);
  return config.hosts.map(
    (hc) =>
      new Host(hc, {
        seed: config.seed,
        log: log.child({ host: hc.name }),
        clusterIps,
        ...(ws ? { ws } : {}),
        ...(lanSwitch ? { lan: { url: lanSwitch.url, secret: lanSwitch.secret, hostIndex: hc.index } } : {}),
      }),
  );
}

/** One run of a cluster, from bring-up to the summary. */
class ClusterRun {
  private readonly obs: Observatory;
  private readonly injector: FaultInjector;
  private readonly control: ControlServer;
  /** When the cluster's run began (the endpoint listening, the Observatory sampling). */
  private t0 = Date.now();
  private exitCode: number = EXIT.OK;
  private readonly finals: GuestStats[][] = [];
  private forcing = false;
  private signals = 0;
  private stopRequested?: () => void;
  private readonly stopped = new Promise<void>((r) => (this.stopRequested = r));
  private readonly tty = process.stdout.isTTY === true;

  constructor(
    private readonly o: RunOptions,
    private readonly log: Logger,
    private readonly hosts: Host[],
    private readonly lanSwitch: LanSwitch | undefined,
  ) {
    this.obs = new Observatory(hosts, o.transport);
    this.injector = new FaultInjector(hosts, log.child({ part: 'faults' }), o.faultSeed ?? o.config.seed);
    this.control = new ControlServer(this.obs, { ...o.observe, readToken: deriveReadToken(o.secret), adminSecret: o.secret, log: log.child({ part: 'control' }), injector: this.injector });
  }

  async run(): Promise<ClusterRunResult> {
    const { hosts, injector } = this;
    await listenControl(this.control, this.o.observe, this.log);
    const capture = this.o.pcap ? captureLocalFrames(this.o.pcap) : undefined;
    this.obs.start();
    this.t0 = Date.now();
    const onSignal = (sig: string) => this.onSignal(sig);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    for (const h of hosts) h.onCrash = sayCrash;
    try {
      await this.bringUpAndRun();
    } catch (e) {
      this.exitCode = 1;
      this.log.error({ err: e }, 'cluster failed');
      process.stderr.write(`ringvisor: ${(e as Error).message}\n`);
    } finally {
      await this.drain(capture);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    const summary = this.conclude();
    return { exitCode: this.exitCode, hosts, finals: this.finals, summary, injector, durationSec: (Date.now() - this.t0) / 1000 };
  }

  /** A first signal asks for an orderly shutdown; a second forces the exit. */
  private onSignal(sig: string): void {
    this.signals++;
    if (this.signals > 1) return this.forceExit(`second ${sig}`);
    this.log.info({ signal: sig }, 'shutting down');
    process.stdout.write(`ringvisor: ${sig}: shutting down (send it again to force the exit)\n`);
    this.stopRequested?.();
  }

  /** Every host up, workloads started, then running until the duration ends, a signal, or the driver is done. */
  private async bringUpAndRun(): Promise<void> {
    const { hosts, o, control } = this;
    // Workloads start only once every host is up: no flow starts towards a guest still booting.
    for (const h of hosts) await h.start(false);
    for (const h of hosts) await h.startWorkloads();
    if (!this.tty) for (const h of hosts) process.stdout.write(`ringvisor: host ${h.config.name} up with ${h.guests.length} guests (${o.transport} transport)\n`);
    // ws: every runtime's process, for operators (and tests) who need to find one.
    for (const h of hosts)
      if (h.hwsim?.pid)
        process.stdout.write(`ringvisor: host ${h.config.name} pids: dom0 ${process.pid}, hwsim ${h.hwsim.pid}${h.guests.map((g) => (g.pid ? `, ${g.config.name} ${g.pid}` : '')).join('')}\n`);
    writeControlFile(control.url);
    process.stdout.write(`ringvisor: dashboard ${control.dashboardUrl}\n`);
    const timer = Number.isFinite(o.durationSec) ? setTimeout(() => this.stopRequested?.(), o.durationSec * 1000) : undefined;
    if (o.drive) this.startDriver(o.drive);
    const onSnapshot = this.snapshotPrinter();
    if (!o.quiet) this.obs.on('snapshot', onSnapshot);
    await this.stopped;
    this.obs.off('snapshot', onSnapshot);
    if (timer) clearTimeout(timer);
  }

  /** The run's driver (chaos): when it is done, or fails, the run shuts down. */
  private startDriver(drive: NonNullable<RunOptions['drive']>): void {
    drive({ hosts: this.hosts, injector: this.injector, log: this.log }).then(
      () => this.stopRequested?.(),
      (e) => {
        this.exitCode = 1;
        this.log.error({ err: e }, 'run driver failed');
        process.stderr.write(`ringvisor: ${(e as Error).message}\n`);
        this.stopRequested?.();
      },
    );
  }

  /** The table of every host's guests, once a second (a screen on a terminal, lines otherwise). */
  private snapshotPrinter(): () => void {
    let prev: GuestStats[][] = [];
    return () => {
      const all = this.hosts.map((h) => this.obs.guestStats.get(h) ?? []);
      const up = Math.round((Date.now() - this.t0) / 1000);
      const tables = this.hosts.map((h, hi) => {
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
      if (this.tty) process.stdout.write('\x1b[H\x1b[2J' + tables.join('\n\n') + `\n\ndashboard: ${this.control.dashboardUrl}\n`);
      else process.stdout.write(tables.map((t) => t.split('\n').slice(2).map((l) => `[${up}s] ${l}`).join('\n')).join('\n') + '\n');
      prev = all;
    };
  }

  /** Heal, quiesce every host, stop every host, then the switch, the Observatory, the endpoint — bounded by DRAIN_LIMIT_MS. */
  private async drain(capture: ReturnType<typeof captureLocalFrames> | undefined): Promise<void> {
    const { hosts, log } = this;
    // The drain is bounded whatever died: past DRAIN_LIMIT_MS the exit is forced.
    const drainTimer = setTimeout(() => this.forceExit(`the shutdown drain took more than ${DRAIN_LIMIT_MS / 1000} s`), DRAIN_LIMIT_MS);
    // Whatever is still injected is healed before the drain (a campaign heals before it checks).
    await this.injector.healAll().catch((e) => log.error({ err: e }, 'healing faults failed'));
    // Quiesce every host before any closes, so cross-host flows drain too.
    for (const h of hosts) await h.quiesce().catch(() => {});
    for (const h of hosts)
      this.finals.push(
        await h.stop().catch((e) => {
          this.exitCode = 1;
          log.error({ err: e }, 'shutdown failed');
          return [] as GuestStats[];
        }),
      );
    await this.lanSwitch?.stop();
    this.obs.stop();
    await this.control.close();
    if (capture) {
      capture.stop();
      process.stdout.write(`ringvisor: captured ${capture.capture.frames} frames on ${capture.capture.perInterface.size} interfaces to ${this.o.pcap}\n`);
    }
    removeControlFile(this.control);
    clearTimeout(drainTimer);
  }

  /** The exit code from what happened (integrity, crashes), the summary written and its line printed. */
  private conclude(): RunSummary {
    const { hosts, o } = this;
    const crashes = hosts.flatMap((h) => h.crashes);
    const integrityFailed = (s: RunSummary) => s.integrity.failures > 0 || s.guests.some((g) => g.state === 'failed');
    let summary = this.buildSummary(this.finals, 'clean', this.exitCode);
    if (!o.drive && this.exitCode === EXIT.OK && integrityFailed(summary)) this.exitCode = EXIT.FAILED;
    // A crash the run recovered from still says so (unless something worse already did).
    if (!o.drive && this.exitCode === EXIT.OK && crashes.length > 0) this.exitCode = crashes.some((c) => c.recovery === 'failed') ? EXIT.FAILED : EXIT.RECOVERED;
    const exitCode = this.exitCode;
    summary = { ...summary, outcome: exitCode === EXIT.OK ? 'clean' : exitCode === EXIT.RECOVERED ? 'recovered' : 'failed', exitCode };
    if (o.json) writeFileSync(o.json, JSON.stringify(summary, null, 2) + '\n');
    process.stdout.write(
      `ringvisor: ${summary.guests.length} guests, ${summary.guests.reduce((a, g) => a + g.ops, 0)} ops, integrity checked ${summary.integrity.checked}, failures ${summary.integrity.failures}` +
        `${crashes.length ? `, ${crashes.length} runtime crash${crashes.length > 1 ? 'es' : ''} (${crashes.map((c) => `${c.name} ${c.recovery ?? 'unrecovered'}`).join(', ')})` : ''}; exit ${exitCode}\n`,
    );
    return summary;
  }

  /**
   * The way out whatever hangs: every child process of every host SIGKILLed by pid (no orphans),
   * the summary written with the last figures known, exit EXIT.FORCED. Reached by a second
   * signal or by the drain overrunning DRAIN_LIMIT_MS.
   */
  private forceExit(why: string): void {
    if (this.forcing) return;
    this.forcing = true;
    const { hosts, log } = this;
    const killed = hosts.flatMap((h) => h.killChildren());
    process.stderr.write(`ringvisor: ${why}: forcing the exit${killed.length ? `, killed pids ${killed.join(' ')}` : ''} (exit ${EXIT.FORCED})\n`);
    log.error({ why, killed }, 'forced exit');
    try {
      const summary = this.buildSummary(hosts.map((h, i) => this.finals[i] ?? h.guests.map((g) => g.lastStats!)), 'forced', EXIT.FORCED);
      if (this.o.json) writeFileSync(this.o.json, JSON.stringify(summary, null, 2) + '\n');
      removeControlFile(this.control);
    } catch (e) {
      log.error({ err: e }, 'summary at forced exit failed');
    }
    process.exit(EXIT.FORCED);
  }

  /** The run summary from the figures at hand (at a forced exit: the last ones polled). */
  private buildSummary(perHostFinals: GuestStats[][], outcome: RunSummary['outcome'], code: number): RunSummary {
    const { hosts } = this;
    return summarize(
      this.o.transport,
      (Date.now() - this.t0) / 1000,
      hosts.map((h, i) => ({
        host: h.config.name,
        guests: perHostFinals[i] ?? [],
        pids: new Map(h.guests.flatMap((g) => (g.pid ? [[g.config.name, g.pid] as [string, number]] : []))),
        crashed: new Map(h.crashedGuests().map(({ handle, crash }) => [handle.config.name, crash.exit] as const)),
      })),
      Object.fromEntries(hosts.map((h) => [h.config.name, hostSummary(h)])),
      hosts.flatMap((h) => h.crashes),
      outcome,
      code,
    );
  }
}

/** A host's part of the run summary: dom0's drivers, grants, traps, the hardware's own counters. */
function hostSummary(h: Host): Record<string, unknown> {
  return {
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
  };
}

/** An unplanned death, said where the operator looks (the log has the details). */
function sayCrash(c: RuntimeCrash, phase: 'noticed' | 'recovered'): void {
  const how = c.exit.signal ?? (c.exit.code !== null ? `exit ${c.exit.code}` : 'link closed');
  const who = `${c.host}: ${c.runtime === 'hwsim' ? 'hardware simulator' : `guest ${c.name}`}${c.pid ? ` (pid ${c.pid})` : ''}`;
  const doing = c.recovery === 'failed' ? 'leaving it down' : c.runtime === 'hwsim' ? 'restarting the hardware' : 'reclaiming its domain';
  if (phase === 'noticed') process.stdout.write(`ringvisor: ${who} died unplanned (${how}); ${doing}\n`);
  else if (c.recovery === 'failed') process.stdout.write(`ringvisor: ${who}: recovery failed after ${c.recoveryMs} ms: ${c.error}\n`);
  else process.stdout.write(`ringvisor: ${who}: ${c.recovery === 'restarted' ? 'hardware restarted' : 'domain reclaimed'} in ${c.recoveryMs} ms\n`);
}

/** Direct I/O in the run summary: the functions ever assigned as the hardware counted them, the IOMMU, reclaims. */
function directSummary(h: Host): { direct?: Record<string, unknown> } {
  const sriov = h.hardwareStats?.sriov as { functions: Array<{ counters: { assigns: number } }>; iommu: unknown } | undefined;
  const used = sriov?.functions.filter((f) => f.counters.assigns > 0) ?? [];
  if (!sriov || used.length === 0) return {};
  return { direct: { functions: used, iommu: sriov.iommu, reclaimed: h.reclaimedFunctions.map(({ bar: _bar, request: _request, ...f }) => f) } };
}

/** The LAN switch as a worker thread, started by its entry point in the hwsim package. */
async function startSwitchWorker(secret: Uint8Array): Promise<LanSwitch> {
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
