export * from './store.js';
export * from './client.js';
export * from './xenbus.js';
