/**
 * The registry of fault kinds: one line per kind, in the order plans and `FAULT_KINDS` list them
 * (and random campaigns deal them). Adding a kind: a module in this folder implementing
 * `FaultKind` (kind.ts), one line here, one row in docs/faults.md.
 */
import type { FaultKind } from './kind.js';
import { backendPause } from './backend-pause.js';
import { evtchnDelayed, evtchnLost } from './evtchn-lost.js';
import { evtchnSpurious, evtchnStorm } from './evtchn-spurious.js';
import { diskBitflip, diskEio } from './disk-rules.js';
import { diskTorn } from './disk-torn.js';
import { nicDown } from './nic-down.js';
import { processKill } from './process-kill.js';
import { processRestart } from './process-restart.js';
import { processPause } from './process-pause.js';
import { linkBandwidth, linkLatency, linkPartition } from './link-toxics.js';
import { linkReset } from './link-reset.js';
import { lanCorrupt, lanDrop, lanDuplicate, lanReorder } from './lan.js';
import { grantRevokeMapped, ringCorruptIndex, ringDoubleFetch, ringForeignGref, ringGarbage, ringStaleGref } from './ring-attacks.js';
import { backendRestart } from './backend-restart.js';
import { deviceHostile } from './device-hostile.js';
import { directReclaim } from './direct-reclaim.js';
import { iommuStrayDma } from './iommu-stray-dma.js';
import { svioReset } from './svio-reset.js';
import { svioHostile } from './svio-hostile.js';
import { backendLie, grantUnmapEarly } from './checker-self-tests.js';

export const FAULT_KIND_MODULES = [
  backendPause,
  evtchnLost,
  evtchnDelayed,
  evtchnSpurious,
  evtchnStorm,
  diskEio,
  diskBitflip,
  diskTorn,
  nicDown,
  processKill,
  processRestart,
  processPause,
  linkLatency,
  linkBandwidth,
  linkPartition,
  linkReset,
  lanDrop,
  lanDuplicate,
  lanReorder,
  lanCorrupt,
  ringGarbage,
  ringForeignGref,
  ringStaleGref,
  ringDoubleFetch,
  ringCorruptIndex,
  grantRevokeMapped,
  backendRestart,
  deviceHostile,
  directReclaim,
  iommuStrayDma,
  svioReset,
  svioHostile,
  backendLie,
  grantUnmapEarly,
] as const;

type Module = (typeof FAULT_KIND_MODULES)[number];

/** Every fault kind's name. */
export type FaultKindName = Module['name'];

type ParamsOf<M> = M extends FaultKind<string, infer P, infer _S> ? P : never;
type AllParams = ParamsOf<Module>;
type KeysOfUnion<T> = T extends unknown ? keyof T : never;
type ValueOfUnion<T, K extends PropertyKey> = T extends unknown ? (K extends keyof T ? T[K] : never) : never;
/** Every kind's parameters in one (a plan's `what` may carry any of them; the checks say which belong). */
export type FaultParams = { [K in KeysOfUnion<AllParams>]?: Exclude<ValueOfUnion<AllParams, K>, undefined> };

/** A kind as the injector, the plan checks and the generator use it (its own types erased). */
export type RegisteredFaultKind = FaultKind<string, object, unknown>;

const byName = new Map<string, RegisteredFaultKind>(FAULT_KIND_MODULES.map((m): [string, RegisteredFaultKind] => [m.name, m]));

/** The registered kinds, in registry order. */
export function faultKinds(): readonly RegisteredFaultKind[] {
  return FAULT_KIND_MODULES;
}

/** The module of a kind; undefined for a name no module has (the plan schema refuses those first). */
export function faultKind(name: string): RegisteredFaultKind | undefined {
  return byName.get(name);
}
