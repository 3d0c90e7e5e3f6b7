export * from './registers.js';
export * from './request.js';
export * from './identify.js';
export * from './metrics.js';
export * from './device.js';
export * from './memory-backing.js';
export * from './state.js';
