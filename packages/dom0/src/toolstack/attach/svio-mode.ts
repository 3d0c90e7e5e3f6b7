/** The svio mode (a VIF of the self-virtualizing device, attached by svio.ts): QoS share and credit limit. */
import { RATE_KEY, rateField, type IoModeDescriptor } from './mode-descriptor.js';

export const SVIO_MODE: IoModeDescriptor = {
  mode: 'svio',
  kinds: ['vbd', 'vif', 'cam'],
  keys: [{ key: 'weight', refuse: (where) => `${where}: "weight" is an SV-IO VIF's QoS share (mode: svio)` }, RATE_KEY],
  complete: (d) => ({ ...(d.raw.weight !== undefined ? { weight: d.raw.weight as number } : {}), ...rateField(d) }),
  runsOnDeviceCores: true,
  // The VIF driver's doorbells plus the interrupts it took.
  notifications: { sent: ['doorbells', 'interrupts'], suppressed: ['suppressed'], backendsToo: false },
  copiedBy: 'engine',
};
