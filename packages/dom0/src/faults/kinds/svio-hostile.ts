/**
 * svio.hostile: a guest's own VIF driver turns on its SV-IO VIF (garbage, flood, rogue-index);
 * the verdict — every hostile message refused, a rogue queue stopped — is taken on one VIF
 * (aim.ts: a VIF replaced meanwhile is aimed at again).
 */
import { ConfigError, mixSeed } from '@ringvisor/shared';
import { guestControl } from '../../toolstack/clients.js';
import { vifDeviceName, type Host, type SvioVifRow } from '../../toolstack/host.js';
import { FaultTargetError } from '../errors.js';
import { aimAtOneInstance } from '../aim.js';
import type { FaultKind } from './kind.js';
import { need, waitFor } from './common.js';

export interface SvioHostileParams {
  /** Which program the guest's VIF driver runs against its VIF. */
  attack?: 'garbage' | 'flood' | 'rogue-index';
  /** Hostile messages per occurrence. */
  count?: number;
}

/** A VIF the engine stopped (rogue-index): healing resets it. */
export interface StoppedVif {
  h: Host;
  spec: { who: { domain?: string } };
  device: string;
}

const description =
  "a guest's own VIF driver turns on its SV-IO VIF: attack garbage | flood | rogue-index (count); the engine answers garbage with errors, holds a flooder by back-pressure, stops a rogue queue (healing resets the VIF); who: domain + device (an SV-IO vif<devid> | vbd<devid>)";

export const svioHostile: FaultKind<'svio.hostile', SvioHostileParams, StoppedVif> = {
  name: 'svio.hostile',
  description,
  params: {
    attack: { enum: ['garbage', 'flood', 'rogue-index'] },
    count: { type: 'integer', minimum: 1, maximum: 1000 },
  },
  owns: ['attack'],
  checkTarget(f, where) {
    need(f, 'domain', where, description);
    need(f, 'device', where, description);
    if (!/^(vif|vbd)\d+$/.test(f.who.device!)) throw new ConfigError(`${where}: svio.hostile targets an SV-IO network or block device (vif<devid> | vbd<devid> with mode: svio), not ${f.who.device}`);
    const allowed: string[] = ['garbage', 'flood', 'rogue-index'];
    if (!f.what.attack || !allowed.includes(f.what.attack)) throw new ConfigError(`${where}: svio.hostile needs what.attack, one of ${allowed.join(', ')}`);
  },
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
    const domid = g.domain.domid;
    if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
    const h = host;
    const device = spec.who.device!;
    // The engine's view of the VIF (undefined while the hardware is away, e.g. restarting).
    const vifRow = async () =>
      (await h.svioVifs().catch(() => [])).find((v) => v.domain === spec.who.domain && v.device === device) as (SvioVifRow & { stats?: { counters: { refused: number }; stopped: string | null } }) | undefined;
    if (!h.vifsOf(domid).some((v) => vifDeviceName(v) === device)) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no SV-IO device ${device}`);
    // A VIF still down (an earlier reset's heal running late on a busy machine) is waited
    // for (aim's ready, bounded), not taken for a plan's mistake.
    const attacker = g;
    const rogue = spec.what.attack === 'rogue-index';
    // One attempt: the attack and what the engine made of it, judged only if the VIF was
    // the same one throughout (aim.ts: a VIF replaced meanwhile is aimed at again).
    const aimed = await aimAtOneInstance({
      generation: () => h.vifGeneration(spec.who.domain!, device),
      ready: async () => (await waitFor(async () => ((await vifRow()) && !attacker.down ? true : undefined), 30_000)) ?? false,
      attempt: async () => {
        const before = await vifRow();
        const r0 = await guestControl(attacker.peer!).attack({ device, attack: spec.what.attack!, count: spec.what.count ?? 16, seed: mixSeed(ctx.seed, ctx.seq) }, { timeoutMs: 30_000 });
        const r = { ...r0, sent: r0.sent ?? 0 };
        if (rogue) return { r, refused: 0 };
        // Every hostile message answered with an error (the driver takes the answers).
        const refusedOf = async () => ((await vifRow())?.stats?.counters.refused ?? 0) - (before?.stats?.counters.refused ?? 0);
        const refused = (await waitFor(async () => ((await refusedOf()) >= r.sent ? r.sent : undefined), 5_000)) ?? (await refusedOf());
        return { r, refused };
      },
    });
    ctx.attackers.add(`${host.config.name}/${spec.who.domain}`);
    if (!aimed.judged) {
      // The VIF kept being replaced under the attack (or never came up): nothing was
      // judged, nothing breached.
      ctx.record.detail = { judged: false, reaimed: aimed.reaimed };
      ctx.log.warn({ fault: spec.id, reaimed: aimed.reaimed }, 'svio.hostile: the VIF was replaced under every attempt; no verdict');
      return { host, domid };
    }
    const { r, refused } = aimed.result;
    const reaimed = aimed.reaimed > 0 ? { reaimed: aimed.reaimed } : {};
    if (rogue) {
      // The engine stopped the VIF (a rogue queue) and told the driver in STATUS; what a
      // toolstack does next is reset it.
      ctx.record.detail = { ...r, ...reaimed };
      if (!r.stopped) ctx.hostileVif.accepted++;
      return { host, domid, state: { h, spec, device } };
    }
    ctx.hostileVif.sent += r.sent;
    ctx.hostileVif.refused += Math.min(refused, r.sent);
    ctx.hostileVif.accepted += Math.max(0, r.sent - refused);
    ctx.record.detail = { ...r, refused, ...reaimed };
    return { host, domid };
  },
  async heal(ctx, { h, spec, device }) {
    const reset = await h.resetVif(spec.who.domain!, device).catch((e: Error) => ctx.log.warn({ err: e }, 'VIF reset failed'));
    if (reset) await reset.heal();
  },
  generate: {
    order: 210,
    eligible: (g) => g.svio.some((d) => d.startsWith('vif') || d.startsWith('vbd')),
    make(s) {
      const attack = s.pick(['garbage', 'flood', 'rogue-index'] as const);
      // A rogue queue is stopped until healed (the VIF reset): it holds like the other faults.
      return {
        who: { domain: s.g.name, device: s.pick(s.g.svio.filter((d) => !d.startsWith('cam'))) },
        what: { kind: 'svio.hostile', attack, count: 8 + s.nextInt(40) },
        when: attack === 'rogue-index' ? s.when : { at: s.at },
      };
    },
  },
};
