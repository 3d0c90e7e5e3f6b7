/**
 * process.pause: freeze a runtime (SIGSTOP, or its thread blocked) until healed; with
 * `runtime: dom0`, every PV backend of the host stops consuming.
 */
import { DOMID_HW } from '@ringvisor/shared';
import { MAX_FREEZE_MS, type FaultKind, type NoParams } from './kind.js';
import { domidOf } from './common.js';
import { processTarget } from './process-restart.js';

export const processPause: FaultKind<'process.pause', NoParams, Array<() => void>> = {
  name: 'process.pause',
  description: 'freeze a runtime (SIGSTOP, or its thread blocked), resume on heal; with runtime: dom0, every PV backend of the host stops consuming; who: domain, or host + runtime: hwsim | dom0',
  params: {},
  runtimes: ['hwsim', 'dom0'],
  needsDomain: true,
  async inject(ctx, spec) {
    if (spec.who.runtime === 'dom0') {
      const hs = ctx.hostsFor(spec);
      const thaws = hs.map((h) => h.freezeDom0());
      return { host: hs[0], domid: 0, state: thaws };
    }
    if (spec.who.runtime === 'hwsim') {
      const hs = ctx.hostsFor(spec);
      const thaws: Array<() => void> = [];
      for (const h of hs) thaws.push(await h.freezeHwsim(Math.min(MAX_FREEZE_MS, ((spec.when.for ?? 60) + 5) * 1000)));
      return { host: hs[0], domid: DOMID_HW, state: thaws };
    }
    const host = ctx.guestHost(spec);
    const domid = domidOf(host, spec);
    const thaw = await host.freezeGuest(spec.who.domain!, Math.min(MAX_FREEZE_MS, ((spec.when.for ?? 60) + 5) * 1000));
    return { host, domid, state: [thaw] };
  },
  heal: (_ctx, thaws) => thaws.forEach((t) => t()),
  generate: {
    order: 90,
    make: (s) => ({ who: processTarget(s), what: { kind: 'process.pause' }, when: s.when }),
  },
};
