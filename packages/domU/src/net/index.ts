export * from './result.js';
export * from './ethernet.js';
export * from './arp.js';
export * from './ipv4.js';
export * from './udp.js';
export * from './stack.js';
