/**
 * A verdict about one device instance must be taken on the instance it was aimed at.
 *
 * svio.hostile asks a guest's driver to attack its VIF, then judges what the engine did (the VIF
 * stopped, each hostile message refused). On a loaded machine the guest's call can be held up
 * for seconds; if a reset or a hardware restart replaced the VIF meanwhile, the driver never saw
 * the old VIF's answer and the new VIF's counters started from zero: judging that as "accepted"
 * would report an isolation breach that nobody committed. So an attempt is judged only if the
 * VIF's generation (bumped each time it goes away) is the same before and after it; otherwise it
 * is aimed again at the VIF now there, a bounded number of times, and left without a verdict
 * (never a breach) if the VIF keeps changing.
 */
export interface AimOptions<T> {
  /** The target's generation now; undefined while it is away (the hardware restarting). */
  generation: () => number | undefined;
  /** Resolves true once the target is there to aim at (bounded by its own timeout). */
  ready: () => Promise<boolean>;
  /** One attempt, verdict material included. */
  attempt: () => Promise<T>;
  /** Attempts at most (default 3). */
  tries?: number;
}

export type AimOutcome<T> =
  /** `result` was taken on one instance of the target, `reaimed` attempts after one was replaced. */
  | { judged: true; result: T; reaimed: number }
  /** The target was replaced under every attempt (or never came back): no verdict. */
  | { judged: false; reaimed: number };

export async function aimAtOneInstance<T>(o: AimOptions<T>): Promise<AimOutcome<T>> {
  const tries = o.tries ?? 3;
  let reaimed = 0;
  for (let i = 0; i < tries; i++) {
    if (i > 0) reaimed++;
    if (!(await o.ready())) break;
    const before = o.generation();
    if (before === undefined) continue;
    const result = await o.attempt();
    if (o.generation() === before) return { judged: true, result, reaimed };
  }
  return { judged: false, reaimed };
}
