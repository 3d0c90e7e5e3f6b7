/**
 * device.hostile: a guest's driver turns on its own emulated device (domU's pcnet and ATA
 * misbehave programs, over `guest.attack`); the model answers with device errors.
 */
import { ConfigError, mixSeed } from '@ringvisor/shared';
import { guestControl } from '../../toolstack/clients.js';
import { FaultTargetError } from '../errors.js';
import type { FaultKind } from './kind.js';
import { need } from './common.js';

export interface DeviceHostileParams {
  /** Which program the guest's driver runs against its device. */
  attack?: 'port-garbage' | 'wild-dma' | 'irq-storm' | 'bad-commands';
  /** Attacks per occurrence. */
  count?: number;
}

const description =
  "a guest's driver turns on its own emulated device: attack port-garbage | wild-dma | irq-storm (Lance) or bad-commands | port-garbage (ATA); count; the model answers with device errors, the driver re-opens it; who: domain + device (lance<devid> | ata<devid>)";

export const deviceHostile: FaultKind<'device.hostile', DeviceHostileParams> = {
  name: 'device.hostile',
  description,
  params: {
    attack: { enum: ['port-garbage', 'wild-dma', 'irq-storm', 'bad-commands'] },
    count: { type: 'integer', minimum: 1, maximum: 1000 },
  },
  owns: ['attack'],
  checkTarget(f, where) {
    need(f, 'domain', where, description);
    need(f, 'device', where, description);
    const attack = f.what.attack;
    const lance = /^lance\d+$/.test(f.who.device!);
    const ata = /^ata\d+$/.test(f.who.device!);
    if (!lance && !ata) throw new ConfigError(`${where}: device.hostile targets an emulated device (lance<devid> or ata<devid>), not ${f.who.device}`);
    const allowed: string[] = lance ? ['port-garbage', 'wild-dma', 'irq-storm'] : ['bad-commands', 'port-garbage'];
    if (!attack || !allowed.includes(attack)) throw new ConfigError(`${where}: device.hostile on ${f.who.device} needs what.attack, one of ${allowed.join(', ')}`);
  },
  instantaneous: () => true,
  async inject(ctx, spec) {
    const host = ctx.guestHost(spec);
    const g = host.guests.find((x) => x.config.name === spec.who.domain)!;
    const domid = g.domain.domid;
    if (!g.peer || g.down) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} is not running`);
    if (!host.platformOf(domid)) throw new FaultTargetError(`${spec.id}: ${spec.who.domain} has no emulated devices`);
    const r = await guestControl(g.peer).attack({ device: spec.who.device!, attack: spec.what.attack!, count: spec.what.count ?? 4, seed: mixSeed(ctx.seed, ctx.seq) }, { timeoutMs: 30_000 });
    ctx.record.detail = { ...r };
    ctx.attackers.add(`${host.config.name}/${spec.who.domain}`);
    return { host, domid };
  },
  generate: {
    order: 170,
    eligible: (g) => g.emulated.length > 0,
    make(s) {
      // Only the attacks that cannot scribble over the attacker's own memory: a Lance made to DMA
      // at random into its own guest would fail that guest's own ledger, which proves nothing.
      const device = s.pick(s.g.emulated);
      const attack = device.startsWith('lance') ? s.pick(['wild-dma', 'irq-storm'] as const) : s.pick(['bad-commands', 'port-garbage'] as const);
      return { who: { domain: s.g.name, device }, what: { kind: 'device.hostile', attack, count: 2 + s.nextInt(6) }, when: { at: s.at } };
    },
  },
};
