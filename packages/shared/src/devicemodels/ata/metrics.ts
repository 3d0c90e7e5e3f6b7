/** Counters of one emulated ATA drive: what the guest asked and what the drive did. Plain JSON. */
export interface AtaMetrics {
  /** Commands accepted (decoded and started), by kind; `unknown` = aborted as unsupported. */
  commands: { identify: number; read: number; write: number; flush: number; unknown: number };
  /** Sectors the guest read out of the data port / whose write reached the backing store. */
  sectorsRead: number;
  sectorsWritten: number;
  /** Every port access (each one a trap of the guest's vCPU), and those to the data port. */
  portAccesses: number;
  dataPortAccesses: number;
  /** Data port accesses that moved nothing: DRQ clear, 8-bit width, or device 1 selected. */
  strayDataAccesses: number;
  /** Commands answered with ERR, by the error bit reported. */
  errors: {
    /** ABRT: unsupported command, CHS addressing, or a failed write/flush in the backing. */
    abrt: number;
    /** IDNF: LBA range past the end of the drive. */
    idnf: number;
    /** UNC: the backing store failed a read. */
    unc: number;
  };
  /** Backing store operations that failed (also counted under errors.unc / errors.abrt). */
  backingErrors: number;
  /** Backing store operations started, by kind. */
  backingOps: { read: number; write: number; flush: number };
  /** Interrupt edges delivered through `irq()`. */
  irqs: number;
  /** Interrupts the drive raised under nIEN (held pending, not delivered then). */
  irqsMasked: number;
  /** Interrupts raised while one was still pending: no new edge. */
  irqsCoalesced: number;
  /** COMMAND writes ignored because the drive was BSY or had DRQ set. */
  busyRejected: number;
  /** Taskfile writes (cmd+1..6) ignored because the drive was BSY or had DRQ set. */
  taskfileWritesIgnored: number;
  /** COMMAND writes while device 1 (absent) was selected. */
  absentDeviceCommands: number;
  /** Software resets (SRST set then cleared). */
  resets: number;
  /** Transfers a reset cut short (data-in/out in progress, or a backing operation in flight). */
  abortedByReset: number;
  /** Backing completions that arrived after a reset and were discarded. */
  staleCompletions: number;
  /** Port accesses refused while the drive was quiesced for a save, or stopped (the vCPU should be paused). */
  refusedWhilePaused: number;
}

export function newAtaMetrics(): AtaMetrics {
  return {
    commands: { identify: 0, read: 0, write: 0, flush: 0, unknown: 0 },
    sectorsRead: 0,
    sectorsWritten: 0,
    portAccesses: 0,
    dataPortAccesses: 0,
    strayDataAccesses: 0,
    errors: { abrt: 0, idnf: 0, unc: 0 },
    backingErrors: 0,
    backingOps: { read: 0, write: 0, flush: 0 },
    irqs: 0,
    irqsMasked: 0,
    irqsCoalesced: 0,
    busyRejected: 0,
    taskfileWritesIgnored: 0,
    absentDeviceCommands: 0,
    resets: 0,
    abortedByReset: 0,
    staleCompletions: 0,
    refusedWhilePaused: 0,
  };
}

export function copyAtaMetrics(m: AtaMetrics): AtaMetrics {
  return { ...m, commands: { ...m.commands }, errors: { ...m.errors }, backingOps: { ...m.backingOps } };
}
