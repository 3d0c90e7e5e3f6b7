/** Counters of one ATA PIO driver instance; every mechanism it uses is counted. Plain JSON. */
export interface AtaDriverMetrics {
  /** ATA commands issued (IDENTIFY, READ/WRITE SECTORS, FLUSH CACHE). */
  commands: number;
  sectorsRead: number;
  sectorsWritten: number;
  /** Requests (read/write/flush/probe calls) that rejected. */
  errors: number;
  /** Interrupt upcalls received. */
  interrupts: number;
  /** Every PortIo call: each one a trap of this vCPU. */
  portAccesses: number;
  /** Interrupt waits that timed out, so the driver polled ALTSTATUS. */
  irqWaitTimeouts: number;
  /** Of those polls, the ones that found the drive ready: its interrupt was lost (or late). */
  lostInterruptPolls: number;
  /** Software resets (SRST): at probe, and to recover a drive left in an unexpected state. */
  resets: number;
  /** Commands abandoned because the drive stayed busy past the command deadline. */
  timeouts: number;
}

export function newAtaDriverMetrics(): AtaDriverMetrics {
  return {
    commands: 0,
    sectorsRead: 0,
    sectorsWritten: 0,
    errors: 0,
    interrupts: 0,
    portAccesses: 0,
    irqWaitTimeouts: 0,
    lostInterruptPolls: 0,
    resets: 0,
    timeouts: 0,
  };
}
