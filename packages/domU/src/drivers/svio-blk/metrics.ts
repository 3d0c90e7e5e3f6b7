/** Counters of one SV-IO block VIF driver. Plain JSON. */
export interface VifBlkMetrics {
  requests: number;
  responses: number;
  reads: number;
  writes: number;
  flushes: number;
  sectorsRead: number;
  sectorsWritten: number;
  errors: number;
  unexpected: number;
  /** Requests sent again on a VIF created again (the old one never answered them). */
  resubmitted: number;
  /** Times the driver started over on a VIF created again. */
  recoveries: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
  bytesCopied: number;
}

export function newVifBlkMetrics(): VifBlkMetrics {
  return { requests: 0, responses: 0, reads: 0, writes: 0, flushes: 0, sectorsRead: 0, sectorsWritten: 0, errors: 0, unexpected: 0, resubmitted: 0, recoveries: 0, doorbells: 0, suppressed: 0, interrupts: 0, bytesCopied: 0 };
}
