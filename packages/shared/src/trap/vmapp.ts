/**
 * The contract between a VMApp (the hosted placement's per-guest runtime that owns the guest's
 * emulated device models, shared/src/vmapp/) and whoever starts it and carries its traffic: dom0's
 * toolstack in the threads transport (a worker of dom0's process, its link a MessagePort), or the
 * guest's own process in the ws transport (a worker next to the vCPU — the guest's process is
 * the virtual machine, as VMware's vmx process holds VMApp and VMM — its VMNet frames and disk
 * requests relayed to dom0 on the guest's link).
 */
import { MessageChannel, type Worker } from 'node:worker_threads';
import type { IoReqServerCounters } from './ioreq.js';
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
export interface VmAppPlan {
  nics: Array<{ devid: number; name: string; mac: string; base: number; irqPort: number; index: number }>;
  disks: Array<{ devid: number; name: string; commandBase: number; controlBase: number; irqPort: number; sectors: number }>;
}

/** RPC on a VMApp's link: VMNet frames both ways, disk requests to dom0, counters, stop. */
export const VMAPP_FRAME = 'vmnet.frame';
export const VMAPP_DISK = 'vmapp.disk';
export const VMAPP_STATS = 'vmapp.stats';
export const VMAPP_STOP = 'vmapp.stop';
/**
 * Fault plans' evtchn.lost / evtchn.delayed on a hosted guest: its virtual IRQs are raised in the
 * VMApp's thread, so the VMApp holds the fault (an InterruptFault, shared/hw/irq-faults.ts): it
 * drops or delays the IRQs it raises and ignores lost kicks of the VMM's doorbell — the slot stays
 * READY until its own bounded wait runs out. Set with `forMs`: over ws the guest's process relays
 * this call on the thread that is also the guest's vCPU, which lost kicks keep blocked, so the
 * call that would clear it may arrive late. `null` clears; every call answers the counts.
 */
export const VMAPP_FAULTS = 'vmapp.faults';


export interface VmAppStats {
  ioreq: IoReqServerCounters;
  perRange: Record<string, number>;
  dma: { bytesRead: number; bytesWritten: number };
  vmnet: { writes: number; bytesOut: number; reads: number; bytesIn: number };
  /** Transmits the VMM queued that this VMApp sent, and the times it found some queued. */
  combined: { sent: number; flushes: number; timerFlushes: number };
  devices: Array<{ name: string; kind: 'nic' | 'disk'; metrics: object }>;
  /** Milliseconds this VMApp's thread was busy since it started (CPU per op in benchmarks). */
  busyMs: number;
}

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
