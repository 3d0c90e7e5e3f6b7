/** Disk counters: what the drive did, so results can be explained. Plain JSON. */
export interface DiskMetrics {
  ops: { read: number; write: number; flush: number };
  sectorsRead: number;
  sectorsWritten: number;
  bytesRead: number;
  bytesWritten: number;
  errors: {
    /** Requests answered HW_STATUS_EIO: malformed (validation) or failed I/O. */
    eio: number;
    /** Requests answered HW_STATUS_ENOTSUP: unknown operation. */
    enotsup: number;
    /** Of the EIO answers, those where validation passed but the I/O itself failed. */
    io: number;
  };
}

export function newDiskMetrics(): DiskMetrics {
  return { ops: { read: 0, write: 0, flush: 0 }, sectorsRead: 0, sectorsWritten: 0, bytesRead: 0, bytesWritten: 0, errors: { eio: 0, enotsup: 0, io: 0 } };
}

export function copyDiskMetrics(m: DiskMetrics): DiskMetrics {
  return { ...m, ops: { ...m.ops }, errors: { ...m.errors } };
}
