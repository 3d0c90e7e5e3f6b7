export * from './vif.js';
export * from './core.js';
export * from './engine.js';
