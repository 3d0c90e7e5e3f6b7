/**
 * One chaos campaign: run a fault plan against a live cluster, then heal, drain and check.
 *
 *   0 s ─ workloads ─┬─ faults injected and healed on the plan's schedule ─┬ duration: heal all ─ settle ─ drain ─ check
 *                    └─ `after` faults start when dom0 sees their Nth trace event
 *
 * Recovery is measured, not assumed: after each heal the campaign watches the affected guests'
 * operation counters and records the time until they move again (recoveryMs); after the final
 * heal every live guest must make progress within `settle` (liveness).
 */
import { subscribeTrace, type GuestStats, type Logger } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';
import { schedule, type FaultPlan, type FaultSpec, type Occurrence } from './plan.js';
import type { FaultInjector, FaultRecord } from './injector.js';
import { judge, runCheckers, type Checkers } from './checkers.js';
import { faultKind } from './kinds/index.js';

export interface ChaosReport {
  seed: number;
  plan: string;
  transport: 'threads' | 'ws';
  verdict: 'pass' | 'fail';
  reasons: string[];
  faults: Array<FaultRecord & { recoveryMs?: number }>;
  checkers: Checkers;
  recoveryMs: number[];
  /** Time from the final heal until every live guest made progress again. */
  livenessMs: number | null;
  /** Per guest: its state, I/O done, and the errors its drivers saw (injected faults surface here). */
  guests: Array<{
    name: string;
    host: string;
    state: string;
    ops: number;
    ioErrors: number;
    recoveries: number;
    resubmitted: number;
    killed: boolean;
    /** The read-back of this guest's ledger: blocks checked, and the failures by class (zero: lost). */
    block?: { checked: number; failures: number; kinds: Record<string, number> };
    /** Attacks this guest's frontends made (plans' ring.* and grant.* kinds) and how dom0 answered. */
    attacks?: Record<string, { sent: number; answered: number; okay: number; errors: number; refused: number; revoked: number }>;
  }>;
  durationSec: number;
  /** Per host: hardware restarts and dom0 I/O-stack restarts survived, guests rebooted. */
  hosts: Array<{ name: string; hardwareRestarts: number; dom0Restarts: number; rebooted: string[] }>;
}

function attacksOf(s: GuestStats | undefined): { attacks?: ChaosReport['guests'][number]['attacks'] } {
  const out: NonNullable<ChaosReport['guests'][number]['attacks']> = {};
  for (const d of s?.devices ?? [])
    for (const [k, v] of Object.entries(d.detail)) {
      const m = /^attack\.([\w-]+)\.(sent|answered|okay|errors|refused|revoked)$/.exec(k);
      if (!m) continue;
      out[m[1]] ??= { sent: 0, answered: 0, okay: 0, errors: 0, refused: 0, revoked: 0 };
      out[m[1]][m[2] as 'sent'] += v;
    }
  return Object.keys(out).length ? { attacks: out } : {};
}

function opsOf(s: GuestStats | undefined): number {
  return s?.devices.reduce((a, d) => a + d.ops, 0) ?? 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Campaign {
  readonly recovery = new Map<string, number>();
  livenessMs: number | null = null;
  stalled: string[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly pending: Array<Promise<unknown>> = [];

  constructor(
    readonly plan: FaultPlan,
    readonly seed: number,
    readonly log: Logger,
    readonly progress: (line: string) => void = () => {},
  ) {}

  /** The `drive` of a cluster run: returns when the campaign's faults are over and service is back. */
  async drive(hosts: Host[], injector: FaultInjector): Promise<void> {
    const { timed, relative } = schedule(this.plan, this.seed);
    const t0 = Date.now();
    const durationMs = this.plan.duration * 1000;
    const fire = (occ: Occurrence, base: number) => {
      const startIn = base + occ.atMs - Date.now();
      if (base + occ.atMs >= t0 + durationMs) return; // past the end of the run
      this.timers.push(
        setTimeout(() => {
          const p = injector.inject(occ.fault, occ.n).then(
            (a) => {
              this.progress(`${((Date.now() - t0) / 1000).toFixed(1)}s  inject ${occ.fault.id} (${occ.fault.what.kind})`);
              // An instantaneous fault (a restart, a kill) heals as it happens: time the recovery now.
              if (a.healed) this.pending.push(this.measureRecovery(hosts, occ.fault, a.key));
              if (occ.healMs !== undefined)
                this.timers.push(
                  setTimeout(() => {
                    this.pending.push(
                      a.heal().then(() => {
                        this.progress(`${((Date.now() - t0) / 1000).toFixed(1)}s  heal   ${occ.fault.id}`);
                        return this.measureRecovery(hosts, occ.fault, a.key);
                      }),
                    );
                  }, occ.healMs - occ.atMs),
                );
            },
            (e: unknown) => this.log.warn({ err: e, id: occ.fault.id }, 'fault could not be injected'),
          );
          this.pending.push(p);
        }, Math.max(0, startIn)),
      );
    };
    for (const occ of timed) fire(occ, t0);
    // `after` triggers: count dom0's trace events of the kind; start that fault's schedule then.
    const byFault = new Map<FaultSpec, Occurrence[]>();
    for (const occ of relative) byFault.set(occ.fault, [...(byFault.get(occ.fault) ?? []), occ]);
    const unsubs: Array<() => void> = [];
    for (const [f, occs] of byFault) {
      let seen = 0;
      const off = subscribeTrace([f.when.after!.kind], () => {
        if (++seen !== f.when.after!.count) return;
        off();
        const base = Date.now();
        for (const occ of occs) fire(occ, base);
      });
      unsubs.push(off);
    }
    try {
      await sleep(durationMs);
    } finally {
      for (const u of unsubs) u();
      for (const t of this.timers) clearTimeout(t);
    }
    await Promise.allSettled(this.pending);
    const n = await injector.healAll();
    if (n) this.progress(`${this.plan.duration.toFixed(1)}s  healed the ${n} faults still active`);
    await this.checkLiveness(hosts);
  }

  private liveGuests(hosts: Host[]): Array<{ host: Host; name: string }> {
    return hosts.flatMap((h) => h.guests.filter((g) => !g.down && !h.reclaimed.includes(g.config.name)).map((g) => ({ host: h, name: g.config.name })));
  }

  private async opsByGuest(hosts: Host[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const h of hosts) {
      const stats = await h.guestStats();
      for (const s of stats) if (s) out.set(s.name, opsOf(s));
    }
    return out;
  }

  /** Time from a heal until the guests it touched (a domain, or all of a host's) move again. */
  private async measureRecovery(hosts: Host[], f: FaultSpec, key: string): Promise<void> {
    const live = this.liveGuests(hosts);
    // A guest that is gone (killed) cannot recover; then the question is whether its neighbours noticed.
    const target = f.who.domain && live.some((g) => g.name === f.who.domain) ? f.who.domain : undefined;
    const scope = live.filter((g) => (target ? g.name === target : !f.who.host || g.host.config.name === f.who.host));
    if (scope.length === 0) return;
    const start = Date.now();
    const before = await this.opsByGuest(hosts);
    const deadline = start + Math.max(5_000, this.plan.settle * 1000);
    while (Date.now() < deadline) {
      await sleep(50);
      const now = await this.opsByGuest(hosts);
      if (scope.every((g) => (now.get(g.name) ?? 0) > (before.get(g.name) ?? 0))) {
        this.recovery.set(key, Date.now() - start);
        return;
      }
    }
  }

  /** After the final heal: every live guest must make progress within `settle`. */
  private async checkLiveness(hosts: Host[]): Promise<void> {
    const start = Date.now();
    const live = this.liveGuests(hosts);
    const before = await this.opsByGuest(hosts);
    const moved = new Set<string>();
    // At least 10 s: a guest a loaded machine left without a turn for a few seconds (an
    // emulated one trapping every port access through dom0) is slow, not stalled.
    const deadline = start + Math.max(10_000, this.plan.settle * 1000);
    while (Date.now() < deadline && moved.size < live.length) {
      await sleep(100);
      const now = await this.opsByGuest(hosts);
      for (const g of live) if ((now.get(g.name) ?? 0) > (before.get(g.name) ?? 0)) moved.add(g.name);
    }
    // A guest whose runtime died meanwhile (a link reset takes a moment to end its process) is
    // not stalled: it is gone, and its domain reclaimed.
    const stillLive = new Set(this.liveGuests(hosts).map((g) => g.name));
    this.stalled = live.filter((g) => !moved.has(g.name) && stillLive.has(g.name)).map((g) => g.name);
    this.livenessMs = this.stalled.length === 0 ? Date.now() - start : null;
  }

  report(o: { transport: 'threads' | 'ws'; hosts: Host[]; finals: GuestStats[][]; injector: FaultInjector; durationSec: number }): ChaosReport {
    const killed = new Set(o.hosts.flatMap((h) => h.reclaimed));
    const guests: ChaosReport['guests'] = [];
    const finals: Array<{ stats?: GuestStats; killed: boolean }> = [];
    o.hosts.forEach((h, i) =>
      h.guests.forEach((g, j) => {
        const s = o.finals[i]?.[j] ?? g.lastStats;
        finals.push({ ...(s ? { stats: s } : {}), killed: killed.has(g.config.name) });
        guests.push({
          name: g.config.name,
          host: h.config.name,
          state: killed.has(g.config.name) ? 'killed' : (s?.state ?? 'unknown'),
          ops: opsOf(s),
          ioErrors: s?.block?.writeErrors ?? 0,
          recoveries: s?.devices.reduce((a, d) => a + (d.detail.recoveries ?? 0), 0) ?? 0,
          resubmitted: s?.devices.reduce((a, d) => a + (d.detail.resubmitted ?? 0), 0) ?? 0,
          ...attacksOf(s),
          ...(s?.block ? { block: { checked: s.block.checked, failures: s.block.failures, kinds: s.block.kinds } } : {}),
          killed: killed.has(g.config.name),
        });
      }),
    );
    const checkers = runCheckers(finals, o.injector.strayDma, o.injector.hostileVif);
    // A guest may die only where the plan killed it: any other death is the system failing.
    const meantToDie = new Set(o.injector.history.filter((r) => faultKind(r.kind)?.endsGuest && !r.error).map((r) => r.who.domain));
    const failedGuests = [
      ...guests.filter((g) => !g.killed && g.state === 'failed').map((g) => g.name),
      ...guests.filter((g) => g.killed && !meantToDie.has(g.name)).map((g) => `${g.name} (its runtime died without being killed)`),
    ];
    const silentCorruption = o.injector.history.some((r) => faultKind(r.kind)?.silentCorruption);
    const v = judge(checkers, { silentCorruption, stalled: this.stalled, failedGuests });
    const faults = o.injector.history.map((r) => ({ ...r, ...(this.recovery.has(r.key) ? { recoveryMs: this.recovery.get(r.key)! } : {}) }));
    return {
      seed: this.seed,
      plan: this.plan.name,
      transport: o.transport,
      verdict: v.verdict,
      reasons: v.reasons,
      faults,
      checkers,
      recoveryMs: [...this.recovery.values()],
      livenessMs: this.livenessMs,
      guests,
      durationSec: o.durationSec,
      hosts: o.hosts.map((h) => ({ name: h.config.name, hardwareRestarts: h.restartedHardware, dom0Restarts: h.restartedDom0, rebooted: [...h.restarted] })),
    };
  }
}
