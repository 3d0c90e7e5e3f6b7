/**
 * disk.torn: the power goes — a writeback disk's volatile cache reaches the image only in part,
 * then the hardware comes back (a new simulator on the same image) and dom0 resubmits what it
 * never saw answered. Not in random campaigns: it needs a writeback disk (its own scenario).
 */
import { DOMID_HW, mixSeed } from '@ringvisor/shared';
import type { FaultKind } from './kind.js';
import { need } from './common.js';

export interface DiskTornParams {
  /** The chance each cached, unflushed sector reaches the image before the power goes. */
  writeProbability?: number;
}

const description =
  "the power goes: a writeback disk's volatile cache reaches the image only in part (each cached sector with writeProbability), the rest is lost, and the hardware comes back; acknowledged writes a flush covered must all be there, unflushed ones may be gone or torn (the ledger reports them as unflushed); who: host";

export const diskTorn: FaultKind<'disk.torn', DiskTornParams> = {
  name: 'disk.torn',
  description,
  params: { writeProbability: { type: 'number', minimum: 0, maximum: 1 } },
  owns: ['writeProbability'],
  checkTarget: (f, where) => need(f, 'host', where, description),
  async inject(ctx, spec) {
    const hs = ctx.hostsFor(spec);
    const details: Record<string, unknown> = {};
    for (const h of hs) {
      details[h.config.name] = await h.powerLoss(spec.what.writeProbability ?? 0.5, mixSeed(ctx.seed, ctx.seq));
      await h.restartHwsim();
    }
    ctx.record.detail = details;
    return { host: hs[0], domid: DOMID_HW };
  },
};
