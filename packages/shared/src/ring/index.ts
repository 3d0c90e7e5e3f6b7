export * from './ring.js';
export * from './blkif.js';
export * from './netif.js';
export * from './mirror.js';
