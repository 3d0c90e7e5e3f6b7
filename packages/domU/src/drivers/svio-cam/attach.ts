/** SV-IO camera (the guest's VIF driver over a camera VIF, each frame checked by its consumer), found through drivers/registry.ts. */
import type { GuestDeviceEntry } from '../guest-device.js';
import { svioHooks, vifFor } from '../svio-vif.js';
import { SvioCamDriver } from './device.js';

export const svioCameraEntry: GuestDeviceEntry = {
  kind: 'cam',
  mode: 'svio',
  async attach(entry, ctx) {
    const known = vifFor(ctx, 'cam', entry.devid, `cam ${entry.devid}`);
    const driver = new SvioCamDriver(await ctx.openVif(known), ctx.kernel.memory, ctx.kernel.frames);
    return { device: driver, attackName: `cam${entry.devid}`, camera: driver, metrics: () => driver.metrics(), ...svioHooks(ctx, known, driver) };
  },
};
