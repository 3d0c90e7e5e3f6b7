/**
 * QueueService — the device end of one request/completion queue, shared by every device.
 *
 * A doorbell (`kick`) runs one *pass*: consume at most `ring.size` requests, each copied out of
 * shared memory once by the ring (the private copy the handler validates), answer each with the
 * handler's response, publish the responses, and raise the interrupt only when
 * RING_PUSH_RESPONSES_AND_CHECK_NOTIFY says the driver asked for one. Then
 * RING_FINAL_CHECK_FOR_REQUESTS: if requests are still waiting (the pass hit its bound, or the
 * driver queued more meanwhile) another pass is scheduled with setImmediate — never looped on
 * synchronously, so one busy queue cannot starve the rest of the simulator; if the ring is empty,
 * req_event is armed and re-checked (closing the lost wake-up race) and the queue sleeps until
 * the next doorbell.
 * A driver whose req_prod runs more than a ring's worth ahead (RogueRingError) has the queue
 * stopped: responses for requests already handled are still published, nothing more is read,
 * and later doorbells are ignored until the queue is attached afresh.
 */
import { RogueRingError, type BackRing } from '@ringvisor/shared';

export interface QueueStats {
  doorbells: number;
  passes: number;
  requests: number;
  /** Passes that hit the ring-size bound and were continued on a later turn. */
  deferred: number;
  irqs: number;
  irqsSuppressed: number;
  rogue: number;
}

export function newQueueStats(): QueueStats {
  return { doorbells: 0, passes: 0, requests: 0, deferred: 0, irqs: 0, irqsSuppressed: 0, rogue: 0 };
}

export interface QueueServiceOptions<Req, Rsp> {
  ring: BackRing<Req, Rsp>;
  /** Turn one private request copy into its response. Must not throw: failures become statuses. */
  handle: (req: Req) => Rsp;
  /** Raise the device interrupt. */
  irq: () => void;
  /** Told once when the queue stops because the driver's indices are impossible. */
  onRogue?: (err: RogueRingError) => void;
}

export class QueueService<Req, Rsp> {
  readonly ring: BackRing<Req, Rsp>;
  readonly stats: QueueStats = newQueueStats();
  private stoppedReason: string | undefined;
  private scheduled: NodeJS.Immediate | undefined;
  private running = false;
  private rekick = false;

  constructor(private readonly options: QueueServiceOptions<Req, Rsp>) {
    this.ring = options.ring;
  }

  get stopped(): boolean {
    return this.stoppedReason !== undefined;
  }

  get stopReason(): string | undefined {
    return this.stoppedReason;
  }

  /** The doorbell. Safe to call at any time; a stopped queue ignores it. */
  kick(): void {
    this.stats.doorbells++;
    if (this.stopped) return;
    this.pass();
  }

  /** Stop serving: nothing more is read from the ring and no pass is left scheduled. */
  stop(reason: string): void {
    if (this.stoppedReason === undefined) this.stoppedReason = reason;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = setImmediate(() => {
      this.scheduled = undefined;
      if (!this.stopped) this.pass();
    });
  }

  private pass(): void {
    if (this.running) {
      // Re-entered from inside a pass (e.g. a synchronous IRQ handler queued more work and rang
      // the doorbell): remember it, and the current pass schedules a follow-up.
      this.rekick = true;
      return;
    }
    this.running = true;
    this.rekick = false;
    const { ring } = this;
    let n = 0;
    let more = false;
    try {
      this.stats.passes++;
      try {
        for (; n < ring.size; n++) {
          const req = ring.takeRequest();
          if (req === undefined) break;
          this.stats.requests++;
          ring.putResponse(this.options.handle(req));
        }
      } catch (e) {
        this.rogueStop(e);
      }
      // Publish whatever was answered, even on a rogue stop: those requests were served.
      if (ring.pushResponses()) {
        this.stats.irqs++;
        this.options.irq();
      } else if (n > 0) {
        this.stats.irqsSuppressed++;
      }
      if (!this.stopped) {
        try {
          // Not empty: more work (no event armed). Empty: req_event armed, then re-checked.
          more = ring.finalCheckForRequests();
          if (more && n === ring.size) this.stats.deferred++;
        } catch (e) {
          this.rogueStop(e);
        }
      }
    } finally {
      this.running = false;
    }
    if (more || this.rekick) this.schedule();
  }

  private rogueStop(e: unknown): void {
    if (!(e instanceof RogueRingError)) throw e;
    this.stats.rogue++;
    this.stop(e.message);
    this.options.onRogue?.(e);
  }
}
