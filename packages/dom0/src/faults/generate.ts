/**
 * Random campaigns: a seeded plan of N scenarios, one fault each, back to back — every kind the
 * cluster can take (each kind's module says which clusters and guests: link faults need the ws
 * transport, LAN faults two hosts, PV kinds a guest with PV devices, …) dealt round-robin (in
 * their modules' `order`, each round shuffled by the seed), with seeded targets and parameters.
 * Scenarios that end a guest (kill, link reset) come last and never take the last guest
 * standing. The same seed and cluster give the same plan.
 *
 * Kinds without a generator are left out on purpose: disk.bitflip (silent corruption is detected,
 * not survived — it has its own scenario), disk.torn (it needs a writeback disk; its own scenario
 * too), backend.lie and grant.unmap-early (they break the backend to test the checkers).
 */
import { SplitMix32, mixSeed } from '@ringvisor/shared';
import type { ClusterConfig, DeviceConfig } from '../toolstack/config.js';
import { IO_MODES, type IoModeDescriptor } from '../toolstack/attach/modes.js';
import { vbdsOf, vifsOf } from '../toolstack/device-kinds.js';
import type { FaultPlan, FaultSpec } from './plan.js';
import { faultKinds, type RegisteredFaultKind } from './kinds/index.js';
import type { FaultGenerator, GenCluster, GenGuest } from './kinds/kind.js';

/** Seconds each scenario is given: the fault for `hold`, then time to recover before the next. */
const SLOT = 0.7;
const HOLD = 0.35;

type Generated = RegisteredFaultKind & { generate: FaultGenerator<string, object> };

/** The cluster as the kinds' generators see it: each guest's devices grouped by what their mode is (its descriptor's facts). */
function clusterView(config: ClusterConfig, transport: 'threads' | 'ws'): GenCluster {
  const guests: GenGuest[] = config.hosts.flatMap((h) =>
    h.guests.map((g) => {
      const where = (fact: (m: IoModeDescriptor) => boolean | undefined) => g.devices.filter((d) => fact(IO_MODES[d.mode]) === true);
      const named = (ds: readonly DeviceConfig[]) => ds.map((d) => IO_MODES[d.mode].deviceName?.(d.type, d.devid) ?? `${d.type}${d.devid}`);
      const split = where((m) => m.splitDriver);
      return {
        host: h.name,
        name: g.name,
        vbd: vbdsOf(split)[0],
        vif: vifsOf(split)[0],
        emulated: named(where((m) => m.trapsToDeviceModel)),
        direct: named(where((m) => m.assignsFunctions)),
        svio: named(where((m) => m.runsOnDeviceCores)),
      };
    }),
  );
  return { hosts: config.hosts.length, transport, guests };
}

export function generatePlan(o: { seed: number; scenarios: number; transport: 'threads' | 'ws'; config: ClusterConfig }): FaultPlan {
  const rng = new SplitMix32(mixSeed(o.seed, 0xca3a));
  const pick = <T>(xs: readonly T[]): T => xs[rng.nextInt(xs.length)];
  const cluster = clusterView(o.config, o.transport);
  const { guests } = cluster;
  /** The guests a kind can act on. */
  const eligible = (k: Generated) => guests.filter((g) => k.generate.eligible?.(g) ?? true);
  const generated = faultKinds()
    .filter((k): k is Generated => k.generate !== undefined && (k.generate.dealt?.(cluster) ?? true) && eligible(k as Generated).length > 0)
    .sort((a, b) => a.generate.order - b.generate.order);
  const kinds = generated.filter((k) => !k.generate.ending);
  // A seeded deal: every kind once per round, rounds shuffled independently.
  const deal: Generated[] = [];
  while (deal.length < o.scenarios) {
    const round = [...kinds];
    for (let i = round.length - 1; i > 0; i--) {
      const j = rng.nextInt(i + 1);
      [round[i], round[j]] = [round[j], round[i]];
    }
    deal.push(...round);
  }
  deal.length = Math.max(0, o.scenarios);
  // Endings last: each at most once, only in campaigns longer than a round, never the last guest.
  const endings: Generated[] = [];
  for (const k of generated) if (k.generate.ending && o.scenarios > kinds.length + endings.length) endings.push(k);
  deal.splice(deal.length - endings.length, endings.length, ...endings);
  const ended = new Set<string>();
  const faults: FaultSpec[] = deal.map((kind, i) => {
    const alive = guests.filter((g) => !ended.has(g.name));
    const g = pick(eligible(kind).filter((x) => !ended.has(x.name)));
    const at = Math.round(i * SLOT * 100) / 100 + 0.3;
    const made = kind.generate.make({
      g,
      at,
      when: { at, for: HOLD },
      next: () => rng.next(),
      nextInt: (n) => rng.nextInt(n),
      pick,
      alive,
      end: (name) => ended.add(name),
    });
    // The module made a fault of its own kind (its generator's type says so).
    return { id: `s${String(i + 1).padStart(2, '0')}-${kind.name}`, ...made } as FaultSpec;
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
