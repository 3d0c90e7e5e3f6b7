export * from './dma/dma-engine.js';
export * from './devices/queue-service.js';
export * from './devices/disk/index.js';
export * from './devices/nic/index.js';
export * from './lan/index.js';
export * from './runtime.js';
export * from './iommu/index.js';
export * from './sriov/index.js';
