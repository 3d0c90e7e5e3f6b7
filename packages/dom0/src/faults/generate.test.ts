/**
 * Random campaigns are a function of their seed and cluster: the same inputs give the same plan;
 * every kind the cluster can take is dealt; endings come last and spare the last guest; and every
 * generated fault passes the plan schema.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultConfig, loadConfigFile } from '../toolstack/config.js';
import { generatePlan } from './generate.js';
import { normalizePlan, schedule } from './plan.js';
import { resolve } from 'node:path';

const twoHosts = loadConfigFile(resolve(import.meta.dirname, '../../../../examples/two-hosts-svio.yaml'));

describe('generatePlan', () => {
  it('is deterministic, valid, and covers every kind the cluster can take', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 60 }), fc.boolean(), (seed, n, ws) => {
        const config = ws ? twoHosts : defaultConfig();
        const o = { seed, scenarios: n, transport: ws ? ('ws' as const) : ('threads' as const), config };
        const plan = generatePlan(o);
        expect(generatePlan(o)).toEqual(plan);
        expect(plan.faults).toHaveLength(n);
        // The schema accepts what the generator writes.
        const again = normalizePlan(JSON.parse(JSON.stringify({ ...plan, transport: plan.transport })), 'generated');
        expect(again.faults.map((f) => f.id)).toEqual(plan.faults.map((f) => f.id));
        const kinds = new Set(plan.faults.map((f) => f.what.kind));
        // threads: the default host has an emulated guest and a direct one, so device.hostile,
        // direct.reclaim and iommu.stray-dma are dealt too; ws: the two hosts have an SV-IO guest
        // (svio.reset, svio.hostile).
        const dealt = ws ? 25 : 19;
        if (n >= dealt + 2) expect(kinds.size).toBeGreaterThanOrEqual(dealt);
        if (!ws) for (const k of kinds) expect(k.startsWith('link.') || k.startsWith('lan.')).toBe(false);
        // Each kind picks a guest that has what it acts on: PV kinds a PV device, device.hostile an emulated one.
        const modes = new Map(config.hosts.flatMap((h) => h.guests.map((g) => [g.name, new Set(g.devices.map((d) => d.mode))] as const)));
        for (const f of plan.faults) {
          const k = f.what.kind;
          if (k === 'device.hostile') expect(modes.get(f.who.domain!)!.has('emulated')).toBe(true);
          if (k === 'direct.reclaim' || k === 'iommu.stray-dma') expect(modes.get(f.who.domain!)!.has('direct')).toBe(true);
          if (k.startsWith('svio.')) expect(modes.get(f.who.domain!)!.has('svio')).toBe(true);
          if (k.startsWith('backend.') || k.startsWith('ring.') || k.startsWith('grant.')) expect(modes.get(f.who.domain!)!.has('pv')).toBe(true);
          // Spurious events and storms need a channel: PV, or a device the guest drives itself.
          if (k === 'evtchn.spurious' || k === 'evtchn.storm') expect((['pv', 'direct', 'svio'] as const).some((m) => modes.get(f.who.domain!)!.has(m))).toBe(true);
          if (f.who.device) expect(f.who.device).toMatch(k === 'device.hostile' ? /^(lance|ata)\d+$/ : k === 'svio.reset' ? /^(vbd|vif|cam)\d+$/ : /^(vbd|vif)\d+$/);
        }
        // Endings: at the end, each a different guest, and someone is left standing.
        const ends = plan.faults.filter((f) => f.what.kind === 'process.kill' || f.what.kind === 'link.reset');
        const guests = config.hosts.flatMap((h) => h.guests).length;
        expect(new Set(ends.map((f) => f.who.domain)).size).toBe(ends.length);
        expect(ends.length).toBeLessThan(guests);
        for (const e of ends) expect(plan.faults.indexOf(e)).toBeGreaterThanOrEqual(n - ends.length);
        // Nothing targets a guest after it ended.
        const gone = new Set<string>();
        for (const f of plan.faults) {
          if (f.who.domain) expect(gone.has(f.who.domain)).toBe(false);
          if (f.what.kind === 'process.kill' || f.what.kind === 'link.reset') gone.add(f.who.domain!);
        }
        expect(schedule(plan).timed).toHaveLength(n);
      }),
      { numRuns: 60 },
    );
  });
});
