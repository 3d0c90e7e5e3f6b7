/**
 * Guest runtime entry as a worker thread (threads transport). workerData: { control: MessagePort,
 * spec: GuestBootSpec }. Hypercalls and toolstack calls share the control link.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { ConfigError, GuestBootContract, PortLink, RpcPeer, checkResult, createLogger } from '@ringvisor/shared';
import { runGuest } from './runtime.js';

const data = workerData as { control: MessagePort; spec: unknown };
const { control } = data;
// The same boot spec a guest process gets from guest.boot, held to the same schema.
const spec = (() => {
  try {
    return checkResult(GuestBootContract.methods.boot, data.spec, 'workerData');
  } catch (e) {
    throw new ConfigError(`guest worker: workerData.spec is not a boot spec (${(e as Error).message})`);
  }
})();
const log = createLogger('domU', { guest: spec.name, domid: spec.domid });
const peer = new RpcPeer(new PortLink(control), `domU/${spec.name}`);
await runGuest(peer, spec, log, () => {});
