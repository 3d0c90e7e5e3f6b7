/**
 * Fault plans: a declarative, seeded description of what goes wrong, where and when — the input
 * of `ringvisor chaos` and `ringvisor fault`. YAML or JSON, validated against a schema (ajv), so a
 * mistake names its path. The same plan and seed always give the same schedule.
 *
 *   name: disk-eio-under-load
 *   duration: 12            # seconds of workload under the plan
 *   faults:
 *     - id: eio
 *       who:  { host: host0 }                               # selector
 *       what: { kind: disk.eio, op: write, sectors: [0, 65536], probability: 0.3 }
 *       when: { at: 2, for: 4 }                            # seconds from the start
 *     - who:  { domain: guest2, device: vif0 }
 *       what: { kind: evtchn.lost, direction: to-guest }
 *       when: { every: 3, times: 3, for: 1, probability: 0.7 }
 *     - who:  { domain: guest3 }
 *       what: { kind: process.pause }
 *       when: { after: { kind: ring.push, count: 5000 }, for: 2 }
 *
 * `when`: `at` (first occurrence, s), `every` (s between occurrences) and `times` (how many,
 * default 1), each occurrence firing with `probability` (default 1, drawn from the seed); `for`
 * (s) heals it that long after (absent: instantaneous kinds just happen, lasting kinds hold until
 * the run heals everything); `after` starts the schedule when dom0 has seen the Nth trace event of
 * a kind instead of at a time.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { ConfigError, InvalidArgumentError, TRACE_KINDS, mixSeed, SplitMix32 } from '@ringvisor/shared';
import { describeSchemaErrors } from '../toolstack/config.js';
import { FAULT_KIND_MODULES, faultKind, faultKinds, type FaultKindName, type FaultParams } from './kinds/index.js';
import type { FaultSelector, FaultWhen, KindSpec } from './kinds/kind.js';

export type { FaultKindName, FaultParams } from './kinds/index.js';
export type { FaultSelector, FaultWhen } from './kinds/kind.js';

/** Every fault kind, with what it does and needs (from each kind's module). */
export const FAULT_KINDS = Object.fromEntries(FAULT_KIND_MODULES.map((m) => [m.name, m.description])) as Readonly<Record<FaultKindName, string>>;

export type FaultWhat = { kind: FaultKindName } & FaultParams;

export type FaultSpec = KindSpec<FaultKindName, FaultParams>;

export interface FaultPlan {
  name: string;
  description?: string;
  seed: number;
  /** Seconds of workload under the plan. */
  duration: number;
  /** Seconds between healing everything and draining (service must come back within it). */
  settle: number;
  /** Cluster config path (resolved against the plan's directory); absent: the default host. */
  cluster?: string;
  transport?: 'threads' | 'ws';
  faults: FaultSpec[];
}

const selector = {
  type: 'object',
  additionalProperties: false,
  properties: {
    host: { type: 'string', minLength: 1 },
    domain: { type: 'string', minLength: 1 },
    device: { type: 'string', pattern: '^(vbd|vif|cam|lance|ata)\\d+$' },
    runtime: { enum: ['hwsim', 'dom0'] },
  },
} as const;

/**
 * `what`: the kind, and every parameter some kind takes, each with the schema its kind's module
 * gives it (kinds sharing a parameter agree on it; their enums are merged). Which parameters
 * belong to which kind is checked after the schema, with messages saying how to fix a plan.
 */
function whatSchema(): { type: 'object'; additionalProperties: false; required: ['kind']; properties: Record<string, object> } {
  const properties: Record<string, object> = { kind: { enum: FAULT_KIND_MODULES.map((m) => m.name) } };
  for (const m of faultKinds())
    for (const [param, fragment] of Object.entries(m.params) as Array<[string, object]>) {
      const known = properties[param] as { enum?: unknown[] } | undefined;
      const next = fragment as { enum?: readonly unknown[] };
      if (!known) properties[param] = fragment;
      else if (known.enum && next.enum) properties[param] = { enum: [...known.enum, ...next.enum.filter((v) => !known.enum!.includes(v))] };
      else if (!isDeepStrictEqual(known, fragment)) throw new InvalidArgumentError(`fault kind ${m.name} gives what.${param} a schema another kind gives differently`);
    }
  return { type: 'object', additionalProperties: false, required: ['kind'], properties };
}

/** Parameters some kinds own, and which: refused on every other kind. */
const owners = new Map<string, string[]>();
for (const m of faultKinds()) for (const p of m.owns ?? []) owners.set(p, [...(owners.get(p) ?? []), m.name]);

const when = {
  type: 'object',
  additionalProperties: false,
  properties: {
    at: { type: 'number', minimum: 0 },
    after: {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'count'],
      properties: { kind: { enum: [...TRACE_KINDS] }, count: { type: 'integer', minimum: 1 } },
    },
    every: { type: 'number', exclusiveMinimum: 0 },
    times: { type: 'integer', minimum: 1, maximum: 10_000 },
    probability: { type: 'number', minimum: 0, maximum: 1 },
    for: { type: 'number', exclusiveMinimum: 0 },
  },
} as const;

const faultSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['who', 'what'],
  properties: { id: { type: 'string', pattern: '^[\\w.-]{1,64}$' }, who: selector, what: whatSchema(), when },
} as const;

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['faults'],
  properties: {
    name: { type: 'string', minLength: 1 },
    description: { type: 'string' },
    seed: { type: 'integer', minimum: 0, maximum: 0xffffffff },
    duration: { type: 'number', exclusiveMinimum: 0, maximum: 86_400 },
    settle: { type: 'number', minimum: 0, maximum: 600 },
    cluster: { type: 'string', minLength: 1 },
    transport: { enum: ['threads', 'ws'] },
    faults: { type: 'array', maxItems: 1000, items: faultSchema },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validatePlan = ajv.compile(schema);
const validateFault = ajv.compile(faultSchema);

/**
 * What a fault needs beyond the schema, checked with a message saying how to fix it: its kind's
 * target (`checkTarget`), parameters that belong to other kinds, the checker self-tests' switch,
 * the runtime or domain it acts on, its kind's parameters (`checkParams`), then sectors and when.
 */
function checkFault(f: FaultSpec, where: string): void {
  const k = f.what.kind;
  const m = faultKind(k)!;
  m.checkTarget?.(f, where);
  for (const [param, value] of Object.entries(f.what)) {
    const own = owners.get(param);
    if (value !== undefined && own && !own.includes(k)) throw new ConfigError(`${where}: what.${param} belongs to ${own.join(' or ')}`);
  }
  if (m.testOnly && process.env.RINGVISOR_TEST_FAULTS !== '1')
    throw new ConfigError(`${where}: ${k} breaks the backend on purpose to test the checkers; it is refused unless RINGVISOR_TEST_FAULTS=1`);
  if (f.who.runtime && m.runtimes?.includes(f.who.runtime)) {
    /* the hardware, or dom0's I/O stack: who.host picks the host */
  } else if (f.who.runtime === 'dom0') throw new ConfigError(`${where}: runtime: dom0 takes the process kinds only (${k} acts on ${m.actsOn ?? 'something else'})`);
  else if (m.needsDomain && !f.who.domain)
    throw new ConfigError(m.needsDomain === true ? `${where}: ${k} needs who.domain (${m.description})` : `${where}: ${k} needs who.domain ${m.needsDomain}`);
  m.checkParams?.(f, where);
  if (f.what.sectors && f.what.sectors[0] >= f.what.sectors[1]) throw new ConfigError(`${where}: what.sectors [start, end) must have start < end`);
  if (f.when.at !== undefined && f.when.after !== undefined) throw new ConfigError(`${where}: when.at and when.after exclude each other`);
  if ((f.when.times ?? 1) > 1 && f.when.every === undefined) throw new ConfigError(`${where}: when.times > 1 needs when.every`);
}

/** One fault as `ringvisor fault inject` takes it (JSON or YAML text). */
export function parseFault(raw: unknown, where = 'fault', index = 0): FaultSpec {
  if (!validateFault(raw)) throw new ConfigError(`${where} is invalid:\n  ${describeSchemaErrors(validateFault.errors ?? [])}`);
  const r = raw as { id?: string; who: FaultSelector; what: FaultWhat; when?: FaultWhen };
  const f: FaultSpec = { id: r.id ?? `${r.what.kind}#${index + 1}`, who: r.who, what: r.what, when: r.when ?? {} };
  checkFault(f, where);
  return f;
}

export function normalizePlan(raw: unknown, origin: string, baseDir = process.cwd()): FaultPlan {
  if (!validatePlan(raw)) throw new ConfigError(`${origin} is invalid:\n  ${describeSchemaErrors(validatePlan.errors ?? [])}`);
  const r = raw as { name?: string; description?: string; seed?: number; duration?: number; settle?: number; cluster?: string; transport?: 'threads' | 'ws'; faults: unknown[] };
  const faults = r.faults.map((f, i) => parseFault(f, `${origin}: /faults/${i}`, i));
  const ids = new Set<string>();
  for (const f of faults) {
    if (ids.has(f.id)) throw new ConfigError(`${origin}: fault id "${f.id}" appears twice`);
    ids.add(f.id);
  }
  return {
    name: r.name ?? origin,
    ...(r.description ? { description: r.description } : {}),
    seed: r.seed ?? 1,
    duration: r.duration ?? 10,
    settle: r.settle ?? 3,
    ...(r.cluster ? { cluster: resolve(baseDir, r.cluster) } : {}),
    ...(r.transport ? { transport: r.transport } : {}),
    faults,
  };
}

export function loadPlanFile(path: string): FaultPlan {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read fault plan ${path}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  return normalizePlan(raw, path, dirname(resolve(path)));
}

/** One occurrence of a fault: when it starts and (lasting faults) heals, ms from the run's start. */
export interface Occurrence {
  fault: FaultSpec;
  n: number;
  atMs: number;
  healMs?: number;
}

/**
 * The deterministic part of the schedule: every time-triggered occurrence that fires, with its
 * probability drawn from (seed, fault index, occurrence) — so adding a fault to a plan does not
 * change the draws of the others. `after`-triggered faults are scheduled when their trigger
 * fires (offsets returned here relative to that moment, in `relative`).
 */
export function schedule(plan: FaultPlan, seed = plan.seed): { timed: Occurrence[]; relative: Occurrence[] } {
  const timed: Occurrence[] = [];
  const relative: Occurrence[] = [];
  plan.faults.forEach((f, i) => {
    const times = f.when.times ?? 1;
    const p = f.when.probability ?? 1;
    for (let n = 0; n < times; n++) {
      const draw = new SplitMix32(mixSeed(seed, i, n)).next();
      if (draw >= p) continue;
      const atMs = Math.round(((f.when.after ? 0 : (f.when.at ?? 0)) + n * (f.when.every ?? 0)) * 1000);
      const occ: Occurrence = { fault: f, n, atMs, ...(f.when.for !== undefined ? { healMs: atMs + Math.round(f.when.for * 1000) } : {}) };
      (f.when.after ? relative : timed).push(occ);
    }
  });
  timed.sort((a, b) => a.atMs - b.atMs);
  return { timed, relative };
}
