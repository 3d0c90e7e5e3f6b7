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
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { ConfigError, TRACE_KINDS, mixSeed, SplitMix32, type TraceKind } from '@ringvisor/shared';
import { describeSchemaErrors } from '../toolstack/config.js';

/** Every fault kind, with what it needs. */
export const FAULT_KINDS = {
  'backend.pause': 'a backend stops consuming its rings (a wedged driver domain); who: domain + device',
  'evtchn.lost': 'notifications on a device channel are lost; direction to-guest | to-backend | both; who: domain [+ device]',
  'evtchn.delayed': 'notifications are delivered delayMs late; who: domain [+ device]',
  'evtchn.spurious': 'extra notifications nobody sent, ratePerSec to the guest and the backend (or, for direct and SV-IO devices, the hardware); who: domain [+ device]',
  'evtchn.storm': 'a guest floods its backends (and its direct functions and SV-IO VIFs) with ratePerSec events; who: domain [+ device]',
  'disk.eio': 'the physical disk fails requests (op, sectors, probability, times); who: host',
  'disk.bitflip': 'the physical disk silently flips a bit (op, sectors, probability, times); who: host',
  'disk.torn':
    "the power goes: a writeback disk's volatile cache reaches the image only in part (each cached sector with writeProbability), the rest is lost, and the hardware comes back; acknowledged writes a flush covered must all be there, unflushed ones may be gone or torn (the ledger reports them as unflushed); who: host",
  'nic.down': 'the physical NIC loses carrier; who: host',
  'process.kill':
    "kill -9 a guest runtime, and dom0 reclaims its domain; or, with runtime: hwsim, kill the hardware, or with runtime: dom0, dom0's I/O stack (every PV backend), down until healed (then back as a restart); who: domain, or host + runtime: hwsim | dom0",
  'process.restart':
    "reboot a guest (kill its runtime, reclaim its domain, build and boot it again: same disk region, same addresses); or, with runtime: hwsim, crash and restart the hardware (ws: kill -9 its process; devices re-attached, their queues redone, direct functions and SV-IO VIFs back); or, with runtime: dom0, restart dom0's I/O stack (every PV backend crashes at once and is offered again, the bridge forgets its MACs; the hypervisor and store go on); who: domain, or host + runtime: hwsim | dom0",
  'process.pause': 'freeze a runtime (SIGSTOP, or its thread blocked), resume on heal; with runtime: dom0, every PV backend of the host stops consuming; who: domain, or host + runtime: hwsim | dom0',
  'link.latency': 'ws: a runtime link gets latencyMs (+ jitterMs) each way, order kept; who: domain, or runtime: hwsim',
  'link.bandwidth': 'ws: a runtime link is paced to bytesPerSec; who: domain, or runtime: hwsim',
  'link.partition': 'ws: a runtime link stops carrying messages (partition: send | receive | both, from dom0) until healed, or resets after resetAfterMs; who: domain, or runtime: hwsim',
  'link.reset': 'ws: a runtime link is reset (the runtime loses dom0; a guest is reclaimed); who: domain',
  'lan.drop': 'frames leaving a host for the LAN switch are dropped with a probability; who: host (several hosts)',
  'lan.duplicate': 'frames to the LAN are duplicated with a probability; who: host',
  'lan.reorder': 'frames to the LAN overtake each other with a probability; who: host',
  'lan.corrupt': 'a byte of frames to the LAN is flipped with a probability (checksums must catch it); who: host',
  'ring.garbage': 'a guest frontend publishes requests no backend can honour (bad op, > 11 segments, inverted segment, past the vbd); count; who: domain + device (vbd)',
  'ring.foreign-gref': 'a guest frontend names grant refs it never issued; count; who: domain + device (vbd)',
  'ring.stale-gref': 'a guest frontend names grant refs it already revoked; count; who: domain + device (vbd)',
  'ring.double-fetch': 'a guest frontend rewrites requests after publishing them (TOCTOU); count; who: domain + device (vbd)',
  'ring.corrupt-index': 'a guest frontend publishes an impossible req_prod; the backend stops that ring; healing restarts the backend; who: domain + device (vbd)',
  'grant.revoke-mapped': 'a guest tries to revoke grants dom0 has mapped for in-flight I/O (must be refused); count; who: domain + device (vbd)',
  'backend.restart': 'a backend crashes and is restarted; the frontend reconnects (blkfront resubmits what was in flight; netfront drops frames in flight); who: domain + device',
  'device.hostile':
    "a guest's driver turns on its own emulated device: attack port-garbage | wild-dma | irq-storm (Lance) or bad-commands | port-garbage (ATA); count; the model answers with device errors, the driver re-opens it; who: domain + device (lance<devid> | ata<devid>)",
  'direct.reclaim':
    "the toolstack takes a direct device's function away while the guest drives it (a migration drill: bus master off, FLR, IOMMU context torn down); healing assigns a clean function again and the guest's driver starts over; who: domain + device (a direct vif<devid> | vbd<devid>)",
  'iommu.stray-dma':
    "a guest programs its own direct device to DMA outside its memory or at another domain's (count); every attempt must be blocked by the IOMMU or refused by the device; who: domain + device (a direct vif<devid> | vbd<devid>)",
  'svio.reset':
    "the toolstack destroys the SV-IO VIF behind a guest's device under load (the device forgets its queues); healing creates it again and the guest's driver starts over on it (block requests resubmitted, frames in flight lost); who: domain + device (an SV-IO vif<devid> | vbd<devid> | cam<devid>)",
  'svio.hostile':
    "a guest's own VIF driver turns on its SV-IO VIF: attack garbage | flood | rogue-index (count); the engine answers garbage with errors, holds a flooder by back-pressure, stops a rogue queue (healing resets the VIF); who: domain + device (an SV-IO vif<devid> | vbd<devid>)",
  'backend.lie': 'checker self-test only (RINGVISOR_TEST_FAULTS=1): blkback acknowledges writes it never performs; who: domain + device',
  'grant.unmap-early':
    'checker self-test only (RINGVISOR_TEST_FAULTS=1): blkback unmaps a request\'s grants and answers it before the device has done its DMA, so the guest reuses its buffers under the device; who: domain + device (vbd)',
} as const;

export type FaultKind = keyof typeof FAULT_KINDS;

export interface FaultSelector {
  host?: string;
  domain?: string;
  device?: string;
  /** A runtime that is not a domain (link faults on the hardware simulator's link). */
  runtime?: 'hwsim' | 'dom0';
}

export interface FaultWhat {
  kind: FaultKind;
  direction?: 'to-guest' | 'to-backend' | 'both';
  delayMs?: number;
  ratePerSec?: number;
  op?: 'read' | 'write' | 'flush' | 'any';
  sectors?: [number, number];
  probability?: number;
  times?: number;
  latencyMs?: number;
  jitterMs?: number;
  /** Attacks per occurrence (ring.*, grant.revoke-mapped, device.hostile, svio.hostile). */
  count?: number;
  /** device.hostile, svio.hostile: which program the guest's driver runs against its device. */
  attack?: 'port-garbage' | 'wild-dma' | 'irq-storm' | 'bad-commands' | 'garbage' | 'flood' | 'rogue-index';
  bytesPerSec?: number;
  /** disk.torn: the chance each cached, unflushed sector reaches the image before the power goes. */
  writeProbability?: number;
  partition?: 'send' | 'receive' | 'both';
  resetAfterMs?: number;
}

export interface FaultWhen {
  at?: number;
  after?: { kind: TraceKind; count: number };
  every?: number;
  times?: number;
  probability?: number;
  for?: number;
}

export interface FaultSpec {
  id: string;
  who: FaultSelector;
  what: FaultWhat;
  when: FaultWhen;
}

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
    device: { type: 'string', pattern: '^(vbd|vif|lance|ata)\\d+$' },
    runtime: { enum: ['hwsim', 'dom0'] },
  },
} as const;

const what = {
  type: 'object',
  additionalProperties: false,
  required: ['kind'],
  properties: {
    kind: { enum: Object.keys(FAULT_KINDS) },
    direction: { enum: ['to-guest', 'to-backend', 'both'] },
    delayMs: { type: 'number', minimum: 0, maximum: 60_000 },
    ratePerSec: { type: 'number', exclusiveMinimum: 0, maximum: 1_000_000 },
    op: { enum: ['read', 'write', 'flush', 'any'] },
    sectors: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 2, maxItems: 2 },
    probability: { type: 'number', minimum: 0, maximum: 1 },
    times: { type: 'integer', minimum: 1 },
    latencyMs: { type: 'number', minimum: 0, maximum: 60_000 },
    count: { type: 'integer', minimum: 1, maximum: 1000 },
    jitterMs: { type: 'number', minimum: 0, maximum: 60_000 },
    bytesPerSec: { type: 'number', exclusiveMinimum: 0 },
    writeProbability: { type: 'number', minimum: 0, maximum: 1 },
    partition: { enum: ['send', 'receive', 'both'] },
    resetAfterMs: { type: 'number', exclusiveMinimum: 0 },
    attack: { enum: ['port-garbage', 'wild-dma', 'irq-storm', 'bad-commands', 'garbage', 'flood', 'rogue-index'] },
  },
} as const;

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
    faults: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['who', 'what'],
        properties: { id: { type: 'string', pattern: '^[\\w.-]{1,64}$' }, who: selector, what, when },
      },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validatePlan = ajv.compile(schema);
const validateFault = ajv.compile(schema.properties.faults.items);

/** What each kind needs of its selector: checked after the schema, with a message saying how to fix it. */
function checkSelector(f: FaultSpec, where: string): void {
  const k = f.what.kind;
  const need = (key: keyof FaultSelector) => {
    if (!f.who[key]) throw new ConfigError(`${where}: ${k} needs who.${key} (${FAULT_KINDS[k]})`);
  };
  if (k === 'backend.pause' || k === 'backend.lie' || k === 'backend.restart') (need('domain'), need('device'));
  if (k === 'direct.reclaim' || k === 'iommu.stray-dma') {
    need('domain');
    need('device');
    if (!/^(vif|vbd)\d+$/.test(f.who.device!)) throw new ConfigError(`${where}: ${k} acts on a direct device (vif<devid> | vbd<devid> with mode: direct), not ${f.who.device}`);
  }
  if (k.startsWith('ring.') || k.startsWith('grant.')) {
    need('domain');
    need('device');
    if (!f.who.device!.startsWith('vbd')) throw new ConfigError(`${where}: ${k} is implemented for vbd rings (blkfront)`);
  }
  if (k === 'device.hostile') {
    need('domain');
    need('device');
    const attack = f.what.attack;
    const lance = /^lance\d+$/.test(f.who.device!);
    const ata = /^ata\d+$/.test(f.who.device!);
    if (!lance && !ata) throw new ConfigError(`${where}: device.hostile targets an emulated device (lance<devid> or ata<devid>), not ${f.who.device}`);
    const allowed = lance ? ['port-garbage', 'wild-dma', 'irq-storm'] : ['bad-commands', 'port-garbage'];
    if (!attack || !allowed.includes(attack)) throw new ConfigError(`${where}: device.hostile on ${f.who.device} needs what.attack, one of ${allowed.join(', ')}`);
  } else if (k === 'svio.hostile') {
    need('domain');
    need('device');
    if (!/^(vif|vbd)\d+$/.test(f.who.device!)) throw new ConfigError(`${where}: svio.hostile targets an SV-IO network or block device (vif<devid> | vbd<devid> with mode: svio), not ${f.who.device}`);
    const allowed = ['garbage', 'flood', 'rogue-index'];
    if (!f.what.attack || !allowed.includes(f.what.attack)) throw new ConfigError(`${where}: svio.hostile needs what.attack, one of ${allowed.join(', ')}`);
  } else if (f.what.attack !== undefined) throw new ConfigError(`${where}: what.attack belongs to device.hostile or svio.hostile`);
  if (k === 'disk.torn') need('host');
  if (k !== 'disk.torn' && f.what.writeProbability !== undefined) throw new ConfigError(`${where}: what.writeProbability belongs to disk.torn`);
  if (k === 'svio.reset') {
    need('domain');
    need('device');
    if (!/^(vif|vbd|cam)\d+$/.test(f.who.device!)) throw new ConfigError(`${where}: svio.reset acts on an SV-IO device (vif<devid> | vbd<devid> | cam<devid> with mode: svio), not ${f.who.device}`);
  }
  if ((k.startsWith('backend.') || k.startsWith('ring.') || k === 'grant.revoke-mapped') && f.who.device && !/^(vbd|vif)\d+$/.test(f.who.device))
    throw new ConfigError(`${where}: ${k} acts on a PV device's backend or ring (vbd<devid> | vif<devid>); ${f.who.device} is emulated (try device.hostile)`);
  if ((k === 'backend.lie' || k === 'grant.unmap-early') && process.env.RINGVISOR_TEST_FAULTS !== '1')
    throw new ConfigError(`${where}: ${k} breaks the backend on purpose to test the checkers; it is refused unless RINGVISOR_TEST_FAULTS=1`);
  else if (k.startsWith('process.') && (f.who.runtime === 'hwsim' || f.who.runtime === 'dom0')) {
    /* the hardware, or dom0's I/O stack: who.host picks the host */
  } else if (f.who.runtime === 'dom0') throw new ConfigError(`${where}: runtime: dom0 takes the process kinds only (${k} acts on ${k.startsWith('link.') ? 'a guest\'s or the hardware\'s link to dom0' : 'something else'})`); else if (k.startsWith('evtchn.') || k.startsWith('process.') || k === 'link.reset') need('domain');
  else if (k.startsWith('link.') && !f.who.domain && f.who.runtime !== 'hwsim') throw new ConfigError(`${where}: ${k} needs who.domain (a guest's link) or who.runtime: hwsim`);
  if (k === 'link.latency' && f.what.latencyMs === undefined) throw new ConfigError(`${where}: link.latency needs what.latencyMs`);
  if (k === 'link.bandwidth' && f.what.bytesPerSec === undefined) throw new ConfigError(`${where}: link.bandwidth needs what.bytesPerSec`);
  if (k.startsWith('lan.') && f.what.probability === undefined) throw new ConfigError(`${where}: ${k} needs what.probability`);
  if (f.what.sectors && f.what.sectors[0] >= f.what.sectors[1]) throw new ConfigError(`${where}: what.sectors [start, end) must have start < end`);
  if ((k === 'evtchn.delayed') !== (f.what.delayMs !== undefined)) throw new ConfigError(`${where}: delayMs belongs to (and is required by) evtchn.delayed`);
  if ((k === 'evtchn.spurious' || k === 'evtchn.storm') && f.what.ratePerSec === undefined) throw new ConfigError(`${where}: ${k} needs what.ratePerSec`);
  if (f.when.at !== undefined && f.when.after !== undefined) throw new ConfigError(`${where}: when.at and when.after exclude each other`);
  if ((f.when.times ?? 1) > 1 && f.when.every === undefined) throw new ConfigError(`${where}: when.times > 1 needs when.every`);
}

/** One fault as `ringvisor fault inject` takes it (JSON or YAML text). */
export function parseFault(raw: unknown, where = 'fault', index = 0): FaultSpec {
  if (!validateFault(raw)) throw new ConfigError(`${where} is invalid:\n  ${describeSchemaErrors(validateFault.errors ?? [])}`);
  const r = raw as { id?: string; who: FaultSelector; what: FaultWhat; when?: FaultWhen };
  const f: FaultSpec = { id: r.id ?? `${r.what.kind}#${index + 1}`, who: r.who, what: r.what, when: r.when ?? {} };
  checkSelector(f, where);
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
