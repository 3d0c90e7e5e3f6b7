/** Direct network (a virtual function assigned to the guest, driven by the guest itself), found through drivers/registry.ts. */
import { InvalidArgumentError, NoSuchDeviceError } from '@ringvisor/shared';
import type { GuestDeviceEntry } from '../guest-device.js';
import { macBytes } from '../guest-device.js';
import { VfNicDriver } from './device.js';
import { strayNicDma } from './misbehave.js';

export const directNetEntry: GuestDeviceEntry = {
  kind: 'net',
  mode: 'direct',
  async attach(entry, ctx) {
    const f = ctx.spec.direct?.functions.find((x) => x.kind === 'nic' && x.devid === entry.devid);
    if (!f) throw new NoSuchDeviceError(`direct vif ${entry.devid}: no function was assigned for it`);
    const { kernel, spec } = ctx;
    const driver = new VfNicDriver({
      fn: await ctx.directFunction(f),
      memory: kernel.memory,
      frames: kernel.frames,
      traceLabel: { host: kernel.host, domid: spec.domid, device: `vif${entry.devid}`, iface: `${spec.name}/vif${entry.devid}` },
    });
    await driver.open();
    return {
      device: driver,
      attackName: `vif${entry.devid}`,
      nic: { mac: macBytes(driver.mac), transmit: (fr) => driver.transmit(fr), onReceive: (cb) => driver.onReceive(cb) },
      metrics: () => driver.metrics(),
      plugFunction: async (fn, hwUrl) => {
        await ctx.hardwareAt(hwUrl);
        await driver.reattach(await ctx.directFunction(fn));
      },
      unplugFunction: (reason) => driver.detach(reason),
      attack: (attack, count, seed) => {
        if (attack !== 'stray-dma') throw new InvalidArgumentError(`guest.attack: a direct device takes attack stray-dma, not ${attack}`);
        return strayNicDma(driver, kernel.memory.frames, count, seed);
      },
    };
  },
};
