/**
 * The contract between a VMApp (the hosted placement's per-guest runtime that owns the guest's
 * emulated device models, shared/src/vmapp/) and whoever starts it and carries its traffic: dom0's
 * toolstack in the threads transport (a worker of dom0's process, its link a MessagePort), or the
 * guest's own process in the ws transport (a worker next to the vCPU — the guest's process is
 * the virtual machine, as VMware's vmx process holds VMApp and VMM — its VMNet frames and disk
 * requests relayed to dom0 on the guest's link).
 */
import { MessageChannel, type Worker } from 'node:worker_threads';
import type { Static } from '@sinclair/typebox';
import type { VmAppPlanSchema } from '../contracts/guest.js';
import { VmAppContract, VmAppHostContract, type VmAppStatsSchema } from '../contracts/vmapp.js';
import { PortLink, RpcPeer } from '../transport/rpc.js';
import { siblingEntry, startRuntimeWorker } from '../runtime/index.js';

/** What a VMApp is started with (workerData.spec, besides its control port). */
export interface VmAppSpec {
  guest: string;
  domid: number;
  memory: SharedArrayBuffer;
  eventMemory: SharedArrayBuffer;
  /**
   * true: `irqPort`s are the guest's own ports in `eventMemory`, raised directly (the VMApp runs
   * in the guest's process; there is no dom0 in this address space). false: they are dom0's ends
   * of the IRQ channels, raised by an event send.
   */
  localInterrupts: boolean;
  slot: SharedArrayBuffer;
  vmmShared: SharedArrayBuffer;
  pollUs?: number;
  nics: VmAppPlan['nics'];
  disks: VmAppPlan['disks'];
}

/** The devices a VMApp models (what a guest's boot spec carries when it must start one itself). */
export type VmAppPlan = Static<typeof VmAppPlanSchema>;

// Wire names, kept for call sites not yet on the typed clients.
/** @deprecated use VmAppContract.notifications.frame / VmAppHostContract.notifications.frame */
export const VMAPP_FRAME = VmAppContract.notifications.frame.wire;
/** @deprecated use VmAppHostContract.methods.disk */
export const VMAPP_DISK = VmAppHostContract.methods.disk.wire;
/** @deprecated use VmAppContract.methods.stats */
export const VMAPP_STATS = VmAppContract.methods.stats.wire;
/** @deprecated use VmAppContract.methods.stop */
export const VMAPP_STOP = VmAppContract.methods.stop.wire;
/** @deprecated use VmAppContract.methods.faults */
export const VMAPP_FAULTS = VmAppContract.methods.faults.wire;

/** A VMApp's counters (contracts/vmapp.ts). */
export type VmAppStats = Static<typeof VmAppStatsSchema>;

/**
 * Start a VMApp worker (this package's vmapp/vmapp.worker.ts) and open its link. dom0 does
 * this for the threads transport, a guest's process for ws: the models are shared code.
 */
export function startVmApp(spec: VmAppSpec): { peer: RpcPeer; worker: Worker } {
  const { port1, port2 } = new MessageChannel();
  const worker = startRuntimeWorker(siblingEntry(import.meta.url, '../vmapp/vmapp.worker'), {
    workerData: { control: port1, spec },
    transferList: [port1],
    name: `vmapp-${spec.guest}`,
  });
  return { peer: new RpcPeer(new PortLink(port2), `vmapp/${spec.guest}`), worker };
}
