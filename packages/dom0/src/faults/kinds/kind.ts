/**
 * What a fault kind is: one module (this folder) says, for its kind, everything the rest of
 * `faults/` needs — the plan schema of its parameters and their TypeScript type, the checks a plan
 * must pass beyond the schema, how it is injected and healed through the real mechanism it names,
 * and how a random campaign draws one. The registry (`index.ts`) lists the modules; the plan
 * schema, the injector and the generator go through it and never branch on kind names.
 */
import type { Logger, TraceKind } from '@ringvisor/shared';
import type { DeviceConfig } from '../../toolstack/config.js';
import type { Host } from '../../toolstack/host.js';
import type { BackendCounters, SplitBackend } from '../../backends/split-backend.js';
import type { HostileVifTally } from '../checkers.js';

/** A runtime that is not a domain: the hardware simulator, or dom0's I/O stack. */
export type FaultRuntime = 'hwsim' | 'dom0';

export interface FaultSelector {
  host?: string;
  domain?: string;
  device?: string;
  /** A runtime that is not a domain (link faults on the hardware simulator's link). */
  runtime?: FaultRuntime;
}

export interface FaultWhen {
  at?: number;
  after?: { kind: TraceKind; count: number };
  every?: number;
  times?: number;
  probability?: number;
  for?: number;
}

/** One fault of kind `N` with parameters `P` (the plan's `what` is `{ kind, ...params }`). */
export interface KindSpec<N extends string = string, P extends object = object> {
  id: string;
  who: FaultSelector;
  what: { kind: N } & P;
  when: FaultWhen;
}

/** The JSON schema (ajv) of one parameter, tied to its TypeScript type. */
export interface NumberSchema {
  readonly type: 'number' | 'integer';
  readonly minimum?: number;
  readonly maximum?: number;
  readonly exclusiveMinimum?: number;
}
export interface EnumSchema<T> {
  readonly enum: readonly T[];
}
export interface ArraySchema {
  readonly type: 'array';
  readonly items: NumberSchema;
  readonly minItems?: number;
  readonly maxItems?: number;
}
export type ParamSchema<T> = [T] extends [number] ? NumberSchema : [T] extends [string] ? EnumSchema<T> : [T] extends [readonly unknown[]] ? ArraySchema : never;
/** The schema fragment of a kind: one entry per parameter of its TypeScript type, no more. */
export type ParamSchemas<P> = { readonly [K in keyof P]-?: ParamSchema<NonNullable<P[K]>> };

/** What a fault run leaves in the history (the chaos report's `faults`). */
export interface FaultRecord {
  key: string;
  id: string;
  kind: string;
  host: string;
  who: FaultSelector;
  injectedAt: number;
  healedAt?: number;
  error?: string;
  /** What the fault did (attacks sent, …). */
  detail?: Record<string, unknown>;
}

export type AnyBackend = SplitBackend<BackendCounters>;

/** A kind without parameters. */
export type NoParams = Record<never, never>;

/** State one kind keeps across its occurrences within one injector (a host's disk rule table). */
export interface StateSlot<T> {
  readonly init: () => T;
}

/** What a kind's `inject` and `heal` get from the injector: the occurrence and the cluster. */
export interface InjectContext {
  /** This occurrence's key (unique within the injector: rule ids). */
  readonly key: string;
  /** The injector's seed and this occurrence's number: seeds of the fault's own draws. */
  readonly seed: number;
  readonly seq: number;
  /** Draws of this occurrence (the backends' event faults). */
  readonly draw: () => number;
  /** The history entry: `detail` says what the fault did. */
  readonly record: FaultRecord;
  readonly log: Logger;
  /** Tallies the checkers judge: stray DMA attempted and blocked, hostile VIF messages refused. */
  readonly strayDma: { attempted: number; blocked: number; unblocked: number };
  readonly hostileVif: HostileVifTally;
  /** Guests a plan made misbehave (host/domain): their own I/O is not held to the checkers. */
  readonly attackers: Set<string>;
  /** The hosts `who.host` selects (all when absent); throws FaultTargetError if none. */
  hostsFor(spec: KindSpec): Host[];
  /** The host `who.domain` lives on; throws FaultTargetError if none. */
  guestHost(spec: KindSpec): Host;
  /** The PV backends of `who.domain` (and `who.device`); throws FaultTargetError if none. */
  backends(spec: KindSpec): { host: Host; backends: AnyBackend[] };
  /** This injector's instance of a kind's state. */
  state<T>(slot: StateSlot<T>): T;
}

/**
 * A fault in effect: where it acts (for the record and the trace) and, when it lasts until
 * healed, what its kind's `heal` needs to undo it.
 */
export interface Injection<S> {
  host: Host;
  domid: number;
  state?: S;
}

/** A guest as a random campaign sees it: what it can be aimed at. */
export interface GenGuest {
  host: string;
  name: string;
  vbd: DeviceConfig | undefined;
  vif: DeviceConfig | undefined;
  /** Device names (`lance0`, `ata768`, `vif1`, …) per I/O mode. */
  emulated: string[];
  direct: string[];
  svio: string[];
}

export interface GenCluster {
  hosts: number;
  transport: 'threads' | 'ws';
  guests: GenGuest[];
}

/** One scenario being drawn: its guest, its time, and the campaign's seeded draws. */
export interface GenScenario {
  /** The guest picked among those the kind is eligible for (and still alive). */
  g: GenGuest;
  /** `{ at, for }`: held for the scenario's hold time; `at` alone for kinds over once they happened. */
  when: { at: number; for: number };
  at: number;
  next(): number;
  nextInt(n: number): number;
  pick<T>(xs: readonly T[]): T;
  /** Guests still alive (endings only take one of them). */
  alive: GenGuest[];
  /** Marks a guest as ended: no later scenario aims at it. */
  end(name: string): void;
}

export interface FaultGenerator<N extends string, P extends object> {
  /**
   * Where the kind sits in a campaign's round before the seeded shuffle (ascending). A seed gives
   * the same plan only as long as this order stays: a new kind takes a number after the others.
   */
  readonly order: number;
  /**
   * An ending (it takes a guest away): dealt last, at most once, never at the last guest; when
   * `dealt` holds.
   */
  readonly ending?: boolean;
  /** Whether a random campaign on this cluster deals the kind (default: yes, given an eligible guest). */
  dealt?(c: GenCluster): boolean;
  /** The guests it may act on (default: every guest). */
  eligible?(g: GenGuest): boolean;
  /** One scenario's fault (the generator adds its id). */
  make(s: GenScenario): Omit<KindSpec<N, P>, 'id'>;
}

/**
 * One fault kind. Checks beyond the schema run in this order, the first failing one refusing the
 * plan with a ConfigError saying how to fix it: `checkTarget`, parameters another kind `owns`,
 * `testOnly`, `runtimes` / `needsDomain`, `checkParams`, then the generic ones (sectors, when).
 */
export interface FaultKind<N extends string = string, P extends object = object, S = unknown> {
  readonly name: N;
  /** One line: what it does and what it needs (`FAULT_KINDS`, the "needs who.x" messages). */
  readonly description: string;
  /** The plan schema of its parameters (`what` beyond `kind`); fragments of kinds sharing a parameter must agree (enums are merged). */
  readonly params: ParamSchemas<P>;
  /** Parameters of its own (in `params`) no other kind may carry (refused there: "what.x belongs to …"). */
  readonly owns?: readonly string[];
  /** Runtimes `who.runtime` may name instead of a domain. */
  readonly runtimes?: readonly FaultRuntime[];
  /** What it acts on, for the refusal of `runtime: dom0` where it does not apply. */
  readonly actsOn?: string;
  /** Needs who.domain (unless a runtime it takes is named): true, or the text after "needs who.domain". */
  readonly needsDomain?: true | string;
  /** Breaks the system on purpose to test the checkers: refused unless RINGVISOR_TEST_FAULTS=1. */
  readonly testOnly?: boolean;
  /** A fault at a guest that is rebooting waits for it to be back (default); false: it acts at once (a reboot itself). */
  readonly waitsForReboot?: boolean;
  /** A plan that runs it means a guest to die (the campaign does not count that death as a failure). */
  readonly endsGuest?: boolean;
  /** It corrupts data silently: the block checker's detections are reported, not failed. */
  readonly silentCorruption?: boolean;
  checkTarget?(f: KindSpec<N, P>, where: string): void;
  checkParams?(f: KindSpec<N, P>, where: string): void;
  /** Over once it happened (nothing to heal; recovery is timed at once). Default: it lasts. */
  instantaneous?(f: KindSpec<N, P>): boolean;
  /** Make it happen; resolves once it is in effect. */
  inject(ctx: InjectContext, f: KindSpec<N, P>): Promise<Injection<S>>;
  /** Undo it, given the state `inject` returned (runs only if it returned one). */
  heal?(ctx: InjectContext, state: S): Promise<void> | void;
  /** How a random campaign draws it; absent: never drawn (it has scenarios of its own). */
  readonly generate?: FaultGenerator<N, P>;
}

/** A runtime is frozen at most this long, whatever the plan says. */
export const MAX_FREEZE_MS = 60_000;
