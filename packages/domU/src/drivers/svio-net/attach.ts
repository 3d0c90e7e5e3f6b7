/** SV-IO network (the guest's VIF driver over a network VIF's two queues), found through drivers/registry.ts. */
import type { GuestDeviceEntry } from '../guest-device.js';
import { macBytes } from '../guest-device.js';
import { svioHooks, vifFor } from '../svio-vif.js';
import { SvioNetDriver } from './device.js';

export const svioNetEntry: GuestDeviceEntry = {
  kind: 'net',
  mode: 'svio',
  async attach(entry, ctx) {
    const known = vifFor(ctx, 'net', entry.devid, `vif ${entry.devid}`);
    const driver = new SvioNetDriver(await ctx.openVif(known), ctx.kernel.memory, ctx.kernel.frames);
    return {
      device: driver,
      attackName: `vif${entry.devid}`,
      nic: { mac: macBytes(driver.mac), transmit: (f) => driver.transmit(f), onReceive: (cb) => driver.onReceive(cb) },
      metrics: () => driver.metrics(),
      ...svioHooks(ctx, known, driver),
    };
  },
};
