/**
 * The types of the contract between the toolstack (dom0) and a guest runtime (domU): what a guest
 * is booted with, and what it reports. The schemas are in contracts/guest.ts; both sides import
 * from shared, neither imports the other.
 */

import type { Static } from '@sinclair/typebox';
import { ControlContract } from '../contracts/control.js';
import { GuestBootContract, GuestControlContract } from '../contracts/guest.js';
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

// Wire names from the contracts, kept for call sites not yet on the typed clients.
/** @deprecated use GuestBootContract.methods.boot */
export const GUEST_BOOT = GuestBootContract.methods.boot.wire;
/** @deprecated use GuestControlContract.methods.stats */
export const GUEST_STATS = GuestControlContract.methods.stats.wire;
/** @deprecated use GuestControlContract.methods.stop */
export const GUEST_STOP = GuestControlContract.methods.stop.wire;
/** @deprecated use GuestControlContract.methods.start */
export const GUEST_START = GuestControlContract.methods.start.wire;
/** @deprecated use GuestControlContract.methods.quiesce */
export const GUEST_QUIESCE = GuestControlContract.methods.quiesce.wire;
/** @deprecated use GuestControlContract.methods.freeze */
export const GUEST_FREEZE = GuestControlContract.methods.freeze.wire;
/** @deprecated use GuestControlContract.methods.attack */
export const GUEST_ATTACK = GuestControlContract.methods.attack.wire;
/** @deprecated use GuestControlContract.methods.directUnplug */
export const GUEST_DIRECT_UNPLUG = GuestControlContract.methods.directUnplug.wire;
/** @deprecated use GuestControlContract.methods.directPlug */
export const GUEST_DIRECT_PLUG = GuestControlContract.methods.directPlug.wire;
/** @deprecated use GuestControlContract.methods.svioPlug */
export const GUEST_SVIO_PLUG = GuestControlContract.methods.svioPlug.wire;
/** @deprecated use GuestControlContract.methods.powerLost */
export const GUEST_POWER_LOST = GuestControlContract.methods.powerLost.wire;
/** @deprecated use GuestControlContract.methods.mark */
export const GUEST_MARK = GuestControlContract.methods.mark.wire;
/** @deprecated use GuestControlContract.notifications.ready */
export const GUEST_READY = GuestControlContract.notifications.ready.wire;
/** @deprecated use ControlContract.methods.ping */
export const CONTROL_PING = ControlContract.methods.ping.wire;
