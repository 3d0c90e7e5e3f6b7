import { RingvisorError } from '@ringvisor/shared';

/** A fault names something that is not in the cluster (no such host, domain or device). */
export class FaultTargetError extends RingvisorError {
  override readonly code = 'RV_ERR_FAULT_TARGET';
}

/** A fault names a kind no module implements (a plan the schema did not check, or a registry out of step). */
export class FaultKindError extends RingvisorError {
  override readonly code = 'RV_ERR_FAULT_KIND';
}
