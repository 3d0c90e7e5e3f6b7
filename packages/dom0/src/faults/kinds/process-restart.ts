/**
 * process.restart: reboot a guest; or crash and restart the hardware (`runtime: hwsim`), or
 * dom0's I/O stack (`runtime: dom0`).
 */
import { DOMID_HW } from '@ringvisor/shared';
import type { FaultKind, GenScenario, NoParams } from './kind.js';
import { domidOf } from './common.js';

/** Now and then the hardware or dom0's I/O stack instead of a guest (process.pause, process.restart). */
export function processTarget(s: GenScenario): { host: string; runtime: 'hwsim' | 'dom0' } | { domain: string } {
  const r = s.next();
  return r < 0.25 ? { host: s.g.host, runtime: 'hwsim' as const } : r < 0.45 ? { host: s.g.host, runtime: 'dom0' as const } : { domain: s.g.name };
}

export const processRestart: FaultKind<'process.restart', NoParams> = {
  name: 'process.restart',
  description:
    "reboot a guest (kill its runtime, reclaim its domain, build and boot it again: same disk region, same addresses); or, with runtime: hwsim, crash and restart the hardware (ws: kill -9 its process; devices re-attached, their queues redone, direct functions and SV-IO VIFs back); or, with runtime: dom0, restart dom0's I/O stack (every PV backend crashes at once and is offered again, the bridge forgets its MACs; the hypervisor and store go on); who: domain, or host + runtime: hwsim | dom0",
  params: {},
  runtimes: ['hwsim', 'dom0'],
  needsDomain: true,
  // It is the reboot: it does not wait for one.
  waitsForReboot: false,
  instantaneous: () => true,
  async inject(ctx, spec) {
    if (spec.who.runtime === 'dom0') {
      const hs = ctx.hostsFor(spec);
      const details: Record<string, unknown> = {};
      for (const h of hs) details[h.config.name] = await h.restartDom0();
      ctx.record.detail = details;
      return { host: hs[0], domid: 0 };
    }
    if (spec.who.runtime === 'hwsim') {
      const hs = ctx.hostsFor(spec);
      for (const h of hs) await h.restartHwsim();
      return { host: hs[0], domid: DOMID_HW };
    }
    const host = ctx.guestHost(spec);
    const domid = domidOf(host, spec);
    await host.restartGuest(spec.who.domain!);
    return { host, domid };
  },
  generate: {
    order: 100,
    make: (s) => ({ who: processTarget(s), what: { kind: 'process.restart' }, when: { at: s.at } }),
  },
};
