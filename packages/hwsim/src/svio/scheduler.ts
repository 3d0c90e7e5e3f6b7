/**
 * The QoS scheduler of one SV-IO core: which of the VIFs placed on the core takes the core's next
 * slice of work, so that VIFs with work share the core — and the device time it spends for them —
 * in proportion to their weights, each under an optional credit limit.
 *
 * Deficit round robin (Shreedhar & Varghese, SIGCOMM 1995) over the VIFs that have work:
 *   - each round, every active VIF's deficit grows by QUANTUM × weight / 100 bytes, and the VIF
 *     runs while the next message's cost fits in its deficit (cost: the bytes the message moves,
 *     at least one queue slot, so a flood of empty messages is charged too);
 *   - a VIF that runs out of work leaves the round and loses its deficit (no hoarding while idle);
 *     one that still has work keeps the remainder for the next round;
 *   - rounds follow each other on the core's event loop (setImmediate), so doorbells, frames from
 *     the wire and management requests are served between rounds, never starved by one.
 * Over a backlogged interval each VIF's service is its weight's share within one maximum message
 * per round — the property the tests check.
 *
 * A credit limit (`rate`, netback's `bytes,usec`) caps a VIF whatever its weight: a message larger
 * than the credit left in the window waits, the VIF parks, and a timer for the next window brings
 * it back. Like netback's, it limits what the guest asks of the device (transmit, block I/O);
 * frames from the wire are not held back by it.
 */
import { TxCredit, type CreditLimit } from '@ringvisor/shared';

/** Bytes of deficit a weight-100 VIF gains per round: one largest block request (4 segments of 4 KiB). */
export const QUANTUM = 16 * 1024;

/** What a VIF's turn ended on. */
export type TurnEnd = 'idle' | 'budget' | 'blocked';

export interface Schedulable {
  readonly id: number;
  /**
   * Run messages while `admit(cost)` lets each in. `idle`: nothing left to take; `budget`: the
   * next message was refused admission (kept, it runs first next turn); `blocked`: the VIF waits
   * for the guest (room on its incoming queue) and will be woken.
   */
  turn(admit: (cost: number) => boolean): TurnEnd;
  /** Stopped VIFs (a rogue ring) leave the scheduler. */
  readonly stopReason: string | undefined;
}

export interface VifQos {
  weight: number;
  rate?: CreditLimit;
}

export interface SchedCounters {
  /** Turns the VIF was given, bytes it was charged, turns ended by its credit limit. */
  turns: number;
  served: number;
  throttled: number;
  /** Turns that ended with the VIF leaving the round: nothing to take (idle), or no room to answer (blocked). */
  idle: number;
  blocked: number;
}

interface Entry {
  p: Schedulable;
  qos: VifQos;
  credit: TxCredit;
  deficit: number;
  active: boolean;
  /** Parked on its credit limit until this timer fires. */
  parked: NodeJS.Timeout | undefined;
  counters: SchedCounters;
}

export class VifScheduler {
  private readonly entries = new Map<number, Entry>();
  /** Active VIFs in round order. */
  private readonly active: Entry[] = [];
  private next: NodeJS.Immediate | undefined;
  private inRound = false;
  rounds = 0;

  add(p: Schedulable, qos: VifQos): void {
    this.remove(p.id);
    this.entries.set(p.id, { p, qos, credit: new TxCredit(qos.rate), deficit: 0, active: false, parked: undefined, counters: { turns: 0, served: 0, throttled: 0, idle: 0, blocked: 0 } });
  }

  remove(id: number): void {
    const e = this.entries.get(id);
    if (!e) return;
    if (e.parked) clearTimeout(e.parked);
    this.entries.delete(id);
    const i = this.active.indexOf(e);
    if (i >= 0) this.active.splice(i, 1);
  }

  setQos(id: number, qos: VifQos): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.qos = qos;
    e.credit = new TxCredit(qos.rate);
  }

  /** A VIF's QoS state for its saved record: the deficit it carries, the credit left in its window. */
  saveQos(id: number): { deficit: number; credit: number | null } | undefined {
    const e = this.entries.get(id);
    return e ? { deficit: e.deficit, credit: e.credit.credit } : undefined;
  }

  /** A restored VIF's QoS state (added with `add` first). */
  restoreQos(id: number, s: { deficit: number; credit: number | null }): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.deficit = s.deficit;
    e.credit.resumeWith(s.credit);
  }

  counters(id: number): SchedCounters | undefined {
    const e = this.entries.get(id);
    return e ? { ...e.counters } : undefined;
  }

  /** Work arrived for a VIF (its doorbell, room on its incoming queue): it joins the round. */
  wake(id: number): void {
    const e = this.entries.get(id);
    if (!e || e.active || e.parked) return;
    e.active = true;
    this.active.push(e);
    // An idle core serves a doorbell at once; a busy one on its next round.
    if (!this.inRound && !this.next) this.round();
  }

  stop(): void {
    if (this.next) clearImmediate(this.next);
    this.next = undefined;
    for (const e of this.entries.values()) if (e.parked) clearTimeout(e.parked);
    this.entries.clear();
    this.active.length = 0;
  }

  private round(): void {
    this.next = undefined;
    this.inRound = true;
    this.rounds++;
    try {
      // Each VIF active at the start of the round gets one turn; wakes during it join the next.
      for (const e of this.active.splice(0)) {
        if (!this.entries.has(e.p.id)) continue;
        e.deficit += (QUANTUM * e.qos.weight) / 100;
        let creditShort = false;
        let refused = false;
        const admit = (cost: number): boolean => {
          if (cost > e.deficit) return (refused = true), false;
          if (!e.credit.take(cost)) {
            creditShort = refused = true;
            return false;
          }
          e.deficit -= cost;
          e.counters.served += cost;
          return true;
        };
        e.counters.turns++;
        // A pass takes at most a queue's worth; a VIF whose deficit is not spent yet (many small
        // messages) goes on, or small-message VIFs would get less than their weight. Bounded:
        // each pass spends at least one message of the deficit or ends the turn.
        let end: TurnEnd;
        do end = e.p.turn(admit);
        while (end === 'budget' && !refused && e.p.stopReason === undefined);
        if (e.p.stopReason !== undefined) {
          this.remove(e.p.id);
          continue;
        }
        if (end === 'budget' && creditShort) {
          // Over its credit limit: park until the window replenishes (its deficit is kept).
          e.counters.throttled++;
          e.active = false;
          e.parked = setTimeout(() => {
            e.parked = undefined;
            this.wake(e.p.id);
          }, Math.max(1, Math.ceil(e.credit.msUntilReplenish())));
          e.parked.unref();
        } else if (end === 'budget') {
          this.active.push(e);
        } else {
          e.counters[end]++;
          e.active = false;
          e.deficit = 0;
        }
      }
    } finally {
      this.inRound = false;
    }
    if (this.active.length > 0 && !this.next) this.next = setImmediate(() => this.round());
  }
}
