/**
 * Trapped port I/O across a link (ws transport, device models in dom0): the guest's memory is not
 * shared with dom0, so a relay thread in the guest's process carries each request of the vCPU's
 * I/O request slot to dom0 on a link of its own (role `vcpu`: the vCPU thread itself is blocked,
 * and so is the guest's main link while it is), together with the bytes the driver synced for
 * the device since the last trap (Linux's streaming DMA API: dma_sync_single_for_device). dom0
 * applies those bytes to its copy of the guest's memory, runs the model, and answers with the
 * data and every byte the model wrote into guest memory meanwhile. Device work that happens
 * between traps (a transmit, a received frame) sends its writes, then the interrupt, on the same
 * link — in that order, so a driver woken by the interrupt reads what the device wrote.
 *
 *   relay → dom0   ioreq.access (call)  { port, size, dir, data, pre?, pages: [{ gpa, data }] }
 *                                        → { data, writes: [{ gpa, data }] }
 *   dom0 → relay   ioreq.dma (notify)   { writes: [{ gpa, data }] }
 *   dom0 → relay   ioreq.irq (notify)   { port }   the guest's event port of a virtual IRQ
 *
 * The messages are IoReqLinkContract (contracts/ioreq.ts).
 */
import type { Static } from '@sinclair/typebox';
import { IoReqLinkContract, type GuestMemoryWritesSchema } from '../contracts/ioreq.js';

/** @deprecated use IoReqLinkContract.methods.access */
export const IOREQ_ACCESS = IoReqLinkContract.methods.access.wire;
/** @deprecated use IoReqLinkContract.notifications.dma */
export const IOREQ_DMA = IoReqLinkContract.notifications.dma.wire;
/** @deprecated use IoReqLinkContract.notifications.irq */
export const IOREQ_IRQ = IoReqLinkContract.notifications.irq.wire;

/** Most bytes one message may carry in pages or writes (a bound, not a tuning knob). */
export const IOREQ_LINK_MAX_BYTES = 4 * 1024 * 1024;

export type GuestMemoryWrite = Static<typeof GuestMemoryWritesSchema>[number];

/**
 * Validate and apply writes to a guest memory image: every range must lie inside it and the
 * total is bounded. Returns false (applying nothing) for anything malformed.
 */
export function applyGuestWrites(mem: Uint8Array, writes: unknown): boolean {
  if (!Array.isArray(writes)) return false;
  let total = 0;
  for (const w of writes) {
    const { gpa, data } = (w ?? {}) as { gpa?: unknown; data?: unknown };
    if (typeof gpa !== 'number' || !Number.isInteger(gpa) || gpa < 0 || !(data instanceof Uint8Array) || gpa + data.byteLength > mem.byteLength) return false;
    total += data.byteLength;
    if (total > IOREQ_LINK_MAX_BYTES) return false;
  }
  for (const w of writes as GuestMemoryWrite[]) mem.set(w.data, w.gpa);
  return true;
}
