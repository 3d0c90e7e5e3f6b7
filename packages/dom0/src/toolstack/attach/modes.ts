/**
 * The I/O mode registry: one line per mode. A mode's descriptor (what config it takes, what the
 * Observatory and the CLI ask of it) sits next to its attacher in attach/<mode>-mode.ts; the
 * attachers themselves are made in attach/index.ts. Adding a mode: its folder's descriptor and
 * attacher, one line here, one in createAttachers.
 */
import type { DeviceModeConfig } from '../config.js';
import type { IoModeDescriptor, ModeConfigKey } from './mode-descriptor.js';
import { PV_MODE } from './pv-mode.js';
import { EMULATED_MODE } from './emulated-mode.js';
import { DIRECT_MODE } from './direct-mode.js';
import { SVIO_MODE } from './svio-mode.js';

export type { IoModeDescriptor, ModeConfigKey } from './mode-descriptor.js';

export const IO_MODES: Readonly<Record<DeviceModeConfig, IoModeDescriptor>> = {
  pv: PV_MODE,
  emulated: EMULATED_MODE,
  direct: DIRECT_MODE,
  svio: SVIO_MODE,
};

/** A mode's descriptor by name; undefined for a name that is no mode (a snapshot from another version, say). */
export function ioMode(mode: string): IoModeDescriptor | undefined {
  return Object.hasOwn(IO_MODES, mode) ? IO_MODES[mode as DeviceModeConfig] : undefined;
}

/** Every mode's config keys, each once (the first mode that takes it gives its refusal). */
export const MODE_CONFIG_KEYS: readonly ModeConfigKey[] = (() => {
  const keys = new Map<string, ModeConfigKey>();
  for (const m of Object.values(IO_MODES)) for (const k of m.keys) if (!keys.has(k.key)) keys.set(k.key, k);
  return [...keys.values()];
})();
