/**
 * Random campaigns: a seeded plan of N scenarios, one fault each, back to back — every kind the
 * cluster can take (link faults need the ws transport, LAN faults two hosts) dealt round-robin in
 * a seeded order, with seeded targets and parameters. Scenarios that end a guest (kill, link
 * reset) come last and never take the last guest standing. The same seed and cluster give the
 * same plan.
 *
 * Kinds that act on a PV device's backend, ring or event channel pick among guests with PV
 * devices; device.hostile picks among guests with emulated ones (with the attacks that cannot
 * scribble over the attacker's own memory: a Lance made to DMA at random into its own guest
 * would fail that guest's own ledger, which proves nothing about isolation).
 *
 * direct.reclaim and iommu.stray-dma pick among guests with direct devices (assigned functions);
 * svio.reset and svio.hostile among guests with SV-IO devices (VIFs).
 *
 * Left out on purpose: disk.bitflip (silent corruption is detected, not survived — it has its own
 * scenario), disk.torn (it needs a writeback disk; its own scenario too), backend.lie and
 * grant.unmap-early (they break the backend to test the checkers).
 */
import { SplitMix32, mixSeed } from '@ringvisor/shared';
import type { ClusterConfig } from '../toolstack/config.js';
import type { FaultKind, FaultPlan, FaultSpec } from './plan.js';

/** Seconds each scenario is given: the fault for `hold`, then time to recover before the next. */
const SLOT = 0.7;
const HOLD = 0.35;

export function generatePlan(o: { seed: number; scenarios: number; transport: 'threads' | 'ws'; config: ClusterConfig }): FaultPlan {
  const rng = new SplitMix32(mixSeed(o.seed, 0xca3a));
  const pick = <T>(xs: readonly T[]): T => xs[rng.nextInt(xs.length)];
  const hosts = o.config.hosts;
  const guests = hosts.flatMap((h) =>
    h.guests.map((g) => ({
      host: h.name,
      name: g.name,
      vbd: g.devices.find((d) => d.type === 'vbd' && d.mode === 'pv'),
      vif: g.devices.find((d) => d.type === 'vif' && d.mode === 'pv'),
      emulated: g.devices.filter((d) => d.mode === 'emulated').map((d) => (d.type === 'vbd' ? `ata${d.devid}` : `lance${d.devid}`)),
      direct: g.devices.filter((d) => d.mode === 'direct').map((d) => `${d.type}${d.devid}`),
      svio: g.devices.filter((d) => d.mode === 'svio').map((d) => `${d.type}${d.devid}`),
    })),
  );
  const withSvio = guests.filter((g) => g.svio.length > 0);
  const withSvioIo = guests.filter((g) => g.svio.some((d) => d.startsWith('vif') || d.startsWith('vbd')));
  const withDirect = guests.filter((g) => g.direct.length > 0);
  const withVbd = guests.filter((g) => g.vbd);
  const withPv = guests.filter((g) => g.vbd || g.vif);
  const withEmulated = guests.filter((g) => g.emulated.length > 0);
  // Lost and delayed events also act on emulated devices (their IRQs and ioreq kicks), in dom0 or a VMApp.
  // And on direct and SV-IO devices' interrupts (to the guest: their doorbells are posted writes).
  const withEvents = guests.filter((g) => g.vbd || g.vif || g.emulated.length > 0 || g.direct.length > 0 || g.svio.length > 0);
  const pvOnly = (k: FaultKind) => k.startsWith('backend.');
  // Spurious events and storms: on PV channels, and on direct and SV-IO devices' channels.
  const withChannels = guests.filter((g) => g.vbd || g.vif || g.direct.length > 0 || g.svio.length > 0);
  const kinds: FaultKind[] = [
    'backend.pause',
    'backend.restart',
    'evtchn.lost',
    'evtchn.delayed',
    'evtchn.spurious',
    'evtchn.storm',
    'disk.eio',
    'nic.down',
    'process.pause',
    'process.restart',
    'ring.garbage',
    'ring.foreign-gref',
    'ring.stale-gref',
    'ring.double-fetch',
    'ring.corrupt-index',
    'grant.revoke-mapped',
  ];
  if (withEmulated.length > 0) kinds.push('device.hostile');
  if (withDirect.length > 0) kinds.push('direct.reclaim', 'iommu.stray-dma');
  if (withSvio.length > 0) kinds.push('svio.reset');
  if (withSvioIo.length > 0) kinds.push('svio.hostile');
  if (o.transport === 'ws') kinds.push('link.latency', 'link.bandwidth', 'link.partition');
  if (hosts.length > 1) kinds.push('lan.drop', 'lan.duplicate', 'lan.reorder', 'lan.corrupt');
  /** The guests a kind can act on. */
  const eligible = (k: FaultKind) => {
    if (k.startsWith('ring.') || k.startsWith('grant.')) return withVbd;
    if (pvOnly(k)) return withPv;
    if (k === 'evtchn.spurious' || k === 'evtchn.storm') return withChannels;
    if (k === 'evtchn.lost' || k === 'evtchn.delayed') return withEvents;
    if (k === 'device.hostile') return withEmulated;
    if (k === 'direct.reclaim' || k === 'iommu.stray-dma') return withDirect;
    if (k === 'svio.reset') return withSvio;
    if (k === 'svio.hostile') return withSvioIo;
    return guests;
  };
  // A seeded deal: every kind once per round, rounds shuffled independently.
  const deal: FaultKind[] = [];
  while (deal.length < o.scenarios) {
    const round = [...kinds];
    for (let i = round.length - 1; i > 0; i--) {
      const j = rng.nextInt(i + 1);
      [round[i], round[j]] = [round[j], round[i]];
    }
    deal.push(...round);
  }
  deal.length = Math.max(0, o.scenarios);
  // Endings last: at most one kill (and one link reset in ws), never the last guest.
  const endings: FaultKind[] = [];
  if (guests.length > 1 && o.scenarios > kinds.length) endings.push('process.kill');
  if (o.transport === 'ws' && guests.length > 2 && o.scenarios > kinds.length + 1) endings.push('link.reset');
  deal.splice(deal.length - endings.length, endings.length, ...endings);
  const ended = new Set<string>();
  const faults: FaultSpec[] = deal.map((kind, i) => {
    const alive = guests.filter((g) => !ended.has(g.name));
    const among = eligible(kind);
    const g = pick(among.filter((x) => !ended.has(x.name)));
    const at = Math.round(i * SLOT * 100) / 100 + 0.3;
    const when = { at, for: HOLD };
    const id = `s${String(i + 1).padStart(2, '0')}-${kind}`;
    const vbd = g.vbd ? `vbd${g.vbd.devid}` : undefined;
    const dev = () => (rng.next() < 0.5 && g.vif ? `vif${g.vif.devid}` : (vbd ?? `vif${g.vif!.devid}`));
    switch (kind) {
      case 'backend.pause':
        return { id, who: { domain: g.name, device: dev() }, what: { kind }, when };
      case 'backend.restart':
        return { id, who: { domain: g.name, device: dev() }, what: { kind }, when: { at } };
      case 'evtchn.lost':
        return { id, who: { domain: g.name }, what: { kind, direction: pick(g.vbd || g.vif || g.emulated.length > 0 ? (['to-guest', 'to-backend', 'both'] as const) : (['to-guest', 'both'] as const)), probability: 0.5 + rng.next() / 2 }, when };
      case 'evtchn.delayed':
        return { id, who: { domain: g.name }, what: { kind, delayMs: 5 + rng.nextInt(50) }, when };
      case 'evtchn.spurious':
      case 'evtchn.storm':
        return { id, who: { domain: g.name }, what: { kind, ratePerSec: kind === 'evtchn.storm' ? 20_000 + rng.nextInt(30_000) : 500 + rng.nextInt(2000) }, when };
      case 'disk.eio':
        return { id, who: { host: g.host }, what: { kind, op: pick(['read', 'write', 'flush', 'any'] as const), probability: 0.2 + rng.next() * 0.6 }, when };
      case 'nic.down':
        return { id, who: { host: g.host }, what: { kind }, when };
      case 'process.pause':
      case 'process.restart': {
        // Now and then the hardware or dom0's I/O stack instead of a guest.
        const r = rng.next();
        const who = r < 0.25 ? { host: g.host, runtime: 'hwsim' as const } : r < 0.45 ? { host: g.host, runtime: 'dom0' as const } : { domain: g.name };
        return { id, who, what: { kind }, when: kind === 'process.pause' ? when : { at } };
      }
      case 'ring.corrupt-index':
        return { id, who: { domain: g.name, device: vbd! }, what: { kind }, when };
      case 'ring.garbage':
      case 'ring.foreign-gref':
      case 'ring.stale-gref':
      case 'ring.double-fetch':
      case 'grant.revoke-mapped':
        return { id, who: { domain: g.name, device: vbd! }, what: { kind, count: 4 + rng.nextInt(12) }, when: { at } };
      case 'link.latency':
        return { id, who: rng.next() < 0.3 ? { host: g.host, runtime: 'hwsim' as const } : { domain: g.name }, what: { kind, latencyMs: 2 + rng.nextInt(30), jitterMs: rng.nextInt(10) }, when };
      case 'link.bandwidth':
        return { id, who: rng.next() < 0.3 ? { host: g.host, runtime: 'hwsim' as const } : { domain: g.name }, what: { kind, bytesPerSec: 500_000 + rng.nextInt(4_000_000) }, when };
      case 'link.partition':
        return { id, who: { domain: g.name }, what: { kind, partition: pick(['send', 'receive', 'both'] as const) }, when };
      case 'lan.drop':
      case 'lan.duplicate':
      case 'lan.reorder':
      case 'lan.corrupt':
        return { id, who: { host: g.host }, what: { kind, probability: 0.1 + rng.next() * 0.4 }, when };
      case 'device.hostile': {
        const device = pick(g.emulated);
        const attack = device.startsWith('lance') ? pick(['wild-dma', 'irq-storm'] as const) : pick(['bad-commands', 'port-garbage'] as const);
        return { id, who: { domain: g.name, device }, what: { kind, attack, count: 2 + rng.nextInt(6) }, when: { at } };
      }
      case 'direct.reclaim':
        return { id, who: { domain: g.name, device: pick(g.direct) }, what: { kind }, when };
      case 'iommu.stray-dma':
        return { id, who: { domain: g.name, device: pick(g.direct) }, what: { kind, count: 4 + rng.nextInt(12) }, when: { at } };
      case 'svio.reset':
        return { id, who: { domain: g.name, device: pick(g.svio) }, what: { kind }, when };
      case 'svio.hostile': {
        const attack = pick(['garbage', 'flood', 'rogue-index'] as const);
        // A rogue queue is stopped until healed (the VIF reset): it holds like the other faults.
        return { id, who: { domain: g.name, device: pick(g.svio.filter((d) => !d.startsWith('cam'))) }, what: { kind, attack, count: 8 + rng.nextInt(40) }, when: attack === 'rogue-index' ? when : { at } };
      }
      case 'process.kill':
      case 'link.reset': {
        // Never the last guest standing, and never one the ws run's other ending already took.
        const victim = pick(alive.filter((x) => alive.length > 1 && x !== alive[0]));
        ended.add(victim.name);
        return { id, who: { domain: victim.name }, what: { kind }, when: { at } };
      }
      default:
        throw new Error(`generatePlan: ${kind} is not generated`);
    }
  });
  return {
    name: `random-${o.scenarios}-seed-${o.seed}`,
    seed: o.seed,
    duration: Math.round((o.scenarios * SLOT + 0.6) * 100) / 100,
    settle: 3,
    transport: o.transport,
    faults,
  };
}
