/**
 * Worker-thread entry of one SV-IO engine core (core.ts). workerData: { eventMemory,
 * disk: { path, sizeBytes } }; requests and replies travel on the worker's parent port. The core
 * lives until the engine sends `shutdown` (or terminates it).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SvioCore, type CoreRequest } from './core.js';

const data = workerData as { eventMemory: SharedArrayBuffer; disk: { path: string; sizeBytes: number } };
const port = parentPort!;
const core = new SvioCore({ eventMemory: data.eventMemory, disk: data.disk, reply: (r) => port.postMessage(r) });
port.on('message', (m: CoreRequest | { op: 'shutdown' }) => {
  if (m.op === 'shutdown') {
    core.shutdown();
    port.close();
    return;
  }
  core.handle(m);
});
