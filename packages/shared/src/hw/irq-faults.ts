/**
 * Interrupt faults (fault plans' evtchn.lost / evtchn.delayed) held by the thread that raises a
 * device's interrupts — the hardware simulator for direct functions' MSIs and ws VIFs, each SV-IO
 * engine core for the VIFs it interrupts itself, a hosted VMApp for its models' virtual IRQs. An
 * interrupt for the domain is dropped (`lostToGuest`, a probability) or raised `delayMs` late;
 * with `lostToModel`, a kick of a device model's doorbell is ignored. Draws come from a seeded
 * stream. What recovers is the system's own: the guest's missed-event poll, a model's bounded
 * wait on its doorbell. Doorbells of real devices are posted writes and are never lost.
 *
 * Counts restart when a fault is set and survive its clearing, so the injector reads what a fault
 * did when it heals it. With `forMs` the fault ends by itself: the call that would clear it may
 * be held up by what it does (a hosted VMApp's control calls are relayed by its blocked vCPU).
 */
import { InvalidArgumentError } from '../errors.js';
import { SplitMix32 } from '../util/prng.js';

export interface InterruptFault {
  lostToGuest: number;
  /** Device models only: the probability that a kick of the model's doorbell is ignored. */
  lostToModel?: number;
  delayMs: number;
  seed: number;
  /** Ends by itself this long after it was set. */
  forMs?: number;
}

export interface InterruptFaultCounts {
  irqsLost: number;
  irqsDelayed: number;
  kicksLost: number;
}

const none = (): InterruptFaultCounts => ({ irqsLost: 0, irqsDelayed: 0, kicksLost: 0 });

export class InterruptFaults {
  private readonly faults = new Map<number, { f: InterruptFault; rng: SplitMix32; until: number }>();
  private readonly counts = new Map<number, InterruptFaultCounts>();

  /** Install (`f`) or clear (undefined) the fault on a domain's device interrupts. */
  set(domid: number, f: InterruptFault | undefined): void {
    if (!f) {
      this.faults.delete(domid);
      return;
    }
    this.faults.set(domid, { f, rng: new SplitMix32(f.seed >>> 0), until: f.forMs === undefined ? Infinity : performance.now() + f.forMs });
    this.counts.set(domid, none());
  }

  countsOf(domid: number): InterruptFaultCounts {
    return { ...(this.counts.get(domid) ?? none()) };
  }

  /** Every domain a fault was set on, with what it did. */
  allCounts(): Array<InterruptFaultCounts & { domid: number }> {
    return [...this.counts].map(([domid, c]) => ({ domid, ...c }));
  }

  /** Raise a domain's interrupt now, later, or never, as its fault says. */
  deliver(domid: number, raise: () => void): void {
    const e = this.active(domid);
    if (!e) return raise();
    const c = this.counts.get(domid)!;
    if (e.f.lostToGuest > 0 && e.rng.next() < e.f.lostToGuest) {
      c.irqsLost++;
      return;
    }
    if (e.f.delayMs > 0) {
      c.irqsDelayed++;
      setTimeout(raise, e.f.delayMs).unref();
      return;
    }
    raise();
  }

  /** A device model's doorbell rang: true when the fault says to ignore it. */
  dropKick(domid: number): boolean {
    const e = this.active(domid);
    if (!e || !e.f.lostToModel || e.rng.next() >= e.f.lostToModel) return false;
    this.counts.get(domid)!.kicksLost++;
    return true;
  }

  private active(domid: number): { f: InterruptFault; rng: SplitMix32 } | undefined {
    if (this.faults.size === 0) return undefined; // the common case costs one property load
    const e = this.faults.get(domid);
    if (e && performance.now() > e.until) {
      this.faults.delete(domid);
      return undefined;
    }
    return e;
  }
}

/** Add counts (one device's threads each hold their own). */
export function sumInterruptFaultCounts(...cs: InterruptFaultCounts[]): InterruptFaultCounts {
  return cs.reduce((a, c) => ({ irqsLost: a.irqsLost + c.irqsLost, irqsDelayed: a.irqsDelayed + c.irqsDelayed, kicksLost: a.kicksLost + c.kicksLost }), none());
}

/** A fault parameter off the wire: validated, or null/undefined to clear. */
export function parseInterruptFault(p: unknown, where: string): InterruptFault | undefined {
  if (p === null || p === undefined) return undefined;
  const o = p as Partial<Record<keyof InterruptFault, unknown>>;
  const prob = (k: 'lostToGuest' | 'lostToModel', v: unknown) => {
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new InvalidArgumentError(`${where}.${k}: a probability 0..1, got ${String(v)}`);
    return v;
  };
  const ms = (k: 'delayMs' | 'forMs', v: unknown, max: number) => {
    if (typeof v !== 'number' || !(v >= 0 && v <= max)) throw new InvalidArgumentError(`${where}.${k}: 0..${max} ms, got ${String(v)}`);
    return v;
  };
  if (typeof o.seed !== 'number' || !Number.isInteger(o.seed)) throw new InvalidArgumentError(`${where}.seed: an integer, got ${String(o.seed)}`);
  return {
    lostToGuest: prob('lostToGuest', o.lostToGuest ?? 0),
    ...(o.lostToModel !== undefined ? { lostToModel: prob('lostToModel', o.lostToModel) } : {}),
    delayMs: ms('delayMs', o.delayMs ?? 0, 60_000),
    seed: o.seed,
    ...(o.forMs !== undefined ? { forMs: ms('forMs', o.forMs, 3_600_000) } : {}),
  };
}
