/**
 * The guest's end of a direct link to the hardware simulator (ws transport; the hardware's end
 * and the message contract are in hwsim/src/sriov/direct-link.ts). The guest keeps its own memory
 * and its own copy of each assigned function's register page; both are mirrored over the link,
 * and dom0 is not on it.
 *
 *   doorbell       an `evt` naming the guest's end of the function's channel, after every ring,
 *                  register and buffer update before it (the link keeps order)
 *   toDevice       the bytes of a buffer the device is about to read (dma_sync_single_for_device)
 *   interrupts     `evt` from the hardware sets the port pending here, after the device's writes
 *                  to guest memory have been applied
 */
import {
  DOMID_HW,
  MachineLinkEnd,
  PAGE_SIZE,
  RpcPeer,
  TimeoutError,
  VfRegisters,
  connect,
  type DirectFunctionSpec,
} from '@ringvisor/shared';
import type { GuestKernel } from './kernel.js';
import { directFunction, type DirectFunction } from './direct.js';

export interface DirectLink {
  readonly machine: MachineLinkEnd;
  fn(spec: DirectFunctionSpec): DirectFunction;
  close(): void;
}

function ridNumber(rid: string): number {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/.exec(rid);
  if (!m) throw new Error(`bad requester id ${JSON.stringify(rid)} (expected bb:dd.f)`);
  return (parseInt(m[1], 16) << 8) | (parseInt(m[2], 16) << 3) | Number(m[3]);
}

/** Connect to the hardware for `functions` (their register pages exist before the first update arrives). */
export async function connectDirectLink(kernel: GuestKernel, url: string, secret: Uint8Array, functions: DirectFunctionSpec[]): Promise<DirectLink> {
  const { domid, memory } = kernel;
  const bars = new Map<number, Uint8Array>(functions.map((f) => [ridNumber(f.rid), new Uint8Array(new SharedArrayBuffer(PAGE_SIZE))]));
  const barPage = (rid: number): Uint8Array => {
    let p = bars.get(rid);
    if (!p) bars.set(rid, (p = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE))));
    return p;
  };
  const link = await connect({ url, secret, role: 'direct', domid, log: kernel.log });
  const peer = new RpcPeer(link, `direct${domid}`);
  const machine = new MachineLinkEnd(
    peer,
    // Register pages by requester id; one assigned later (hot-plug) arrives before we are told of it.
    (d, pfn) => (d === domid && memory.hasFrame(pfn) ? memory.page(pfn) : d === DOMID_HW && pfn <= 0xffff ? barPage(pfn) : undefined),
    (port) => void kernel.events.mem.setPending(domid, port),
  );
  link.onClose((reason) => (reason === 'guest stopped' ? undefined : kernel.log.warn({ reason }, 'direct link to the hardware closed')));
  return {
    machine,
    close: () => link.close('guest stopped'),
    fn: (spec) => {
      const rid = ridNumber(spec.rid);
      const bar = barPage(rid);
      const regs = new VfRegisters(bar);
      regs.sync = machine.ringSync(rid, bar, DOMID_HW);
      return directFunction(kernel, spec, regs, {
        ring: () => void machine.sendEvent(spec.port),
        toDevice: (pfn, offset = 0, length = PAGE_SIZE) => machine.wrote(domid, pfn, offset, length),
        ringSync: (pfn, lateWake) => {
          const sync = machine.ringSync(pfn, memory.page(pfn), domid);
          sync.lateWake = lateWake;
          return sync;
        },
      });
    },
  };
}

/** Wait (bounded) until the device's identity registers have arrived in our copy of the page. */
export async function identityArrived(fn: DirectFunction, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (fn.regs.kind === undefined) {
    if (performance.now() > deadline) throw new TimeoutError(`function ${fn.rid}: its register page never arrived over the direct link`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
