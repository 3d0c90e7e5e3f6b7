/**
 * evtchn.spurious and evtchn.storm: events nobody needed, at a rate — on a guest's PV channels
 * (to the guest and the backend, or a flood to its backends), and on the channels of its direct
 * functions and SV-IO VIFs (interrupts nobody raised, doorbells the device did not need).
 */
import { ConfigError, DOMID_HW } from '@ringvisor/shared';
import { FaultTargetError } from '../errors.js';
import type { AnyBackend, FaultKind, GenGuest, InjectContext, Injection, KindSpec } from './kind.js';
import { ownChannels } from './common.js';

export interface EventRateParams {
  ratePerSec?: number;
}

async function injectExtraEvents(ctx: InjectContext, spec: KindSpec<string, EventRateParams>, storm: boolean): Promise<Injection<NodeJS.Timeout>> {
  const rec = ctx.record;
  const host = ctx.guestHost(spec);
  const h = host;
  const d = h.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
  let backends: AnyBackend[] = [];
  try {
    backends = ctx.backends(spec).backends;
  } catch {
    /* no PV device: its direct and SV-IO channels, if any */
  }
  const own = ownChannels(h, d, spec.who.device);
  if (backends.length === 0 && own.length === 0) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no PV, direct or SV-IO device channel for ${spec.what.kind}`);
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
  return { host, domid: d, state: timer };
}

/** Guests with a channel to act on: PV, or a device the guest drives itself. */
const hasChannels = (g: GenGuest): boolean => Boolean(g.vbd || g.vif || g.direct.length > 0 || g.svio.length > 0);

function checkRate(f: KindSpec<string, EventRateParams>, where: string): void {
  if (f.what.ratePerSec === undefined) throw new ConfigError(`${where}: ${f.what.kind} needs what.ratePerSec`);
}

const ratePerSec = { type: 'number', exclusiveMinimum: 0, maximum: 1_000_000 } as const;

export const evtchnSpurious: FaultKind<'evtchn.spurious', EventRateParams, NodeJS.Timeout> = {
  name: 'evtchn.spurious',
  description: 'extra notifications nobody sent, ratePerSec to the guest and the backend (or, for direct and SV-IO devices, the hardware); who: domain [+ device]',
  params: { ratePerSec },
  needsDomain: true,
  checkParams: checkRate,
  inject: (ctx, spec) => injectExtraEvents(ctx, spec, false),
  heal: (_ctx, timer) => clearInterval(timer),
  generate: {
    order: 50,
    eligible: hasChannels,
    make: (s) => ({ who: { domain: s.g.name }, what: { kind: 'evtchn.spurious', ratePerSec: 500 + s.nextInt(2000) }, when: s.when }),
  },
};

export const evtchnStorm: FaultKind<'evtchn.storm', EventRateParams, NodeJS.Timeout> = {
  name: 'evtchn.storm',
  description: 'a guest floods its backends (and its direct functions and SV-IO VIFs) with ratePerSec events; who: domain [+ device]',
  params: { ratePerSec },
  needsDomain: true,
  checkParams: checkRate,
  inject: (ctx, spec) => injectExtraEvents(ctx, spec, true),
  heal: (_ctx, timer) => clearInterval(timer),
  generate: {
    order: 60,
    eligible: hasChannels,
    make: (s) => ({ who: { domain: s.g.name }, what: { kind: 'evtchn.storm', ratePerSec: 20_000 + s.nextInt(30_000) }, when: s.when }),
  },
};
