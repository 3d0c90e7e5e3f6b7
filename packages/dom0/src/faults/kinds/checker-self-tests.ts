/**
 * backend.lie and grant.unmap-early: blkback broken on purpose, so that a test can show the
 * checkers catch it. Refused unless RINGVISOR_TEST_FAULTS=1; never drawn by random campaigns.
 */
import { FaultTargetError } from '../errors.js';
import type { AnyBackend, FaultKind, InjectContext, Injection, KindSpec, NoParams } from './kind.js';
import { checkPvBackendTarget, checkVbdRingTarget } from './common.js';

type Flag = 'lieAboutWrites' | 'unmapEarly';
type Flagged = AnyBackend & Record<Flag, boolean>;

/** Sets `flag` on the vbd backends the fault names; the heal clears it. */
async function breakBlkback(ctx: InjectContext, spec: KindSpec, flag: Flag): Promise<Injection<Flagged[]>> {
  const t = ctx.backends(spec);
  const blk = t.backends.filter((b): b is Flagged => flag in b);
  if (blk.length === 0) throw new FaultTargetError(`${spec.id}: ${spec.what.kind} needs a vbd`);
  for (const b of blk) b[flag] = true;
  return { host: t.host, domid: t.backends[0].frontDomid, state: blk };
}

const lieDescription = 'checker self-test only (RINGVISOR_TEST_FAULTS=1): blkback acknowledges writes it never performs; who: domain + device';

export const backendLie: FaultKind<'backend.lie', NoParams, Flagged[]> = {
  name: 'backend.lie',
  description: lieDescription,
  params: {},
  testOnly: true,
  checkTarget: (f, where) => checkPvBackendTarget(f, where, lieDescription),
  inject: (ctx, spec) => breakBlkback(ctx, spec, 'lieAboutWrites'),
  heal: (_ctx, blk) => blk.forEach((b) => (b.lieAboutWrites = false)),
};

const unmapDescription =
  "checker self-test only (RINGVISOR_TEST_FAULTS=1): blkback unmaps a request's grants and answers it before the device has done its DMA, so the guest reuses its buffers under the device; who: domain + device (vbd)";

export const grantUnmapEarly: FaultKind<'grant.unmap-early', NoParams, Flagged[]> = {
  name: 'grant.unmap-early',
  description: unmapDescription,
  params: {},
  testOnly: true,
  checkTarget: (f, where) => checkVbdRingTarget(f, where, unmapDescription),
  inject: (ctx, spec) => breakBlkback(ctx, spec, 'unmapEarly'),
  heal: (_ctx, blk) => blk.forEach((b) => (b.unmapEarly = false)),
};
