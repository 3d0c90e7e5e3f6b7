/**
 * Every message between runtimes, defined once (docs/contracts.md): the machinery (contract.ts)
 * and one module per contract.
 */
export * from './contract.js';
export * from './hardware.js';
export * from './guest.js';
export * from './vmapp.js';
export * from './ioreq.js';
export * from './hypercalls.js';
export * from './trace.js';
export * from './control.js';
