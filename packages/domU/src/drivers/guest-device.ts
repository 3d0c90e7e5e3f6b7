/**
 * What a guest device is to the guest that boots it: the `Device` (identity, metrics, persist),
 * plus what it offers the guest — a block device for the block workloads, a network interface
 * the guest puts a NetStack on, a camera stream — and the hooks the toolstack's calls reach
 * (re-plug after a reclaim or a VIF re-creation, unplug, a hostile-driver attack).
 *
 * Each driver folder builds its own (its `attach.ts`); drivers/registry.ts finds the builder for
 * a boot-spec entry's kind × mode. The guest holds one list of these and never asks which mode
 * a device is in.
 */
import type { Device, DeviceKind, DeviceMetrics, DirectFunctionSpec, GuestBootSpec, IoMode, Logger, PortIo, SvioVifSpec } from '@ringvisor/shared';
import type { GuestKernel } from '../kernel/kernel.js';
import type { DirectFunction } from '../kernel/direct.js';
import type { OpenVif } from '../kernel/svio.js';
import type { BlockDevice } from '../workloads/block-verifier.js';

/** One device of the boot spec: what it carries, how it is reached, its devid (and, for a NIC, its address). */
export interface BootDeviceSpec {
  readonly kind: DeviceKind;
  readonly mode: IoMode;
  readonly devid: number;
  /** A NIC's IPv4 address and configured MAC (the boot spec's `vifs` entry). */
  readonly ip?: string;
  readonly mac?: string;
}

/** A network interface: the guest puts a NetStack on it. */
export interface GuestNic {
  readonly mac: Uint8Array;
  transmit(frame: Uint8Array): boolean;
  onReceive(cb: (frame: Uint8Array) => void): void;
}

/** A camera stream, each frame checked by its consumer. */
export interface GuestCamera {
  start(): void;
  stopStream(): void;
  readonly consumer: { readonly stats: { readonly frames: number; readonly corrupted: number; readonly reordered: number } };
}

/** What a device builder may use from the guest that boots it. */
export interface GuestDeviceContext {
  readonly kernel: GuestKernel;
  readonly spec: GuestBootSpec;
  readonly log: Logger;
  /** Where the emulated-device drivers execute their in/out instructions (absent without an emulated platform). */
  readonly io?: PortIo;
  /** An event port as a device interrupt line. */
  irq(port: number): (handler: () => void) => void;
  /** The vCPU's trap figures (one vCPU serves every emulated device of the guest). */
  vcpuTraps(): Record<string, number>;
  /** An assigned function, reached by shared memory (threads) or the guest's direct link (ws). */
  directFunction(f: DirectFunctionSpec): Promise<DirectFunction>;
  /** Opens a VIF, over the direct link when it has no register page. */
  openVif(v: SvioVifSpec): Promise<OpenVif>;
  /** ws: the hardware now answers at `url` (a restarted hardware is a new process); relinks if so. */
  hardwareAt(url: string | undefined): Promise<void>;
  /** Whether the guest has a direct link to the hardware (a VIF without a page needs one). */
  hasDirectLink(): boolean;
}

/** One booted device of a guest. */
export interface GuestDevice {
  readonly device: Device;
  /** The name hostile-driver attacks use: "vbd51712", "vif0", "cam0", "lance0", "ata51712". */
  readonly attackName: string;
  readonly block?: BlockDevice;
  readonly nic?: GuestNic;
  readonly camera?: GuestCamera;
  /** The device's metrics as the guest reports them (emulated devices add the vCPU's trap figures). */
  metrics(): DeviceMetrics;
  /** Direct I/O: the function was assigned again (hot-plug after a reclaim). */
  plugFunction?(f: DirectFunctionSpec, hwUrl?: string): Promise<void>;
  /** Direct I/O: the toolstack reclaimed the function. */
  unplugFunction?(reason: string): void;
  /** SV-IO: the VIF was created again (a device reset, a hardware restart). */
  plugVif?(v: SvioVifSpec, hwUrl?: string): Promise<void>;
  /** Turn the guest's own driver against its device (fault plans, hostile-driver tests). */
  attack?(attack: string, count: number, seed: number): AttackResult;
  /** Orderly close at guest stop (frontends: Closing → Closed, grants released). */
  close?(): Promise<void>;
}

/** One kind × mode: builds the device from its boot-spec entry, in the guest's context. */
export interface GuestDeviceEntry {
  readonly kind: DeviceKind;
  readonly mode: IoMode;
  attach(entry: BootDeviceSpec, ctx: GuestDeviceContext): Promise<GuestDevice>;
}

export function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16)));
}

/** What an attack reports (what was sent, how the device answered): plain data, or its promise. */
export type AttackResult = object | Promise<object>;
