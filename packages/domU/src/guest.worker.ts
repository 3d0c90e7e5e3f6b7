/**
 * Guest runtime entry as a worker thread (threads transport). workerData: { control: MessagePort,
 * spec: GuestBootSpec }. Hypercalls and toolstack calls share the control link.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { PortLink, RpcPeer, createLogger, type GuestBootSpec } from '@ringvisor/shared';
import { runGuest } from './runtime.js';

const { control, spec } = workerData as { control: MessagePort; spec: GuestBootSpec };
const log = createLogger('domU', { guest: spec.name, domid: spec.domid });
const peer = new RpcPeer(new PortLink(control), `domU/${spec.name}`);
await runGuest(peer, spec, log, () => {});
