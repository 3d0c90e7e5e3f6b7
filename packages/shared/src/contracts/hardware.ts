/**
 * The hardware simulator's control RPC: what dom0's physical-device drivers and toolstack call on
 * the hardware (hwsim/src/runtime.ts serves it), and the hardware process's own start-up call
 * back to dom0 (HardwareBootContract). Integer ranges here are the checks the hardware makes
 * before it touches anything; what a schema cannot say (a fault rule's semantics, a rate's
 * syntax, a port bound to a driver) the handler checks and answers with a specific code.
 *
 * Open result objects (stats) declare what callers read; the hardware may add counters.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { DiskFaultRule, DiskFaultStats } from '../hw/faults.js';
import { DISK_FAULT_RULES_MAX } from '../hw/faults.js';
import type { InterruptFault, InterruptFaultCounts } from '../hw/irq-faults.js';
import { TSharedArrayBuffer, defineContract, method, notification } from './contract.js';

/** Event ports: 1..NR_EVENT_PORTS-1 (evtchn/index.ts). */
const EventPort = Type.Integer({ minimum: 1, maximum: 4095 });
const DomainId = Type.Integer({ minimum: 0, maximum: 0xffff });
/** A guest domain: 1..DOMID_HW-1. */
const GuestDomainId = Type.Integer({ minimum: 1, maximum: 0x7fef });
const MachineFrame = Type.Object({ domid: DomainId, pfn: Type.Integer({ minimum: 0, maximum: 0xffffffff }) });
const Partition = Type.Object({ start: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }), sectors: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }) });
const Probability = Type.Number({ minimum: 0, maximum: 1 });
const Counter = Type.Number({ minimum: 0 });
/** A VIF id (u32, from 1). */
const VifId = Type.Integer({ minimum: 1, maximum: 0xffffffff });
/** A credit limit in netback's `bytes,usec` syntax (parsed by the hardware: parseRate). */
const Rate = Type.String({ maxLength: 64 });

/**
 * A disk fault rule. The schema checks the shape; validateDiskFaultRules (hw/faults.ts) checks
 * what a rule means (ops, ranges, unique ids) and answers RV_ERR_INVALID_ARG naming the rule.
 */
const DiskFaultRuleSchema = Type.Unsafe<DiskFaultRule>(Type.Object({ id: Type.String() }));
const DiskFaultStatsSchema = Type.Unsafe<DiskFaultStats>(Type.Object({ id: Type.String(), hits: Counter, spent: Type.Boolean() }));
/** An interrupt fault (hw/irq-faults.ts); parseInterruptFault checks its ranges. */
const InterruptFaultSchema = Type.Unsafe<InterruptFault>(Type.Object({ lostToGuest: Probability, delayMs: Type.Number({ minimum: 0 }), seed: Type.Number() }));
const InterruptFaultCountsSchema = Type.Unsafe<InterruptFaultCounts>(Type.Object({ irqsLost: Counter, irqsDelayed: Counter, kicksLost: Counter }));

/** Frame faults on a LAN cable: probabilities (0..1) per frame, and the PRNG seed (default 0). */
export const FrameFaultsSchema = Type.Object({
  drop: Type.Optional(Probability),
  duplicate: Type.Optional(Probability),
  reorder: Type.Optional(Probability),
  corrupt: Type.Optional(Probability),
  seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffffffff })),
});
export type FrameFaults = Static<typeof FrameFaultsSchema>;
/** What the frame faults did since they were set (what a receiver can observe). */
export const FrameFaultCountersSchema = Type.Object({ dropped: Counter, duplicated: Counter, reordered: Counter, corrupted: Counter });
export type FrameFaultCounters = Static<typeof FrameFaultCountersSchema>;

export const VfAssignParamsSchema = Type.Object({
  kind: Type.Union([Type.Literal('nic'), Type.Literal('disk')]),
  /** A specific function ("bb:dd.f"); the pool picks one when absent. */
  rid: Type.Optional(Type.String({ maxLength: 16 })),
  domid: GuestDomainId,
  /** The owner's I/O address space in frames (at most its memory). */
  frames: Type.Integer({ minimum: 1, maximum: 1 << 20 }),
  /** The hardware's end of the event channel to the owner: the function's doorbell. */
  port: EventPort,
  /** The owner's end: where the function's interrupt is remapped to. */
  guestPort: EventPort,
  mac: Type.Optional(Type.String({ maxLength: 17 })),
  partition: Type.Optional(Partition),
  /** A pass-through IOMMU context (trusted dom0 drivers only). */
  passthrough: Type.Optional(Type.Boolean()),
});
export type VfAssignParams = Static<typeof VfAssignParamsSchema>;

export const VfAssignResultSchema = Type.Object({
  rid: Type.String(),
  index: Type.Integer({ minimum: 0 }),
  vector: Type.Integer({ minimum: 0 }),
  /** threads: the function's register page (BAR0). */
  bar: Type.Optional(TSharedArrayBuffer()),
});
export type VfAssignResult = Static<typeof VfAssignResultSchema>;

export const ReclaimReportSchema = Type.Object({
  rid: Type.String(),
  owner: Type.Integer(),
  /** The steps taken, in order. */
  steps: Type.Array(Type.String()),
  /** What the reset dropped: prefetched rx descriptors, queued disk commands. */
  dropped: Type.Object({ rxDescriptors: Counter, commands: Counter }),
});
export type ReclaimReport = Static<typeof ReclaimReportSchema>;

export const SvioCreateParamsSchema = Type.Object({
  kind: Type.Union([Type.Literal('net'), Type.Literal('blk'), Type.Literal('cam')]),
  domid: GuestDomainId,
  /** The hardware's end of the guest ↔ hardware channel: the VIF's doorbell and interrupt. */
  port: EventPort,
  /** ws: the guest's end, named by doorbells on its direct link (required across processes). */
  guestPort: Type.Optional(EventPort),
  mac: Type.Optional(Type.String({ maxLength: 17 })),
  partition: Type.Optional(Partition),
  camera: Type.Optional(Type.Object({ width: Type.Integer({ minimum: 1, maximum: 1920 }), height: Type.Integer({ minimum: 1, maximum: 1080 }), fps: Type.Integer({ minimum: 1, maximum: 240 }) })),
  /** QoS share (1..1000, default 100). */
  weight: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  rate: Type.Optional(Rate),
});
export type SvioCreateParams = Static<typeof SvioCreateParamsSchema>;

export const SvioCreateResultSchema = Type.Object({
  vif: VifId,
  core: Type.Integer({ minimum: 0 }),
  /** threads: the VIF's access-API register page. */
  page: Type.Optional(TSharedArrayBuffer()),
});

const SvioVifInfoSchema = Type.Object({
  vif: VifId,
  kind: Type.String(),
  domid: Type.Integer(),
  core: Type.Integer(),
  weight: Type.Number(),
  state: Type.String(),
  /** The core's counters for it (bytes moved, its QoS scheduler's turns). */
  stats: Type.Optional(Type.Object({ counters: Type.Object({ bytes: Counter }), sched: Type.Object({ turns: Counter, idle: Counter, blocked: Counter }) })),
});
export const SvioListSchema = Type.Object({ vifs: Type.Array(SvioVifInfoSchema), coreBusyMs: Type.Array(Type.Number()) });
export type SvioList = Static<typeof SvioListSchema>;

/** The function table and IOMMU records (hw.vf.list, hw.iommu.faults): open, for views and tests. */
const FunctionStatsSchema = Type.Object({ rid: Type.String(), kind: Type.Union([Type.Literal('nic'), Type.Literal('disk')]), owner: Type.Union([Type.Integer(), Type.Null()]) });
const IommuFaultSchema = Type.Object({ seq: Type.Integer(), t: Type.Number(), rid: Type.Integer(), address: Type.Number(), write: Type.Boolean(), reason: Type.String(), domid: Type.Optional(Type.Integer()) });

/** hw.stats: what callers read (the bench, the summary); the hardware reports more. */
export const HwStatsSchema = Type.Object({
  host: Type.String(),
  /** Milliseconds the simulator's event loop was busy since it started. */
  busyMs: Type.Number(),
  /** ws: its process's CPU time, SV-IO cores included. */
  processCpuMs: Type.Optional(Type.Number()),
  disk: Type.Object({ faults: Type.Array(DiskFaultStatsSchema) }),
  events: Type.Object({ received: Counter }),
  sriov: Type.Object({ functions: Type.Array(FunctionStatsSchema), iommu: Type.Object({ pagesTranslated: Counter }) }),
  /** With VIFs: the SV-IO engine's list. */
  svio: Type.Optional(SvioListSchema),
});
export type HwStatsSummary = Static<typeof HwStatsSchema>;

const Empty = Type.Object({});

export const HardwareContract = defineContract('hardware', {
  methods: {
    /**
     * A domain's memory becomes reachable by DMA: `buffer` itself (threads), or (ws) `frames`
     * frames of a local copy kept current by streaming DMA mappings.
     */
    attachMemory: method('hw.attachMemory', Type.Union([Type.Object({ domid: DomainId, buffer: TSharedArrayBuffer() }), Type.Object({ domid: DomainId, frames: Type.Integer({ minimum: 1, maximum: 1 << 20 }) })]), Type.Null(), ['RV_ERR_CLOSED']),
    /** Queues living in that memory stop; its functions are reclaimed and its VIFs destroyed first. */
    detachMemory: method('hw.detachMemory', Type.Object({ domid: DomainId }), Type.Null(), ['RV_ERR_CLOSED']),
    /** The disk's queue (initialised by the driver) and its event port; attaching again replaces it. */
    diskAttach: method('hw.disk.attach', Type.Object({ queue: MachineFrame, port: EventPort }), Type.Object({ sectors: Type.Integer({ minimum: 0 }), sectorSize: Type.Literal(512) }), ['RV_ERR_DEVICE', 'RV_ERR_CLOSED']),
    /** Replaces the disk's fault rules (fresh counters and PRNG streams); [] clears. */
    diskFaults: method('hw.disk.faults', Type.Object({ rules: Type.Array(DiskFaultRuleSchema, { maxItems: DISK_FAULT_RULES_MAX }) }), Type.Array(DiskFaultStatsSchema), ['RV_ERR_CLOSED']),
    /** The power goes: a writeback cache tears (each dirty sector written with `writeProbability`). */
    diskPowerLoss: method('hw.disk.powerLoss', Type.Object({ writeProbability: Probability, seed: Type.Integer({ minimum: 0, maximum: 0xffffffff }) }), Type.Object({ written: Counter, lost: Counter }), ['RV_ERR_CLOSED']),
    nicAttach: method('hw.nic.attach', Type.Object({ tx: MachineFrame, rx: MachineFrame, port: EventPort }), Type.Object({ mac: Type.String() }), ['RV_ERR_DEVICE', 'RV_ERR_CLOSED']),
    nicLink: method('hw.nic.link', Type.Object({ up: Type.Boolean() }), Type.Object({ link: Type.Union([Type.Literal('up'), Type.Literal('down')]) }), ['RV_ERR_CLOSED']),
    /** Frame faults on the host's LAN uplink; null clears. */
    lanFaults: method('hw.lan.faults', Type.Object({ faults: Type.Union([FrameFaultsSchema, Type.Null()]) }), FrameFaultCountersSchema, ['RV_ERR_DEVICE']),
    /** Lose or delay a domain's device interrupts (null clears); the counts since it was set. */
    irqFaults: method('hw.irq.faults', Type.Object({ domid: GuestDomainId, fault: Type.Union([InterruptFaultSchema, Type.Null()]) }), InterruptFaultCountsSchema, []),
    /** A virtual function for direct I/O: IOMMU context and interrupt entry programmed. */
    vfAssign: method('hw.vf.assign', VfAssignParamsSchema, VfAssignResultSchema, ['RV_ERR_DEVICE', 'RV_ERR_CLOSED'], 5_000),
    /** Bus master off, FLR, IOMMU context and interrupt entry torn down, back to the pool. */
    vfReclaim: method('hw.vf.reclaim', Type.Object({ rid: Type.String({ maxLength: 16 }) }), ReclaimReportSchema, ['RV_ERR_DEVICE', 'RV_ERR_CLOSED'], 5_000),
    vfList: method('hw.vf.list', Empty, Type.Array(FunctionStatsSchema), [], 5_000),
    iommuFaults: method('hw.iommu.faults', Type.Object({ drain: Type.Optional(Type.Boolean()) }), Type.Object({ faults: Type.Array(IommuFaultSchema), counters: Type.Object({ faults: Counter }) }), [], 5_000),
    /** An SV-IO VIF bound to `domid`, placed on one of the engine's cores. */
    svioCreate: method('hw.svio.create', SvioCreateParamsSchema, SvioCreateResultSchema, ['RV_ERR_DEVICE', 'RV_ERR_CLOSED'], 10_000),
    svioDestroy: method('hw.svio.destroy', Type.Object({ vif: VifId }), Type.Null(), ['RV_ERR_DEVICE', 'RV_ERR_CLOSED'], 5_000),
    svioQos: method('hw.svio.qos', Type.Object({ vif: VifId, weight: Type.Integer({ minimum: 1, maximum: 1000 }), rate: Type.Optional(Rate) }), Type.Null(), ['RV_ERR_DEVICE', 'RV_ERR_CLOSED'], 5_000),
    svioList: method('hw.svio.list', Empty, SvioListSchema, [], 5_000),
    stats: method('hw.stats', Empty, HwStatsSchema, [], 5_000),
    /** threads: the simulator's thread blocks until word 0 of `word` becomes non-zero — frozen hardware. */
    freeze: method('hw.freeze', Type.Object({ word: TSharedArrayBuffer(), maxMs: Type.Number({ minimum: 0 }) }), Type.Boolean(), [], 5_000),
    /** Then the disk is fsynced and closed, the gate stopped and the control link closed. */
    shutdown: method('hw.shutdown', Empty, Type.Null(), [], 10_000),
  },
});

/** What dom0 tells a hardware simulator process about its host when it connects (ws). */
export const HwBootSchema = Type.Object({
  host: Type.String({ minLength: 1 }),
  disk: Type.Object({ path: Type.String(), sizeBytes: Type.Integer({ minimum: 1 }), cache: Type.Optional(Type.Union([Type.Literal('writethrough'), Type.Literal('writeback')])) }),
  nic: Type.Object({ mac: Type.String() }),
  svioCores: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
  /** The LAN switch to connect the NIC's cable to, and this host's index there. */
  lan: Type.Optional(Type.Object({ url: Type.String(), hostIndex: Type.Integer({ minimum: 0 }) })),
});
export type HwBoot = Static<typeof HwBootSchema>;

/** A hardware simulator process and its dom0, the other way round: served by dom0. */
export const HardwareBootContract = defineContract('hardware-boot', {
  methods: {
    boot: method('hw.boot', Empty, HwBootSchema, []),
  },
  notifications: {
    /** The process serves; guests reach its direct-link listener at `directUrl`. */
    ready: notification('hw.ready', Type.Object({ directUrl: Type.String() })),
  },
});
