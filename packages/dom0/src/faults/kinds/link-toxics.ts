/**
 * link.latency, link.bandwidth and link.partition (ws): toxics on a runtime's link to dom0 — a
 * guest's, or the hardware simulator's (`runtime: hwsim`) — through the `ToxicLink` under it.
 */
import { ConfigError, mixSeed, type LinkToxics } from '@ringvisor/shared';
import type { Host } from '../../toolstack/host.js';
import type { FaultKind, InjectContext, Injection, KindSpec } from './kind.js';
import { domidOf } from './common.js';

export interface LinkLatencyParams {
  latencyMs?: number;
  jitterMs?: number;
}
export interface LinkBandwidthParams {
  bytesPerSec?: number;
}
export interface LinkPartitionParams {
  /** Which way stops, seen from dom0. */
  partition?: 'send' | 'receive' | 'both';
  resetAfterMs?: number;
}

/** The link to clear on heal. */
export interface ToxicLink {
  h: Host;
  runtime: string;
}

async function setToxics<P extends object>(ctx: InjectContext, spec: KindSpec<string, P>, toxics: LinkToxics): Promise<Injection<ToxicLink>> {
  const runtime = spec.who.runtime ?? spec.who.domain!;
  const host = spec.who.runtime ? ctx.hostsFor(spec)[0] : ctx.guestHost(spec);
  const domid = spec.who.domain ? domidOf(host, spec) : 0;
  const h = host;
  h.setLinkToxics(runtime, toxics);
  return { host, domid, state: { h, runtime } };
}

function clearToxics(_ctx: InjectContext, { h, runtime }: ToxicLink): void {
  try {
    h.setLinkToxics(runtime, {});
  } catch {
    /* the link is gone (reset) */
  }
}

/** Shared by the link kinds: who may be a guest's link or the hardware's. */
const linkTarget = {
  runtimes: ['hwsim'],
  actsOn: "a guest's or the hardware's link to dom0",
  needsDomain: "(a guest's link) or who.runtime: hwsim",
} as const;

const ms = { type: 'number', minimum: 0, maximum: 60_000 } as const;

export const linkLatency: FaultKind<'link.latency', LinkLatencyParams, ToxicLink> = {
  name: 'link.latency',
  description: 'ws: a runtime link gets latencyMs (+ jitterMs) each way, order kept; who: domain, or runtime: hwsim',
  params: { latencyMs: ms, jitterMs: ms },
  ...linkTarget,
  checkParams(f, where) {
    if (f.what.latencyMs === undefined) throw new ConfigError(`${where}: link.latency needs what.latencyMs`);
  },
  inject: (ctx, spec) => {
    const w = spec.what;
    return setToxics(ctx, spec, { latencyMs: w.latencyMs ?? 0, ...(w.jitterMs !== undefined ? { jitterMs: w.jitterMs } : {}), seed: mixSeed(ctx.seed, ctx.seq) });
  },
  heal: clearToxics,
  generate: {
    order: 220,
    dealt: (c) => c.transport === 'ws',
    make: (s) => ({
      who: s.next() < 0.3 ? { host: s.g.host, runtime: 'hwsim' as const } : { domain: s.g.name },
      what: { kind: 'link.latency', latencyMs: 2 + s.nextInt(30), jitterMs: s.nextInt(10) },
      when: s.when,
    }),
  },
};

export const linkBandwidth: FaultKind<'link.bandwidth', LinkBandwidthParams, ToxicLink> = {
  name: 'link.bandwidth',
  description: 'ws: a runtime link is paced to bytesPerSec; who: domain, or runtime: hwsim',
  params: { bytesPerSec: { type: 'number', exclusiveMinimum: 0 } },
  ...linkTarget,
  checkParams(f, where) {
    if (f.what.bytesPerSec === undefined) throw new ConfigError(`${where}: link.bandwidth needs what.bytesPerSec`);
  },
  inject: (ctx, spec) => setToxics(ctx, spec, { bandwidthBytesPerSec: spec.what.bytesPerSec! }),
  heal: clearToxics,
  generate: {
    order: 230,
    dealt: (c) => c.transport === 'ws',
    make: (s) => ({
      who: s.next() < 0.3 ? { host: s.g.host, runtime: 'hwsim' as const } : { domain: s.g.name },
      what: { kind: 'link.bandwidth', bytesPerSec: 500_000 + s.nextInt(4_000_000) },
      when: s.when,
    }),
  },
};

export const linkPartition: FaultKind<'link.partition', LinkPartitionParams, ToxicLink> = {
  name: 'link.partition',
  description: 'ws: a runtime link stops carrying messages (partition: send | receive | both, from dom0) until healed, or resets after resetAfterMs; who: domain, or runtime: hwsim',
  params: { partition: { enum: ['send', 'receive', 'both'] }, resetAfterMs: { type: 'number', exclusiveMinimum: 0 } },
  ...linkTarget,
  inject: (ctx, spec) => {
    const w = spec.what;
    return setToxics(ctx, spec, { partition: w.partition ?? 'both', ...(w.resetAfterMs !== undefined ? { resetAfterMs: w.resetAfterMs } : {}) });
  },
  heal: clearToxics,
  generate: {
    order: 240,
    dealt: (c) => c.transport === 'ws',
    make: (s) => ({ who: { domain: s.g.name }, what: { kind: 'link.partition', partition: s.pick(['send', 'receive', 'both'] as const) }, when: s.when }),
  },
};
