import { describe, expect, it } from 'vitest';
import * as errors from './errors.js';
import { RemoteError, RingvisorError, fromWireError, toWireError } from './errors.js';

/**
 * Every class of the hierarchy and its code. Users match on these codes, so a released code
 * never changes: this table is the record. A new class adds its line here (the walk below fails
 * until it does); changing a line is a breaking change.
 */
const CODES: Record<string, string> = {
  RingvisorError: 'RV_ERR_GENERIC',
  InvalidArgumentError: 'RV_ERR_INVALID_ARG',
  ConfigError: 'RV_ERR_CONFIG',
  RingFullError: 'RV_ERR_RING_FULL',
  RogueRingError: 'RV_ERR_RING_ROGUE',
  MalformedRequestError: 'RV_ERR_MALFORMED_REQUEST',
  GrantError: 'RV_ERR_GRANT',
  EventChannelError: 'RV_ERR_EVTCHN',
  StoreError: 'RV_ERR_STORE',
  DomainError: 'RV_ERR_DOMAIN',
  DeviceError: 'RV_ERR_DEVICE',
  ProtocolError: 'RV_ERR_PROTOCOL',
  StateError: 'RV_ERR_STATE',
  StateRecordError: 'RV_ERR_STATE_RECORD',
  TimeoutError: 'RV_ERR_TIMEOUT',
  ClosedError: 'RV_ERR_CLOSED',
  UsageError: 'RV_ERR_USAGE',
  ControlEndpointError: 'RV_ERR_CONTROL',
  FaultTargetError: 'RV_ERR_FAULT_TARGET',
  DmaBlockedError: 'RV_ERR_DMA_BLOCKED',
  AtaCommandError: 'RV_ERR_ATA_COMMAND',
  BootSpecError: 'RV_ERR_BOOT_SPEC',
  NoSuchDeviceError: 'RV_ERR_NO_SUCH_DEVICE',
  BusyError: 'RV_ERR_BUSY',
  MeasurementError: 'RV_ERR_MEASUREMENT',
  InternalError: 'RV_ERR_INTERNAL',
  NoSuchGuestError: 'RV_ERR_NO_SUCH_GUEST',
  UnsupportedOperationError: 'RV_ERR_UNSUPPORTED',
  InvalidStateError: 'RV_ERR_INVALID_STATE',
  RecoveryError: 'RV_ERR_RECOVERY',
};

type ErrorClass = new (...args: never[]) => RingvisorError;

/** The exported classes of errors.ts that are RingvisorErrors, RemoteError aside (its code is the remote's). */
function exportedClasses(): [string, ErrorClass][] {
  const out: [string, ErrorClass][] = [];
  for (const [name, value] of Object.entries(errors as Record<string, unknown>)) {
    if (typeof value !== 'function' || value === RemoteError) continue;
    if (value === RingvisorError || (value.prototype as object) instanceof RingvisorError) out.push([name, value as ErrorClass]);
  }
  return out;
}

/** An instance of any class of the hierarchy: every constructor takes the message first; the rest are filled in. */
function instance(C: ErrorClass): RingvisorError {
  const make = C as unknown as new (message: string, ...rest: unknown[]) => RingvisorError;
  return new make('what went wrong', 0, 0, 0);
}

describe('error hierarchy (shared/errors.ts)', () => {
  it('every exported class has the code the table records, and the table has no class that is gone', () => {
    const classes = exportedClasses();
    expect(classes.length).toBeGreaterThan(20);
    const found = Object.fromEntries(classes.map(([name, C]) => [name, instance(C).code]));
    expect(found).toEqual(CODES);
  });

  it('codes are unique and read RV_ERR_…', () => {
    const codes = exportedClasses().map(([, C]) => instance(C).code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const code of codes) expect(code).toMatch(/^RV_ERR_[A-Z][A-Z0-9_]*$/);
  });

  it('a class keeps its code whatever it is constructed with, and names itself', () => {
    for (const [name, C] of exportedClasses()) {
      const e = instance(C);
      expect(e).toBeInstanceOf(Error);
      expect(e.name).toBe(name);
      expect(e.message).toBe('what went wrong');
      expect(e.toJSON()).toEqual({ name, code: CODES[name], message: 'what went wrong' });
    }
  });

  it('every code crosses the wire intact (toWireError → fromWireError), and a bare Error is RV_ERR_INTERNAL', () => {
    for (const [, C] of exportedClasses()) {
      const e = instance(C);
      const back = fromWireError(toWireError(e));
      expect(back.code).toBe(e.code);
      expect(back.message).toBe(e.message);
    }
    // A stray non-ringvisor error still crosses with a code, the one InternalError carries.
    expect(toWireError(new Error('bug')).code).toBe(new errors.InternalError('x').code);
    expect(toWireError('thrown string')).toEqual({ code: 'RV_ERR_INTERNAL', message: 'thrown string' });
  });
});
