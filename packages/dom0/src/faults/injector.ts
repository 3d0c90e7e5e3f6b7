/**
 * The FaultInjector: makes one fault happen in a running cluster, through the real mechanism it
 * names — a backend stops consuming, notifications are really not sent, the physical disk really
 * fails or corrupts requests (hwsim's rule table), the NIC really loses carrier, a guest's runtime
 * is really killed or frozen — and heals it. Every inject and heal is a `fault` trace event, so
 * it lands in the same history as the I/O (the dashboard's timeline, `ringvisor trace`).
 *
 * What each kind does is its module's (`kinds/`, found through the registry); this class keeps
 * the bookkeeping around it: occurrence keys and seeds, the history, the faults still active and
 * their heals, the tallies the checkers judge, and the trace events.
 */
import { SplitMix32, mixSeed, publishTrace, traceNow, type Logger } from '@ringvisor/shared';
import type { Host } from '../toolstack/host.js';
import type { HostileVifTally } from './checkers.js';
import type { FaultSpec } from './plan.js';
import { FaultTargetError, FaultKindError } from './errors.js';
import { faultKind } from './kinds/index.js';
import type { AnyBackend, FaultRecord, InjectContext, Injection, KindSpec, StateSlot } from './kinds/kind.js';

export type { FaultRecord } from './kinds/kind.js';

export interface ActiveFault {
  key: string;
  spec: FaultSpec;
  host: string;
  startedAt: number;
  /** Undo it (idempotent). Instantaneous faults heal to a no-op. */
  heal(): Promise<void>;
  healed: boolean;
}

export class FaultInjector {
  /** Every fault injected, in order (the history the chaos report carries). */
  readonly history: FaultRecord[] = [];
  private readonly active = new Map<string, ActiveFault>();
  /** The kinds' own state across their occurrences (a host's disk rules, its LAN faults). */
  private readonly kindState = new Map<StateSlot<unknown>, unknown>();
  private seq = 0;
  /** Stray DMA the plan made guests attempt (iommu.stray-dma): every one must have been blocked. */
  readonly strayDma = { attempted: 0, blocked: 0, unblocked: 0 };
  /** svio.hostile: hostile VIF messages sent, and refused by the engine. */
  readonly hostileVif: HostileVifTally = { sent: 0, refused: 0, accepted: 0 };
  /** Guests a plan made misbehave (host/domain): their own I/O is not held to the checkers. */
  readonly attackers = new Set<string>();

  constructor(
    readonly hosts: Host[],
    readonly log: Logger,
    readonly seed = 1,
  ) {}

  activeFaults(): ActiveFault[] {
    return [...this.active.values()];
  }

  private hostsFor(spec: KindSpec): Host[] {
    const hs = this.hosts.filter((h) => !spec.who.host || h.config.name === spec.who.host);
    if (hs.length === 0) throw new FaultTargetError(`${spec.id}: no host ${JSON.stringify(spec.who.host)}`);
    return hs;
  }

  /** The host a guest lives on. */
  private guestHost(spec: KindSpec): Host {
    const name = spec.who.domain!;
    const h = this.hostsFor(spec).find((x) => x.guests.some((g) => g.config.name === name));
    if (!h) throw new FaultTargetError(`${spec.id}: no guest domain ${JSON.stringify(name)}${spec.who.host ? ` on ${spec.who.host}` : ''}`);
    return h;
  }

  private backends(spec: KindSpec): { host: Host; backends: AnyBackend[] } {
    const host = this.guestHost(spec);
    const domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
    const all = [...host.blkBackends(), ...host.netBackends()] as AnyBackend[];
    const bs = all.filter((b) => b.frontDomid === domid && (!spec.who.device || b.device === spec.who.device));
    if (bs.length === 0) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no device ${spec.who.device ?? ''}`.trim());
    return { host, backends: bs };
  }

  private trace(phase: 'inject' | 'heal', spec: FaultSpec, host: string, domid: number): void {
    publishTrace({
      kind: 'fault',
      t: traceNow(),
      host,
      domid,
      ...(spec.who.device ? { device: spec.who.device } : {}),
      fault: spec.what.kind,
      detail: { id: spec.id, phase, who: spec.who, what: spec.what },
    });
  }

  /** Inject one occurrence of a fault; resolves once it is in effect. */
  async inject(spec: FaultSpec, occurrence = 0): Promise<ActiveFault> {
    const key = `${spec.id}#${occurrence}@${++this.seq}`;
    const seq = this.seq;
    const draw = (() => {
      const rng = new SplitMix32(mixSeed(this.seed, seq, 0x5eed));
      return () => rng.next();
    })();
    const rec: FaultRecord = { key, id: spec.id, kind: spec.what.kind, host: '', who: spec.who, injectedAt: Date.now() };
    this.history.push(rec);
    const kind = faultKind(spec.what.kind);
    const ctx: InjectContext = {
      key,
      seed: this.seed,
      seq,
      draw,
      record: rec,
      log: this.log,
      strayDma: this.strayDma,
      hostileVif: this.hostileVif,
      attackers: this.attackers,
      hostsFor: (s) => this.hostsFor(s),
      guestHost: (s) => this.guestHost(s),
      backends: (s) => this.backends(s),
      state: <T>(slot: StateSlot<T>): T => {
        if (!this.kindState.has(slot)) this.kindState.set(slot, slot.init());
        return this.kindState.get(slot) as T;
      },
    };
    let injected: Injection<unknown>;
    try {
      if (!kind) throw new FaultKindError(`${spec.id}: no fault kind ${JSON.stringify(spec.what.kind)}`);
      // A fault aimed at a guest that is rebooting (an earlier process.restart) waits for it to
      // be back: the plan names the guest, not one incarnation of it.
      if (spec.who.domain && kind.waitsForReboot !== false)
        for (const h of this.hostsFor(spec)) if (h.guests.some((g) => g.config.name === spec.who.domain)) await h.rebooted(spec.who.domain);
      injected = await kind.inject(ctx, spec);
    } catch (e) {
      rec.error = (e as Error).message;
      throw e;
    }
    const { host, domid, state } = injected;
    rec.host = host.config.name;
    this.trace('inject', spec, rec.host, domid);
    this.log.info({ fault: spec.what.kind, id: spec.id, who: spec.who }, 'fault injected');
    const a: ActiveFault = {
      key,
      spec,
      host: rec.host,
      startedAt: Date.now(),
      healed: false,
      heal: async () => {
        if (a.healed) return;
        a.healed = true;
        this.active.delete(key);
        try {
          if (state !== undefined) await kind.heal?.(ctx, state);
        } catch (e) {
          // A heal that failed is the fault's error in the report (a recovery that did not
          // happen), not an unhandled rejection that takes the whole run down.
          rec.error = `heal: ${(e as Error).message}`;
          this.log.warn({ err: e, id: spec.id }, 'fault could not be healed');
        }
        rec.healedAt = Date.now();
        this.trace('heal', spec, rec.host, domid);
      },
    };
    // An instantaneous fault (a kill) is over once it happened: nothing to heal.
    if (kind.instantaneous?.(spec)) {
      a.healed = true;
      rec.healedAt = rec.injectedAt;
    } else this.active.set(key, a);
    return a;
  }

  /** Heal every active fault (the end of a campaign, or `ringvisor fault heal`). */
  async healAll(): Promise<number> {
    const all = [...this.active.values()];
    for (const a of all) await a.heal();
    return all.length;
  }

  async heal(id: string): Promise<number> {
    const all = [...this.active.values()].filter((a) => a.spec.id === id || a.key === id);
    for (const a of all) await a.heal();
    return all.length;
  }
}
