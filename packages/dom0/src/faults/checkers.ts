/**
 * Checkers: what a campaign proves, from the guests' own ledgers after healing and draining.
 *
 * block — every guest's block workload keeps a ledger (each write invoked, acknowledged or failed;
 *   generations per block) and reads every block back at the end. Classes: ok; lost (an
 *   acknowledged write reads back as never written); stale (an older acknowledged generation);
 *   torn (a block whose contents do not check); misdirected (the right writer's block at the
 *   wrong address, or another writer's block — the latter is also an isolation breach);
 *   unexpected (anything else); indeterminate (its last write failed: either content is right);
 *   unflushed (a writeback disk: an acknowledged write no completed flush covered, dropped or torn
 *   by a power loss — allowed, reported; every flushed write is judged strictly).
 * net — every UDP flow numbers and checksums its datagrams end to end: lost, duplicated,
 *   reordered, corrupted. UDP may lose, duplicate and reorder under faults; corruption delivered
 *   to an application is a failure.
 * isolation — breaches: a guest read another guest's data, or a stray DMA a guest programmed its
 *   direct device with (iommu.stray-dma) was not blocked, or the SV-IO engine honoured a message
 *   no device may honour (svio.hostile: each must be refused); `strayDma` and `hostileVif` count
 *   the attempts.
 * A guest whose runtime a plan killed is indeterminate as a whole: its ledger died with it.
 */
import type { GuestStats } from '@ringvisor/shared';

export interface BlockChecker {
  ok: number;
  lost: number;
  stale: number;
  torn: number;
  misdirected: number;
  unexpected: number;
  indeterminate: number;
  /** Acknowledged writes no completed flush covered, dropped or torn by a power loss (allowed; a writeback disk only). */
  unflushed: number;
}

export interface Checkers {
  block: BlockChecker;
  net: { lost: number; duplicated: number; reordered: number; corrupted: number };
  isolation: { breaches: number; strayDma: { attempted: number; blocked: number; unblocked: number }; hostileVif: HostileVifTally };
}

/** svio.hostile: hostile messages a guest's VIF driver sent, and how many the engine refused. */
export interface HostileVifTally {
  sent: number;
  refused: number;
  accepted: number;
}

export interface Verdict {
  verdict: 'pass' | 'fail';
  reasons: string[];
}

export function runCheckers(
  finals: Array<{ stats?: GuestStats; killed: boolean }>,
  strayDma: { attempted: number; blocked: number; unblocked: number } = { attempted: 0, blocked: 0, unblocked: 0 },
  hostileVif: HostileVifTally = { sent: 0, refused: 0, accepted: 0 },
): Checkers {
  const block: BlockChecker = { ok: 0, lost: 0, stale: 0, torn: 0, misdirected: 0, unexpected: 0, indeterminate: 0, unflushed: 0 };
  const net = { lost: 0, duplicated: 0, reordered: 0, corrupted: 0 };
  let breaches = 0;
  for (const { stats, killed } of finals) {
    if (!stats) continue;
    const b = stats.block;
    if (b) {
      if (killed) block.indeterminate += b.checked;
      else {
        const k = b.kinds;
        block.ok += b.checked - b.failures;
        block.lost += k.zero ?? 0;
        block.stale += k.stale ?? 0;
        block.torn += k.torn ?? 0;
        block.misdirected += (k.misdirected ?? 0) + (k.foreign ?? 0);
        block.unexpected += k.unexpected ?? 0;
        block.indeterminate += b.indeterminate;
        block.unflushed += b.unflushed ?? 0;
      }
      breaches += b.kinds.foreign ?? 0;
    }
    net.lost += stats.udp.lost;
    net.duplicated += stats.udp.duplicated;
    net.reordered += stats.udp.reordered;
    net.corrupted += stats.udp.corrupted;
  }
  // Every stray DMA must have been stopped: one that completed reached memory it had no right to;
  // every hostile VIF message refused: one honoured moved bytes no device may move.
  return { block, net, isolation: { breaches: breaches + strayDma.unblocked + hostileVif.accepted, strayDma: { ...strayDma }, hostileVif: { ...hostileVif } } };
}

/**
 * The verdict. `silentCorruption`: the plan made the disk flip bits without an error, which no
 * layer below the checker can see — then torn/unexpected/stale blocks are the checker doing its
 * job (reported, not failed); lost and misdirected blocks still fail.
 */
export function judge(c: Checkers, o: { silentCorruption: boolean; stalled: string[]; failedGuests: string[] }): Verdict {
  const reasons: string[] = [];
  const { block } = c;
  if (block.lost) reasons.push(`${block.lost} acknowledged writes lost`);
  if (block.misdirected) reasons.push(`${block.misdirected} blocks misdirected`);
  if (!o.silentCorruption) {
    if (block.torn) reasons.push(`${block.torn} blocks torn`);
    if (block.stale) reasons.push(`${block.stale} blocks stale`);
    if (block.unexpected) reasons.push(`${block.unexpected} blocks unexpected`);
  }
  if (c.isolation.breaches) reasons.push(`${c.isolation.breaches} isolation breaches`);
  if (c.net.corrupted) reasons.push(`${c.net.corrupted} corrupted datagrams delivered`);
  for (const g of o.stalled) reasons.push(`${g} made no progress after the faults healed`);
  for (const g of o.failedGuests) reasons.push(`${g} failed`);
  return { verdict: reasons.length ? 'fail' : 'pass', reasons };
}
