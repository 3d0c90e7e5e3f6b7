/**
 * A hostile driver for an assigned NIC function (fault plans' iommu.stray-dma): transmits
 * described at frames past the end of the guest's memory. The IOMMU has no translation for them:
 * each must be answered with an error, none may leave on the wire.
 */
import { HW_STATUS_OK, SplitMix32 } from '@ringvisor/shared';
import { untilAttached, type StrayDmaOutcome } from '../vf-blk/misbehave.js';
import type { VfNicDriver } from './device.js';

/** `count` transmits of frames described past the end of our memory. */
export async function strayNicDma(driver: VfNicDriver, memoryFrames: number, count: number, seed: number): Promise<StrayDmaOutcome> {
  const rng = new SplitMix32(seed);
  const out: StrayDmaOutcome = { sent: 0, blocked: 0, completed: 0 };
  await untilAttached(driver);
  const all: Array<Promise<number | undefined>> = [];
  for (let i = 0; i < count; i++) all.push(driver.transmitRaw(memoryFrames + (rng.next() % 4096), 0, 64));
  for (const status of await Promise.all(all)) {
    if (status === undefined) continue; // the function was taken away before it went out: not sent
    out.sent++;
    if (status === HW_STATUS_OK) out.completed++;
    else out.blocked++;
  }
  return out;
}
