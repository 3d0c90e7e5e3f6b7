export * from './function.js';
export * from './nic-vf.js';
export * from './disk-vf.js';
export * from './pool.js';
