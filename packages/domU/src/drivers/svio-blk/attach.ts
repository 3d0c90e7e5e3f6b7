/** SV-IO block (the guest's VIF driver over a block VIF's two queues), found through drivers/registry.ts. */
import type { GuestDeviceEntry } from '../guest-device.js';
import { svioHooks, vifFor } from '../svio-vif.js';
import { SvioBlkDriver } from './device.js';

export const svioBlockEntry: GuestDeviceEntry = {
  kind: 'blk',
  mode: 'svio',
  async attach(entry, ctx) {
    const known = vifFor(ctx, 'blk', entry.devid, `vbd ${entry.devid}`);
    const driver = new SvioBlkDriver(await ctx.openVif(known), ctx.kernel.memory, ctx.kernel.frames);
    return { device: driver, attackName: `vbd${entry.devid}`, block: driver, metrics: () => driver.metrics(), ...svioHooks(ctx, known, driver) };
  },
};
