/**
 * Para-virtualized devices (Xen's split drivers): the toolstack writes both halves of each device
 * into the store and starts its backend in dom0, which waits in InitWait for the guest's frontend.
 */
import { backendPath, frontendPath, XenbusState } from '@ringvisor/shared';
import { BlkBackend } from '../../backends/blk/device.js';
import { NetBackend } from '../../backends/net/device.js';
import type { DeviceConfig, GuestConfig } from '../config.js';
import type { HostContext } from '../host-context.js';
import type { CreatedDomain } from '../host-types.js';
import type { Dom0IoStack } from '../io-stack.js';
import type { DiskRegions } from '../disk-regions.js';
import type { DeviceAttacher } from './attacher.js';

export class PvAttacher implements DeviceAttacher {
  readonly mode = 'pv' as const;

  constructor(
    private readonly ctx: HostContext,
    private readonly io: Dom0IoStack,
    private readonly regions: DiskRegions,
  ) {}

  async attach(c: CreatedDomain, d: DeviceConfig, guest: GuestConfig): Promise<void> {
    if (d.type === 'cam') return; // a camera is an SV-IO VIF only (config.ts refuses it here)
    const { hv, log } = this.ctx;
    const { domain } = c;
    const s = hv.dom0Store;
    const fdir = frontendPath(domain.domid, d.type, d.devid);
    const bdir = backendPath(0, d.type, domain.domid, d.devid);
    // The toolstack writes both halves of the device before either driver looks (as xl does).
    await s.write(`${fdir}/backend`, bdir);
    await s.write(`${fdir}/backend-id`, '0');
    await s.write(`${fdir}/state`, String(XenbusState.Initialising));
    await s.write(`${bdir}/frontend`, fdir);
    await s.write(`${bdir}/frontend-id`, String(domain.domid));
    await s.write(`${bdir}/online`, '1');
    await s.write(`${bdir}/state`, String(XenbusState.Initialising));
    if (d.type === 'vbd') {
      const region = this.regions.regionOf(guest.name, d.devid, d.sizeMiB);
      await s.write(`${bdir}/params`, `phy:${this.ctx.config.name}-disk@${region.start}+${region.sectors}`);
      const b = new BlkBackend(hv, this.io.disk, domain.domid, d.devid, region, log);
      await b.start();
      c.blk.push(b);
    } else {
      await s.write(`${fdir}/mac`, d.mac);
      await s.write(`${bdir}/mac`, d.mac);
      if (d.rate) await s.write(`${bdir}/rate`, d.rate);
      const n = new NetBackend(hv, this.io.bridge, domain.domid, d.devid, log);
      await n.start();
      c.net.push(n);
    }
  }

  /** Each backend drains and unmaps (grants), closes its channel; its ring goes with it. */
  async release(c: CreatedDomain, reclaiming: boolean): Promise<void> {
    if (reclaiming) {
      for (const b of c.blk) await b.destroy().catch(() => {});
      for (const n of c.net) await n.destroy().catch(() => {});
      return;
    }
    for (const b of c.blk) await b.destroy();
    for (const n of c.net) await n.destroy();
  }
}
