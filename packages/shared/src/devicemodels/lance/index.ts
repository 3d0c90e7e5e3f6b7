export * from './device.js';
export * from './metrics.js';
export * from './registers.js';
export * from './request.js';
export * from './state.js';
