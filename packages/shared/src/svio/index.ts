export * from './queue.js';
export * from './messages.js';
