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
  VMAPP_DISK,
  VMAPP_FRAME,
  VMAPP_STATS,
  VMAPP_STOP,
  VMAPP_FAULTS,
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
  vm.on(VMAPP_FRAME, (p) => dom0.notify(VMAPP_FRAME, p));
  vm.handle(VMAPP_DISK, (p) => dom0.call(VMAPP_DISK, p, 30_000));
  dom0.on(VMAPP_FRAME, (p) => vm.notify(VMAPP_FRAME, p));
  dom0.handle(VMAPP_STATS, () => vm.call(VMAPP_STATS, {}, 5_000));
  dom0.handle(VMAPP_STOP, () => vm.call(VMAPP_STOP, {}, 2_000));
  dom0.handle(VMAPP_FAULTS, (p) => vm.call(VMAPP_FAULTS, p, 5_000));
  return {
    slot,
    vmm,
    peer: vm,
    stop: async () => {
      await vm.call(VMAPP_STOP, {}, 2_000).catch(() => undefined);
      vm.close('guest stopped');
      await worker.terminate();
    },
  };
}
