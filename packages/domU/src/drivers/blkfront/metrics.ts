/** Counters of one blkfront instance; every mechanism it uses is counted. */
export interface BlkfrontMetrics {
  requests: number;
  responses: number;
  errors: number;
  sectorsRead: number;
  sectorsWritten: number;
  /** Grant operations by this guest: grant + end-access. */
  grantOps: number;
  notifications: number;
  suppressed: number;
  events: number;
  unexpectedResponses: number;
  rogueResponses: number;
  leakedGrants: number;
  recoveries: number;
  resubmitted: number;
  /** Notifications that found the backend's end closed (it was going away). */
  lostNotifications: number;
}

export function newBlkfrontMetrics(): BlkfrontMetrics {
  return {
    lostNotifications: 0,
    requests: 0,
    responses: 0,
    errors: 0,
    sectorsRead: 0,
    sectorsWritten: 0,
    grantOps: 0,
    notifications: 0,
    suppressed: 0,
    events: 0,
    unexpectedResponses: 0,
    rogueResponses: 0,
    leakedGrants: 0,
    recoveries: 0,
    resubmitted: 0,
  };
}
