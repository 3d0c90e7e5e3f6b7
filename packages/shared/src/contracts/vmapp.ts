/**
 * A VMApp's link (the hosted placement's per-guest runtime that owns the guest's emulated device
 * models): dom0 — or, over ws, the guest's own process relaying for it — calls the VMApp
 * (VmAppContract); the VMApp asks its host for disk I/O (VmAppHostContract). VMNet frames go both
 * ways as `vmnet.frame`. Over ws the VMApp runs in the guest's process: dom0 checks what it answers.
 */
import { Type } from '@sinclair/typebox';
import type { InterruptFault, InterruptFaultCounts } from '../hw/irq-faults.js';
import type { IoReqServerCounters } from '../trap/ioreq.js';
import { defineContract, method, notification } from './contract.js';

const Counter = Type.Number({ minimum: 0 });
/** An Ethernet frame (with room to spare): what a Lance model sends or receives. */
export const VMNET_FRAME_MAX = 4096;

/** One frame written to (by the model) or read from (towards the model) VMNet. */
const VmnetFrame = notification('vmnet.frame', Type.Object({ devid: Type.Integer({ minimum: 0 }), frame: Type.Uint8Array({ maxByteLength: VMNET_FRAME_MAX }) }));

export const VmAppStatsSchema = Type.Object({
  ioreq: Type.Unsafe<IoReqServerCounters>(Type.Object({ traps: Counter, worldSwitches: Counter })),
  perRange: Type.Record(Type.String(), Type.Number()),
  dma: Type.Object({ bytesRead: Counter, bytesWritten: Counter }),
  vmnet: Type.Object({ writes: Counter, bytesOut: Counter, reads: Counter, bytesIn: Counter }),
  /** Transmits the VMM queued that this VMApp sent, and the times it found some queued. */
  combined: Type.Object({ sent: Counter, flushes: Counter, timerFlushes: Counter }),
  devices: Type.Array(Type.Object({ name: Type.String(), kind: Type.Union([Type.Literal('nic'), Type.Literal('disk')]), metrics: Type.Object({}) })),
  /** Milliseconds this VMApp's thread was busy since it started (CPU per op in benchmarks). */
  busyMs: Type.Number(),
});

/** An interrupt fault (hw/irq-faults.ts; parseInterruptFault checks its ranges), or null to clear. */
const InterruptFaultOrNull = Type.Union([Type.Unsafe<InterruptFault>(Type.Object({ lostToGuest: Type.Number(), delayMs: Type.Number(), seed: Type.Number() })), Type.Null()]);

/** Served by the VMApp (dom0/src/vmapp/vmapp.ts). */
export const VmAppContract = defineContract('vmapp', {
  methods: {
    stats: method('vmapp.stats', Type.Object({}), VmAppStatsSchema, [], 5_000),
    /** The models stop raising interrupts and the VMApp's thread ends. */
    stop: method('vmapp.stop', Type.Object({}), Type.Boolean(), [], 2_000),
    /**
     * Fault plans' evtchn.lost / evtchn.delayed on a hosted guest: its virtual IRQs are raised in
     * the VMApp's thread, so the VMApp holds the fault: it drops or delays the IRQs it raises and
     * ignores lost kicks of the VMM's doorbell. Set with `forMs`: over ws the guest's process
     * relays this call on the thread that is also the guest's vCPU, which lost kicks keep
     * blocked, so the call that would clear it may arrive late. Every call answers the counts.
     */
    faults: method('vmapp.faults', InterruptFaultOrNull, Type.Unsafe<InterruptFaultCounts>(Type.Object({ irqsLost: Counter, irqsDelayed: Counter, kicksLost: Counter })), [], 10_000),
  },
  notifications: { frame: VmnetFrame },
});

export const VmAppDiskParamsSchema = Type.Union([
  Type.Object({ devid: Type.Integer({ minimum: 0 }), op: Type.Literal('read'), lba: Type.Integer({ minimum: 0 }), count: Type.Integer({ minimum: 1, maximum: 256 }) }),
  Type.Object({ devid: Type.Integer({ minimum: 0 }), op: Type.Literal('write'), lba: Type.Integer({ minimum: 0 }), data: Type.Uint8Array({ maxByteLength: 256 * 512 }) }),
  Type.Object({ devid: Type.Integer({ minimum: 0 }), op: Type.Literal('flush') }),
]);

/** Served by the VMApp's host (dom0's platform, devicemodels/platform.ts). */
export const VmAppHostContract = defineContract('vmapp-host', {
  methods: {
    /** The guest's disk region, through dom0's disk driver: status 0 or an error status, data for a read. */
    disk: method('vmapp.disk', VmAppDiskParamsSchema, Type.Object({ status: Type.Integer(), data: Type.Optional(Type.Uint8Array()) }), [], 30_000),
  },
  notifications: { frame: VmnetFrame },
});
