/** Counters of one pcnet driver instance (Linux pcnet32's net_device_stats, plus trap counts). Plain JSON. */
export interface PcnetMetrics {
  /** Frames the chip handed back without ERR, and their bytes (counted at reclaim). */
  txPackets: number;
  txBytes: number;
  /** Frames refused by transmit(): device not open, or a bad length. */
  txDropped: number;
  /** Frames refused by transmit() because the ring and the queue were full: backpressure, not an error. */
  txBusy: number;
  /** Frames the chip handed back with ERR, plus babble interrupts. */
  txErrors: number;
  /** Frames handed to the chip (descriptor filled, TDMD written). */
  txQueued: number;
  /** Frames that waited in the driver's queue for a free tx slot. */
  txBacklogged: number;
  rxPackets: number;
  rxBytes: number;
  /** Descriptors the chip returned with an error or in a form this driver does not take (chains), missed-frame interrupts, bad lengths. */
  rxErrors: number;
  /** MISS interrupts (no rx descriptor was owned when a frame arrived). */
  rxMissed: number;
  /** The chip's missed-frame counter (CSR112), read at close as pcnet32 does. */
  rxMissedCounter: number;
  /** Interrupt handler runs, and runs that found no interrupt bit set. */
  interrupts: number;
  spuriousInterrupts: number;
  /** NAPI-style poll runs, and those that used their whole budget and were rescheduled. */
  polls: number;
  pollsRescheduled: number;
  merr: number;
  /** Every PortIo call the driver made (each one a trap of the vCPU), and the split. */
  portAccesses: number;
  portReads: number;
  portWrites: number;
}

export function newPcnetMetrics(): PcnetMetrics {
  return {
    txPackets: 0,
    txBytes: 0,
    txDropped: 0,
    txBusy: 0,
    txErrors: 0,
    txQueued: 0,
    txBacklogged: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxErrors: 0,
    rxMissed: 0,
    rxMissedCounter: 0,
    interrupts: 0,
    spuriousInterrupts: 0,
    polls: 0,
    pollsRescheduled: 0,
    merr: 0,
    portAccesses: 0,
    portReads: 0,
    portWrites: 0,
  };
}
