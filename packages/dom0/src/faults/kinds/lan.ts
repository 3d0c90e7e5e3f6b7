/**
 * lan.drop, lan.duplicate, lan.reorder and lan.corrupt: frame faults on a host's uplink to the
 * LAN switch (several hosts). Several may overlap on one host: the uplink gets their union.
 */
import { ConfigError, mixSeed } from '@ringvisor/shared';
import type { Host } from '../../toolstack/host.js';
import type { FaultKind, InjectContext, StateSlot } from './kind.js';

export interface LanParams {
  probability?: number;
}

type LanFaultName = 'drop' | 'duplicate' | 'reorder' | 'corrupt';

/** Each host's LAN faults in effect, by occurrence key. */
const lanFaults: StateSlot<Map<Host, Map<string, [LanFaultName, number]>>> = { init: () => new Map() };

/** Puts the union of a host's LAN faults on its uplink (none: cleared). */
async function apply(ctx: InjectContext, h: Host): Promise<void> {
  const byHost = ctx.state(lanFaults);
  const active = byHost.get(h) ?? new Map<string, [LanFaultName, number]>();
  byHost.set(h, active);
  const f: Partial<Record<LanFaultName, number>> = {};
  for (const [n, p] of active.values()) f[n] = Math.max(f[n] ?? 0, p);
  await h.setLanFaults(active.size ? { ...f, seed: mixSeed(ctx.seed, ctx.seq) } : undefined);
}

function lanFault<N extends string>(name: N, what: LanFaultName, order: number, description: string): FaultKind<N, LanParams, Host[]> {
  return {
    name,
    description,
    params: { probability: { type: 'number', minimum: 0, maximum: 1 } },
    checkParams(f, where) {
      if (f.what.probability === undefined) throw new ConfigError(`${where}: ${name} needs what.probability`);
    },
    async inject(ctx, spec) {
      const hs = ctx.hostsFor(spec);
      const byHost = ctx.state(lanFaults);
      for (const h of hs) {
        const active = byHost.get(h) ?? new Map<string, [LanFaultName, number]>();
        byHost.set(h, active);
        active.set(ctx.key, [what, spec.what.probability ?? 0]);
        await apply(ctx, h);
      }
      return { host: hs[0], domid: 0, state: hs };
    },
    async heal(ctx, hs) {
      for (const h of hs) {
        ctx.state(lanFaults).get(h)?.delete(ctx.key);
        await apply(ctx, h).catch(() => {});
      }
    },
    generate: {
      order,
      dealt: (c) => c.hosts > 1,
      make: (s) => ({ who: { host: s.g.host }, what: { kind: name, probability: 0.1 + s.next() * 0.4 }, when: s.when }),
    },
  };
}

export const lanDrop = lanFault('lan.drop', 'drop', 250, 'frames leaving a host for the LAN switch are dropped with a probability; who: host (several hosts)');
export const lanDuplicate = lanFault('lan.duplicate', 'duplicate', 260, 'frames to the LAN are duplicated with a probability; who: host');
export const lanReorder = lanFault('lan.reorder', 'reorder', 270, 'frames to the LAN overtake each other with a probability; who: host');
export const lanCorrupt = lanFault('lan.corrupt', 'corrupt', 280, 'a byte of frames to the LAN is flipped with a probability (checksums must catch it); who: host');
