/** backend.pause: a backend stops consuming its rings (a wedged driver domain) until healed. */
import type { AnyBackend, FaultKind, NoParams } from './kind.js';
import { checkPvBackendTarget, hasPv, pvDevice } from './common.js';

const description = 'a backend stops consuming its rings (a wedged driver domain); who: domain + device';

export const backendPause: FaultKind<'backend.pause', NoParams, AnyBackend[]> = {
  name: 'backend.pause',
  description,
  params: {},
  checkTarget: (f, where) => checkPvBackendTarget(f, where, description),
  async inject(ctx, spec) {
    const t = ctx.backends(spec);
    for (const b of t.backends) b.pause();
    return { host: t.host, domid: t.backends[0].frontDomid, state: t.backends };
  },
  heal: (_ctx, backends) => backends.forEach((b) => b.resume()),
  generate: {
    order: 10,
    eligible: hasPv,
    make: (s) => ({ who: { domain: s.g.name, device: pvDevice(s) }, what: { kind: 'backend.pause' }, when: s.when }),
  },
};
