/**
 * A hostile driver for an assigned function (fault plans' iommu.stray-dma, isolation tests): the
 * guest programs its own device to DMA where it must not — frames past the end of its memory (the
 * IOMMU has no translation: blocked, faulted), and segments whose reserved domain field names
 * another domain (the device rejects them: a function's addresses are its owner's alone). Every
 * attempt must be answered with an error; none may complete.
 */
import { HWBLK_OP_READ, HWBLK_OP_WRITE, HW_STATUS_OK, SplitMix32 } from '@ringvisor/shared';
import type { VfBlkDriver } from './device.js';

export const DIRECT_ATTACKS = ['stray-dma'] as const;
export type DirectAttack = (typeof DIRECT_ATTACKS)[number];

export interface StrayDmaOutcome {
  sent: number;
  /** Answered with an error status (blocked by the IOMMU or refused by the device). */
  blocked: number;
  /** Completed successfully: a DMA that reached memory it should not have (must be 0). */
  completed: number;
}

/** `count` disk requests with stray addresses (half past our memory, half naming another domain). */
/**
 * A function taken away (a reclaim whose heal runs late on a loaded machine) is waited for,
 * bounded: the attempts are made on the function, not lost to the schedule.
 */
export async function untilAttached(driver: { readonly attached: boolean }, timeoutMs = 10_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!driver.attached && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
}

export async function strayDiskDma(driver: VfBlkDriver, memoryFrames: number, count: number, seed: number): Promise<StrayDmaOutcome> {
  const rng = new SplitMix32(seed);
  const out: StrayDmaOutcome = { sent: 0, blocked: 0, completed: 0 };
  await untilAttached(driver);
  const all: Array<Promise<number | undefined>> = [];
  for (let i = 0; i < count; i++) {
    const outside = i % 2 === 0;
    const pfn = outside ? memoryFrames + (rng.next() % 4096) : 1 + (rng.next() % (memoryFrames - 1));
    const domid = outside ? 0 : 1 + (rng.next() % 100);
    const op = rng.next() % 2 === 0 ? HWBLK_OP_READ : HWBLK_OP_WRITE;
    all.push(driver.submitRaw(op, 0n, [{ domid, pfn, firstSect: 0, lastSect: 7 }]));
  }
  for (const status of await Promise.all(all)) {
    // Never answered: the function went away under it (not sent, and surely not a DMA that
    // completed — counting it so would be a false breach).
    if (status === undefined) continue;
    out.sent++;
    if (status === HW_STATUS_OK) out.completed++;
    else out.blocked++;
  }
  return out;
}
