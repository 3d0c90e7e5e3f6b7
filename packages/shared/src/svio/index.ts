export * from './queue.js';
export * from './messages.js';
export * from './access.js';
