/**
 * The FaultInjector: makes one fault happen in a running cluster, through the real mechanism it
 * names — a backend stops consuming, notifications are really not sent, the physical disk really
 * fails or corrupts requests (hwsim's rule table), the NIC really loses carrier, a guest's runtime
 * is really killed or frozen — and heals it. Every inject and heal is a `fault` trace event, so
 * it lands in the same history as the I/O (the dashboard's timeline, `ringvisor trace`).
 */
import { DOMID_HW, GUEST_ATTACK, SplitMix32, mixSeed, publishTrace, traceNow, type DiskFaultRule, type Logger } from '@ringvisor/shared';
import { directDeviceName, vifDeviceName, type Host, type SvioVifRow } from '../toolstack/host.js';
import type { HostileVifTally } from './checkers.js';
import type { BackendCounters, SplitBackend } from '../backends/split-backend.js';
import type { FaultSpec } from './plan.js';
import { FaultTargetError } from './errors.js';
import { aimAtOneInstance } from './aim.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `f` every 20 ms until it yields a value, or undefined after `ms`. */
async function waitFor<T>(f: () => Promise<T | undefined>, ms: number): Promise<T | undefined> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined || performance.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

type AnyBackend = SplitBackend<BackendCounters>;
type LanFaultName = 'drop' | 'duplicate' | 'reorder' | 'corrupt';

export interface ActiveFault {
  key: string;
  spec: FaultSpec;
  host: string;
  startedAt: number;
  /** Undo it (idempotent). Instantaneous faults heal to a no-op. */
  heal(): Promise<void>;
  healed: boolean;
}

export interface FaultRecord {
  key: string;
  id: string;
  kind: string;
  host: string;
  who: FaultSpec['who'];
  injectedAt: number;
  healedAt?: number;
  error?: string;
  /** What the fault did (attacks sent, …). */
  detail?: Record<string, unknown>;
}

const MAX_FREEZE_MS = 60_000;
/** evtchn.lost/delayed: windows opened at most until the fault acted on an interrupt (see its undo). */
const MAX_IRQ_FAULT_WINDOWS = 4;

/**
 * The channels of the devices a guest drives itself — its direct functions and SV-IO VIFs (all,
 * or the one `device` names): the guest's end (the device's interrupts) and the hardware's (its
 * doorbells).
 */
function ownChannels(host: Host, domid: number, device: string | undefined): Array<{ guestPort: number; hwPort: number }> {
  return [
    ...host.functionsOf(domid).filter((f) => !device || directDeviceName(f) === device),
    ...host.vifsOf(domid).filter((v) => !device || vifDeviceName(v) === device),
  ].map((c) => ({ guestPort: c.port, hwPort: c.hwPort }));
}
/** Kinds that are over once they happened: nothing to heal. */
const INSTANTANEOUS = new Set<string>([
  'process.kill',
  'process.restart',
  'backend.restart',
  'link.reset',
  'ring.garbage',
  'ring.foreign-gref',
  'ring.stale-gref',
  'ring.double-fetch',
  'grant.revoke-mapped',
  'device.hostile',
  'iommu.stray-dma',
]);

export class FaultInjector {
  /** Every fault injected, in order (the history the chaos report carries). */
  readonly history: FaultRecord[] = [];
  private readonly active = new Map<string, ActiveFault>();
  private readonly diskRules = new Map<Host, Map<string, DiskFaultRule>>();
  private readonly lanFaults = new Map<Host, Map<string, [LanFaultName, number]>>();
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

  private hostsFor(spec: FaultSpec): Host[] {
    const hs = this.hosts.filter((h) => !spec.who.host || h.config.name === spec.who.host);
    if (hs.length === 0) throw new FaultTargetError(`${spec.id}: no host ${JSON.stringify(spec.who.host)}`);
    return hs;
  }

  /** The host a guest lives on. */
  private guestHost(spec: FaultSpec): Host {
    const name = spec.who.domain!;
    const h = this.hostsFor(spec).find((x) => x.guests.some((g) => g.config.name === name));
    if (!h) throw new FaultTargetError(`${spec.id}: no guest domain ${JSON.stringify(name)}${spec.who.host ? ` on ${spec.who.host}` : ''}`);
    return h;
  }

  private backends(spec: FaultSpec): { host: Host; backends: AnyBackend[] } {
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
    const draw = (() => {
      const rng = new SplitMix32(mixSeed(this.seed, this.seq, 0x5eed));
      return () => rng.next();
    })();
    const rec: FaultRecord = { key, id: spec.id, kind: spec.what.kind, host: '', who: spec.who, injectedAt: Date.now() };
    this.history.push(rec);
    let host: Host;
    let domid = 0;
    let undo: () => Promise<void> | void = () => {};
    try {
      // A fault aimed at a guest that is rebooting (an earlier process.restart) waits for it to
      // be back: the plan names the guest, not one incarnation of it.
      if (spec.who.domain && spec.what.kind !== 'process.restart')
        for (const h of this.hostsFor(spec)) if (h.guests.some((g) => g.config.name === spec.who.domain)) await h.rebooted(spec.who.domain);
      switch (spec.what.kind) {
        case 'backend.pause': {
          const t = this.backends(spec);
          host = t.host;
          domid = t.backends[0].frontDomid;
          for (const b of t.backends) b.pause();
          undo = () => t.backends.forEach((b) => b.resume());
          break;
        }
        case 'link.latency':
        case 'link.bandwidth':
        case 'link.partition': {
          const runtime = spec.who.runtime ?? spec.who.domain!;
          host = spec.who.runtime ? this.hostsFor(spec)[0] : this.guestHost(spec);
          if (spec.who.domain) domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          const w = spec.what;
          const toxics =
            w.kind === 'link.latency'
              ? { latencyMs: w.latencyMs ?? 0, ...(w.jitterMs !== undefined ? { jitterMs: w.jitterMs } : {}), seed: mixSeed(this.seed, this.seq) }
              : w.kind === 'link.bandwidth'
                ? { bandwidthBytesPerSec: w.bytesPerSec! }
                : { partition: w.partition ?? 'both', ...(w.resetAfterMs !== undefined ? { resetAfterMs: w.resetAfterMs } : {}) };
          const h = host;
          h.setLinkToxics(runtime, toxics);
          undo = () => {
            try {
              h.setLinkToxics(runtime, {});
            } catch {
              /* the link is gone (reset) */
            }
          };
          break;
        }
        case 'link.reset': {
          host = this.guestHost(spec);
          domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          host.resetLink(spec.who.domain!);
          break;
        }
        case 'lan.drop':
        case 'lan.duplicate':
        case 'lan.reorder':
        case 'lan.corrupt': {
          const hs = this.hostsFor(spec);
          host = hs[0];
          const what = spec.what.kind.slice('lan.'.length) as LanFaultName;
          // Several LAN faults may overlap on one host: the uplink gets their union.
          const apply = async (h: Host) => {
            const active = this.lanFaults.get(h) ?? new Map<string, [LanFaultName, number]>();
            this.lanFaults.set(h, active);
            const f: Partial<Record<LanFaultName, number>> = {};
            for (const [n, p] of active.values()) f[n] = Math.max(f[n] ?? 0, p);
            await h.setLanFaults(active.size ? { ...f, seed: mixSeed(this.seed, this.seq) } : undefined);
          };
          for (const h of hs) {
            const active = this.lanFaults.get(h) ?? new Map<string, [LanFaultName, number]>();
            this.lanFaults.set(h, active);
            active.set(key, [what, spec.what.probability ?? 0]);
            await apply(h);
          }
          undo = async () => {
            for (const h of hs) {
              this.lanFaults.get(h)?.delete(key);
              await apply(h).catch(() => {});
            }
          };
          break;
        }
        case 'ring.garbage':
        case 'ring.foreign-gref':
        case 'ring.stale-gref':
        case 'ring.double-fetch':
        case 'ring.corrupt-index':
        case 'grant.revoke-mapped': {
          host = this.guestHost(spec);
          const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
          domid = g.domain.domid;
          if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
          const attack = spec.what.kind === 'grant.revoke-mapped' ? 'revoke-mapped' : spec.what.kind.slice('ring.'.length);
          const r = await g.peer.call<{ sent: number; outcomes: Record<string, unknown> }>(
            GUEST_ATTACK,
            { device: spec.who.device, attack, count: spec.what.count ?? 8, seed: mixSeed(this.seed, this.seq) },
            5_000,
          );
          rec.detail = { sent: r.sent };
          this.attackers.add(`${host.config.name}/${spec.who.domain}`);
          if (spec.what.kind === 'ring.corrupt-index') {
            // The backend stopped that ring; what a toolstack does about a rogue frontend's device
            // is reset it: healing restarts the backend and the frontend reconnects.
            const h = host;
            undo = async () => {
              await h.restartBackend(spec.who.domain!, spec.who.device!).catch((e) => this.log.warn({ err: (e as Error).message }, 'backend reset failed'));
            };
          }
          break;
        }
        case 'device.hostile': {
          host = this.guestHost(spec);
          const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
          domid = g.domain.domid;
          if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
          if (!host.platformOf(domid)) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no emulated devices`);
          const r = await g.peer.call<Record<string, unknown>>(
            GUEST_ATTACK,
            { device: spec.who.device, attack: spec.what.attack, count: spec.what.count ?? 4, seed: mixSeed(this.seed, this.seq) },
            30_000,
          );
          rec.detail = { ...r };
          this.attackers.add(`${host.config.name}/${spec.who.domain}`);
          break;
        }
        case 'svio.reset': {
          host = this.guestHost(spec);
          const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
          domid = g.domain.domid;
          const r = await host.resetVif(spec.who.domain!, spec.who.device!);
          rec.detail = { vif: r.vif };
          undo = async () => {
            const back = await r.heal();
            rec.detail = { ...rec.detail, recreated: back.vif };
          };
          break;
        }
        case 'svio.hostile': {
          host = this.guestHost(spec);
          const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
          domid = g.domain.domid;
          if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
          const h = host;
          const device = spec.who.device!;
          // The engine's view of the VIF (undefined while the hardware is away, e.g. restarting).
          const vifRow = async () =>
            (await h.svioVifs().catch(() => [])).find((v) => v.domain === spec.who.domain && v.device === device) as (SvioVifRow & { stats?: { counters: { refused: number }; stopped: string | null } }) | undefined;
          if (!h.vifsOf(domid).some((v) => vifDeviceName(v) === device)) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no SV-IO device ${device}`);
          // A VIF still down (an earlier reset's heal running late on a busy machine) is waited
          // for (aim's ready, bounded), not taken for a plan's mistake.
          const attacker = g;
          const rogue = spec.what.attack === 'rogue-index';
          // One attempt: the attack and what the engine made of it, judged only if the VIF was
          // the same one throughout (aim.ts: a VIF replaced meanwhile is aimed at again).
          const aimed = await aimAtOneInstance({
            generation: () => h.vifGeneration(spec.who.domain!, device),
            ready: async () => (await waitFor(async () => ((await vifRow()) && !attacker.down ? true : undefined), 30_000)) ?? false,
            attempt: async () => {
              const before = await vifRow();
              const r = await attacker.peer!.call<{ attack: string; sent: number; heldMs?: number; stopped?: boolean }>(
                GUEST_ATTACK,
                { device, attack: spec.what.attack, count: spec.what.count ?? 16, seed: mixSeed(this.seed, this.seq) },
                30_000,
              );
              if (rogue) return { r, refused: 0 };
              // Every hostile message answered with an error (the driver takes the answers).
              const refusedOf = async () => ((await vifRow())?.stats?.counters.refused ?? 0) - (before?.stats?.counters.refused ?? 0);
              const refused = (await waitFor(async () => ((await refusedOf()) >= r.sent ? r.sent : undefined), 5_000)) ?? (await refusedOf());
              return { r, refused };
            },
          });
          this.attackers.add(`${host.config.name}/${spec.who.domain}`);
          if (!aimed.judged) {
            // The VIF kept being replaced under the attack (or never came up): nothing was
            // judged, nothing breached.
            rec.detail = { judged: false, reaimed: aimed.reaimed };
            this.log.warn({ fault: spec.id, reaimed: aimed.reaimed }, 'svio.hostile: the VIF was replaced under every attempt; no verdict');
            break;
          }
          const { r, refused } = aimed.result;
          const reaimed = aimed.reaimed > 0 ? { reaimed: aimed.reaimed } : {};
          if (rogue) {
            // The engine stopped the VIF (a rogue queue) and told the driver in STATUS; what a
            // toolstack does next is reset it.
            rec.detail = { ...r, ...reaimed };
            if (!r.stopped) this.hostileVif.accepted++;
            undo = async () => {
              const reset = await h.resetVif(spec.who.domain!, device).catch((e: Error) => this.log.warn({ err: e.message }, 'VIF reset failed'));
              if (reset) await reset.heal();
            };
            break;
          }
          this.hostileVif.sent += r.sent;
          this.hostileVif.refused += Math.min(refused, r.sent);
          this.hostileVif.accepted += Math.max(0, r.sent - refused);
          rec.detail = { ...r, refused, ...reaimed };
          break;
        }
        case 'direct.reclaim': {
          host = this.guestHost(spec);
          const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
          domid = g.domain.domid;
          const h = host;
          const r = await h.reclaimFunction(spec.who.domain!, spec.who.device!);
          rec.detail = { rid: r.rid, steps: r.steps, dropped: r.dropped };
          undo = async () => {
            const back = await h.reattachFunction(spec.who.domain!, spec.who.device!);
            rec.detail = { ...rec.detail, reassigned: back.rid };
          };
          break;
        }
        case 'iommu.stray-dma': {
          host = this.guestHost(spec);
          const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
          domid = g.domain.domid;
          if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
          const configured = g.config.devices.some((dev) => dev.mode === 'direct' && `${dev.type}${dev.devid}` === spec.who.device);
          const h = host;
          const d = domid;
          // A function still reclaimed (its heal running late on a loaded machine) is waited for, bounded.
          const assigned = () => h.functionsOf(d).some((f) => directDeviceName(f) === spec.who.device);
          if (!configured || !(await waitFor(async () => (assigned() ? true : undefined), 15_000)))
            throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no direct device ${spec.who.device} assigned`);
          const before = await host.iommuFaults();
          const r = await g.peer.call<{ sent: number; blocked: number; completed: number }>(
            GUEST_ATTACK,
            { device: spec.who.device, attack: 'stray-dma', count: spec.what.count ?? 8, seed: mixSeed(this.seed, this.seq) },
            30_000,
          );
          // Each attempt past the guest's memory leaves an IOMMU fault record; the rest the device refused.
          rec.detail = { ...r, iommuFaults: (await host.iommuFaults()) - before };
          this.strayDma.attempted += r.sent;
          this.strayDma.blocked += r.blocked;
          this.strayDma.unblocked += r.completed;
          this.attackers.add(`${host.config.name}/${spec.who.domain}`);
          break;
        }
        case 'backend.restart': {
          host = this.guestHost(spec);
          domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          await host.restartBackend(spec.who.domain!, spec.who.device!);
          break;
        }
        case 'grant.unmap-early': {
          const t = this.backends(spec);
          host = t.host;
          domid = t.backends[0].frontDomid;
          const blk = t.backends.filter((b): b is AnyBackend & { unmapEarly: boolean } => 'unmapEarly' in b);
          if (blk.length === 0) throw new FaultTargetError(`${spec.id}: grant.unmap-early needs a vbd`);
          for (const b of blk) b.unmapEarly = true;
          undo = () => blk.forEach((b) => (b.unmapEarly = false));
          break;
        }
        case 'backend.lie': {
          const t = this.backends(spec);
          host = t.host;
          domid = t.backends[0].frontDomid;
          const blk = t.backends.filter((b): b is AnyBackend & { lieAboutWrites: boolean } => 'lieAboutWrites' in b);
          if (blk.length === 0) throw new FaultTargetError(`${spec.id}: backend.lie needs a vbd`);
          for (const b of blk) b.lieAboutWrites = true;
          undo = () => blk.forEach((b) => (b.lieAboutWrites = false));
          break;
        }
        case 'evtchn.lost':
        case 'evtchn.delayed': {
          const dir = spec.what.direction ?? 'both';
          const p = spec.what.probability ?? 1;
          const lost = spec.what.kind === 'evtchn.lost';
          const toGuest = lost && dir !== 'to-backend' ? p : 0;
          const toBack = lost && dir !== 'to-guest' ? p : 0;
          const delayMs = lost ? 0 : (spec.what.delayMs ?? 0);
          // A guest's PV channels (backend notify paths) and, with models in dom0, its emulated
          // devices' virtual IRQs and ioreq kicks.
          host = this.guestHost(spec);
          domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          const platform = host.platformOf(domid);
          const emulated = platform?.placement === 'dom0' && !spec.who.device ? platform : undefined;
          // Hosted: the VMApp raises the virtual IRQs and takes the VMM's kicks, so it is told.
          const hosted = platform?.placement === 'hosted' && !spec.who.device ? platform : undefined;
          // Direct functions and SV-IO VIFs: the hardware raises their interrupts (their doorbells
          // are posted writes, never lost), so it loses or delays them.
          const ownHardware = (toGuest > 0 || delayMs > 0) && ownChannels(host, domid, spec.who.device).length > 0;
          let backends: AnyBackend[] = [];
          try {
            backends = this.backends(spec).backends;
          } catch (e) {
            if (!emulated && !hosted && !ownHardware) throw e;
          }
          if (backends.length === 0 && !emulated && !hosted && !ownHardware)
            throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no event channels this fault can act on (PV devices, emulated ones, or interrupts — to-guest — of direct and SV-IO devices)`);
          const forMs = Math.min(MAX_FREEZE_MS, (spec.when.for ?? 60) * 1000);
          const h = host;
          const seq = this.seq;
          const did = { irqsLost: 0, irqsDelayed: 0, kicksLost: 0, deviceIrqsLost: 0, deviceIrqsDelayed: 0 };
          let windows = 0;
          // The first window draws as a single-window fault always did; later ones draw afresh.
          const windowSeed = (...salt: number[]) => (windows === 1 ? mixSeed(this.seed, seq, ...salt) : mixSeed(this.seed, seq, ...salt, windows)) >>> 0;
          // One window of the fault: install it where the interrupts are raised ...
          const install = async () => {
            windows++;
            if (ownHardware) await h.setDeviceIrqFault(domid, { lostToGuest: toGuest, delayMs, seed: windowSeed(0x1a5) });
            for (const b of backends) b.eventFault = { lostToGuest: toGuest, lostToBackend: toBack, delayMs, draw };
            if (emulated) emulated.eventFault = { lostToGuest: toGuest, lostToModel: toBack, delayMs, draw };
            // Hosted: sent, not awaited — its answer can be held up by the very kicks it loses (ws);
            // the VMApp ends the fault itself after its planned length.
            const hostedBefore = hosted?.setHostedEventFault({ lostToGuest: toGuest, lostToModel: toBack, delayMs, seed: windowSeed(), forMs }).catch(() => undefined);
            const emulatedBefore = emulated ? { ...emulated.faultCounters } : undefined;
            // ... and clear it, adding up what it did (for the report).
            return async () => {
              backends.forEach((b) => (b.eventFault = undefined));
              if (emulated) emulated.eventFault = undefined;
              const before = emulatedBefore ?? (await hostedBefore);
              const c = emulated ? emulated.faultCounters : hosted ? await hosted.setHostedEventFault(null).catch(() => undefined) : undefined;
              if (c && before) {
                did.irqsLost += c.irqsLost - before.irqsLost;
                did.irqsDelayed += c.irqsDelayed - before.irqsDelayed;
                did.kicksLost += c.kicksLost - before.kicksLost;
              }
              if (ownHardware) {
                const d = await h.setDeviceIrqFault(domid, null).catch(() => undefined);
                if (d) {
                  did.deviceIrqsLost += d.irqsLost;
                  did.deviceIrqsDelayed += d.irqsDelayed;
                }
              }
            };
          };
          const counted = Boolean(emulated || hosted || ownHardware);
          const acted = () => did.irqsLost + did.irqsDelayed + did.kicksLost + did.deviceIrqsLost + did.deviceIrqsDelayed > 0;
          let clear = await install();
          undo = async () => {
            await clear();
            // A window in which the devices raised nothing (a guest the machine left no time to
            // do I/O) tested nothing: open another, bounded, so a slow machine gets a later
            // fault, not a fault that never happened.
            while (counted && !acted() && windows < MAX_IRQ_FAULT_WINDOWS && !h.guests.find((g) => g.domain.domid === domid)?.down) {
              clear = await install();
              await sleep(forMs);
              await clear();
            }
            if (emulated || hosted) rec.detail = { ...rec.detail, irqsLost: did.irqsLost, irqsDelayed: did.irqsDelayed, kicksLost: did.kicksLost };
            if (ownHardware) rec.detail = { ...rec.detail, deviceIrqsLost: did.deviceIrqsLost, deviceIrqsDelayed: did.deviceIrqsDelayed };
            if (windows > 1) rec.detail = { ...rec.detail, windows };
          };
          break;
        }
        case 'evtchn.spurious':
        case 'evtchn.storm': {
          host = this.guestHost(spec);
          const h = host;
          const d = (domid = h.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid);
          let backends: AnyBackend[] = [];
          try {
            backends = this.backends(spec).backends;
          } catch {
            /* no PV device: its direct and SV-IO channels, if any */
          }
          const own = ownChannels(h, d, spec.who.device);
          if (backends.length === 0 && own.length === 0) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no PV, direct or SV-IO device channel for ${spec.what.kind}`);
          const storm = spec.what.kind === 'evtchn.storm';
          let deviceEvents = 0;
          // Fired in bursts every 10 ms so high rates do not need a timer per event. The rate is
          // kept by the clock, not by the ticks: a loaded machine that runs fewer ticks gets
          // what they missed in the next ones (bounded bursts), so `ratePerSec` means what it says.
          const rate = spec.what.ratePerSec ?? 100;
          const maxBurst = Math.max(1, Math.round(rate / 100)) * 10;
          const start = performance.now();
          let rounds = 0;
          const timer = setInterval(() => {
            const due = Math.floor(((performance.now() - start) * rate) / 1000);
            const burst = Math.min(due - rounds, maxBurst);
            for (let k = 0; k < burst; k++) {
              const i = rounds++;
              for (const b of backends) {
                if (storm) b.eventFromFrontend();
                else if ((i + b.devid) % 2 === 0) b.spuriousNotify();
                else b.eventFromFrontend();
              }
              // A storm: doorbells the device did not need; spurious: those, and interrupts nobody raised.
              own.forEach((c, j) => {
                if (!storm && (i + j) % 2 === 0) h.hv.deliverEvent(d, c.guestPort);
                else h.hv.deliverEvent(DOMID_HW, c.hwPort);
                deviceEvents++;
              });
            }
            if (own.length > 0) rec.detail = { ...rec.detail, deviceEvents };
          }, 10);
          timer.unref();
          undo = () => clearInterval(timer);
          break;
        }
        case 'disk.eio':
        case 'disk.bitflip': {
          const hs = this.hostsFor(spec);
          host = hs[0];
          const rule: DiskFaultRule = {
            id: key,
            op: spec.what.op ?? 'any',
            error: spec.what.kind === 'disk.eio' ? 'eio' : 'bitflip',
            ...(spec.what.sectors ? { sectors: spec.what.sectors } : {}),
            ...(spec.what.probability !== undefined ? { probability: spec.what.probability } : {}),
            ...(spec.what.times !== undefined ? { times: spec.what.times } : {}),
            seed: mixSeed(this.seed, this.seq),
          };
          for (const h of hs) {
            const rules = this.diskRules.get(h) ?? new Map<string, DiskFaultRule>();
            this.diskRules.set(h, rules);
            rules.set(key, rule);
            await h.setDiskFaults([...rules.values()]);
          }
          undo = async () => {
            for (const h of hs) {
              const rules = this.diskRules.get(h)!;
              rules.delete(key);
              await h.setDiskFaults([...rules.values()]).catch(() => {});
            }
          };
          break;
        }
        case 'nic.down': {
          const hs = this.hostsFor(spec);
          host = hs[0];
          for (const h of hs) await h.setNicLink(false);
          undo = async () => {
            for (const h of hs) await h.setNicLink(true).catch(() => {});
          };
          break;
        }
        case 'process.kill': {
          // The hardware or dom0's I/O stack: down until healed (then it comes back as a restart does).
          if (spec.who.runtime === 'hwsim' || spec.who.runtime === 'dom0') {
            const hs = this.hostsFor(spec);
            host = hs[0];
            domid = spec.who.runtime === 'hwsim' ? DOMID_HW : 0;
            const revive: Array<() => Promise<void>> = [];
            for (const h of hs) revive.push(spec.who.runtime === 'hwsim' ? await h.killHwsim() : await h.killDom0());
            undo = async () => {
              for (const r of revive) await r();
            };
            break;
          }
          host = this.guestHost(spec);
          domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          await host.killGuest(spec.who.domain!);
          break;
        }
        case 'disk.torn': {
          // The power goes: the drive's cache reaches the image only in part, then the hardware
          // comes back (a new simulator on the same image) and dom0 resubmits what it never saw answered.
          const hs = this.hostsFor(spec);
          host = hs[0];
          domid = DOMID_HW;
          const details: Record<string, unknown> = {};
          for (const h of hs) {
            details[h.config.name] = await h.powerLoss(spec.what.writeProbability ?? 0.5, mixSeed(this.seed, this.seq));
            await h.restartHwsim();
          }
          rec.detail = details;
          break;
        }
        case 'process.restart': {
          if (spec.who.runtime === 'dom0') {
            const hs = this.hostsFor(spec);
            host = hs[0];
            domid = 0;
            const details: Record<string, unknown> = {};
            for (const h of hs) details[h.config.name] = await h.restartDom0();
            rec.detail = details;
            break;
          }
          if (spec.who.runtime === 'hwsim') {
            const hs = this.hostsFor(spec);
            host = hs[0];
            domid = DOMID_HW;
            for (const h of hs) await h.restartHwsim();
            break;
          }
          host = this.guestHost(spec);
          domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          await host.restartGuest(spec.who.domain!);
          break;
        }
        case 'process.pause': {
          if (spec.who.runtime === 'dom0') {
            const hs = this.hostsFor(spec);
            host = hs[0];
            domid = 0;
            const thaws = hs.map((h) => h.freezeDom0());
            undo = () => thaws.forEach((t) => t());
            break;
          }
          if (spec.who.runtime === 'hwsim') {
            const hs = this.hostsFor(spec);
            host = hs[0];
            domid = DOMID_HW;
            const thaws: Array<() => void> = [];
            for (const h of hs) thaws.push(await h.freezeHwsim(Math.min(MAX_FREEZE_MS, ((spec.when.for ?? 60) + 5) * 1000)));
            undo = () => thaws.forEach((t) => t());
            break;
          }
          host = this.guestHost(spec);
          domid = host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
          const thaw = await host.freezeGuest(spec.who.domain!, Math.min(MAX_FREEZE_MS, ((spec.when.for ?? 60) + 5) * 1000));
          undo = thaw;
          break;
        }
      }
    } catch (e) {
      rec.error = (e as Error).message;
      throw e;
    }
    rec.host = host!.config.name;
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
          await undo();
        } catch (e) {
          // A heal that failed is the fault's error in the report (a recovery that did not
          // happen), not an unhandled rejection that takes the whole run down.
          rec.error = `heal: ${(e as Error).message}`;
          this.log.warn({ err: (e as Error).message, id: spec.id }, 'fault could not be healed');
        }
        rec.healedAt = Date.now();
        this.trace('heal', spec, rec.host, domid);
      },
    };
    // An instantaneous fault (a kill) is over once it happened: nothing to heal.
    // (Killing the hardware or dom0's I/O stack lasts: it is down until healed.)
    if (INSTANTANEOUS.has(spec.what.kind) && !(spec.what.kind === 'process.kill' && spec.who.runtime !== undefined)) {
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
