/** PV block (blkfront): the guest's side of the vbd split driver, found through drivers/registry.ts. */
import { InvalidArgumentError, errorFields } from '@ringvisor/shared';
import type { GuestDeviceEntry } from '../guest-device.js';
import { BlkFront } from './device.js';
import { BLK_ATTACKS, type BlkAttack } from './misbehave.js';

export const pvBlockEntry: GuestDeviceEntry = {
  kind: 'blk',
  mode: 'pv',
  async attach(entry, { kernel, log }) {
    const front = new BlkFront(kernel, entry.devid);
    await front.connect();
    return {
      device: front,
      attackName: `vbd${entry.devid}`,
      block: front,
      metrics: () => front.metrics(),
      attack: (attack, count, seed) => {
        if (!BLK_ATTACKS.includes(attack as BlkAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for a vbd (one of ${BLK_ATTACKS.join(', ')})`);
        return front.attack(attack as BlkAttack, count, seed);
      },
      close: () => front.disconnect().catch((e: unknown) => log.warn({ err: errorFields(e) }, 'blkfront close')),
    };
  },
};
