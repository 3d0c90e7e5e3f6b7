/** The direct mode (a virtual function assigned behind the IOMMU, attached by direct.ts). */
import type { IoModeDescriptor } from './mode-descriptor.js';

export const DIRECT_MODE: IoModeDescriptor = {
  mode: 'direct',
  kinds: ['vbd', 'vif'],
  keys: [{ key: 'iommu', refuse: (where) => `${where}: "iommu" applies to mode: direct only` }],
  // `passthrough` leaves the function's DMA untranslated (the bare-metal baseline); `on` is the default.
  complete: (d) => (d.raw.iommu === 'passthrough' ? { iommu: 'passthrough' } : {}),
  assignsFunctions: true,
  // The function driver's doorbells plus the interrupts it took; the function DMAs into the guest's own buffers.
  notifications: { sent: ['doorbells', 'interrupts'], suppressed: ['suppressed'], backendsToo: false },
  copiedBy: 'nobody',
};
