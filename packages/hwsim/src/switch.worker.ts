/**
 * The LAN switch as a worker thread (threads transport, several hosts in one process). Listens on
 * loopback and posts its URL to the parent; stops when the parent posts 'stop'.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '@ringvisor/shared';
import { runSwitch } from './lan/remote.js';

const { secret } = workerData as { secret: Uint8Array };
const sw = await runSwitch({ port: 0, secret, log: createLogger('switch') });
parentPort!.postMessage({ url: sw.server.url });
parentPort!.on('message', (m) => {
  if (m === 'stop') void sw.close().then(() => parentPort!.close());
  else if (m === 'stats') parentPort!.postMessage({ stats: sw.segment.stats() });
});
