/**
 * Frame faults on a LAN cable: what a lossy, misbehaving Ethernet does to frames — drop,
 * duplicate, reorder, corrupt — injected on frames leaving a port, seeded so a failing run replays.
 *
 * Why here and not on the link. The LAN carries datagrams; the guests' stacks above it (ARP, IP,
 * UDP checksums, TCP retransmission) exist to survive exactly these faults, so this is where a
 * fault schedule tests them. The control links underneath carry ordered streams and get only
 * TCP-like faults (shared/transport/toxics.ts); heartbeats are not frames and are never touched.
 *
 * Per frame, in this order, each with its own probability in [0, 1]:
 *   - drop:      the frame is not sent;
 *   - corrupt:   one byte after the 14-byte Ethernet header is XORed with a non-zero value (the
 *                header stays intact so the frame still reaches its destination, where an IPv4
 *                header or UDP/TCP checksum catches it); a header-only frame cannot be corrupted;
 *   - duplicate: the frame is sent twice, back to back;
 *   - reorder:   the frame is held back and sent right after the next frame that is sent. If no
 *                frame follows within REORDER_HOLD_MS it goes out alone (late, but not reordered).
 * Four draws are taken for every frame whatever the outcome, so changing one probability does not
 * shift the pattern of the others. Counters count what the receiver can observe: `reordered` only
 * when a later frame really went ahead.
 */
import { InvalidArgumentError, SplitMix32, type FrameFaultCounters, type FrameFaults } from '@ringvisor/shared';

// The shapes are the hardware contract's (hw.lan.faults): defined once, in shared.
export type { FrameFaultCounters, FrameFaults };

/** Longest a frame is held back waiting for a frame to overtake it. */
export const REORDER_HOLD_MS = 20;
const ETH_HEADER = 14;

export function newFrameFaultCounters(): FrameFaultCounters {
  return { dropped: 0, duplicated: 0, reordered: 0, corrupted: 0 };
}

function checkProbability(name: string, p: number | undefined): number {
  if (p === undefined) return 0;
  if (!(Number.isFinite(p) && p >= 0 && p <= 1)) throw new InvalidArgumentError(`frame faults: ${name} must be a probability in [0, 1], got ${p}`);
  return p;
}

/**
 * Applies one set of FrameFaults to a stream of frames. `emit` gets frames the faulter owns (fresh
 * copies), in the order they go on the wire; `counters` may be shared across successive faulters.
 */
export class FrameFaulter {
  readonly drop: number;
  readonly duplicate: number;
  readonly reorder: number;
  readonly corrupt: number;
  #rng: SplitMix32;
  #held: { frame: Uint8Array; copies: number } | undefined;
  #holdTimer: NodeJS.Timeout | undefined;

  constructor(
    faults: FrameFaults,
    private readonly emit: (frame: Uint8Array) => void,
    readonly counters: FrameFaultCounters = newFrameFaultCounters(),
  ) {
    this.drop = checkProbability('drop', faults.drop);
    this.duplicate = checkProbability('duplicate', faults.duplicate);
    this.reorder = checkProbability('reorder', faults.reorder);
    this.corrupt = checkProbability('corrupt', faults.corrupt);
    if (faults.seed !== undefined && !Number.isInteger(faults.seed))
      throw new InvalidArgumentError(`frame faults: seed must be an integer, got ${faults.seed}`);
    this.#rng = new SplitMix32(faults.seed ?? 0);
  }

  /** False when every probability is 0: the faulter would change nothing and need not be used. */
  get active(): boolean {
    return this.drop > 0 || this.duplicate > 0 || this.reorder > 0 || this.corrupt > 0;
  }

  /** Sends one frame through the faults (the caller's buffer is not retained). */
  apply(frame: Uint8Array): void {
    const rng = this.#rng;
    const dropIt = rng.next() < this.drop;
    const corruptIt = rng.next() < this.corrupt;
    const dupIt = rng.next() < this.duplicate;
    const holdIt = rng.next() < this.reorder;
    if (dropIt) {
      this.counters.dropped++;
      return;
    }
    const copy = frame.slice();
    if (corruptIt && copy.byteLength > ETH_HEADER) {
      const at = ETH_HEADER + rng.nextInt(copy.byteLength - ETH_HEADER);
      copy[at] ^= 1 + rng.nextInt(255);
      this.counters.corrupted++;
    }
    const copies = dupIt ? 2 : 1;
    if (dupIt) this.counters.duplicated++;
    if (holdIt && this.#held === undefined) {
      this.#held = { frame: copy, copies };
      this.#holdTimer = setTimeout(() => {
        this.#holdTimer = undefined;
        this.flush();
      }, REORDER_HOLD_MS);
      this.#holdTimer.unref();
      return;
    }
    this.#send(copy, copies);
    const held = this.#takeHeld();
    if (held !== undefined) {
      this.counters.reordered++;
      this.#send(held.frame, held.copies);
    }
  }

  /** Sends a held-back frame now (nothing overtook it, so it does not count as reordered). */
  flush(): void {
    const held = this.#takeHeld();
    if (held !== undefined) this.#send(held.frame, held.copies);
  }

  /** Forgets a held-back frame (the cable is gone); returns how many frames were lost. */
  discard(): number {
    const held = this.#takeHeld();
    return held === undefined ? 0 : held.copies;
  }

  #takeHeld(): { frame: Uint8Array; copies: number } | undefined {
    const held = this.#held;
    this.#held = undefined;
    if (this.#holdTimer !== undefined) clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    return held;
  }

  #send(frame: Uint8Array, copies: number): void {
    this.emit(frame);
    if (copies === 2) this.emit(frame.slice());
  }
}
