export * from './iommu.js';
