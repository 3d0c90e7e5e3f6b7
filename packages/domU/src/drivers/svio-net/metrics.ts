/** Counters of one SV-IO network VIF driver. Plain JSON. */
export interface VifNetMetrics {
  txPackets: number;
  txBytes: number;
  txErrors: number;
  /** Frames dropped for a bad length. */
  txDropped: number;
  /** Frames refused because the tx queue was full: backpressure, not an error. */
  txBusy: number;
  /** Frames handed to a VIF that was reset before it sent them. */
  txLost: number;
  /** Times the driver started over on a VIF created again. */
  recoveries: number;
  rxPackets: number;
  rxBytes: number;
  rxErrors: number;
  /** Messages of a type or id the driver never sent (a misbehaving device). */
  unexpected: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
  bytesCopied: number;
}

export function newVifNetMetrics(): VifNetMetrics {
  return { txPackets: 0, txBytes: 0, txErrors: 0, txDropped: 0, txBusy: 0, txLost: 0, recoveries: 0, rxPackets: 0, rxBytes: 0, rxErrors: 0, unexpected: 0, doorbells: 0, suppressed: 0, interrupts: 0, bytesCopied: 0 };
}
