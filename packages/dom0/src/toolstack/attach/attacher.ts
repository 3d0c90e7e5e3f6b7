/**
 * One I/O mode's half of building a domain: each mode (pv, emulated, direct, svio) has an
 * attacher, and the toolstack iterates them — to check a guest's config, attach each device in
 * config order, bring devices back after a hardware restart, and release them when the domain goes.
 */
import type { DeviceConfig, DeviceModeConfig, GuestConfig } from '../config.js';
import type { CreatedDomain, HwsimRuntime } from '../host-types.js';

export interface DeviceAttacher {
  readonly mode: DeviceModeConfig;
  /** Refuse, before the domain is built, this mode's devices the host's transport cannot run (`linked`: no memory shared with dom0). */
  check?(guest: GuestConfig, linked: boolean): void;
  /** Before the domain's first device is attached (the emulated platform, which binds a channel). */
  prepare?(c: CreatedDomain, guest: GuestConfig): void;
  /** Attach one of the guest's devices of this mode to the domain being built. */
  attach(c: CreatedDomain, device: DeviceConfig, guest: GuestConfig): Promise<void>;
  /** Every device of the domain is attached (the emulated platform starts). */
  finish?(c: CreatedDomain): Promise<void>;
  /** The hardware is going away: what this mode holds on it is stale from now. */
  hardwareGoing?(c: CreatedDomain): void;
  /** A new hardware is up: this mode's devices of the domain again; `notBack` records one that did not come back. */
  hardwareBack?(c: CreatedDomain, notBack: (device: string, e: Error) => void): Promise<void>;
  /**
   * The domain goes (its runtime died, or shutdown): let go of this mode's devices. `reclaiming`:
   * a dead guest's domain, where a device failing to stop must not stop the reclaim.
   */
  release(c: CreatedDomain, reclaiming: boolean): Promise<void>;
}

/** The hardware simulator as the attachers reach it (the supervisor restarts it under them). */
export interface HardwareAccess {
  readonly runtime?: HwsimRuntime;
  /** The hardware's runtime is down (killed, crashed, not yet back). */
  readonly down: boolean;
  /** ws: where guests reach the hardware now (their boot spec, and every re-plug). */
  hwUrlForGuests(): { hwUrl?: string };
}
