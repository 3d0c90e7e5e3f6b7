/**
 * The types of the contract between the toolstack (dom0) and a guest runtime (domU): what a guest
 * is booted with, and what it reports. The schemas are in contracts/guest.ts; both sides import
 * from shared, neither imports the other.
 */

import type { Static } from '@sinclair/typebox';
import type { DeviceModeSchema, EmulatedDeviceSpecSchema, GuestBootSpecSchema, GuestDeviceStatsSchema, GuestStatsSchema, SvioVifSpecSchema } from '../contracts/guest.js';

/** What a guest is booted with (contracts/guest.ts has the schema and each field's meaning). */
export type GuestBootSpec = Static<typeof GuestBootSpecSchema>;
/**
 * A guest's emulated platform, as its firmware would describe it: the vCPU's I/O request slot
 * and the event port that kicks the ioreq server, and each device's I/O ports and virtual IRQ.
 * NIC addresses (ip/mac) are in `vifs` under the same devid; the MAC is also in the NIC's APROM.
 */
export type EmulatedDeviceSpec = Static<typeof EmulatedDeviceSpecSchema>;
export type DeviceMode = Static<typeof DeviceModeSchema>;
export type GuestDeviceStats = Static<typeof GuestDeviceStatsSchema>;
export type GuestStats = Static<typeof GuestStatsSchema>;
/** A VIF as the guest is told of it: kind and device, the VIF's id, its port, (threads) its page. */
export type SvioVifSpec = Static<typeof SvioVifSpecSchema>;

// Wire names, kept for call sites not yet on the typed clients (contracts/guest.ts, contracts/control.ts).
/** @deprecated use GuestBootContract.methods.boot */
export const GUEST_BOOT = 'guest.boot';
/** @deprecated use GuestControlContract.methods.stats */
export const GUEST_STATS = 'guest.stats';
/** @deprecated use GuestControlContract.methods.stop */
export const GUEST_STOP = 'guest.stop';
/** @deprecated use GuestControlContract.methods.start */
export const GUEST_START = 'guest.start';
/** @deprecated use GuestControlContract.methods.quiesce */
export const GUEST_QUIESCE = 'guest.quiesce';
/** @deprecated use GuestControlContract.methods.freeze */
export const GUEST_FREEZE = 'guest.freeze';
/** @deprecated use GuestControlContract.methods.attack */
export const GUEST_ATTACK = 'guest.attack';
/** @deprecated use GuestControlContract.methods.directUnplug */
export const GUEST_DIRECT_UNPLUG = 'guest.direct.unplug';
/** @deprecated use GuestControlContract.methods.directPlug */
export const GUEST_DIRECT_PLUG = 'guest.direct.plug';
/** @deprecated use GuestControlContract.methods.svioPlug */
export const GUEST_SVIO_PLUG = 'guest.svio.plug';
/** @deprecated use GuestControlContract.methods.powerLost */
export const GUEST_POWER_LOST = 'guest.disk.powerLost';
/** @deprecated use GuestControlContract.methods.mark */
export const GUEST_MARK = 'guest.mark';
/** @deprecated use GuestControlContract.notifications.ready */
export const GUEST_READY = 'guest.ready';
/** @deprecated use ControlContract.methods.ping */
export const CONTROL_PING = 'control.ping';
