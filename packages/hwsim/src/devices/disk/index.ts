export * from './device.js';
export * from './queue.js';
export * from './request.js';
export * from './metrics.js';
export * from './faults.js';
