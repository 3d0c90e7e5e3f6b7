/** Counters of one direct NIC driver (a NIC virtual function driven by the guest). Plain JSON. */
export interface VfNicMetrics {
  txPackets: number;
  txBytes: number;
  /** Frames refused by the device (error status). */
  txErrors: number;
  /** Frames dropped for a bad length. */
  txDropped: number;
  /** Frames refused because the tx queue was full: backpressure, not an error. */
  txBusy: number;
  rxPackets: number;
  rxBytes: number;
  rxErrors: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
  /** Bytes copied between the stack's frames and DMA buffers in guest memory. */
  bytesCopied: number;
}

export function newVfNicMetrics(): VfNicMetrics {
  return { txPackets: 0, txBytes: 0, txErrors: 0, txDropped: 0, txBusy: 0, rxPackets: 0, rxBytes: 0, rxErrors: 0, doorbells: 0, suppressed: 0, interrupts: 0, bytesCopied: 0 };
}
