import { RingvisorError } from '@ringvisor/shared';

/** A fault names something that is not in the cluster (no such host, domain or device). */
export class FaultTargetError extends RingvisorError {
  override readonly code = 'RV_ERR_FAULT_TARGET';
}
