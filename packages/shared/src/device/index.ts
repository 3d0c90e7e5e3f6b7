/**
 * One device interface per side, and the saved-state record every device writes.
 *
 * Three sides carry devices:
 * - a guest device: a frontend (blkfront, netfront) or a driver (ATA, PCnet, VF, SV-IO queue driver);
 * - a dom0 device: a split-driver backend (blkback, netback) or a device model (Lance, ATA);
 * - a hardware function: an SR-IOV virtual function or an SV-IO VIF, run by the hardware simulator.
 *
 * Each implements {@link Device}: it attaches, stops, reports its own metrics already mapped to
 * ops/bytes/errors (so nobody outside the device branches on what kind it is), and saves its
 * state into a {@link DeviceStateRecord}. Restore is the other half of persistence: a fresh
 * instance, built with the same constructor arguments (memory, store, event channels, backing),
 * takes a record and carries on the I/O that was in flight, nothing lost and nothing done twice.
 * This is QEMU's vmstate and Firecracker's `Persist` (`save(&self) -> State`,
 * `restore(args, &State) -> Self`) in one shape.
 *
 * Why a record and not a snapshot of the object: the record is plain data (it crosses msgpack
 * and JSON), it names the device type and the version of its layout (a newer build restores an
 * older record, or refuses it with a clear error), and it holds only what the device needs to
 * resume (registers, ring indices and private state, in-flight requests, queues), never what
 * the environment rebuilds (guest memory, event channels, file handles).
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { StateRecordError } from '../errors.js';

/** What a device carries. */
export type DeviceKind = 'blk' | 'net' | 'cam';
/** How a guest reaches the device: split drivers, full emulation, an assigned function, a VIF. */
export type IoMode = 'pv' | 'emulated' | 'direct' | 'svio';
/** Which runtime runs this half of the device. */
export type DeviceSide = 'guest' | 'dom0' | 'hardware';

/** Plain data a state record may hold: what msgpack carries and JSON can show (u64s as decimal strings). */
export type StateValue = null | boolean | number | string | Uint8Array | StateValue[] | { [field: string]: StateValue };

/** The saved state of one device: versioned and self-describing. */
export interface DeviceStateRecord<S extends StateValue = StateValue> {
  /** Marks a record, so a stray object is refused before its fields are read. */
  readonly format: 'ringvisor/device-state';
  /** The device type whose layout `state` follows (e.g. 'blkfront', 'blkback', 'lance'). */
  readonly type: string;
  /** The layout's version; bumped whenever a field is added, removed or changes meaning. */
  readonly version: number;
  /** The device instance it was taken from, for the reader (e.g. 'dom3/vbd/51712'). */
  readonly instance: string;
  readonly state: S;
}

/** A device's counters, mapped by the device itself onto the three numbers every view shows. */
export interface DeviceMetrics {
  ops: number;
  bytes: number;
  errors: number;
  /** Every mechanism the device counts (notifications, traps, grant ops, …), by name. */
  detail: Record<string, number | string | boolean>;
}

/** Names a device: what it carries, how it is reached, which side, which instance. */
export interface DeviceIdentity {
  readonly kind: DeviceKind;
  readonly mode: IoMode;
  readonly side: DeviceSide;
  /** The device type name its state records carry (matches DeviceStateRecord.type). */
  readonly type: string;
  readonly devid: number;
}

/** The one interface every device on every side implements. */
export interface Device {
  readonly identity: DeviceIdentity;
  /** Connects the device to its other half (handshake, register setup); resolves when I/O can flow. */
  attach(): Promise<void>;
  /** Stops the device: no more I/O; resources it holds (grants, mappings, ports) released. */
  stop(reason: string): Promise<void>;
  metrics(): DeviceMetrics;
  /**
   * Brings the device to a point where save() captures everything: it stops taking new work
   * and waits for work it started on something outside the record (a file read, a timer) to
   * finish, keeping those completions in its state. Requests still on a ring, or taken but not
   * started, stay in flight and are part of the state. Between quiesce() and save() (or
   * resume()) the device does nothing on its own.
   */
  quiesce(): Promise<void>;
  /** Undoes quiesce(): the device carries on as if it had not been paused (save without moving). */
  resume(): void;
  /**
   * Saves the device's state; the device must be quiesced. A fresh instance of the same type,
   * built with the same constructor arguments, restores the record (a static `restore(args,
   * record)` on the device class, checked through the type's DeviceStateLayout) and completes
   * every request that was in flight exactly once.
   */
  save(): DeviceStateRecord;
}

/**
 * One state layout of one device type: the version it writes, and a check that turns an
 * untrusted record (it may come off the wire) into the typed state, or throws StateRecordError.
 * `upgrade` maps an older version's state onto the current layout.
 */
export interface DeviceStateLayout<S extends StateValue> {
  readonly type: string;
  readonly version: number;
  /** Validates a state of the current version (shape, ranges); throws StateRecordError with the path. */
  check(state: unknown): S;
  /** Older versions this build still restores: version → mapping to the current state. */
  readonly upgrade?: Readonly<Record<number, (state: unknown) => unknown>>;
}

/** Writes a record in `layout`'s current version. */
export function saveRecord<S extends StateValue>(layout: DeviceStateLayout<S>, instance: string, state: S): DeviceStateRecord<S> {
  return { format: 'ringvisor/device-state', type: layout.type, version: layout.version, instance, state };
}

/**
 * Reads a record for `layout`: checks the envelope, upgrades an older version, validates the
 * state. Every refusal is a StateRecordError saying what was expected and what came.
 */
export function loadRecord<S extends StateValue>(layout: DeviceStateLayout<S>, record: unknown): S {
  if (typeof record !== 'object' || record === null) throw new StateRecordError(`${layout.type}: a device state record is an object, got ${record === null ? 'null' : typeof record}`);
  const r = record as Partial<DeviceStateRecord>;
  if (r.format !== 'ringvisor/device-state') throw new StateRecordError(`${layout.type}: not a device state record (format ${JSON.stringify(r.format)})`);
  if (r.type !== layout.type) throw new StateRecordError(`a ${JSON.stringify(r.type)} record cannot restore a ${layout.type} device`);
  if (typeof r.version !== 'number' || !Number.isInteger(r.version)) throw new StateRecordError(`${layout.type}: the record has no integer version`);
  let state: unknown = r.state;
  if (r.version !== layout.version) {
    const up = layout.upgrade?.[r.version];
    if (r.version > layout.version || !up)
      throw new StateRecordError(
        `${layout.type}: this build restores state version ${layout.version}${layout.upgrade ? ` (or ${Object.keys(layout.upgrade).join(', ')})` : ''}, the record is version ${r.version}`,
      );
    state = up(state);
  }
  return layout.check(state);
}

/**
 * A layout whose check is a TypeBox schema (the same definition gives the TypeScript type), so a
 * device declares its state once: `const BlkfrontState = Type.Object({...})`, then
 * `defineStateLayout('blkfront', 1, BlkfrontState)`. Range checks beyond the schema go in `refine`.
 */
export function defineStateLayout<T extends TSchema>(
  type: string,
  version: number,
  schema: T,
  options: { refine?: (state: Static<T>) => string | undefined; upgrade?: Readonly<Record<number, (state: unknown) => unknown>> } = {},
): DeviceStateLayout<Static<T> & StateValue> {
  const compiled = TypeCompiler.Compile(schema);
  return {
    type,
    version,
    ...(options.upgrade ? { upgrade: options.upgrade } : {}),
    check(state: unknown): Static<T> & StateValue {
      const first = compiled.Errors(state).First();
      if (first) throw new StateRecordError(`${type} v${version}: state${first.path.replaceAll('/', '.')} ${first.message}`);
      const problem = options.refine?.(state as Static<T>);
      if (problem) throw new StateRecordError(`${type} v${version}: ${problem}`);
      return state as Static<T> & StateValue;
    },
  };
}
