/**
 * What the toolstack knows about one I/O mode, besides its attacher: the device kinds it
 * supports, the config keys it takes (with their validation and defaults), the rules over a
 * guest's devices of the mode, and the facts the Observatory and the CLI ask of it. Each
 * attach/<mode>-mode.ts exports one; attach/modes.ts lists them. The toolstack looks a device's
 * mode up there instead of comparing mode strings.
 */
import { ConfigError, parseRate } from '@ringvisor/shared';
import type { DeviceConfig, DeviceModeConfig } from '../config.js';
import type { DeviceDraft, DeviceKind } from '../device-kinds.js';

/** A config key only some modes take. */
export interface ModeConfigKey {
  readonly key: string;
  /** The message when a device of a mode that does not take the key has it. */
  refuse(where: string, mode: DeviceModeConfig): string;
}

export interface IoModeDescriptor {
  readonly mode: DeviceModeConfig;
  /** The device kinds a guest can have in this mode. */
  readonly kinds: readonly DeviceKind[];
  /** The config keys this mode takes beyond the kind's own. */
  readonly keys: readonly ModeConfigKey[];
  /** Check the device's mode keys (the kind is supported, foreign keys already refused); return the mode's fields with their defaults. */
  complete(d: DeviceDraft): Record<string, unknown>;
  /** Rules over one guest's devices of this mode (`guestWhere`: "<config>: guest <name>"). */
  checkGuest?(devices: readonly DeviceConfig[], guestWhere: string): void;
  /** The default block workload of a guest whose first vbd is of this mode, when not the usual 256 blocks at depth 8. */
  readonly blockWorkloadDefaults?: { blocks: number; queueDepth: number };
  /** The mode's devices are functions the hardware assigns to the guest (their counters come from the hardware). */
  readonly assignsFunctions?: boolean;
  /** Every register access of the mode's devices traps to a device model (the emulated-devices table of `top`). */
  readonly trapsToDeviceModel?: boolean;
  /** The mode's devices are split drivers: a frontend in the guest, a backend in dom0 (grant tables, event channels). */
  readonly splitDriver?: boolean;
  /** The mode's devices are served by the self-virtualizing device's own cores (SV-IO's engine). */
  readonly runsOnDeviceCores?: boolean;
  /** The name the injector and the Observatory know a device of this mode by, when not `<kind><devid>` (an emulated disk is `ata<devid>`). */
  deviceName?(kind: DeviceKind, devid: number): string;
  /**
   * How the bench counts the mode's notifications (docs/benchmarks.md): the guest device's
   * counters that are its sends and its suppressed ones, and whether dom0's backends' counts add
   * to them (a split driver has two ends that signal).
   */
  readonly notifications: { readonly sent: readonly string[]; readonly suppressed: readonly string[]; readonly backendsToo: boolean };
  /** Who copies the mode's bytes, as the bench samples it: dom0's grant copies, the device models (DMA and VMNet), the SV-IO engine; nobody when a function DMAs into the guest's own buffers. */
  readonly copiedBy: 'grants' | 'models' | 'engine' | 'nobody';
  /** A disk of this mode with no request queue: the depth it runs at whatever the workload asks, and what it is (the bench says so in the row). */
  readonly diskQueueLimit?: { readonly depth: number; readonly label: string };
}

/** `rate` (a credit limit `bytes,usec`), checked as the guest's driver will parse it. */
export function rateField(d: DeviceDraft): { rate?: string } {
  if (d.raw.rate === undefined) return {};
  try {
    parseRate(d.raw.rate as string);
  } catch (e) {
    throw new ConfigError(`${d.where}: ${(e as Error).message}`);
  }
  return { rate: d.raw.rate as string };
}

/** The `rate` key, taken by the modes with a credit limit (pv's netback, an SV-IO VIF). */
export const RATE_KEY: ModeConfigKey = {
  key: 'rate',
  refuse: (where, mode) => `${where}: "rate" is a credit limit (netback's, or an SV-IO VIF's); a ${mode} device has none (use mode: pv or svio)`,
};
