/**
 * Emulated devices (full emulation): no xenbus, the guest finds each device at its I/O ports as
 * on a PC; the domain's platform (its ioreq server and the Lance and ATA models) serves the traps,
 * in dom0 or in the guest's hosted VMApp.
 */
import { ConfigError } from '@ringvisor/shared';
import { EmulatedPlatform } from '../../devicemodels/platform.js';
import type { DeviceConfig, GuestConfig, VbdConfig, VifConfig } from '../config.js';
import type { HostContext } from '../host-context.js';
import type { CreatedDomain } from '../host-types.js';
import type { Dom0IoStack } from '../io-stack.js';
import type { DiskRegions } from '../disk-regions.js';
import type { DeviceAttacher } from './attacher.js';

function emulatedDevices(guest: GuestConfig): Array<VbdConfig | VifConfig> {
  return guest.devices.filter((d): d is VbdConfig | VifConfig => d.mode === 'emulated');
}

export class EmulatedAttacher implements DeviceAttacher {
  readonly mode = 'emulated' as const;

  constructor(
    private readonly ctx: HostContext,
    private readonly io: Dom0IoStack,
    private readonly regions: DiskRegions,
  ) {}

  check(guest: GuestConfig, linked: boolean): void {
    const emulated = emulatedDevices(guest);
    if (emulated.length > 0 && linked && emulated[0].placement !== 'hosted' && !this.ctx.opts.ws)
      throw new ConfigError(
        `guest ${guest.name}: emulated devices (${emulated.map((d) => `${d.type} ${d.devid}`).join(', ')}) with placement: dom0 need the guest's memory shared with dom0, or a guest process with a vCPU link (the ws transport); with linked guests in threads use placement: hosted.`,
      );
  }

  /** The domain's platform, made before any device of the domain binds a channel (as it always was). */
  prepare(c: CreatedDomain, guest: GuestConfig): void {
    const emulated = emulatedDevices(guest);
    if (emulated.length === 0) return;
    c.platform = new EmulatedPlatform(this.ctx.hv, c.domain, this.ctx.log, emulated[0].placement ?? 'dom0', { vcpuLink: this.ctx.opts.ws !== undefined });
  }

  async attach(c: CreatedDomain, d: DeviceConfig, guest: GuestConfig): Promise<void> {
    // No xenbus for an emulated device: the guest finds it at its I/O ports, as on a PC.
    if (d.type === 'vbd') c.platform!.addDisk(d.devid, this.io.disk, this.io.frames, this.regions.regionOf(guest.name, d.devid, d.sizeMiB));
    else if (d.type === 'vif') c.platform!.addNic(d.devid, d.mac, this.io.bridge, { vmmIo: d.vmmIo === true, sendCombining: d.sendCombining === true });
  }

  async finish(c: CreatedDomain): Promise<void> {
    await c.platform?.start();
  }

  /** Last counters are kept for the summary; a hosted VMApp stops here. */
  async release(c: CreatedDomain, reclaiming: boolean): Promise<void> {
    if (reclaiming) await c.platform?.destroy().catch(() => {});
    else await c.platform?.destroy();
  }
}
