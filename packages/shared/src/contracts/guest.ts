/**
 * Guest control: what the toolstack (dom0) calls on a guest runtime (domU serves it), what a
 * guest booted across a link asks dom0 for (its boot spec), and what it reports. A guest is
 * untrusted: every answer it gives dom0 is checked against these schemas before dom0 reads it.
 *
 * The boot spec's and the stats' TypeScript types are aliases of these schemas
 * (runtime/guest.ts, hw/vf.ts, trap/vmapp.ts).
 */
import { Type } from '@sinclair/typebox';
import { TSharedArrayBuffer, defineContract, method, notification } from './contract.js';

const EventPort = Type.Integer({ minimum: 1, maximum: 4095 });
/** -1: no port (the hosted placement's VMApp sleeps on the slot's doorbell instead). */
const PortOrNone = Type.Integer({ minimum: -1, maximum: 4095 });
const Counter = Type.Number({ minimum: 0 });
const WsUrl = Type.String({ pattern: '^wss?://' });

export const DeviceModeSchema = Type.Union([Type.Literal('pv'), Type.Literal('emulated'), Type.Literal('direct'), Type.Literal('svio')]);

/** A function assigned to the guest (direct I/O): where its registers are, its doorbell/interrupt port. */
export const DirectFunctionSpecSchema = Type.Object({
  kind: Type.Union([Type.Literal('nic'), Type.Literal('disk')]),
  devid: Type.Integer({ minimum: 0 }),
  /** "bb:dd.f" */
  rid: Type.String({ maxLength: 16 }),
  /** The guest's end of the doorbell / interrupt channel to the hardware. */
  port: EventPort,
  /** threads: the register page itself; ws: the guest's process mirrors its own copy. */
  bar: Type.Optional(TSharedArrayBuffer()),
});
export const DirectDeviceSpecSchema = Type.Object({
  functions: Type.Array(DirectFunctionSpecSchema),
  /** ws: the hardware simulator's listener for direct links (dom0 is not on this path). */
  hwUrl: Type.Optional(WsUrl),
});

/** A VIF as the guest is told of it: kind and device, the VIF's id, its port, (threads) its page. */
export const SvioVifSpecSchema = Type.Object({
  kind: Type.Union([Type.Literal('net'), Type.Literal('blk'), Type.Literal('cam')]),
  devid: Type.Integer({ minimum: 0 }),
  vif: Type.Integer({ minimum: 1 }),
  port: EventPort,
  page: Type.Optional(TSharedArrayBuffer()),
});

/** The devices a VMApp models (what a guest's boot spec carries when it must start one itself). */
export const VmAppPlanSchema = Type.Object({
  nics: Type.Array(Type.Object({ devid: Type.Integer(), name: Type.String(), mac: Type.String(), base: Type.Integer(), irqPort: Type.Integer(), index: Type.Integer() })),
  disks: Type.Array(Type.Object({ devid: Type.Integer(), name: Type.String(), commandBase: Type.Integer(), controlBase: Type.Integer(), irqPort: Type.Integer(), sectors: Type.Integer() })),
});

/**
 * A guest's emulated platform, as its firmware would describe it: the vCPU's I/O request slot
 * and the event port that kicks the ioreq server, and each device's I/O ports and virtual IRQ.
 */
export const EmulatedDeviceSpecSchema = Type.Object({
  /**
   * The vCPU's I/O request slot and the event port that kicks dom0's ioreq server (dom0
   * placement). Hosted: `port` is -1, and `slot` is absent when the guest's process must create
   * it along with its own VMApp (ws transport).
   */
  ioreq: Type.Object({ slot: Type.Optional(TSharedArrayBuffer()), port: PortOrNone }),
  /**
   * Hosted placement: the vCPU's accesses go through a VMM in the guest's world, which forwards
   * to the guest's VMApp. `vmm` is absent, and `vmapp` present, when the guest's process starts
   * the VMApp itself.
   */
  hosted: Type.Optional(
    Type.Object({
      vmm: Type.Optional(TSharedArrayBuffer()),
      lances: Type.Array(Type.Object({ base: Type.Integer(), index: Type.Integer(), vmmIo: Type.Boolean(), sendCombining: Type.Boolean() })),
      vmapp: Type.Optional(VmAppPlanSchema),
    }),
  ),
  nics: Type.Array(Type.Object({ devid: Type.Integer(), base: Type.Integer(), irqPort: Type.Integer() })),
  disks: Type.Array(Type.Object({ devid: Type.Integer(), commandBase: Type.Integer(), controlBase: Type.Integer(), irqPort: Type.Integer() })),
});

export const GuestBootSpecSchema = Type.Object({
  domid: Type.Integer({ minimum: 1, maximum: 0x7fef }),
  name: Type.String({ minLength: 1 }),
  /** The host (dom0) this guest runs on, for labels in trace events. */
  host: Type.Optional(Type.String()),
  seed: Type.Number(),
  memoryFrames: Type.Integer({ minimum: 1, maximum: 1 << 20 }),
  /**
   * Shared memory from the hypervisor (threads transport). Absent when the guest runs across a
   * link without shared memory: it then allocates its own and talks through the domain link.
   */
  shared: Type.Optional(Type.Object({ memory: TSharedArrayBuffer(), grantTable: TSharedArrayBuffer(), eventMemory: TSharedArrayBuffer() })),
  /** `mode` absent = pv. */
  vbds: Type.Array(Type.Object({ devid: Type.Integer({ minimum: 0 }), mode: Type.Optional(DeviceModeSchema) })),
  vifs: Type.Array(Type.Object({ devid: Type.Integer({ minimum: 0 }), ip: Type.String(), mac: Type.String(), mode: Type.Optional(DeviceModeSchema) })),
  /** Emulated devices (full emulation) and how to reach them; absent when the guest has none. */
  emulated: Type.Optional(EmulatedDeviceSpecSchema),
  /** Device functions assigned to the guest (direct I/O); absent when it has none. */
  direct: Type.Optional(DirectDeviceSpecSchema),
  /**
   * SV-IO VIFs bound to the guest: each one's id, the guest's end of its channel, and (threads)
   * its register page; (ws) where the guest's direct link to the hardware connects instead.
   */
  svio: Type.Optional(Type.Object({ vifs: Type.Array(SvioVifSpecSchema), hwUrl: Type.Optional(WsUrl) })),
  workloads: Type.Object({
    /** volatileCache: the host's disk has a writeback cache (the ledger is flush-aware). */
    block: Type.Optional(Type.Object({ devid: Type.Integer(), blocks: Type.Integer({ minimum: 1 }), queueDepth: Type.Integer({ minimum: 1 }), volatileCache: Type.Optional(Type.Boolean()) })),
    /** A benchmark's block load (domU/workloads/block-load.ts): measures, checks nothing. */
    io: Type.Optional(
      Type.Object({
        devid: Type.Integer(),
        op: Type.Union([Type.Literal('read'), Type.Literal('write')]),
        pattern: Type.Union([Type.Literal('random'), Type.Literal('sequential')]),
        blockBytes: Type.Integer({ minimum: 1 }),
        queueDepth: Type.Integer({ minimum: 1 }),
        regionBytes: Type.Integer({ minimum: 1 }),
      }),
    ),
    /**
     * `echo` (default): windowed flows to each peer's echo port, every datagram verified on its
     * way back. `stream`: one-way datagrams to each peer's discard port at `ratePps` (0: as fast
     * as the NIC takes them), verified by the peer's sink.
     */
    udp: Type.Optional(
      Type.Object({
        peers: Type.Array(Type.Object({ name: Type.String(), ip: Type.String() })),
        payloadBytes: Type.Integer({ minimum: 0 }),
        window: Type.Integer({ minimum: 1 }),
        mode: Type.Optional(Type.Union([Type.Literal('echo'), Type.Literal('stream')])),
        ratePps: Type.Optional(Type.Number({ minimum: 0 })),
      }),
    ),
  }),
});

export const GuestDeviceStatsSchema = Type.Object({
  type: Type.Union([Type.Literal('vbd'), Type.Literal('vif'), Type.Literal('cam')]),
  devid: Type.Integer(),
  mode: DeviceModeSchema,
  ops: Counter,
  bytes: Counter,
  errors: Counter,
  /** Driver-specific counters (notifications, grants, …). */
  detail: Type.Record(Type.String(), Type.Number()),
});

const Percentiles = { p50: Type.Number(), p99: Type.Number(), p999: Type.Number(), count: Counter };

export const GuestStatsSchema = Type.Object({
  name: Type.String(),
  domid: Type.Integer(),
  state: Type.Union([Type.Literal('booting'), Type.Literal('running'), Type.Literal('stopping'), Type.Literal('stopped'), Type.Literal('failed')]),
  devices: Type.Array(GuestDeviceStatsSchema),
  integrity: Type.Object({ checked: Counter, failures: Counter, kinds: Type.Record(Type.String(), Type.Number()) }),
  /** `late`: echoes that came after their datagram's timeout (slow, not lost; not in `echoed`). */
  udp: Type.Object({
    sent: Counter,
    echoed: Counter,
    lost: Counter,
    late: Counter,
    duplicated: Counter,
    reordered: Counter,
    corrupted: Counter,
    rttP50Us: Type.Optional(Type.Number()),
    rttP99Us: Type.Optional(Type.Number()),
    rttP999Us: Type.Optional(Type.Number()),
  }),
  /** One-way UDP: what this guest streamed, and what its discard sink received and verified. */
  stream: Type.Optional(Type.Object({ sent: Counter, refused: Counter, received: Counter, bytesReceived: Counter, corrupted: Counter, gaps: Counter })),
  /**
   * The block ledger alone (integrity mixes in datagrams): blocks read back and classified,
   * failures by class, and blocks left indeterminate by a failed write.
   */
  block: Type.Optional(
    Type.Object({
      checked: Counter,
      failures: Counter,
      kinds: Type.Record(Type.String(), Type.Number()),
      indeterminate: Counter,
      writeErrors: Counter,
      unflushed: Type.Optional(Counter),
      latencyP50Us: Type.Optional(Type.Number()),
      latencyP99Us: Type.Optional(Type.Number()),
      latencyP999Us: Type.Optional(Type.Number()),
    }),
  ),
  /** The io workload's counters (a benchmark's block load). */
  io: Type.Optional(Type.Object({ ops: Counter, bytes: Counter, errors: Counter, latencyUs: Type.Optional(Type.Object(Percentiles)) })),
  /** Milliseconds the guest runtime's event loop was busy since it started (CPU% = Δbusy / Δt). */
  busyMs: Type.Optional(Type.Number()),
  /** A guest that is its own process (ws): the process's CPU time since it started. */
  processCpuMs: Type.Optional(Type.Number()),
  error: Type.Optional(Type.String()),
});

const Empty = Type.Object({});
/** What an attack did (its driver's own counters and outcomes): read by fault plans' reports. */
/**
 * What a hostile-driver attack reports. The fields the toolstack reads are typed (a guest is
 * untrusted, so they are checked); an attack may report more, which is kept as detail.
 */
const AttackOutcome = Type.Object({
  attack: Type.Optional(Type.String({ maxLength: 64 })),
  sent: Type.Optional(Type.Integer({ minimum: 0 })),
  blocked: Type.Optional(Type.Integer({ minimum: 0 })),
  completed: Type.Optional(Type.Integer({ minimum: 0 })),
  stopped: Type.Optional(Type.Boolean()),
});
const HwUrl = { hwUrl: Type.Optional(WsUrl) };

/** Served by the guest runtime (domU/src/runtime.ts); called by dom0's toolstack. */
export const GuestControlContract = defineContract('guest-control', {
  methods: {
    stats: method('guest.stats', Empty, GuestStatsSchema, []),
    /** Stop issuing work and drain (in-flight I/O, echoes in flight), but keep devices connected. */
    quiesce: method('guest.quiesce', Empty, GuestStatsSchema, []),
    /** Start the workloads (once every guest of the host is ready, so no flow starts towards a peer still booting). */
    start: method('guest.start', Empty, Type.Null(), []),
    /** Start a measurement window: the guest forgets its round-trip samples so far (benchmarks). */
    mark: method('guest.mark', Empty, Type.Null(), []),
    /** Quiesce, disconnect the devices, and answer the final stats; then the runtime ends. */
    stop: method('guest.stop', Empty, GuestStatsSchema, []),
    /**
     * Freeze the guest's runtime (threads; a process is SIGSTOPped instead): its thread blocks in
     * Atomics.wait on word 0 of `word` until dom0 stores 1 and notifies, or `maxMs`.
     */
    freeze: method('guest.freeze', Type.Object({ word: TSharedArrayBuffer(), maxMs: Type.Number({ minimum: 0 }) }), Type.Boolean(), []),
    /**
     * Make one of the guest's devices misbehave on purpose (fault plans): `device` is "vbd<devid>",
     * "lance<devid>", "ata<devid>", a direct or an SV-IO device's name.
     */
    attack: method('guest.attack', Type.Object({ device: Type.String({ maxLength: 64 }), attack: Type.String({ maxLength: 64 }), count: Type.Optional(Type.Number()), seed: Type.Optional(Type.Number()) }), AttackOutcome, ['RV_ERR_DEVICE', 'RV_ERR_NO_SUCH_DEVICE', 'RV_ERR_INVALID_ARG']),
    /** The toolstack took one of the guest's assigned functions away: the driver stops using it. */
    directUnplug: method('guest.direct.unplug', Type.Object({ kind: Type.Union([Type.Literal('nic'), Type.Literal('disk')]), devid: Type.Integer({ minimum: 0 }) }), Type.Null(), ['RV_ERR_DEVICE', 'RV_ERR_NO_SUCH_DEVICE', 'RV_ERR_INVALID_ARG']),
    /** A function was assigned again after a reclaim (hot-plug): the driver starts over on it. */
    directPlug: method('guest.direct.plug', Type.Object({ function: DirectFunctionSpecSchema, ...HwUrl }), Type.Null(), ['RV_ERR_DEVICE', 'RV_ERR_NO_SUCH_DEVICE', 'RV_ERR_INVALID_ARG']),
    /** An SV-IO VIF was created again (a device reset, a hardware restart): the driver opens it. */
    svioPlug: method('guest.svio.plug', Type.Object({ vif: SvioVifSpecSchema, ...HwUrl }), Type.Null(), ['RV_ERR_DEVICE', 'RV_ERR_NO_SUCH_DEVICE', 'RV_ERR_INVALID_ARG']),
    /**
     * The host's disk lost power with a volatile write cache, told before the new hardware
     * answers anything: writes not yet durable are in doubt for good.
     */
    powerLost: method('guest.disk.powerLost', Empty, Type.Null(), []),
  },
  notifications: {
    /** Once the guest's devices are connected. */
    ready: notification('guest.ready', Type.Object({ domid: Type.Integer() })),
  },
});

/** Served by dom0 on a guest's link: a guest process across a link asks for its boot spec. */
export const GuestBootContract = defineContract('guest-boot', {
  methods: {
    boot: method('guest.boot', Empty, GuestBootSpecSchema, ['RV_ERR_DOMAIN']),
  },
});
