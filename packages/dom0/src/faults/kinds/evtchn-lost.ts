/**
 * evtchn.lost and evtchn.delayed: notifications lost or delivered late where they are raised —
 * a guest's PV channels (the backends' notify paths), its emulated devices' virtual IRQs and
 * ioreq kicks (dom0's models, or its hosted VMApp), and the interrupts the hardware raises for
 * its direct functions and SV-IO VIFs.
 */
import { ConfigError, mixSeed } from '@ringvisor/shared';
import { FaultTargetError } from '../errors.js';
import type { AnyBackend, FaultKind, GenGuest, InjectContext, Injection, KindSpec } from './kind.js';
import { MAX_FREEZE_MS } from './kind.js';
import { domidOf, ownChannels, sleep } from './common.js';

export interface EvtchnLostParams {
  direction?: 'to-guest' | 'to-backend' | 'both';
  /** Chance each notification is lost. */
  probability?: number;
}

export interface EvtchnDelayedParams {
  delayMs?: number;
}

/** evtchn.lost/delayed: windows opened at most until the fault acted on an interrupt (see the heal). */
const MAX_IRQ_FAULT_WINDOWS = 4;

/** Ends the fault: clears the last window (and opens more while none acted), adding up what it did. */
type EndFault = () => Promise<void>;

async function injectEventFault(ctx: InjectContext, spec: KindSpec<string, EvtchnLostParams & EvtchnDelayedParams>, lost: boolean): Promise<Injection<EndFault>> {
  const rec = ctx.record;
  const dir = spec.what.direction ?? 'both';
  const p = spec.what.probability ?? 1;
  const toGuest = lost && dir !== 'to-backend' ? p : 0;
  const toBack = lost && dir !== 'to-guest' ? p : 0;
  const delayMs = lost ? 0 : (spec.what.delayMs ?? 0);
  // A guest's PV channels (backend notify paths) and, with models in dom0, its emulated
  // devices' virtual IRQs and ioreq kicks.
  const host = ctx.guestHost(spec);
  const domid = domidOf(host, spec);
  const platform = host.platformOf(domid);
  const emulated = platform?.placement === 'dom0' && !spec.who.device ? platform : undefined;
  // Hosted: the VMApp raises the virtual IRQs and takes the VMM's kicks, so it is told.
  const hosted = platform?.placement === 'hosted' && !spec.who.device ? platform : undefined;
  // Direct functions and SV-IO VIFs: the hardware raises their interrupts (their doorbells
  // are posted writes, never lost), so it loses or delays them.
  const ownHardware = (toGuest > 0 || delayMs > 0) && ownChannels(host, domid, spec.who.device).length > 0;
  let backends: AnyBackend[] = [];
  try {
    backends = ctx.backends(spec).backends;
  } catch (e) {
    if (!emulated && !hosted && !ownHardware) throw e;
  }
  if (backends.length === 0 && !emulated && !hosted && !ownHardware)
    throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no event channels this fault can act on (PV devices, emulated ones, or interrupts — to-guest — of direct and SV-IO devices)`);
  const forMs = Math.min(MAX_FREEZE_MS, (spec.when.for ?? 60) * 1000);
  const h = host;
  const seq = ctx.seq;
  const draw = ctx.draw;
  const did = { irqsLost: 0, irqsDelayed: 0, kicksLost: 0, deviceIrqsLost: 0, deviceIrqsDelayed: 0 };
  let windows = 0;
  // The first window draws as a single-window fault always did; later ones draw afresh.
  const windowSeed = (...salt: number[]) => (windows === 1 ? mixSeed(ctx.seed, seq, ...salt) : mixSeed(ctx.seed, seq, ...salt, windows)) >>> 0;
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
  const end: EndFault = async () => {
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
  return { host, domid, state: end };
}

/** Guests with something whose events can be lost: PV channels, emulated devices, direct or SV-IO interrupts. */
const hasEvents = (g: GenGuest): boolean => Boolean(g.vbd || g.vif || g.emulated.length > 0 || g.direct.length > 0 || g.svio.length > 0);

const lostDescription = 'notifications on a device channel are lost; direction to-guest | to-backend | both; who: domain [+ device]';

export const evtchnLost: FaultKind<'evtchn.lost', EvtchnLostParams, EndFault> = {
  name: 'evtchn.lost',
  description: lostDescription,
  params: {
    direction: { enum: ['to-guest', 'to-backend', 'both'] },
    probability: { type: 'number', minimum: 0, maximum: 1 },
  },
  needsDomain: true,
  inject: (ctx, spec) => injectEventFault(ctx, spec, true),
  heal: (_ctx, end) => end(),
  generate: {
    order: 30,
    eligible: hasEvents,
    make: (s) => ({
      who: { domain: s.g.name },
      what: {
        kind: 'evtchn.lost',
        direction: s.pick(s.g.vbd || s.g.vif || s.g.emulated.length > 0 ? (['to-guest', 'to-backend', 'both'] as const) : (['to-guest', 'both'] as const)),
        probability: 0.5 + s.next() / 2,
      },
      when: s.when,
    }),
  },
};

export const evtchnDelayed: FaultKind<'evtchn.delayed', EvtchnDelayedParams, EndFault> = {
  name: 'evtchn.delayed',
  description: 'notifications are delivered delayMs late; who: domain [+ device]',
  params: { delayMs: { type: 'number', minimum: 0, maximum: 60_000 } },
  owns: ['delayMs'],
  needsDomain: true,
  checkParams(f, where) {
    if (f.what.delayMs === undefined) throw new ConfigError(`${where}: delayMs belongs to (and is required by) evtchn.delayed`);
  },
  inject: (ctx, spec) => injectEventFault(ctx, spec, false),
  heal: (_ctx, end) => end(),
  generate: {
    order: 40,
    eligible: hasEvents,
    make: (s) => ({ who: { domain: s.g.name }, what: { kind: 'evtchn.delayed', delayMs: 5 + s.nextInt(50) }, when: s.when }),
  },
};
