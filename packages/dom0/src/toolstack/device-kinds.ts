/**
 * The device kinds a guest config can name, one entry each: what differs per kind (its own config
 * keys and their defaults, its default device id and mode, the workload it gets by default) is
 * data here, so the toolstack asks the table instead of branching on `'vbd'`, `'vif'` or `'cam'`.
 * Adding a kind: one entry here, and the modes that support it list it (attach/modes.ts).
 */
import { ConfigError } from '@ringvisor/shared';
import type { DeviceModeConfig } from './config.js';

export type DeviceKind = 'vbd' | 'vif' | 'cam';

/** One device of a guest being completed from its raw config (toolstack/config.ts). */
export interface DeviceDraft {
  /** The device's raw (schema-valid) config object. */
  raw: Readonly<Record<string, unknown>>;
  kind: DeviceKind;
  devid: number;
  mode: DeviceModeConfig;
  /** `<config>: guest <name>`, the start of every message about the guest. */
  guestWhere: string;
  /** `<config>: guest <name> <kind>/<devid>`, the start of every message about this device. */
  where: string;
  /** Where the host and guest sit, for default addresses. */
  hostIndex: number;
  guestIndex: number;
}

export interface DeviceKindDescriptor {
  readonly kind: DeviceKind;
  /** Config keys that only this kind takes (besides type, devid, mode and its mode's keys). */
  readonly ownKeys: readonly string[];
  /** When set, the only keys this kind takes besides its own: any other is refused with this message. */
  readonly onlyKeys?: { readonly keys: readonly string[]; refuse(guestWhere: string, key: string): string };
  /** The message for another kind's key on a device of this kind; default "belongs on a <kind>". */
  strangerKey?(guestWhere: string, where: string, key: string, owner: DeviceKind): string;
  /** The default device id of the nth device of this kind in a guest (as xl numbers them). */
  defaultDevid(nth: number): number;
  readonly defaultMode: DeviceModeConfig;
  /** Refusal when the device's mode does not support this kind. */
  unsupportedMode(where: string, mode: DeviceModeConfig): string;
  /** The kind's own fields, with their defaults. */
  complete(d: DeviceDraft): Record<string, unknown>;
  /** The workload a guest without a workloads key runs for a device of this kind. */
  readonly defaultWorkload?: 'block' | 'udp';
}

const vbd: DeviceKindDescriptor = {
  kind: 'vbd',
  ownKeys: ['sizeMiB'],
  // xvda, xvdb… (51712 + 16n)
  defaultDevid: (nth) => 51712 + nth * 16,
  defaultMode: 'pv',
  unsupportedMode: (where, mode) => `${where}: a vbd has no mode ${mode}`,
  complete: (d) => ({ sizeMiB: (d.raw.sizeMiB as number | undefined) ?? 16 }),
  strangerKey: (guestWhere, where, key, owner) => (owner === 'cam' ? `${where}: "${key}" belongs on a cam` : `${guestWhere} vbd: "${key}" belongs on a ${owner}`),
  defaultWorkload: 'block',
};

const vif: DeviceKindDescriptor = {
  kind: 'vif',
  ownKeys: ['mac', 'ip'],
  defaultDevid: (nth) => nth,
  defaultMode: 'pv',
  unsupportedMode: (where, mode) => `${where}: a vif has no mode ${mode}`,
  complete: (d) => ({ mac: (d.raw.mac as string | undefined) ?? guestMac(d.hostIndex, d.guestIndex, d.devid), ip: (d.raw.ip as string | undefined) ?? guestIp(d.hostIndex, d.guestIndex) }),
  strangerKey: (guestWhere, where, key, owner) => (owner === 'cam' ? `${where}: "${key}" belongs on a cam` : `${guestWhere} vif: "${key}" belongs on a ${owner}`),
  defaultWorkload: 'udp',
};

const cam: DeviceKindDescriptor = {
  kind: 'cam',
  ownKeys: ['width', 'height', 'fps'],
  onlyKeys: { keys: ['type', 'devid', 'mode', 'weight'], refuse: (guestWhere, key) => `${guestWhere} cam: "${key}" does not apply to a camera` },
  defaultDevid: (nth) => nth,
  defaultMode: 'svio',
  unsupportedMode: (where) => `${where}: a camera is reached as an SV-IO VIF only (mode: svio)`,
  complete: (d) => ({ width: (d.raw.width as number | undefined) ?? 160, height: (d.raw.height as number | undefined) ?? 120, fps: (d.raw.fps as number | undefined) ?? 30 }),
};

/** Every device kind, by name. */
export const DEVICE_KINDS: Readonly<Record<DeviceKind, DeviceKindDescriptor>> = { vbd, vif, cam };

/** Refuse, on a device of `kind`, the keys that belong to other kinds (or, for a kind with onlyKeys, anything else). */
export function checkKindKeys(kind: DeviceKind, raw: Readonly<Record<string, unknown>>, guestWhere: string, where: string, modeKeys: readonly string[]): void {
  const own = DEVICE_KINDS[kind];
  if (own.onlyKeys) {
    const allowed = new Set([...own.onlyKeys.keys, ...own.ownKeys]);
    for (const k of [...Object.values(DEVICE_KINDS).flatMap((x) => x.ownKeys), ...modeKeys]) if (k in raw && !allowed.has(k)) throw new ConfigError(own.onlyKeys.refuse(guestWhere, k));
    return;
  }
  for (const other of Object.values(DEVICE_KINDS))
    for (const k of other.kind === kind ? [] : other.ownKeys)
      if (k in raw) throw new ConfigError(own.strangerKey?.(guestWhere, where, k, other.kind) ?? `${where}: "${k}" belongs on a ${other.kind}`);
}

/** Items of one kind (devices of a config, device stats, …), typed as that kind. */
export function ofKind<T extends { type: string }, K extends DeviceKind>(items: readonly T[], kind: K): Array<T & { type: K }> {
  return items.filter((x): x is T & { type: K } => x.type === kind);
}

/** A guest's virtual block devices. */
export const vbdsOf = <T extends { type: string }>(items: readonly T[]) => ofKind(items, 'vbd');
/** A guest's virtual NICs. */
export const vifsOf = <T extends { type: string }>(items: readonly T[]) => ofKind(items, 'vif');

/** Fixed, documented addressing: MACs in Xen's 00:16:3e OUI, IPs in the RFC 2544 benchmark range. */
export function guestMac(hostIndex: number, guestIndex: number, devid: number): string {
  const h = (n: number) => n.toString(16).padStart(2, '0');
  return `00:16:3e:${h(hostIndex)}:${h(guestIndex + 1)}:${h(devid)}`;
}

export function guestIp(hostIndex: number, guestIndex: number): string {
  return `198.18.${hostIndex}.${guestIndex + 10}`;
}
