/**
 * A frontend that misbehaves on purpose (fault plans' ring and grant kinds): what a malicious or
 * buggy guest driver can do to its own shared ring, done by the guest's real blkfront through
 * its real memory, so dom0 meets it exactly as it would meet a hostile guest.
 *
 *   garbage        requests no backend could honour: unknown operations, > 11 segments,
 *                  first_sect > last_sect, sectors past the vbd — each must get an error status
 *   foreign-gref   a request naming a grant reference this guest never issued
 *   stale-gref     a request naming a reference this guest already revoked
 *   revoke-mapped  try to revoke the grants of requests dom0 has in flight (must be refused
 *                  while mapped: GTF_reading/GTF_writing)
 *   double-fetch   publish a valid request, then keep rewriting its slot (sector, segment count)
 *                  while the backend may be reading it; a backend that copies once sees one
 *                  consistent version: OKAY or an error, never a mix
 *   corrupt-index  publish an impossible req_prod: the backend must stop this ring (rogue) and
 *                  keep serving everyone else
 *
 * Attack requests carry ids no real request uses (ATTACK_ID_BASE + n) so their responses are
 * told apart from the guest's own, and the guest's own I/O carries on around them. The base is
 * above 2^53 on purpose: a backend that did not echo the u64 id bit for bit would lose them.
 */
import { BLKIF_OP_READ, BLKIF_OP_WRITE, REQ_PROD, SplitMix32, type BlkifRequest, type BlkifResponse, type FrontRing, type GrantTable } from '@ringvisor/shared';

export const ATTACK_ID_BASE = 0xf000_0000_0000_0000n;

export type BlkAttack = 'garbage' | 'foreign-gref' | 'stale-gref' | 'revoke-mapped' | 'double-fetch' | 'corrupt-index';
export const BLK_ATTACKS: readonly BlkAttack[] = ['garbage', 'foreign-gref', 'stale-gref', 'revoke-mapped', 'double-fetch', 'corrupt-index'];

/** What an attack did and how the backend answered (filled in as responses arrive). */
export interface AttackOutcome {
  sent: number;
  answered: number;
  okay: number;
  errors: number;
  /** revoke-mapped: revocations refused because dom0 had the grant mapped at that instant. */
  refused: number;
  /** revoke-mapped: revocations that came just after dom0 unmapped (allowed: nothing uses it). */
  revoked: number;
}

/** The parts of a connected blkfront an attack needs. */
export interface AttackSurface {
  ring: FrontRing<BlkifRequest, BlkifResponse>;
  grants: GrantTable;
  backendId: number;
  handle: number;
  sectors: number;
  allocFrame(): number;
  freeFrame(pfn: number): void;
  kick(): void;
  /** Grant refs of requests in flight now (revoke-mapped). */
  inFlightGrants(): number[];
}

export class BlkMisbehaviour {
  private next = 0n;
  readonly outcomes = new Map<BlkAttack, AttackOutcome>();
  private readonly pending = new Map<bigint, { attack: BlkAttack; release: () => void }>();
  private readonly rng: SplitMix32;

  constructor(seed: number) {
    this.rng = new SplitMix32(seed);
  }

  private outcome(a: BlkAttack): AttackOutcome {
    let o = this.outcomes.get(a);
    if (!o) this.outcomes.set(a, (o = { sent: 0, answered: 0, okay: 0, errors: 0, refused: 0, revoked: 0 }));
    return o;
  }

  /** Is this response one of ours? Then account for it (and release what it held). */
  takeResponse(rsp: BlkifResponse): boolean {
    const p = this.pending.get(rsp.id);
    if (!p) return rsp.id >= ATTACK_ID_BASE;
    this.pending.delete(rsp.id);
    p.release();
    const o = this.outcome(p.attack);
    o.answered++;
    if (rsp.status === 0) o.okay++;
    else o.errors++;
    return true;
  }

  /** Carry out `count` attacks of one kind now. Returns how many were sent. */
  run(s: AttackSurface, attack: BlkAttack, count: number): number {
    const o = this.outcome(attack);
    let sent = 0;
    for (let i = 0; i < count; i++) {
      if (attack === 'revoke-mapped') {
        // Sweeps a few milliseconds apart, each over the grants dom0 has mapped at that instant
        // (GTF_reading/GTF_writing set): the question is whether the hypervisor lets the guest
        // pull them away mid-DMA. Revoking one must fail; if it succeeded, the backend would DMA
        // into a page the guest may already be reusing.
        setTimeout(() => {
          for (const ref of s.inFlightGrants().filter((r) => r >= 0 && s.grants.inUse(r))) {
            if (s.grants.endAccess(ref)) o.revoked++;
            else o.refused++;
          }
        }, i * 3);
        sent++;
        continue;
      }
      if (attack === 'corrupt-index') {
        // Claim far more requests than the ring holds: only a rogue frontend publishes this.
        s.ring.page.store(REQ_PROD, (s.ring.reqProdPvt + s.ring.size * 4) >>> 0);
        s.kick();
        o.sent++;
        return 1;
      }
      if (s.ring.isFull()) break;
      const id = ATTACK_ID_BASE + this.next++;
      const release = this.put(s, attack, id);
      this.pending.set(id, { attack, release });
      sent++;
    }
    if (sent > 0 && attack !== 'revoke-mapped') {
      s.ring.pushRequests();
      s.kick();
    }
    o.sent += sent;
    return sent;
  }

  private put(s: AttackSurface, attack: BlkAttack, id: bigint): () => void {
    const r = this.rng;
    const req: BlkifRequest = { operation: BLKIF_OP_READ, nrSegments: 1, handle: s.handle, id, sectorNumber: 0n, segments: [{ gref: 0, firstSect: 0, lastSect: 7 }] };
    let release = () => {};
    switch (attack) {
      case 'garbage': {
        const pick = r.nextInt(4);
        if (pick === 0) req.operation = 0x40 + r.nextInt(0x80); // no such operation
        else if (pick === 1) req.nrSegments = 12 + r.nextInt(200); // more than BLKIF_MAX_SEGMENTS
        else if (pick === 2) req.segments = [{ gref: 0, firstSect: 7, lastSect: 1 }]; // inverted
        else req.sectorNumber = BigInt(s.sectors + r.nextInt(1 << 20)); // past the end of the vbd
        break;
      }
      case 'foreign-gref':
        // A reference this guest never issued: the far end of its table, handed out last (never,
        // in practice), or past the table altogether.
        req.segments = [{ gref: r.next() < 0.5 ? s.grants.entries - 1 - r.nextInt(16) : s.grants.entries + r.nextInt(1 << 16), firstSect: 0, lastSect: 7 }];
        break;
      case 'stale-gref': {
        const pfn = s.allocFrame();
        const ref = s.grants.grantAccess(s.backendId, pfn, false);
        // Revoked before use — and held, so the guest's own next grant cannot reuse the number
        // (then it would not be stale, just another of the guest's pages).
        s.grants.endAccess(ref, { hold: true });
        req.operation = BLKIF_OP_WRITE;
        req.segments = [{ gref: ref, firstSect: 0, lastSect: 7 }];
        release = () => {
          s.grants.releaseRef(ref);
          s.freeFrame(pfn);
        };
        break;
      }
      case 'double-fetch': {
        // A valid read of this guest's own first block into its own frame...
        const pfn = s.allocFrame();
        const ref = s.grants.grantAccess(s.backendId, pfn, false);
        req.segments = [{ gref: ref, firstSect: 0, lastSect: 7 }];
        const idx = s.ring.reqProdPvt;
        const slot = 64 + ((idx & (s.ring.size - 1)) * 112);
        // ...whose slot is rewritten for a while after it is published (after this push) — but
        // only while the slot still holds it: once rsp_cons passes it the slot is this guest's
        // next request, and scribbling on that would be self-harm, not an attack on dom0.
        const view = s.ring.page.view;
        let flips = 0;
        const tamper = () => {
          if (flips++ >= 200 || ((s.ring.rspCons - idx) | 0) > 0) return;
          view.setUint8(slot + 1, flips % 2 ? 200 : 1); // nr_segments: absurd / valid
          view.setBigUint64(slot + 16, flips % 2 ? 0xffff_ffffn : 0n, true); // sector: past the end / 0
          s.ring.page.sync?.wroteBytes(slot, 24); // across a link, the peer's copy changes too
          setImmediate(tamper);
        };
        setImmediate(tamper);
        release = () => {
          flips = 1_000;
          s.grants.endAccess(ref);
          s.freeFrame(pfn);
        };
        break;
      }
      default:
        break;
    }
    s.ring.putRequest(req);
    return release;
  }
}
