/** backend.restart: a backend crashes and is restarted; the frontend reconnects. */
import type { FaultKind, NoParams } from './kind.js';
import { checkPvBackendTarget, domidOf, hasPv, pvDevice } from './common.js';

const description =
  'a backend crashes and is restarted; the frontend reconnects (blkfront resubmits what was in flight; netfront drops frames in flight); who: domain + device';

export const backendRestart: FaultKind<'backend.restart', NoParams> = {
  name: 'backend.restart',
  description,
  params: {},
  checkTarget: (f, where) => checkPvBackendTarget(f, where, description),
  instantaneous: () => true,
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const domid = domidOf(host, spec);
    await host.restartBackend(spec.who.domain!, spec.who.device!);
    return { host, domid };
  },
  generate: {
    order: 20,
    eligible: hasPv,
    make: (s) => ({ who: { domain: s.g.name, device: pvDevice(s) }, what: { kind: 'backend.restart' }, when: { at: s.at } }),
  },
};
