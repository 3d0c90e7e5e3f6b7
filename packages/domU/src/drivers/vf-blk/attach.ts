/** Direct block (a virtual function assigned to the guest, driven by the guest itself), found through drivers/registry.ts. */
import { InvalidArgumentError, NoSuchDeviceError } from '@ringvisor/shared';
import type { GuestDeviceEntry } from '../guest-device.js';
import { VfBlkDriver } from './device.js';
import { strayDiskDma } from './misbehave.js';

export const directBlockEntry: GuestDeviceEntry = {
  kind: 'blk',
  mode: 'direct',
  async attach(entry, ctx) {
    const f = ctx.spec.direct?.functions.find((x) => x.kind === 'disk' && x.devid === entry.devid);
    if (!f) throw new NoSuchDeviceError(`direct vbd ${entry.devid}: no function was assigned for it`);
    const { memory, frames } = ctx.kernel;
    const driver = new VfBlkDriver({ fn: await ctx.directFunction(f), memory, frames });
    await driver.open();
    return {
      device: driver,
      attackName: `vbd${entry.devid}`,
      block: driver,
      metrics: () => driver.metrics(),
      plugFunction: async (fn, hwUrl) => {
        await ctx.hardwareAt(hwUrl);
        await driver.reattach(await ctx.directFunction(fn));
      },
      unplugFunction: (reason) => driver.detach(reason),
      attack: (attack, count, seed) => {
        if (attack !== 'stray-dma') throw new InvalidArgumentError(`guest.attack: a direct device takes attack stray-dma, not ${attack}`);
        return strayDiskDma(driver, memory.frames, count, seed);
      },
    };
  },
};
