/**
 * One error hierarchy for every runtime. Users match on `code` (stable, `RV_ERR_…`), never on
 * the message or the class name, which may change. Modelled on undici's lib/core/errors.js.
 */
export class RingvisorError extends Error {
  readonly code: string = 'RV_ERR_GENERIC';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
  toJSON(): { name: string; code: string; message: string } {
    return { name: this.name, code: this.code, message: this.message };
  }
}

/** A caller passed a value outside the documented range (a programming or config mistake). */
export class InvalidArgumentError extends RingvisorError {
  override readonly code = 'RV_ERR_INVALID_ARG';
}

/** A cluster or CLI configuration is malformed; the message says what and how to fix it. */
export class ConfigError extends RingvisorError {
  override readonly code = 'RV_ERR_CONFIG';
}

/** A producer tried to push more entries than the ring has free slots. */
export class RingFullError extends RingvisorError {
  override readonly code = 'RV_ERR_RING_FULL';
}

/** The other end of a ring published indices that cannot be honest (req_prod runs past the ring). */
export class RogueRingError extends RingvisorError {
  override readonly code = 'RV_ERR_RING_ROGUE';
}

/** A request read from a ring failed validation; it is answered with an error status, not thrown far. */
export class MalformedRequestError extends RingvisorError {
  override readonly code = 'RV_ERR_MALFORMED_REQUEST';
}

/** Grant-table operation failed; `status` is the Xen GNTST_* code. */
export class GrantError extends RingvisorError {
  override readonly code = 'RV_ERR_GRANT';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Event-channel operation failed (bad port, wrong state, not allowed for this domain). */
export class EventChannelError extends RingvisorError {
  override readonly code = 'RV_ERR_EVTCHN';
}

/** Store operation failed; `errno` is the xenstore-style error name (ENOENT, EACCES, EAGAIN …). */
export class StoreError extends RingvisorError {
  override readonly code = 'RV_ERR_STORE';
  constructor(
    message: string,
    readonly errno: 'ENOENT' | 'EACCES' | 'EAGAIN' | 'EINVAL' | 'EEXIST' | 'E2BIG' | 'EQUOTA',
  ) {
    super(message);
  }
}

/** A domain does not exist, or is not in a state that allows the operation. */
export class DomainError extends RingvisorError {
  override readonly code = 'RV_ERR_DOMAIN';
}

/** A (simulated) physical device failed an operation. */
export class DeviceError extends RingvisorError {
  override readonly code: string = 'RV_ERR_DEVICE';
}

/** A peer broke the wire protocol: malformed, oversized or out-of-protocol message. */
export class ProtocolError extends RingvisorError {
  override readonly code = 'RV_ERR_PROTOCOL';
}

/**
 * A run's state directory (disk images, their manifest) cannot be used: another live run owns
 * it, or it cannot be created or set aside. The message says which directory and what to do.
 */
export class StateError extends RingvisorError {
  override readonly code = 'RV_ERR_STATE';
}

/**
 * A device state record cannot be restored: not a record, another device type's, a version this
 * build does not read, or a field out of range. The message names the device type and the field.
 */
export class StateRecordError extends RingvisorError {
  override readonly code = 'RV_ERR_STATE_RECORD';
}

/** A remote call or a wait did not finish in time. */
export class TimeoutError extends RingvisorError {
  override readonly code = 'RV_ERR_TIMEOUT';
}

/** The connection or runtime an operation needed has gone away. */
export class ClosedError extends RingvisorError {
  override readonly code = 'RV_ERR_CLOSED';
}

/** A remote error carried across a transport keeps its code. */
export class RemoteError extends RingvisorError {
  override readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export function isRingvisorError(e: unknown): e is RingvisorError {
  return e instanceof RingvisorError;
}

/** Serialisable form of an error for crossing a transport. */
export interface WireError {
  code: string;
  message: string;
  status?: number;
  errno?: string;
}

export function toWireError(e: unknown): WireError {
  if (e instanceof GrantError) return { code: e.code, message: e.message, status: e.status };
  if (e instanceof StoreError) return { code: e.code, message: e.message, errno: e.errno };
  if (e instanceof RingvisorError) return { code: e.code, message: e.message };
  if (e instanceof Error) return { code: 'RV_ERR_INTERNAL', message: e.message };
  return { code: 'RV_ERR_INTERNAL', message: String(e) };
}

export function fromWireError(w: WireError): RingvisorError {
  if (w.code === 'RV_ERR_GRANT' && typeof w.status === 'number') return new GrantError(w.message, w.status);
  if (w.code === 'RV_ERR_STORE' && typeof w.errno === 'string')
    return new StoreError(w.message, w.errno as StoreError['errno']);
  return new RemoteError(w.code, w.message);
}

/** The host has no guest (or guest domain) of that name. */
export class NoSuchGuestError extends RingvisorError {
  override readonly code = 'RV_ERR_NO_SUCH_GUEST';
}

/** A guest has no device of that name in the mode the operation needs (a backend, a function, a VIF). */
export class NoSuchDeviceError extends RingvisorError {
  override readonly code = 'RV_ERR_NO_SUCH_DEVICE';
}

/**
 * The operation cannot be done in this deployment: the runtime runs elsewhere (compose: act on its
 * container), or the transport has no such thing (link faults in threads mode).
 */
export class UnsupportedOperationError extends RingvisorError {
  override readonly code = 'RV_ERR_UNSUPPORTED';
}

/** The target is not in a state that allows the operation now (already down, already assigned, not listening). */
export class InvalidStateError extends RingvisorError {
  override readonly code = 'RV_ERR_INVALID_STATE';
}

/** A recovery (a hardware restart) ended with something not back; the message lists what. */
export class RecoveryError extends RingvisorError {
  override readonly code = 'RV_ERR_RECOVERY';
}

// Classes below were gathered here from the packages (each had its own, or threw a bare Error).
// New classes go at the end; a code, once released, never changes (errors.test.ts).

/** A command line is wrong: unknown command or flag, a missing or malformed value. */
export class UsageError extends RingvisorError {
  override readonly code = 'RV_ERR_USAGE';
}

/** The control endpoint could not be reached or refused us, or is not listening. */
export class ControlEndpointError extends RingvisorError {
  override readonly code = 'RV_ERR_CONTROL';
}

/** A fault names something that is not in the cluster (no such host, domain or device). */
export class FaultTargetError extends RingvisorError {
  override readonly code = 'RV_ERR_FAULT_TARGET';
}

/**
 * A device's DMA was refused (bus mastering off, the IOMMU blocked or could not translate it);
 * the request fails and nothing moved. `fault` is the IOMMU's fault record when there is one.
 */
export class DmaBlockedError<Fault = unknown> extends DeviceError {
  override readonly code = 'RV_ERR_DMA_BLOCKED';
  constructor(
    message: string,
    readonly fault?: Fault,
  ) {
    super(message);
  }
}

/** An ATA command the drive ended with ERR or DF. `status` and `error` are the registers as read. */
export class AtaCommandError extends DeviceError {
  override readonly code = 'RV_ERR_ATA_COMMAND';
  constructor(
    message: string,
    readonly command: string,
    readonly status: number,
    readonly error: number,
  ) {
    super(message);
  }
}

/**
 * A guest's boot spec (written by dom0's toolstack) lacks what one of its devices needs: shared
 * memory or a link, a register page, an assigned function or VIF, a disk or NIC of its platform.
 */
export class BootSpecError extends RingvisorError {
  override readonly code = 'RV_ERR_BOOT_SPEC';
}

/** The object is already doing what was asked (one run at a time), or the resource is taken. */
export class BusyError extends RingvisorError {
  override readonly code = 'RV_ERR_BUSY';
}

/** A benchmark's measurement is invalid (entries arrived wrong, nothing arrived) or its peer failed. */
export class MeasurementError extends RingvisorError {
  override readonly code = 'RV_ERR_MEASUREMENT';
}

/**
 * A defect, not a condition a caller can fix: the installation is not laid out as built, or a
 * value that is not an Error was thrown. Also the code any non-ringvisor error crosses RPC with.
 */
export class InternalError extends RingvisorError {
  override readonly code = 'RV_ERR_INTERNAL';
}
