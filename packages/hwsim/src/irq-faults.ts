/**
 * Interrupt faults of the devices a guest drives itself — its direct functions' MSIs and its SV-IO
 * VIFs' interrupts (fault plans' evtchn.lost / evtchn.delayed): an interrupt for the domain is
 * dropped (`lostToGuest`, a probability) or raised `delayMs` late, drawn from a seeded stream.
 * What recovers a lost one is the guest's own missed-event poll, as Linux's irqpoll does.
 * Doorbells are not lost: they are posted writes to the device, not messages that can go astray.
 *
 * Each thread that raises interrupts holds its own table (the simulator's for functions and ws
 * VIFs, each SV-IO core's for the VIFs it runs in threads); counts restart when a fault is set
 * and survive its clearing, so the caller can read what a fault did after healing it.
 */
import { InvalidArgumentError, SplitMix32 } from '@ringvisor/shared';

export interface IrqFault {
  lostToGuest: number;
  delayMs: number;
  seed: number;
}

export interface IrqFaultCounts {
  lost: number;
  delayed: number;
}

export class IrqFaults {
  private readonly faults = new Map<number, { f: IrqFault; rng: SplitMix32 }>();
  private readonly counts = new Map<number, IrqFaultCounts>();

  /** Install (`f`) or clear (undefined) the fault on a domain's device interrupts. */
  set(domid: number, f: IrqFault | undefined): void {
    if (!f) {
      this.faults.delete(domid);
      return;
    }
    this.faults.set(domid, { f, rng: new SplitMix32(f.seed >>> 0) });
    this.counts.set(domid, { lost: 0, delayed: 0 });
  }

  countsOf(domid: number): IrqFaultCounts {
    return { ...(this.counts.get(domid) ?? { lost: 0, delayed: 0 }) };
  }

  /** Raise a domain's interrupt now, later, or never, as its fault says. */
  deliver(domid: number, raise: () => void): void {
    const e = this.faults.get(domid);
    if (!e) return raise();
    const c = this.counts.get(domid)!;
    if (e.f.lostToGuest > 0 && e.rng.next() < e.f.lostToGuest) {
      c.lost++;
      return;
    }
    if (e.f.delayMs > 0) {
      c.delayed++;
      setTimeout(raise, e.f.delayMs).unref();
      return;
    }
    raise();
  }
}

/** An `hw.irq.faults` fault parameter: validated, or null to clear. */
export function parseIrqFault(p: unknown, where: string): IrqFault | undefined {
  if (p === null || p === undefined) return undefined;
  const o = p as Partial<Record<keyof IrqFault, unknown>>;
  const lost = o.lostToGuest ?? 0;
  const delay = o.delayMs ?? 0;
  if (typeof lost !== 'number' || !(lost >= 0 && lost <= 1)) throw new InvalidArgumentError(`${where}.lostToGuest: a probability 0..1, got ${String(lost)}`);
  if (typeof delay !== 'number' || !(delay >= 0 && delay <= 60_000)) throw new InvalidArgumentError(`${where}.delayMs: 0..60000, got ${String(delay)}`);
  if (typeof o.seed !== 'number' || !Number.isInteger(o.seed)) throw new InvalidArgumentError(`${where}.seed: an integer, got ${String(o.seed)}`);
  return { lostToGuest: lost, delayMs: delay, seed: o.seed };
}
