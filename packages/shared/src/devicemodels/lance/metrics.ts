/** Counters of one Lance device model. Plain JSON. */
export interface LanceMetrics {
  /** Port accesses by kind (each one a trap of the guest's vCPU). */
  portReads: number;
  portWrites: number;
  /** Accesses no register decodes: wrong width for the mode, reserved offsets, outside the window. */
  ignoredAccesses: number;
  csrReads: number;
  csrWrites: number;
  /** CSR writes dropped: the register is writable only while stopped, or is read-only/unknown. */
  csrWritesDropped: number;
  bcrReads: number;
  bcrWrites: number;
  rapWrites: number;
  apromReads: number;
  /** S_RESETs (RESET port reads) and H_RESETs. */
  resets: number;
  /** INITs that read the init block, INITs that failed (MERR: out of memory or unsupported SWSTYLE). */
  inits: number;
  initErrors: number;
  starts: number;
  stops: number;
  /** Transmit demands (TDMD written) and kicks asked of the wiring. */
  transmitDemands: number;
  kicks: number;
  /** transmitPoll() calls, and descriptors they read. */
  txPolls: number;
  txDescriptorsRead: number;
  txFrames: number;
  txBytes: number;
  /** Frames dropped: BABL, MERR, runt, malformed or broken chains. */
  txErrors: number;
  /** Frames that went back to our own receiver (MODE LOOP). */
  txLoopback: number;
  rxFrames: number;
  /** Bytes of delivered frames as they came off the wire (no padding, no FCS). */
  rxBytes: number;
  rxMissed: number;
  rxFiltered: number;
  /** Frames offered while the receiver was off (stopped, RXON clear, suspended). */
  rxStopped: number;
  /** Frames lost to MERR, malformed descriptors, chains that ran out of buffers, bad sizes. */
  rxErrors: number;
  /** Frames that spanned more than one rx descriptor. */
  rxChained: number;
  merr: number;
  babl: number;
  /** Owned descriptors with a ONES nibble other than 1111 (handed back with ERR|BUFF). */
  malformedDescriptors: number;
  /** Interrupt line edges: raised (INTR && IENA rose) and lowered. */
  interrupts: number;
  interruptsLowered: number;
  /** Port accesses refused while the chip was quiesced for a save, or stopped (the vCPU should be paused). */
  refusedWhilePaused: number;
  /** Frames from the wire dropped while quiesced: the hold queue was full, or the chip stopped. */
  rxDroppedWhilePaused: number;
}

export function newLanceMetrics(): LanceMetrics {
  return {
    portReads: 0,
    portWrites: 0,
    ignoredAccesses: 0,
    csrReads: 0,
    csrWrites: 0,
    csrWritesDropped: 0,
    bcrReads: 0,
    bcrWrites: 0,
    rapWrites: 0,
    apromReads: 0,
    resets: 0,
    inits: 0,
    initErrors: 0,
    starts: 0,
    stops: 0,
    transmitDemands: 0,
    kicks: 0,
    txPolls: 0,
    txDescriptorsRead: 0,
    txFrames: 0,
    txBytes: 0,
    txErrors: 0,
    txLoopback: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxMissed: 0,
    rxFiltered: 0,
    rxStopped: 0,
    rxErrors: 0,
    rxChained: 0,
    merr: 0,
    babl: 0,
    malformedDescriptors: 0,
    interrupts: 0,
    interruptsLowered: 0,
    refusedWhilePaused: 0,
    rxDroppedWhilePaused: 0,
  };
}
