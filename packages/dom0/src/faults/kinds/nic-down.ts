/** nic.down: the physical NIC loses carrier (dom0's NIC, its direct functions and SV-IO VIFs) until healed. */
import type { Host } from '../../toolstack/host.js';
import type { FaultKind, NoParams } from './kind.js';

export const nicDown: FaultKind<'nic.down', NoParams, Host[]> = {
  name: 'nic.down',
  description: 'the physical NIC loses carrier; who: host',
  params: {},
  async inject(ctx, spec) {
    const hs = ctx.hostsFor(spec);
    for (const h of hs) await h.setNicLink(false);
    return { host: hs[0], domid: 0, state: hs };
  },
  async heal(_ctx, hs) {
    for (const h of hs) await h.setNicLink(true).catch(() => {});
  },
  generate: {
    order: 80,
    make: (s) => ({ who: { host: s.g.host }, what: { kind: 'nic.down' }, when: s.when }),
  },
};
