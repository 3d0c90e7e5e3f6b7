/**
 * Guest runtime entry (a worker thread in threads mode). workerData: { control: MessagePort,
 * spec: GuestBootSpec }. Hypercalls and toolstack calls share the control link.
 */
import { workerData } from 'node:worker_threads';
import {
  GUEST_QUIESCE,
  GUEST_READY,
  GUEST_START,
  GUEST_STATS,
  GUEST_STOP,
  PAGE_SIZE,
  PortLink,
  RpcPeer,
  createEventMemory,
  createGrantTableMemory,
  createLogger,
  type GuestBootSpec,
} from '@ringvisor/shared';
import type { MessagePort } from 'node:worker_threads';
import { GuestKernel } from './kernel/kernel.js';
import { Guest } from './guest.js';

const { control, spec } = workerData as { control: MessagePort; spec: GuestBootSpec };
const log = createLogger('domU', { guest: spec.name, domid: spec.domid });
const peer = new RpcPeer(new PortLink(control), `domU/${spec.name}`);
const kernel = new GuestKernel({
  domid: spec.domid,
  ...(spec.shared ?? {
    memory: new SharedArrayBuffer(spec.memoryFrames * PAGE_SIZE),
    grantTable: createGrantTableMemory(),
    eventMemory: createEventMemory(),
  }),
  hypercalls: peer,
  log,
  linked: spec.shared === undefined,
});
const guest = new Guest(kernel, spec, log);

peer.handle(GUEST_STATS, () => guest.stats());
peer.handle(GUEST_QUIESCE, () => guest.quiesce());
peer.handle(GUEST_START, () => guest.startWorkloads());
peer.handle(GUEST_STOP, async () => {
  const final = await guest.stop();
  // Let the reply leave before the link closes; then nothing keeps this thread alive.
  setTimeout(() => {
    kernel.shutdown();
    peer.close('guest stopped');
  }, 10);
  return final;
});

try {
  await guest.boot();
  peer.notify(GUEST_READY, { domid: spec.domid });
} catch (e) {
  log.error({ err: e }, 'guest boot failed');
  throw e;
}
