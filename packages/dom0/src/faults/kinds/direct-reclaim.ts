/** direct.reclaim: the toolstack takes a direct device's function away while the guest drives it; healing assigns a clean one. */
import type { Host } from '../../toolstack/host.js';
import type { FaultKind, NoParams } from './kind.js';
import { checkDirectTarget } from './common.js';

const description =
  "the toolstack takes a direct device's function away while the guest drives it (a migration drill: bus master off, FLR, IOMMU context torn down); healing assigns a clean function again and the guest's driver starts over; who: domain + device (a direct vif<devid> | vbd<devid>)";

export interface Reclaimed {
  h: Host;
  spec: { who: { domain?: string; device?: string } };
}

export const directReclaim: FaultKind<'direct.reclaim', NoParams, Reclaimed> = {
  name: 'direct.reclaim',
  description,
  params: {},
  checkTarget: (f, where) => checkDirectTarget(f, where, description),
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
    const domid = g.domain.domid;
    const h = host;
    const r = await h.reclaimFunction(spec.who.domain!, spec.who.device!);
    ctx.record.detail = { rid: r.rid, steps: r.steps, dropped: r.dropped };
    return { host, domid, state: { h, spec } };
  },
  async heal(ctx, { h, spec }) {
    const back = await h.reattachFunction(spec.who.domain!, spec.who.device!);
    ctx.record.detail = { ...ctx.record.detail, reassigned: back.rid };
  },
  generate: {
    order: 180,
    eligible: (g) => g.direct.length > 0,
    make: (s) => ({ who: { domain: s.g.name, device: s.pick(s.g.direct) }, what: { kind: 'direct.reclaim' }, when: s.when }),
  },
};
