export * from './vif.js';
