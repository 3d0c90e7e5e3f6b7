/** PV network (netfront): the guest's side of the vif split driver, found through drivers/registry.ts. */
import { errorFields } from '@ringvisor/shared';
import type { GuestDeviceEntry } from '../guest-device.js';
import { macBytes } from '../guest-device.js';
import { NetFront } from './device.js';

export const pvNetEntry: GuestDeviceEntry = {
  kind: 'net',
  mode: 'pv',
  async attach(entry, { kernel, log }) {
    const front = new NetFront(kernel, entry.devid);
    await front.connect();
    return {
      device: front,
      attackName: `vif${entry.devid}`,
      nic: { mac: macBytes(front.mac || entry.mac || ''), transmit: (f) => front.transmit(f), onReceive: (cb) => front.onReceive(cb) },
      metrics: () => front.metrics(),
      close: () => front.disconnect().catch((e: unknown) => log.warn({ err: errorFields(e) }, 'netfront close')),
    };
  },
};
