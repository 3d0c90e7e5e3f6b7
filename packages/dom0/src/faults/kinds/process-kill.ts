/**
 * process.kill: kill -9 a guest's runtime (dom0 reclaims its domain); or the hardware, or dom0's
 * I/O stack, down until healed (then back as a restart brings them).
 */
import { DOMID_HW } from '@ringvisor/shared';
import type { FaultKind, NoParams } from './kind.js';
import { domidOf } from './common.js';

export const processKill: FaultKind<'process.kill', NoParams, Array<() => Promise<void>>> = {
  name: 'process.kill',
  description:
    "kill -9 a guest runtime, and dom0 reclaims its domain; or, with runtime: hwsim, kill the hardware, or with runtime: dom0, dom0's I/O stack (every PV backend), down until healed (then back as a restart); who: domain, or host + runtime: hwsim | dom0",
  params: {},
  runtimes: ['hwsim', 'dom0'],
  needsDomain: true,
  endsGuest: true,
  // A guest's death is over once it happened; the hardware or dom0's I/O stack is down until healed.
  instantaneous: (f) => f.who.runtime === undefined,
  async inject(ctx, spec) {
    // The hardware or dom0's I/O stack: down until healed (then it comes back as a restart does).
    if (spec.who.runtime === 'hwsim' || spec.who.runtime === 'dom0') {
      const hs = ctx.hostsFor(spec);
      const revive: Array<() => Promise<void>> = [];
      for (const h of hs) revive.push(spec.who.runtime === 'hwsim' ? await h.killHwsim() : await h.killDom0());
      return { host: hs[0], domid: spec.who.runtime === 'hwsim' ? DOMID_HW : 0, state: revive };
    }
    const host = ctx.guestHost(spec);
    const domid = domidOf(host, spec);
    await host.killGuest(spec.who.domain!);
    return { host, domid };
  },
  async heal(_ctx, revive) {
    for (const r of revive) await r();
  },
  generate: {
    order: 290,
    ending: true,
    dealt: (c) => c.guests.length > 1,
    make(s) {
      // Never the last guest standing, and never one an earlier ending already took.
      const victim = s.pick(s.alive.filter((x) => s.alive.length > 1 && x !== s.alive[0]));
      s.end(victim.name);
      return { who: { domain: victim.name }, what: { kind: 'process.kill' }, when: { at: s.at } };
    },
  },
};
