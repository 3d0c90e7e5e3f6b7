/**
 * The guest kernel's side of an assigned device function (direct I/O): the function's register
 * page, its doorbell and its interrupt, and the streaming-DMA hooks a driver calls around the
 * device's accesses to its memory.
 *
 * Threads: the register page is the hardware's own page (shared memory, as a mapped BAR), the
 * doorbell is an event-channel send straight to the hardware's port (the guest writes the pending
 * bit and wakes the simulator; dom0 runs nothing), and the interrupt arrives on the guest's end
 * of the same channel after the IOMMU remapped it. Nothing here involves dom0 once assigned.
 *
 * ws: the guest has its own copy of memory. A direct link to the hardware simulator (see
 * direct-link.ts) mirrors the register page and the function's queue pages, ships each buffer
 * before the device reads it (`toDevice`, Linux's dma_sync_single_for_device) and brings back
 * what the device wrote before the interrupt that announces it.
 */
import { BootSpecError, TimeoutError, VF_CTRL_ENABLE, VF_REG, VF_STATUS_ENABLED, VfRegisters, type DirectFunctionSpec, type PageSync, type VfKind } from '@ringvisor/shared';
import type { GuestKernel } from './kernel.js';

export interface DirectFunctionCounters {
  doorbells: number;
  interrupts: number;
}

export interface DirectFunction {
  readonly kind: VfKind;
  readonly devid: number;
  readonly rid: string;
  readonly regs: VfRegisters;
  readonly counters: DirectFunctionCounters;
  /** The MMIO doorbell write (after every ring and register store it covers). */
  doorbell(): void;
  onInterrupt(handler: () => void): void;
  /** Before the device reads `length` bytes at `offset` of frame `pfn` (a buffer to transmit or write): make them current there. */
  toDevice(pfn: number, offset?: number, length?: number): void;
  /** The PageSync for a queue ring on frame `pfn` (undefined on shared memory). */
  ringSync(pfn: number, lateWake: () => void): PageSync | undefined;
}

/**
 * A DirectFunction from its transport's three parts: how the doorbell is rung, how a buffer is
 * synced for the device, how a queue ring is mirrored. The interrupt arrives on the guest's end
 * of the function's channel in both transports.
 */
export function directFunction(
  kernel: GuestKernel,
  spec: DirectFunctionSpec,
  regs: VfRegisters,
  t: { ring: () => void; toDevice: DirectFunction['toDevice']; ringSync: DirectFunction['ringSync'] },
): DirectFunction {
  const counters: DirectFunctionCounters = { doorbells: 0, interrupts: 0 };
  return {
    kind: spec.kind,
    devid: spec.devid,
    rid: spec.rid,
    regs,
    counters,
    doorbell: () => {
      counters.doorbells++;
      t.ring();
    },
    onInterrupt: (handler) =>
      kernel.events.on(spec.port, () => {
        counters.interrupts++;
        handler();
      }),
    toDevice: t.toDevice,
    ringSync: t.ringSync,
  };
}

/** Threads transport: the function's page and channel are shared memory and events. */
export function sharedMemoryFunction(kernel: GuestKernel, spec: DirectFunctionSpec): DirectFunction {
  if (!spec.bar) throw new BootSpecError(`direct ${spec.kind} ${spec.devid}: the boot spec has no register page (needs shared memory or a direct link)`);
  return directFunction(kernel, spec, new VfRegisters(new Uint8Array(spec.bar)), {
    ring: () => void kernel.notifyRemote(spec.port),
    toDevice: () => {},
    ringSync: () => undefined,
  });
}

/**
 * Wait (bounded) until the function shows `bits` in STATUS. Across a link the register page is a
 * mirror: waiting for BUS_MASTER (set by the assign, after any reset's stores on the same link)
 * means the page reflects this assignment before the driver reads GEN from it.
 */
export async function awaitStatus(fn: DirectFunction, bits: number, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while ((fn.regs.read(VF_REG.STATUS) & bits) !== bits) {
    if (performance.now() > deadline) throw new TimeoutError(`direct ${fn.kind} ${fn.devid}: function ${fn.rid} ${what} (status 0x${fn.regs.read(VF_REG.STATUS).toString(16)})`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Enable a function's queues, the order the register page documents: queue addresses, then
 * CTRL.ENABLE, then the doorbell (the ordering point); then wait (bounded) for STATUS.ENABLED.
 */
export async function enableQueues(fn: DirectFunction, q0: number, q1: number | undefined, doorbell: () => void, timeoutMs?: number): Promise<void> {
  fn.regs.write(VF_REG.Q0, q0);
  if (q1 !== undefined) fn.regs.write(VF_REG.Q1, q1);
  fn.regs.write(VF_REG.CTRL, VF_CTRL_ENABLE);
  doorbell();
  await awaitStatus(fn, VF_STATUS_ENABLED, 'did not enable its queues', timeoutMs);
}
