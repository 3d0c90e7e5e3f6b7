/** Counters of one blkback instance (one guest vbd). */
export interface BlkbackMetrics {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  sectorsRead: number;
  sectorsWritten: number;
  errors: number;
  rejected: number;
  grantMaps: number;
  grantUnmaps: number;
  grantFailures: number;
  notifications: number;
  suppressed: number;
  events: number;
  rogue: number;
  /** Passes that hit the per-pass budget and yielded to other rings. */
  yields: number;
}

export function newBlkbackMetrics(): BlkbackMetrics {
  return {
    requests: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    sectorsRead: 0,
    sectorsWritten: 0,
    errors: 0,
    rejected: 0,
    grantMaps: 0,
    grantUnmaps: 0,
    grantFailures: 0,
    notifications: 0,
    suppressed: 0,
    events: 0,
    rogue: 0,
    yields: 0,
  };
}
