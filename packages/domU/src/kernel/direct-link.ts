/**
 * The guest's end of a direct link to the hardware simulator (ws transport; the hardware's end
 * and the message contract are in hwsim/src/sriov/direct-link.ts). The guest keeps its own memory
 * and its own copy of each assigned function's (and each SV-IO VIF's) register page; both are
 * mirrored over the link, and dom0 is not on it.
 *
 *   doorbell       an `evt` naming the guest's end of the function's channel, after every ring,
 *                  register and buffer update before it (the link keeps order)
 *   toDevice       the bytes of a buffer the device is about to read (dma_sync_single_for_device)
 *   interrupts     `evt` from the hardware sets the port pending here, after the device's writes
 *                  to guest memory have been applied
 */
import {
  InvalidArgumentError,
  DOMID_HW,
  MachineLinkEnd,
  SVIO_PAGE_BASE,
  PAGE_SIZE,
  RpcPeer,
  TimeoutError,
  VfRegisters,
  connect,
  type DirectFunctionSpec,
  type DomainKey,
  type PageSync,
} from '@ringvisor/shared';
import type { GuestKernel } from './kernel.js';
import { directFunction, type DirectFunction } from './direct.js';

/**
 * How a VIF driver reaches its VIF across a process boundary: the register page's copy and its
 * sync, the queue pages' syncs (a late wake rings the doorbell), the doorbell as an event on the
 * link, and the bytes the device will read (a transmit buffer, write data) shipped before it.
 */
export interface VifTransport {
  page: Uint8Array;
  regsSync: PageSync;
  queueSync(pfn: number, lateWake: () => void): PageSync;
  ring(): void;
  toDevice(pfn: number, offset: number, length: number): void;
}

export interface DirectLink {
  readonly machine: MachineLinkEnd;
  /** Where the hardware was reached; a restarted hardware is a new process at a new URL. */
  readonly url: string;
  /** The hardware's end went away (it crashed, or was restarted). */
  readonly closed: boolean;
  fn(spec: DirectFunctionSpec): DirectFunction;
  /** An SV-IO VIF bound to us: its register page and queues mirrored on this link (kernel/svio.ts). */
  vif(spec: { vif: number; port: number }): VifTransport;
  close(): void;
}

function ridNumber(rid: string): number {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/.exec(rid);
  if (!m) throw new InvalidArgumentError(`bad requester id ${JSON.stringify(rid)} (expected bb:dd.f)`);
  return (parseInt(m[1], 16) << 8) | (parseInt(m[2], 16) << 3) | Number(m[3]);
}

/** Connect to the hardware for the functions assigned to us and the SV-IO VIFs bound to us. */
export async function connectDirectLink(kernel: GuestKernel, url: string, domainKey: DomainKey): Promise<DirectLink> {
  const { domid, memory } = kernel;
  // Our copies of the hardware's register pages: a function's by requester id (≤ 0xffff), a
  // VIF's at SVIO_PAGE_BASE + its id. Made when first named — a function assigned later, or a VIF
  // created again after a reset, sends its page before we are told of it.
  const hwPages = new Map<number, Uint8Array>();
  const hwPage = (pfn: number): Uint8Array => {
    let p = hwPages.get(pfn);
    if (!p) hwPages.set(pfn, (p = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE))));
    return p;
  };
  const link = await connect({ url, domainKey, role: 'direct', domid, log: kernel.log });
  const peer = new RpcPeer(link, `direct${domid}`);
  const machine = new MachineLinkEnd(
    peer,
    (d, pfn) => (d === domid && memory.hasFrame(pfn) ? memory.page(pfn) : d === DOMID_HW ? hwPage(pfn) : undefined),
    (port) => void kernel.events.mem.setPending(domid, port),
  );
  link.onClose((reason) => (reason === 'guest stopped' ? undefined : kernel.log.warn({ reason }, 'direct link to the hardware closed')));
  /** A queue ring of our memory mirrored on this link; a late wake rings the device. */
  const ringSync = (pfn: number, lateWake: () => void): PageSync => {
    const sync = machine.ringSync(pfn, memory.page(pfn), domid);
    sync.lateWake = lateWake;
    return sync;
  };
  return {
    machine,
    url,
    get closed() {
      return peer.closed;
    },
    close: () => link.close('guest stopped'),
    vif: ({ vif, port }) => {
      const page = hwPage(SVIO_PAGE_BASE + vif);
      return {
        page,
        regsSync: machine.ringSync(SVIO_PAGE_BASE + vif, page, DOMID_HW),
        queueSync: ringSync,
        ring: () => void machine.sendEvent(port),
        toDevice: (pfn, offset, length) => machine.wrote(domid, pfn, offset, length),
      };
    },
    fn: (spec) => {
      const rid = ridNumber(spec.rid);
      const bar = hwPage(rid);
      const regs = new VfRegisters(bar);
      regs.sync = machine.ringSync(rid, bar, DOMID_HW);
      return directFunction(kernel, spec, regs, {
        ring: () => void machine.sendEvent(spec.port),
        toDevice: (pfn, offset = 0, length = PAGE_SIZE) => machine.wrote(domid, pfn, offset, length),
        ringSync,
      });
    },
  };
}

/** Wait (bounded) until the device's identity registers have arrived in our copy of the page. */
export async function identityArrived(fn: DirectFunction, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (fn.regs.kind === undefined) {
    if (performance.now() > deadline) throw new TimeoutError(`function ${fn.rid}: its register page never arrived over the direct link`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
