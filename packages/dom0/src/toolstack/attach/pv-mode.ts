/** The pv mode (Xen split drivers, attached by pv.ts): a credit limit on a vif's transmit (netback's). */
import { ConfigError } from '@ringvisor/shared';
import { RATE_KEY, rateField, type IoModeDescriptor } from './mode-descriptor.js';

export const PV_MODE: IoModeDescriptor = {
  mode: 'pv',
  kinds: ['vbd', 'vif'],
  keys: [RATE_KEY],
  complete(d) {
    if (d.raw.rate !== undefined && d.kind === 'vbd') throw new ConfigError(`${d.guestWhere} vbd: "rate" belongs on a vif (blkback has no credit limit; an SV-IO vbd has one: mode: svio)`);
    return rateField(d);
  },
  splitDriver: true,
  // Both ends' event sends: the frontend's and the backend's.
  notifications: { sent: ['notifications'], suppressed: ['suppressed'], backendsToo: true },
  copiedBy: 'grants',
};
