// Workers on Node 20 cannot load .ts files, and `--import tsx` does not reach them.
// This bootstrap registers tsx inside the worker, then imports the real entry point.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.__entry);
