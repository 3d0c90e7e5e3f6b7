/** svio.reset: the toolstack destroys the SV-IO VIF behind a guest's device under load; healing creates it again. */
import { ConfigError } from '@ringvisor/shared';
import type { FaultKind, NoParams } from './kind.js';
import { need } from './common.js';

const description =
  "the toolstack destroys the SV-IO VIF behind a guest's device under load (the device forgets its queues); healing creates it again and the guest's driver starts over on it (block requests resubmitted, frames in flight lost); who: domain + device (an SV-IO vif<devid> | vbd<devid> | cam<devid>)";

export const svioReset: FaultKind<'svio.reset', NoParams, { heal: () => Promise<{ vif: number }> }> = {
  name: 'svio.reset',
  description,
  params: {},
  checkTarget(f, where) {
    need(f, 'domain', where, description);
    need(f, 'device', where, description);
    if (!/^(vif|vbd|cam)\d+$/.test(f.who.device!)) throw new ConfigError(`${where}: svio.reset acts on an SV-IO device (vif<devid> | vbd<devid> | cam<devid> with mode: svio), not ${f.who.device}`);
  },
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
    const domid = g.domain.domid;
    const r = await host.resetVif(spec.who.domain!, spec.who.device!);
    ctx.record.detail = { vif: r.vif };
    return { host, domid, state: r };
  },
  async heal(ctx, r) {
    const back = await r.heal();
    ctx.record.detail = { ...ctx.record.detail, recreated: back.vif };
  },
  generate: {
    order: 200,
    eligible: (g) => g.svio.length > 0,
    make: (s) => ({ who: { domain: s.g.name, device: s.pick(s.g.svio) }, what: { kind: 'svio.reset' }, when: s.when }),
  },
};
