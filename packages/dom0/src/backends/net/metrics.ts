/** Counters of one netback vif. */
export interface NetbackMetrics {
  txPackets: number;
  txBytes: number;
  txErrors: number;
  rxPackets: number;
  rxBytes: number;
  /** Frames for this guest dropped because its rx queue was full (it stopped consuming). */
  rxDropped: number;
  rxErrors: number;
  grantCopies: number;
  bytesCopied: number;
  grantMaps: number;
  notifications: number;
  suppressed: number;
  events: number;
  rogue: number;
  throttled: number;
  yields: number;
}

export function newNetbackMetrics(): NetbackMetrics {
  return {
    txPackets: 0,
    txBytes: 0,
    txErrors: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxDropped: 0,
    rxErrors: 0,
    grantCopies: 0,
    bytesCopied: 0,
    grantMaps: 0,
    notifications: 0,
    suppressed: 0,
    events: 0,
    rogue: 0,
    throttled: 0,
    yields: 0,
  };
}
