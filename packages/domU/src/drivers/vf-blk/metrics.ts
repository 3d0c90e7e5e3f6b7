/** Counters of one direct disk driver (a disk virtual function driven by the guest). Plain JSON. */
export interface VfBlkMetrics {
  requests: number;
  responses: number;
  /** Completed reads and writes (requests; a large transfer is several). */
  reads: number;
  writes: number;
  sectorsRead: number;
  sectorsWritten: number;
  flushes: number;
  errors: number;
  /** Doorbells rung, and pushes the ring said needed none (the device was still consuming). */
  doorbells: number;
  suppressed: number;
  interrupts: number;
  /** Bytes copied between the caller's buffers and DMA buffers in guest memory. */
  bytesCopied: number;
  /** Requests failed because the function was reset or taken away under the driver. */
  aborted: number;
  /** Requests submitted again on a new function (the hardware restarted under them). */
  resubmitted: number;
}

export function newVfBlkMetrics(): VfBlkMetrics {
  return { requests: 0, responses: 0, reads: 0, writes: 0, sectorsRead: 0, sectorsWritten: 0, flushes: 0, errors: 0, doorbells: 0, suppressed: 0, interrupts: 0, bytesCopied: 0, aborted: 0, resubmitted: 0 };
}
