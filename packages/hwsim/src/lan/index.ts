export * from './lan-port.js';
export * from './segment.js';
export * from './mac.js';
