/**
 * Assignable device functions (direct I/O): what a guest's driver and a virtual function (VF) of
 * the simulated NIC or disk agree on. The physical function (PF) stays with dom0's drivers and
 * its queues (hw/index.ts); each VF is handed to one guest at a time, which drives it itself.
 *
 * A VF has, as an SR-IOV function has:
 *   - a requester id (PCI bus:dev.fn) that the IOMMU keys its DMA and interrupt remapping on;
 *   - a register page (BAR0, below), which the guest's driver reads and writes directly;
 *   - queues in the *owner's* memory, in the same slot layouts as the PF's queues (hwblk,
 *     hwnic tx/rx) — except that the u16 which names a domain in a PF request is reserved and
 *     must be 0: a VF's addresses are I/O virtual addresses (the owner's guest-physical frame
 *     numbers), and the IOMMU alone decides whose memory they reach;
 *   - a doorbell (an event-channel send from the owner to the hardware, never through dom0's
 *     software) and an MSI-style interrupt, remapped by the IOMMU's interrupt remapping table to
 *     the owner's event port (Xen's pirq-bound event channel).
 *
 * BAR0 — one 4 KiB page of u32 little-endian registers. Each register has one writer:
 *
 *   word  name         writer   meaning
 *   0     ID           device   kind (1 NIC, 2 disk) | VF index << 8 | requester id << 16
 *   1     STATUS       device   ENABLED 1: queues live; BUS_MASTER 2: the function may do DMA
 *                               (set when the toolstack assigns it, cleared first on reclaim);
 *                               ERROR 4: a queue stopped (rogue indices, a ring the IOMMU refused)
 *   2     CTRL         driver   ENABLE 1. The driver writes Q0/Q1, then ENABLE, then rings the
 *                               doorbell; the device acts on CTRL only at a doorbell, so the
 *                               queue addresses it reads are the ones written before it.
 *   3     GEN          device   incremented by every function-level reset: a driver that finds it
 *                               changed knows its queues were torn down under it
 *   4     Q0           driver   I/O page number of queue 0's ring (disk: requests; NIC: tx)
 *   5     Q1           driver   I/O page number of queue 1's ring (NIC: rx; disk: unused)
 *   6     MAC_LO       device   NIC: MAC bytes 0..3 (byte 0 in the low bits)
 *   7     MAC_HI       device   NIC: MAC bytes 4..5
 *   8     SECTORS_LO   device   disk: size in 512-byte sectors, low 32 bits
 *   9     SECTORS_HI   device   disk: high bits
 *   10    VECTOR       device   the interrupt remapping entry this function raises (programmed
 *                               by the toolstack when it assigns the function)
 *   11    FAULTS       device   DMA accesses of this function the IOMMU blocked (saturating)
 *
 * The driver binds its interrupt before it enables the queues, and its handler can run before
 * STATUS.ENABLED shows (the guest's missed-event poll runs every handler, pending or not; over a
 * link the device's answer takes a round trip). STATUS without ENABLED means "reset under us" only
 * once the driver has seen ENABLED under the current GEN; before that it means "not up yet" —
 * drivers that took it for a reset detached before they had started, and never sent a frame.
 *
 * Why the device only looks at CTRL on a doorbell: the register page is memory the driver writes
 * with plain stores; the doorbell is the ordering point (a real driver's wmb() before the MMIO
 * doorbell write), so everything written before it is visible when the device reads.
 */
import type { Static } from '@sinclair/typebox';
import type { DirectDeviceSpecSchema, DirectFunctionSpecSchema } from '../contracts/guest.js';
import { RegisterPage } from './registers.js';

export const VF_KIND_NIC = 1;
export const VF_KIND_DISK = 2;
export type VfKind = 'nic' | 'disk';

export const VF_REG = {
  ID: 0,
  STATUS: 1,
  CTRL: 2,
  GEN: 3,
  Q0: 4,
  Q1: 5,
  MAC_LO: 6,
  MAC_HI: 7,
  SECTORS_LO: 8,
  SECTORS_HI: 9,
  VECTOR: 10,
  FAULTS: 11,
} as const;
export const VF_REG_COUNT = 12;

export const VF_STATUS_ENABLED = 1;
export const VF_STATUS_BUS_MASTER = 2;
export const VF_STATUS_ERROR = 4;
export const VF_CTRL_ENABLE = 1;

/** One function's register page (the layout above). */
export class VfRegisters extends RegisterPage {
  constructor(page: Uint8Array) {
    super(page, VF_REG_COUNT);
  }

  get kind(): VfKind | undefined {
    const k = this.read(VF_REG.ID) & 0xff;
    return k === VF_KIND_NIC ? 'nic' : k === VF_KIND_DISK ? 'disk' : undefined;
  }

  get rid(): number {
    return this.read(VF_REG.ID) >>> 16;
  }

  get mac(): string {
    return this.readMac(VF_REG.MAC_LO, VF_REG.MAC_HI);
  }

  set mac(mac: string) {
    this.writeMac(VF_REG.MAC_LO, VF_REG.MAC_HI, mac);
  }

  /** u64, exact. */
  get sectors(): bigint {
    return this.read64(VF_REG.SECTORS_LO, VF_REG.SECTORS_HI);
  }

  set sectors(n: bigint) {
    this.write64(VF_REG.SECTORS_LO, VF_REG.SECTORS_HI, n);
  }
}

/**
 * What the toolstack tells a guest about a function assigned to it (the boot spec's `direct`):
 * where its registers are, and the event port that is both its doorbell and its interrupt.
 * `bar` is the register page itself on shared memory (threads); across a process boundary the
 * guest's process holds its own copy, mirrored over its direct link to the hardware.
 */
export type DirectFunctionSpec = Static<typeof DirectFunctionSpecSchema>;
/** The boot spec's direct-I/O part: assigned functions, and (ws) how to reach the hardware. */
export type DirectDeviceSpec = Static<typeof DirectDeviceSpecSchema>;
