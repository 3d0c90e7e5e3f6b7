/**
 * The guest's own blkfront misbehaving on its own ring (domU's blkfront/misbehave.ts, over
 * `guest.attack`): ring.garbage, ring.foreign-gref, ring.stale-gref, ring.double-fetch,
 * ring.corrupt-index and grant.revoke-mapped. dom0 meets them exactly as it would meet a hostile
 * guest; the guest's device stats say how dom0 answered.
 */
import { mixSeed } from '@ringvisor/shared';
import { guestControl } from '../../toolstack/clients.js';
import type { Host } from '../../toolstack/host.js';
import { FaultTargetError } from '../errors.js';
import type { FaultKind } from './kind.js';
import { checkVbdRingTarget, vbdName } from './common.js';

export interface RingAttackParams {
  /** Attacks per occurrence. */
  count?: number;
}

/** What a healed ring.corrupt-index resets: the backend of that ring. */
export interface StoppedRing {
  h: Host;
  spec: { who: { domain?: string; device?: string } };
}

function ringAttack<N extends string>(name: N, attack: string, order: number, description: string, opts: { resetsOnHeal?: boolean } = {}): FaultKind<N, RingAttackParams, StoppedRing> {
  return {
    name,
    description,
    params: { count: { type: 'integer', minimum: 1, maximum: 1000 } },
    checkTarget: (f, where) => checkVbdRingTarget(f, where, description),
    instantaneous: () => !opts.resetsOnHeal,
    async inject(ctx, spec) {
      const host = ctx.guestHost(spec);
      const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
      const domid = g.domain.domid;
      if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
      const r = await guestControl(g.peer).attack({ device: spec.who.device!, attack, count: spec.what.count ?? 8, seed: mixSeed(ctx.seed, ctx.seq) }, { timeoutMs: 5_000 });
      ctx.record.detail = { sent: r.sent ?? 0 };
      ctx.attackers.add(`${host.config.name}/${spec.who.domain}`);
      // The backend stopped that ring; what a toolstack does about a rogue frontend's device
      // is reset it: healing restarts the backend and the frontend reconnects.
      return { host, domid, ...(opts.resetsOnHeal ? { state: { h: host, spec } } : {}) };
    },
    async heal(ctx, { h, spec }) {
      await h.restartBackend(spec.who.domain!, spec.who.device!).catch((e) => ctx.log.warn({ err: e }, 'backend reset failed'));
    },
    generate: {
      order,
      eligible: (g) => Boolean(g.vbd),
      make: (s) =>
        opts.resetsOnHeal
          ? { who: { domain: s.g.name, device: vbdName(s.g)! }, what: { kind: name }, when: s.when }
          : { who: { domain: s.g.name, device: vbdName(s.g)! }, what: { kind: name, count: 4 + s.nextInt(12) }, when: { at: s.at } },
    },
  };
}

export const ringGarbage = ringAttack(
  'ring.garbage',
  'garbage',
  110,
  'a guest frontend publishes requests no backend can honour (bad op, > 11 segments, inverted segment, past the vbd); count; who: domain + device (vbd)',
);
export const ringForeignGref = ringAttack('ring.foreign-gref', 'foreign-gref', 120, 'a guest frontend names grant refs it never issued; count; who: domain + device (vbd)');
export const ringStaleGref = ringAttack('ring.stale-gref', 'stale-gref', 130, 'a guest frontend names grant refs it already revoked; count; who: domain + device (vbd)');
export const ringDoubleFetch = ringAttack('ring.double-fetch', 'double-fetch', 140, 'a guest frontend rewrites requests after publishing them (TOCTOU); count; who: domain + device (vbd)');
export const ringCorruptIndex = ringAttack(
  'ring.corrupt-index',
  'corrupt-index',
  150,
  'a guest frontend publishes an impossible req_prod; the backend stops that ring; healing restarts the backend; who: domain + device (vbd)',
  { resetsOnHeal: true },
);
export const grantRevokeMapped = ringAttack(
  'grant.revoke-mapped',
  'revoke-mapped',
  160,
  'a guest tries to revoke grants dom0 has mapped for in-flight I/O (must be refused); count; who: domain + device (vbd)',
);
