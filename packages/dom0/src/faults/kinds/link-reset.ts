/** link.reset (ws): a guest's link to dom0 is reset; the guest loses dom0, exits, and its domain is reclaimed. */
import type { FaultKind, NoParams } from './kind.js';
import { domidOf } from './common.js';

export const linkReset: FaultKind<'link.reset', NoParams> = {
  name: 'link.reset',
  description: 'ws: a runtime link is reset (the runtime loses dom0; a guest is reclaimed); who: domain',
  params: {},
  actsOn: "a guest's or the hardware's link to dom0",
  needsDomain: true,
  endsGuest: true,
  instantaneous: () => true,
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const domid = domidOf(host, spec);
    host.resetLink(spec.who.domain!);
    return { host, domid };
  },
  generate: {
    order: 300,
    ending: true,
    dealt: (c) => c.transport === 'ws' && c.guests.length > 2,
    make(s) {
      // Never the last guest standing, and never one an earlier ending already took.
      const victim = s.pick(s.alive.filter((x) => s.alive.length > 1 && x !== s.alive[0]));
      s.end(victim.name);
      return { who: { domain: victim.name }, what: { kind: 'link.reset' }, when: { at: s.at } };
    },
  },
};
