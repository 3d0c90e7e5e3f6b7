/**
 * The hosted placement without shared memory with dom0 (ws transport): this guest's process is
 * the virtual machine — as VMware's vmx process holds both the VMM and the VMApp — so it starts
 * the guest's VMApp as a worker next to the vCPU, sharing the guest's memory, the vCPU's I/O
 * request slot and the VMM's shared state. The VMApp is host-world code (dom0's package): it is
 * started by its entry point, never imported. Its VMNet frames and disk requests to dom0 are
 * relayed on this guest's link, between the vCPU's traps.
 */
import {
  type RpcPeer,
  VmAppContract,
  VmAppHostContract,
  contractClient,
  notify,
  onNotify,
  serveContract,
  createIoReqSlot,
  createVmmShared,
  startVmApp,
  type VmAppPlan,
} from '@ringvisor/shared';
import type { GuestKernel } from './kernel.js';

export interface LocalVmApp {
  slot: SharedArrayBuffer;
  vmm: SharedArrayBuffer;
  /** Its link (trace forwarding chains through it). */
  peer: RpcPeer;
  stop(): Promise<void>;
}

export function startLocalVmApp(kernel: GuestKernel, guest: string, plan: VmAppPlan): LocalVmApp {
  const slot = createIoReqSlot();
  const vmm = createVmmShared(Math.max(1, plan.nics.length));
  const { peer: vm, worker } = startVmApp({ guest, domid: kernel.domid, memory: kernel.memory.buffer, eventMemory: kernel.events.mem.buffer, localInterrupts: true, slot, vmmShared: vmm, ...plan });
  worker.on('error', (e) => kernel.log.error({ err: e }, 'vmapp crashed'));
  const dom0 = kernel.hypercalls;
  // Relayed as they are, but checked on the way through: each side sees only typed messages.
  const toVm = contractClient(VmAppContract, vm);
  const toDom0 = contractClient(VmAppHostContract, dom0);
  onNotify(vm, VmAppHostContract.notifications.frame, (p) => notify(dom0, VmAppHostContract.notifications.frame, p));
  serveContract(vm, VmAppHostContract, { disk: (p) => toDom0.disk(p) });
  onNotify(dom0, VmAppContract.notifications.frame, (p) => notify(vm, VmAppContract.notifications.frame, p));
  serveContract(dom0, VmAppContract, {
    stats: () => toVm.stats(),
    stop: () => toVm.stop(),
    faults: (f) => toVm.faults(f, { timeoutMs: 5_000 }),
  });
  return {
    slot,
    vmm,
    peer: vm,
    stop: async () => {
      await toVm.stop().catch(() => undefined);
      vm.close('guest stopped');
      await worker.terminate();
    },
  };
}
