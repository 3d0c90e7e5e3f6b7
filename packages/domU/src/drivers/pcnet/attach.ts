/** Emulated network (PCnet driver on an emulated Lance, each port access a trap of the vCPU), found through drivers/registry.ts. */
import { InvalidArgumentError, NoSuchDeviceError } from '@ringvisor/shared';
import type { GuestDeviceEntry } from '../guest-device.js';
import { PcnetDriver } from './device.js';
import { LANCE_ATTACKS, lanceAttack, type LanceAttack } from './misbehave.js';

export const emulatedNetEntry: GuestDeviceEntry = {
  kind: 'net',
  mode: 'emulated',
  async attach(entry, ctx) {
    const where = ctx.spec.emulated?.nics.find((x) => x.devid === entry.devid);
    const io = ctx.io;
    if (!where || !io) throw new NoSuchDeviceError(`emulated vif ${entry.devid}: the platform describes no such NIC`);
    const { memory, frames } = ctx.kernel;
    const driver = new PcnetDriver({ io, base: where.base, memory, frames, onInterrupt: ctx.irq(where.irqPort), devid: entry.devid });
    const { mac } = driver.probe();
    await driver.open();
    return {
      device: driver,
      attackName: `lance${entry.devid}`,
      nic: { mac, transmit: (f) => driver.transmit(f), onReceive: (cb) => driver.onReceive(cb) },
      // The vCPU's traps are this device's mechanism too: its row carries them.
      metrics: () => {
        const m = driver.metrics();
        return { ...m, detail: { ...m.detail, ...ctx.vcpuTraps() } };
      },
      attack: async (attack, count, seed) => {
        if (!LANCE_ATTACKS.includes(attack as LanceAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for a Lance (one of ${LANCE_ATTACKS.join(', ')})`);
        const out = lanceAttack({ io, base: where.base, memory, frames }, attack as LanceAttack, count, seed);
        await driver.reopen();
        return { ...out, recovered: true };
      },
      close: async () => driver.close(),
    };
  },
};
