/** Emulated block (ATA PIO driver over port I/O, each access a trap of the vCPU), found through drivers/registry.ts. */
import { InvalidArgumentError, NoSuchDeviceError } from '@ringvisor/shared';
import type { GuestDeviceEntry } from '../guest-device.js';
import { AtaDriver } from './device.js';
import { ATA_ATTACKS, ataAttack, type AtaAttack } from './misbehave.js';

export const emulatedBlockEntry: GuestDeviceEntry = {
  kind: 'blk',
  mode: 'emulated',
  async attach(entry, ctx) {
    const where = ctx.spec.emulated?.disks.find((x) => x.devid === entry.devid);
    const io = ctx.io;
    if (!where || !io) throw new NoSuchDeviceError(`emulated vbd ${entry.devid}: the platform describes no such disk`);
    const driver = new AtaDriver({ io, onInterrupt: ctx.irq(where.irqPort), commandBase: where.commandBase, controlBase: where.controlBase, devid: entry.devid });
    await driver.probe();
    return {
      device: driver,
      attackName: `ata${entry.devid}`,
      block: driver,
      // The vCPU's traps are this device's mechanism too: its row carries them.
      metrics: () => {
        const m = driver.metrics();
        return { ...m, detail: { ...m.detail, ...ctx.vcpuTraps() } };
      },
      attack: (attack, count, seed) => {
        if (!ATA_ATTACKS.includes(attack as AtaAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for an ATA disk (one of ${ATA_ATTACKS.join(', ')})`);
        return driver.exclusive(() => ataAttack({ io, commandBase: where.commandBase, controlBase: where.controlBase, sectors: driver.sectors }, attack as AtaAttack, count, seed));
      },
    };
  },
};
