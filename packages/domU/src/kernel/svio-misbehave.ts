/**
 * A guest's VIF driver turned hostile (fault plans' svio.hostile): what a buggy or malicious
 * driver can do to its own SV-IO VIF, for the engine to contain.
 *
 *   garbage      messages no device can honour — an unknown type, a frame too short, buffers
 *                outside the guest's memory, block segments inverted or past the partition —
 *                each must be answered with an error status, and the VIF keeps serving
 *   flood        the driver stops taking answers and keeps the outgoing queue full of garbage:
 *                the engine holds at most a queue's worth of answers and back-pressures, it does
 *                not buffer without end; the driver then takes everything (none of its own
 *                answers is lost)
 *   rogue-index  the driver publishes an impossible producer index: the engine stops the VIF
 *                (a rogue ring) and says so in its STATUS; only a reset (svio.reset) brings it back
 *
 * Garbage carries ids the driver never uses (the top bit set; drivers' ids stay below it), so
 * its answers are `unexpected` to the driver and never complete a request of its own. The bad
 * messages are chosen so that none can succeed: a hostile driver must not corrupt the guest's
 * own data behind the block checker's back.
 */
import { QUEUE_CONS, QUEUE_PROD, SVIO_ERR_ROGUE, SVIO_REG, SVIO_STATUS_ERROR, VIF_READ, VIF_RX_POST, VIF_TX, VIF_WRITE, SplitMix32, vifMessage, type VifMessage } from '@ringvisor/shared';
import type { OpenVif } from './svio.js';

export const VIF_ATTACKS = ['garbage', 'flood', 'rogue-index'] as const;
export type VifAttack = (typeof VIF_ATTACKS)[number];

/** Ids of hostile messages: never a driver's (drivers' ids stay below 2^31). */
export const VIF_ATTACK_ID_BASE = 0x8000_0000;

export interface VifAttackOutcome {
  attack: VifAttack;
  /** Hostile messages published on the outgoing queue. */
  sent: number;
  /** flood: how long the driver left its answers on the incoming queue. */
  heldMs?: number;
  /** rogue-index: the engine stopped the VIF and said so in its STATUS. */
  stopped?: boolean;
}

export interface HostileVifDriver {
  readonly currentVif: OpenVif;
  holdInterrupts(on: boolean): void;
}

/** One message that must fail, of a shape the VIF's kind parses. */
function badMessage(kind: 'net' | 'blk' | 'cam', i: number, rng: SplitMix32, frames: number): VifMessage {
  const id = (VIF_ATTACK_ID_BASE + i) >>> 0;
  const outside = frames + 16 + rng.nextInt(1 << 20);
  if (kind === 'blk') {
    switch (i % 5) {
      case 0:
        return vifMessage({ type: 0xee, id });
      case 1:
        return vifMessage({ type: VIF_READ, id, sector: 0n, segments: [] });
      case 2:
        return vifMessage({ type: VIF_WRITE, id, sector: 0n, segments: [{ gfn: 1, first: 7, last: 2 }] });
      case 3:
        return vifMessage({ type: VIF_READ, id, sector: 0n, segments: [{ gfn: outside, first: 0, last: 7 }] });
      default:
        return vifMessage({ type: VIF_WRITE, id, sector: BigInt(2 ** 40 + rng.nextInt(1000)), segments: [{ gfn: 1, first: 0, last: 7 }] });
    }
  }
  switch (i % 4) {
    case 0:
      return vifMessage({ type: 0xee, id });
    case 1:
      return vifMessage({ type: VIF_TX, id, gfn: 1, offset: 0, len: 3 });
    case 2:
      return vifMessage({ type: VIF_TX, id, gfn: outside, offset: 0, len: 100 });
    default:
      return vifMessage({ type: VIF_RX_POST, id, gfn: outside, offset: 0, len: 2048 });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 2));
/** How long an attack waits on the device at most (the injector's call allows 30 s). */
const ATTACK_WAIT_MS = 5_000;

/** Put hostile messages while there is room; publish and ring as a driver would. */
function putBad(vif: OpenVif, want: number, sent: number, rng: SplitMix32, frames: number): number {
  let n = 0;
  while (n < want && vif.out.free() > 0) {
    vif.out.put(badMessage(vif.spec.kind, sent + n, rng, frames));
    n++;
  }
  if (n > 0) {
    vif.out.push();
    // A hostile driver rings whether or not the device asked.
    vif.doorbell();
  }
  return n;
}

export async function attackVif(d: HostileVifDriver, attack: VifAttack, count: number, seed: number, frames: number): Promise<VifAttackOutcome> {
  const vif = d.currentVif;
  const rng = new SplitMix32(seed || 1);
  if (attack === 'rogue-index') {
    // cons + 1000: more outstanding than the queue holds. The engine stops the VIF and says so
    // in STATUS (ERRCODE rogue); wait for that, bounded by time (not by ticks: a loaded machine
    // runs fewer of them, and the caller's own call would time out first).
    vif.out.page.store(QUEUE_PROD, (vif.out.page.load(QUEUE_CONS) + 1000) >>> 0);
    vif.doorbell();
    const end = performance.now() + ATTACK_WAIT_MS;
    while (performance.now() < end && !(vif.regs.read(SVIO_REG.STATUS) & SVIO_STATUS_ERROR)) await tick();
    return { attack, sent: 1, stopped: vif.regs.read(SVIO_REG.ERRCODE) === SVIO_ERR_ROGUE && (vif.regs.read(SVIO_REG.STATUS) & SVIO_STATUS_ERROR) !== 0 };
  }
  let sent = 0;
  if (attack === 'garbage') {
    // Bounded: a few seconds at most, whatever the device does (by time, as above).
    const end = performance.now() + ATTACK_WAIT_MS;
    while (sent < count && performance.now() < end) {
      sent += putBad(vif, count - sent, sent, rng, frames);
      if (sent < count) await tick();
    }
    return { attack, sent };
  }
  // flood: answers left on the incoming queue while the outgoing one is kept full.
  const t0 = performance.now();
  d.holdInterrupts(true);
  try {
    const total = Math.max(count, 2 * vif.out.size);
    for (let tries = 0; sent < total && tries < 200; tries++) {
      sent += putBad(vif, total - sent, sent, rng, frames);
      await tick();
    }
  } finally {
    d.holdInterrupts(false);
  }
  return { attack, sent, heldMs: Math.round(performance.now() - t0) };
}
