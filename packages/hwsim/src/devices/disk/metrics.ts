/** Disk counters: what the drive did, so results can be explained. Plain JSON. */
export interface DiskMetrics {
  ops: { read: number; write: number; flush: number };
  sectorsRead: number;
  sectorsWritten: number;
  bytesRead: number;
  bytesWritten: number;
  errors: {
    /** Requests answered HW_STATUS_EIO: malformed (validation), failed I/O, or an injected fault. */
    eio: number;
    /** Requests answered HW_STATUS_ENOTSUP: unknown operation. */
    enotsup: number;
    /** Of the EIO answers, those where validation passed but the I/O itself failed. */
    io: number;
  };
  /**
   * Faults injected by hw.disk.faults rules, across every rule set installed (per-rule hits are
   * in the table's stats): eio answers (also counted in errors.eio, not in errors.io) and
   * silently corrupted transfers.
   */
  injected: { eio: number; bitflip: number };
}

export function newDiskMetrics(): DiskMetrics {
  return { ops: { read: 0, write: 0, flush: 0 }, sectorsRead: 0, sectorsWritten: 0, bytesRead: 0, bytesWritten: 0, errors: { eio: 0, enotsup: 0, io: 0 }, injected: { eio: 0, bitflip: 0 } };
}

export function copyDiskMetrics(m: DiskMetrics): DiskMetrics {
  return { ...m, ops: { ...m.ops }, errors: { ...m.errors }, injected: { ...m.injected } };
}
