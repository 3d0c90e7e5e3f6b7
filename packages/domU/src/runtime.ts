/**
 * Boot a guest on a control link, whatever carries it (a MessagePort to a dom0 thread, or an
 * authenticated WebSocket to a dom0 process): build the kernel — on the hypervisor's shared
 * memory when the spec carries it, on private memory behind the domain link otherwise — answer
 * the toolstack's calls, boot the frontends, and report ready.
 */
import {
  GUEST_ATTACK,
  InvalidArgumentError,
  GUEST_DIRECT_PLUG,
  GUEST_SVIO_PLUG,
  GUEST_POWER_LOST,
  type SvioVifSpec,
  GUEST_DIRECT_UNPLUG,
  GUEST_FREEZE,
  GUEST_MARK,
  GUEST_QUIESCE,
  GUEST_READY,
  GUEST_START,
  GUEST_STATS,
  GUEST_STOP,
  PAGE_SIZE,
  createEventMemory,
  createGrantTableMemory,
  serveTraceForwarding,
  type DirectFunctionSpec,
  type GuestBootSpec,
  type Logger,
  type RpcPeer,
} from '@ringvisor/shared';
import { GuestKernel } from './kernel/kernel.js';
import { Guest, type GuestLinkCredentials } from './guest.js';
import { isDirectFunctionKind, isSvioVifKind } from './drivers/registry.js';

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
  peer.handle(GUEST_STATS, () => guest.stats());
  peer.handle(GUEST_QUIESCE, () => guest.quiesce());
  peer.handle(GUEST_START, () => guest.startWorkloads());
  peer.handle(GUEST_MARK, () => guest.resetRtt());
  peer.handle(GUEST_ATTACK, (p) => {
    const { device, attack, count, seed } = p as { device?: unknown; attack?: unknown; count?: unknown; seed?: unknown };
    const n = typeof count === 'number' && Number.isInteger(count) && count > 0 ? Math.min(count, 1000) : 1;
    const s = typeof seed === 'number' ? seed : 0;
    // The device's own entry knows its attacks (drivers/registry.ts).
    return guest.attack(String(device), String(attack), n, s);
  });
  peer.handle(GUEST_DIRECT_UNPLUG, (p) => {
    const { kind, devid } = (p ?? {}) as { kind?: unknown; devid?: unknown };
    if (!isDirectFunctionKind(kind) || typeof devid !== 'number') throw new InvalidArgumentError('guest.direct.unplug needs { kind: "nic" | "disk", devid }');
    guest.unplugDirect(kind, devid);
    return null;
  });
  peer.handle(GUEST_DIRECT_PLUG, async (p) => {
    const f = (p as { function?: unknown } | null)?.function as DirectFunctionSpec | undefined;
    if (!f || !isDirectFunctionKind(f.kind) || typeof f.devid !== 'number' || typeof f.rid !== 'string' || typeof f.port !== 'number')
      throw new InvalidArgumentError('guest.direct.plug needs { function: { kind, devid, rid, port, bar? } }');
    await guest.plugDirect(f, hwUrlOf(p));
    return null;
  });
  peer.handle(GUEST_SVIO_PLUG, async (p) => {
    const v = (p as { vif?: Partial<SvioVifSpec> } | null)?.vif;
    if (!v || !isSvioVifKind(v.kind) || typeof v.devid !== 'number' || typeof v.vif !== 'number' || typeof v.port !== 'number' || (v.page !== undefined && !(v.page instanceof SharedArrayBuffer)))
      throw new InvalidArgumentError('guest.svio.plug needs { vif: { kind: "net" | "blk" | "cam", devid, vif, port, page? } }');
    await guest.plugVif(v as SvioVifSpec, hwUrlOf(p));
    return null;
  });
  peer.handle(GUEST_POWER_LOST, () => {
    guest.powerLost();
    return null;
  });
  peer.handle(GUEST_FREEZE, (p) => {
    const { word, maxMs } = p as { word?: unknown; maxMs?: unknown };
    if (!(word instanceof SharedArrayBuffer) || typeof maxMs !== 'number') throw new Error('guest.freeze needs { word: SharedArrayBuffer, maxMs }');
    // Reply first, then really stop: this thread (the guest's vCPU) blocks until thawed.
    setImmediate(() => Atomics.wait(new Int32Array(word), 0, 0, Math.min(maxMs, 120_000)));
    return true;
  });
  peer.handle(GUEST_STOP, async () => {
    const final = await guest.stop();
    // Let the reply leave before the link closes; then nothing keeps this runtime alive.
    setTimeout(() => {
      kernel.shutdown();
      onStopped(); // first: the close that follows is ours, not a lost dom0
      peer.close('guest stopped');
    }, 10);
    return final;
  });
  peer.link.onClose(() => kernel.shutdown());
  await guest.boot();
  peer.notify(GUEST_READY, { domid: spec.domid });
  return guest;
}

/** ws: where the hardware is now, when a plug names it (a restarted hardware is a new process). */
function hwUrlOf(p: unknown): string | undefined {
  const url = (p as { hwUrl?: unknown } | null)?.hwUrl;
  if (url === undefined) return undefined;
  if (typeof url !== 'string' || !/^wss?:\/\//.test(url)) throw new Error('hwUrl must be a ws:// or wss:// URL');
  return url;
}
