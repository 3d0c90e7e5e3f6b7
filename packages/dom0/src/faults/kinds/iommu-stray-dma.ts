/**
 * iommu.stray-dma: a guest programs its own direct device to DMA outside its memory or at another
 * domain's; every attempt must be blocked by the IOMMU or refused by the device (the checkers
 * judge the tally).
 */
import { ioMode } from '../../toolstack/attach/modes.js';
import { mixSeed } from '@ringvisor/shared';
import { guestControl } from '../../toolstack/clients.js';
import { directDeviceName } from '../../toolstack/host.js';
import { FaultTargetError } from '../errors.js';
import type { FaultKind } from './kind.js';
import { checkDirectTarget, waitFor } from './common.js';

export interface StrayDmaParams {
  /** Attempts per occurrence. */
  count?: number;
}

const description =
  "a guest programs its own direct device to DMA outside its memory or at another domain's (count); every attempt must be blocked by the IOMMU or refused by the device; who: domain + device (a direct vif<devid> | vbd<devid>)";

export const iommuStrayDma: FaultKind<'iommu.stray-dma', StrayDmaParams> = {
  name: 'iommu.stray-dma',
  description,
  params: { count: { type: 'integer', minimum: 1, maximum: 1000 } },
  checkTarget: (f, where) => checkDirectTarget(f, where, description),
  instantaneous: () => true,
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
    const domid = g.domain.domid;
    if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
    const configured = g.config.devices.some((dev) => ioMode(dev.mode)?.assignsFunctions === true && `${dev.type}${dev.devid}` === spec.who.device);
    const h = host;
    const d = domid;
    // A function still reclaimed (its heal running late on a loaded machine) is waited for, bounded.
    const assigned = () => h.functionsOf(d).some((f) => directDeviceName(f) === spec.who.device);
    if (!configured || !(await waitFor(async () => (assigned() ? true : undefined), 15_000)))
      throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no direct device ${spec.who.device} assigned`);
    const before = await host.iommuFaults();
    const r = await guestControl(g.peer).attack({ device: spec.who.device!, attack: 'stray-dma', count: spec.what.count ?? 8, seed: mixSeed(ctx.seed, ctx.seq) }, { timeoutMs: 30_000 });
    // Each attempt past the guest's memory leaves an IOMMU fault record; the rest the device refused.
    ctx.record.detail = { ...r, iommuFaults: (await host.iommuFaults()) - before };
    ctx.strayDma.attempted += r.sent ?? 0;
    ctx.strayDma.blocked += r.blocked ?? 0;
    ctx.strayDma.unblocked += r.completed ?? 0;
    ctx.attackers.add(`${host.config.name}/${spec.who.domain}`);
    return { host, domid };
  },
  generate: {
    order: 190,
    eligible: (g) => g.direct.length > 0,
    make: (s) => ({ who: { domain: s.g.name, device: s.pick(s.g.direct) }, what: { kind: 'iommu.stray-dma', count: 4 + s.nextInt(12) }, when: { at: s.at } }),
  },
};
