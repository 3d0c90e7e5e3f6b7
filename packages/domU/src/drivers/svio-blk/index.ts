export * from './device.js';
export * from './metrics.js';
