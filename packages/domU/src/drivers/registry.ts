/**
 * The guest's device registry: one line per kind × mode. Each line names the builder that lives
 * in that driver's folder (its `attach.ts`); the guest iterates its boot spec through
 * {@link bootDevices} and {@link guestDeviceEntry} and never branches on a mode or kind itself.
 *
 * Adding a device kind or mode on the guest side: a folder with the driver and its `attach.ts`
 * (a {@link GuestDeviceEntry}), and one line in {@link GUEST_DEVICE_ENTRIES}.
 *
 * The order of the lines is the order of the devices in a guest's stats (PV, emulated, direct,
 * SV-IO; block before network); the order of {@link bootDevices} is the boot order (block
 * devices, cameras, then network interfaces), which fixes event-channel port numbers.
 */
import { InvalidArgumentError, NoSuchDeviceError, type DeviceKind, type GuestBootSpec, type GuestDeviceStats, type IoMode } from '@ringvisor/shared';
import type { BootDeviceSpec, GuestDeviceEntry } from './guest-device.js';
import { pvBlockEntry } from './blkfront/attach.js';
import { pvNetEntry } from './netfront/attach.js';
import { emulatedBlockEntry } from './ata/attach.js';
import { emulatedNetEntry } from './pcnet/attach.js';
import { directBlockEntry } from './vf-blk/attach.js';
import { directNetEntry } from './vf-nic/attach.js';
import { svioBlockEntry } from './svio-blk/attach.js';
import { svioNetEntry } from './svio-net/attach.js';
import { svioCameraEntry } from './svio-cam/attach.js';

export type { BootDeviceSpec, GuestDevice, GuestDeviceContext, GuestDeviceEntry, GuestNic, GuestCamera } from './guest-device.js';

/** Every kind × mode a guest can boot, in stats order. */
export const GUEST_DEVICE_ENTRIES: readonly GuestDeviceEntry[] = [
  pvBlockEntry,
  pvNetEntry,
  emulatedBlockEntry,
  emulatedNetEntry,
  directBlockEntry,
  directNetEntry,
  svioBlockEntry,
  svioNetEntry,
  svioCameraEntry,
];

/** A kind × mode the registry has no entry for. */
export class UnknownDeviceModeError extends InvalidArgumentError {
  constructor(
    readonly kind: string,
    readonly mode: string,
  ) {
    super(`no guest device for kind ${kind} in mode ${mode} (have: ${GUEST_DEVICE_ENTRIES.map((e) => `${e.kind}/${e.mode}`).join(', ')})`);
  }
}

/** The entry for `kind` × `mode`; an unknown pair is refused. */
export function guestDeviceEntry(kind: string, mode: string): GuestDeviceEntry {
  const e = GUEST_DEVICE_ENTRIES.find((x) => x.kind === kind && x.mode === mode);
  if (!e) throw new UnknownDeviceModeError(kind, mode);
  return e;
}

/** Where `kind` × `mode` stands in a guest's stats (the registry's line). */
export function statsRank(kind: DeviceKind, mode: IoMode): number {
  return GUEST_DEVICE_ENTRIES.indexOf(guestDeviceEntry(kind, mode));
}

/** The boot spec's devices in boot order: block devices, SV-IO cameras, network interfaces. `mode` absent = pv. */
export function bootDevices(spec: GuestBootSpec): BootDeviceSpec[] {
  return [
    ...spec.vbds.map((v): BootDeviceSpec => ({ kind: 'blk', mode: v.mode ?? 'pv', devid: v.devid })),
    ...(spec.svio?.vifs ?? []).filter((c) => c.kind === 'cam').map((c): BootDeviceSpec => ({ kind: 'cam', mode: 'svio', devid: c.devid })),
    ...spec.vifs.map((v): BootDeviceSpec => ({ kind: 'net', mode: v.mode ?? 'pv', devid: v.devid, ip: v.ip, mac: v.mac })),
  ];
}

/** What a guest's stats call a device of each kind (Xen's device names). */
const STATS_TYPE: Record<DeviceKind, GuestDeviceStats['type']> = { blk: 'vbd', net: 'vif', cam: 'cam' };

export function statsType(kind: DeviceKind): GuestDeviceStats['type'] {
  return STATS_TYPE[kind];
}

/** The device a direct function (kind 'nic' | 'disk') belongs to. */
export function directFunctionDevice(f: { kind: string; devid: number }): { kind: DeviceKind; mode: IoMode; devid: number } {
  if (f.kind === 'nic') return { kind: 'net', mode: 'direct', devid: f.devid };
  if (f.kind === 'disk') return { kind: 'blk', mode: 'direct', devid: f.devid };
  throw new NoSuchDeviceError(`no direct device of function kind ${f.kind}`);
}

/** The device an SV-IO VIF (kind 'net' | 'blk' | 'cam') belongs to. */
export function svioVifDevice(v: { kind: string; devid: number }): { kind: DeviceKind; mode: IoMode; devid: number } {
  if (v.kind === 'net' || v.kind === 'blk' || v.kind === 'cam') return { kind: v.kind, mode: 'svio', devid: v.devid };
  throw new NoSuchDeviceError(`no SV-IO device of VIF kind ${v.kind}`);
}

/** Is `kind` a function kind a direct function can have? (the toolstack's unplug/plug parameters) */
export function isDirectFunctionKind(kind: unknown): kind is 'nic' | 'disk' {
  return kind === 'nic' || kind === 'disk';
}

/** Is `kind` a VIF kind an SV-IO VIF can have? (the toolstack's plug parameters) */
export function isSvioVifKind(kind: unknown): kind is 'net' | 'blk' | 'cam' {
  return kind === 'net' || kind === 'blk' || kind === 'cam';
}
