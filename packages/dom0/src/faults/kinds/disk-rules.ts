/**
 * disk.eio and disk.bitflip: rules in the hardware's disk rule table (`hw.disk.faults`): the
 * physical disk fails requests, or flips a bit silently, on the ops and sectors the rule names.
 * Several rules may overlap on one host: the table holds them all.
 */
import { mixSeed, type DiskFaultRule } from '@ringvisor/shared';
import type { Host } from '../../toolstack/host.js';
import type { FaultKind, InjectContext, Injection, KindSpec, StateSlot } from './kind.js';

export interface DiskRuleParams {
  op?: 'read' | 'write' | 'flush' | 'any';
  /** [start, end) in sectors. */
  sectors?: [number, number];
  probability?: number;
  /** Requests it fails at most. */
  times?: number;
}

/** Each host's rules in effect, by occurrence key. */
const diskRules: StateSlot<Map<Host, Map<string, DiskFaultRule>>> = { init: () => new Map() };

async function addRule(ctx: InjectContext, spec: KindSpec<string, DiskRuleParams>, error: DiskFaultRule['error']): Promise<Injection<Host[]>> {
  const key = ctx.key;
  const hs = ctx.hostsFor(spec);
  const rule: DiskFaultRule = {
    id: key,
    op: spec.what.op ?? 'any',
    error,
    ...(spec.what.sectors ? { sectors: spec.what.sectors } : {}),
    ...(spec.what.probability !== undefined ? { probability: spec.what.probability } : {}),
    ...(spec.what.times !== undefined ? { times: spec.what.times } : {}),
    seed: mixSeed(ctx.seed, ctx.seq),
  };
  const byHost = ctx.state(diskRules);
  for (const h of hs) {
    const rules = byHost.get(h) ?? new Map<string, DiskFaultRule>();
    byHost.set(h, rules);
    rules.set(key, rule);
    await h.setDiskFaults([...rules.values()]);
  }
  return { host: hs[0], domid: 0, state: hs };
}

async function removeRule(ctx: InjectContext, hs: Host[]): Promise<void> {
  for (const h of hs) {
    const rules = ctx.state(diskRules).get(h)!;
    rules.delete(ctx.key);
    await h.setDiskFaults([...rules.values()]).catch(() => {});
  }
}

const params = {
  op: { enum: ['read', 'write', 'flush', 'any'] },
  sectors: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 2, maxItems: 2 },
  probability: { type: 'number', minimum: 0, maximum: 1 },
  times: { type: 'integer', minimum: 1 },
} as const;

export const diskEio: FaultKind<'disk.eio', DiskRuleParams, Host[]> = {
  name: 'disk.eio',
  description: 'the physical disk fails requests (op, sectors, probability, times); who: host',
  params,
  inject: (ctx, spec) => addRule(ctx, spec, 'eio'),
  heal: removeRule,
  generate: {
    order: 70,
    make: (s) => ({ who: { host: s.g.host }, what: { kind: 'disk.eio', op: s.pick(['read', 'write', 'flush', 'any'] as const), probability: 0.2 + s.next() * 0.6 }, when: s.when }),
  },
};

/** Not in random campaigns: silent corruption is detected, not survived (it has its own scenario). */
export const diskBitflip: FaultKind<'disk.bitflip', DiskRuleParams, Host[]> = {
  name: 'disk.bitflip',
  description: 'the physical disk silently flips a bit (op, sectors, probability, times); who: host',
  params,
  silentCorruption: true,
  inject: (ctx, spec) => addRule(ctx, spec, 'bitflip'),
  heal: removeRule,
};
