/** Counters of one netfront instance. */
export interface NetfrontMetrics {
  txPackets: number;
  txBytes: number;
  /** Frames lost in flight when the ring was torn down under them (a backend restart). */
  txDropped: number;
  /** Frames refused by transmit() because the ring and the queue were full: backpressure, not an error. */
  txBusy: number;
  /** Frames that waited in the tx queue for a free slot. */
  txQueued: number;
  txErrors: number;
  rxPackets: number;
  rxBytes: number;
  rxErrors: number;
  grantOps: number;
  notifications: number;
  suppressed: number;
  events: number;
  unexpectedResponses: number;
  rogueResponses: number;
  leakedGrants: number;
  /** Reconnections to a restarted backend. */
  recoveries: number;
  /** Notifications that found the backend's end closed (it was going away). */
  lostNotifications: number;
}

export function newNetfrontMetrics(): NetfrontMetrics {
  return {
    lostNotifications: 0,
    txPackets: 0,
    txBytes: 0,
    txDropped: 0,
    txBusy: 0,
    txQueued: 0,
    txErrors: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxErrors: 0,
    grantOps: 0,
    notifications: 0,
    suppressed: 0,
    events: 0,
    unexpectedResponses: 0,
    rogueResponses: 0,
    leakedGrants: 0,
    recoveries: 0,
  };
}
