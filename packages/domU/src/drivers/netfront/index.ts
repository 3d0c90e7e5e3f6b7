export * from './device.js';
export * from './metrics.js';
export * from './state.js';
