/**
 * Boot a guest on a control link, whatever carries it (a MessagePort to a dom0 thread, or an
 * authenticated WebSocket to a dom0 process): build the kernel — on the hypervisor's shared
 * memory when the spec carries it, on private memory behind the domain link otherwise — answer
 * the toolstack's calls, boot the frontends, and report ready.
 */
import {
  GuestControlContract,
  PAGE_SIZE,
  createEventMemory,
  createGrantTableMemory,
  notify,
  serveContract,
  serveTraceForwarding,
  type GuestBootSpec,
  type Logger,
  type RpcPeer,
} from '@ringvisor/shared';
import { GuestKernel } from './kernel/kernel.js';
import { Guest, type GuestLinkCredentials } from './guest.js';

export async function runGuest(peer: RpcPeer, spec: GuestBootSpec, log: Logger, onStopped: () => void, link?: GuestLinkCredentials): Promise<Guest> {
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
    ...(spec.host ? { host: spec.host } : {}),
  });
  const guest = new Guest(kernel, spec, log, link);
  serveTraceForwarding(peer, { downstream: () => guest.traceDownstream() });
  serveContract(peer, GuestControlContract, {
    stats: () => guest.stats(),
    quiesce: () => guest.quiesce(),
    start: () => guest.startWorkloads(),
    mark: () => guest.resetRtt(),
    attack: ({ device, attack, count, seed }) => {
      const n = count !== undefined && Number.isInteger(count) && count > 0 ? Math.min(count, 1000) : 1;
      // The device's own entry knows its attacks (drivers/registry.ts).
      return guest.attack(device, attack, n, seed ?? 0);
    },
    directUnplug: ({ kind, devid }) => guest.unplugDirect(kind, devid),
    directPlug: (p) => guest.plugDirect(p.function, p.hwUrl),
    svioPlug: (p) => guest.plugVif(p.vif, p.hwUrl),
    powerLost: () => guest.powerLost(),
    freeze: ({ word, maxMs }) => {
      // Reply first, then really stop: this thread (the guest's vCPU) blocks until thawed.
      setImmediate(() => Atomics.wait(new Int32Array(word), 0, 0, Math.min(maxMs, 120_000)));
      return true;
    },
    stop: async () => {
      const final = await guest.stop();
      // Let the reply leave before the link closes; then nothing keeps this runtime alive.
      setTimeout(() => {
        kernel.shutdown();
        onStopped(); // first: the close that follows is ours, not a lost dom0
        peer.close('guest stopped');
      }, 10);
      return final;
    },
  });
  peer.link.onClose(() => kernel.shutdown());
  await guest.boot();
  notify(peer, GuestControlContract.notifications.ready, { domid: spec.domid });
  return guest;
}
