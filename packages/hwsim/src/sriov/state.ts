/**
 * The saved state of an SR-IOV virtual function (DiskVf 'disk-vf', NicVf 'nic-vf'): what a fresh
 * function built with the same constructor arguments needs to carry on its owner's I/O.
 *
 * What a record holds:
 * - `registers`: the register page (BAR0) word by word — the driver's Q0/Q1 (queue base I/O page
 *   numbers) and CTRL, and the device's STATUS, GEN, VECTOR, FAULTS, identity — so a function
 *   restored onto a fresh page shows its driver what the old one showed;
 * - the device's own state the page only mirrors: owner, bus master, queues enabled, the error
 *   that stopped them, the generation, the interrupt vector, DMA faults since the last reset;
 * - per queue: its base I/O page, its ring size, and the device's private indices (`reqCons`,
 *   `rspProdPvt`). The shared indices (req_prod, rsp_prod, the event words) live in the ring page,
 *   which is the owner's memory;
 * - what the function took off its queues and has not answered, each as the slot bytes it copied
 *   out (the private copy it validates, never read from guest memory again): a disk function's
 *   fetched commands, a NIC function's prefetched rx descriptors; frames from the wire waiting
 *   for a buffer (NIC backlog). Requests still on the ring are not in the record: the restored
 *   function fetches them;
 * - `irqPending`: an interrupt the function owed its driver when it was quiesced (raised on resume);
 * - the counters, so metrics carry on.
 *
 * What a record does not hold: the owner's memory (rings and buffers), the IOMMU's context entry,
 * I/O page table and interrupt remapping entry, the disk image and the LAN port. They belong to
 * the environment and come back as constructor arguments; the restored function translates every
 * address through the same IOMMU, as the old one did.
 */
import { Type, type Static } from '@sinclair/typebox';
import { VF_REG, VF_REG_COUNT, defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

/** One queue of a function: where it is, how big, and the device's private indices. */
export const VfQueueState = Type.Object({
  iovaPfn: U32,
  size: Type.Integer({ minimum: 1, maximum: 256 }),
  reqCons: U32,
  rspProdPvt: U32,
});
export type VfQueueState = Static<typeof VfQueueState>;

const FunctionCountersState = Type.Object({
  doorbells: Count,
  enables: Count,
  dmaReads: Count,
  dmaWrites: Count,
  dmaBytesRead: Count,
  dmaBytesWritten: Count,
  dmaFaults: Count,
  dmaSuppressed: Count,
  irqs: Count,
  irqsBlocked: Count,
  flrs: Count,
  assigns: Count,
  reclaims: Count,
});

/** The part every function shares (function.ts). */
const FunctionFields = {
  registers: Type.Array(U32, { minItems: VF_REG_COUNT, maxItems: VF_REG_COUNT }),
  owner: Type.Union([Type.Null(), Type.Integer({ minimum: 0, maximum: 0xffff })]),
  busMaster: Type.Boolean(),
  enabled: Type.Boolean(),
  error: Type.Union([Type.Null(), Type.String({ maxLength: 1024 })]),
  generation: U32,
  vector: Type.Integer({ minimum: -1, maximum: 0xffff }),
  faultsSinceReset: Count,
  irqPending: Type.Boolean(),
  counters: FunctionCountersState,
};

/** An hwblk request slot as the function copied it out (hwBlkProtocol's 104 bytes). */
const BlkSlot = Type.Uint8Array({ minByteLength: 104, maxByteLength: 104 });
/** An hwnic buffer slot (12 bytes). */
const NicSlot = Type.Uint8Array({ minByteLength: 12, maxByteLength: 12 });

export const DiskVfState = Type.Object({
  ...FunctionFields,
  partition: Type.Object({ start: Count, sectors: Count }),
  queue: Type.Union([Type.Null(), VfQueueState]),
  /** Fetched, validated at execution, not yet answered; in ring order. */
  commands: Type.Array(BlkSlot, { maxItems: 256 }),
  io: Type.Object({ reads: Count, writes: Count, flushes: Count, bytesRead: Count, bytesWritten: Count, errors: Count, queued: Count, injected: Count }),
});
export type DiskVfState = Static<typeof DiskVfState>;

export const NicVfState = Type.Object({
  ...FunctionFields,
  mac: Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' }),
  tx: Type.Union([Type.Null(), VfQueueState]),
  rx: Type.Union([Type.Null(), VfQueueState]),
  /** Prefetched rx descriptors not yet used, oldest first. */
  rxCache: Type.Array(NicSlot, { maxItems: 256 }),
  /** Frames from the wire waiting for a buffer (VF_RX_BACKLOG at most). */
  backlog: Type.Array(Type.Uint8Array({ minByteLength: 1, maxByteLength: 1514 }), { maxItems: 64 }),
  io: Type.Object({ txPackets: Count, txBytes: Count, txErrors: Count, rxPackets: Count, rxBytes: Count, rxErrors: Count, rxMissed: Count, rxFiltered: Count, rxCached: Count }),
});
export type NicVfState = Static<typeof NicVfState>;

/** Requests a queue's device end holds: taken (reqCons) and not yet answered (rspProdPvt). */
function held(q: VfQueueState): number {
  return (q.reqCons - q.rspProdPvt) >>> 0;
}

export const FunctionStateSchema = Type.Object(FunctionFields);
/** The fields every function's record has (VirtualFunction's own state). */
export type FunctionState = Static<typeof FunctionStateSchema>;

/** The checks every function's record must pass, beyond its schema. */
function refineFunction(s: FunctionState, queues: Array<VfQueueState | null>): string | undefined {
  if (s.enabled && (s.owner === null || !s.busMaster)) return 'queues enabled on a function that is not assigned and bus master';
  if (s.enabled && queues.some((q) => q === null)) return 'queues enabled but a queue is missing';
  if (!s.enabled && queues.some((q) => q !== null)) return 'a queue is attached while the queues are disabled';
  if ((s.owner === null) !== (s.vector === -1)) return `owner ${s.owner} and vector ${s.vector} disagree`;
  if (s.registers[VF_REG.GEN] !== s.generation) return `GEN register ${s.registers[VF_REG.GEN]} is not the generation ${s.generation}`;
  if (s.owner !== null && s.registers[VF_REG.VECTOR] !== s.vector) return `VECTOR register ${s.registers[VF_REG.VECTOR]} is not the vector ${s.vector}`;
  for (const q of queues) {
    if (!q) continue;
    if (held(q) > q.size) return `a queue holds ${held(q)} requests in a ring of ${q.size}`;
  }
  return undefined;
}

export const diskVfLayout = defineStateLayout('disk-vf', 1, DiskVfState, {
  refine: (s) => {
    const base = refineFunction(s, [s.queue]);
    if (base) return base;
    if (s.queue) {
      if (s.queue.iovaPfn !== s.registers[VF_REG.Q0]) return `queue at I/O page ${s.queue.iovaPfn} but Q0 says ${s.registers[VF_REG.Q0]}`;
      if (s.commands.length !== held(s.queue)) return `${s.commands.length} commands held, but the ring indices say ${held(s.queue)} taken and unanswered`;
    } else if (s.commands.length > 0) return 'commands held with no queue';
    if (s.io.queued !== s.commands.length) return `queued ${s.io.queued} is not the ${s.commands.length} commands held`;
    const sectors = s.registers[VF_REG.SECTORS_LO] + s.registers[VF_REG.SECTORS_HI] * 2 ** 32;
    if (sectors !== s.partition.sectors) return `SECTORS registers say ${sectors}, the partition has ${s.partition.sectors}`;
    return undefined;
  },
});

export const nicVfLayout = defineStateLayout('nic-vf', 1, NicVfState, {
  refine: (s) => {
    const base = refineFunction(s, [s.tx, s.rx]);
    if (base) return base;
    // Transmit is answered in the pass that takes it: nothing is ever held between passes.
    if (s.tx && held(s.tx) !== 0) return `tx holds ${held(s.tx)} requests between passes`;
    if (s.tx && s.tx.iovaPfn !== s.registers[VF_REG.Q0]) return `tx queue at I/O page ${s.tx.iovaPfn} but Q0 says ${s.registers[VF_REG.Q0]}`;
    if (s.rx && s.rx.iovaPfn !== s.registers[VF_REG.Q1]) return `rx queue at I/O page ${s.rx.iovaPfn} but Q1 says ${s.registers[VF_REG.Q1]}`;
    if (s.rx ? s.rxCache.length !== held(s.rx) : s.rxCache.length > 0) return `${s.rxCache.length} rx descriptors cached, the ring indices say ${s.rx ? held(s.rx) : 0}`;
    if (!s.enabled && s.backlog.length > 0) return 'frames waiting on a function whose queues are disabled';
    if (s.io.rxCached !== s.rxCache.length) return `rxCached ${s.io.rxCached} is not the ${s.rxCache.length} descriptors cached`;
    const lo = s.registers[VF_REG.MAC_LO];
    const hi = s.registers[VF_REG.MAC_HI];
    const mac = [lo & 0xff, (lo >>> 8) & 0xff, (lo >>> 16) & 0xff, lo >>> 24, hi & 0xff, (hi >>> 8) & 0xff].map((b) => b.toString(16).padStart(2, '0')).join(':');
    if (mac !== s.mac) return `MAC registers say ${mac}, the function's MAC is ${s.mac}`;
    return undefined;
  },
});
