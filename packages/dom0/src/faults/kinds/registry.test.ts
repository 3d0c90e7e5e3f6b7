/**
 * The fault-kind registry is complete and consistent: every kind a plan may name has a module,
 * every module's schema fragment compiles, generated plans validate, an unknown kind is refused
 * as it always was, nothing outside the modules branches on kind names, and the injector does
 * its bookkeeping around whatever module it dispatches to.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it, vi } from 'vitest';
import { ConfigError, createLogger } from '@ringvisor/shared';
import { defaultConfig, loadConfigFile } from '../../toolstack/config.js';
import type { Host } from '../../toolstack/host.js';
import { FAULT_KINDS, normalizePlan } from '../plan.js';
import { generatePlan } from '../generate.js';
import { FaultInjector } from '../injector.js';
import { FAULT_KIND_MODULES, faultKind, faultKinds } from './index.js';

const names = FAULT_KIND_MODULES.map((m) => m.name);

describe('the fault-kind registry', () => {
  it('has one module per kind a plan may name, found by its name', () => {
    expect(new Set(names).size).toBe(names.length);
    expect(Object.keys(FAULT_KINDS)).toEqual(names);
    for (const m of faultKinds()) {
      expect(faultKind(m.name)).toBe(m);
      expect(m.description.length, m.name).toBeGreaterThan(10);
      for (const p of m.owns ?? []) expect(Object.keys(m.params), `${m.name} owns ${p}`).toContain(p);
    }
    expect(faultKind('nope')).toBeUndefined();
  });

  it("compiles every module's schema fragment on its own", () => {
    const ajv = new Ajv({ allErrors: true, strict: true });
    for (const m of faultKinds()) {
      const validate = ajv.compile({ type: 'object', additionalProperties: false, properties: m.params });
      expect(validate({}), m.name).toBe(true);
    }
  });

  it('validates the plans the generator writes for a fixed seed, and deals every kind with a generator the cluster can take', () => {
    const twoHosts = loadConfigFile(resolve(import.meta.dirname, '../../../../../examples/two-hosts-svio.yaml'));
    const dealtSomewhere = new Set<string>();
    for (const [config, transport] of [
      [defaultConfig(), 'threads'],
      [twoHosts, 'ws'],
    ] as const) {
      const plan = generatePlan({ seed: 7, scenarios: 60, transport, config });
      const again = normalizePlan(JSON.parse(JSON.stringify(plan)), 'generated');
      expect(again.faults).toEqual(plan.faults);
      const dealt = new Set(plan.faults.map((f) => f.what.kind));
      for (const m of faultKinds()) if (!m.generate) expect(dealt.has(m.name as never), m.name).toBe(false);
      // Each generator made faults of its own kind (the id says which module made it).
      for (const f of plan.faults) expect(f.id.endsWith(`-${f.what.kind}`)).toBe(true);
      for (const k of dealt) dealtSomewhere.add(k);
    }
    // The default host (emulated and direct guests) and the two SV-IO hosts in ws take them all between them.
    for (const m of faultKinds()) if (m.generate) expect(dealtSomewhere.has(m.name), m.name).toBe(true);
  });

  it('deals in the same order as before the kinds were modules: a seed gives the plan it always gave', () => {
    const orders = faultKinds().flatMap((m) => (m.generate ? [m.generate.order] : []));
    expect(new Set(orders).size).toBe(orders.length);
    const plan = generatePlan({ seed: 7, scenarios: 25, transport: 'threads', config: defaultConfig() });
    expect(plan.faults.map((f) => f.id)).toEqual([
      's01-backend.pause', 's02-grant.revoke-mapped', 's03-direct.reclaim', 's04-iommu.stray-dma', 's05-evtchn.spurious',
      's06-disk.eio', 's07-nic.down', 's08-evtchn.storm', 's09-ring.double-fetch', 's10-process.restart',
      's11-process.pause', 's12-ring.foreign-gref', 's13-device.hostile', 's14-ring.garbage', 's15-evtchn.delayed',
      's16-evtchn.lost', 's17-ring.stale-gref', 's18-ring.corrupt-index', 's19-backend.restart', 's20-direct.reclaim',
      's21-nic.down', 's22-evtchn.spurious', 's23-device.hostile', 's24-evtchn.lost', 's25-process.kill',
    ]);
  });

  it('refuses a plan with an unknown kind with the message it always had', () => {
    let err: unknown;
    try {
      normalizePlan({ faults: [{ who: {}, what: { kind: 'nope' } }] }, 'p');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe(
      'p is invalid:\n  /faults/0/what/kind: must be one of backend.pause, evtchn.lost, evtchn.delayed, evtchn.spurious, evtchn.storm, disk.eio, disk.bitflip, disk.torn, nic.down, process.kill, process.restart, process.pause, link.latency, link.bandwidth, link.partition, link.reset, lan.drop, lan.duplicate, lan.reorder, lan.corrupt, ring.garbage, ring.foreign-gref, ring.stale-gref, ring.double-fetch, ring.corrupt-index, grant.revoke-mapped, backend.restart, device.hostile, direct.reclaim, iommu.stray-dma, svio.reset, svio.hostile, backend.lie, grant.unmap-early',
    );
  });

  it('leaves no branch on a kind name outside the kind modules', () => {
    for (const file of ['injector.ts', 'plan.ts', 'generate.ts', 'campaign.ts']) {
      const source = readFileSync(resolve(import.meta.dirname, '..', file), 'utf8');
      for (const n of names) expect(source.includes(`'${n}'`), `${file} names '${n}'`).toBe(false);
    }
  });
});

/** A host with one guest, enough for the kinds that act on a NIC or a guest's runtime. */
function fakeHost() {
  const calls: string[] = [];
  const host = {
    config: { name: 'h0' },
    guests: [{ config: { name: 'g1' }, domain: { domid: 3 } }],
    rebooted: async () => {},
    setNicLink: vi.fn(async (up: boolean) => void calls.push(`nic ${up ? 'up' : 'down'}`)),
    killGuest: vi.fn(async (name: string) => void calls.push(`kill ${name}`)),
    killHwsim: vi.fn(async () => {
      calls.push('kill hwsim');
      return async () => void calls.push('revive hwsim');
    }),
  };
  return { host: host as unknown as Host, calls };
}

describe('the injector dispatches through the registry and keeps the books', () => {
  const log = createLogger('test');

  it('a lasting kind stays active until healed, and its heal undoes it', async () => {
    const { host, calls } = fakeHost();
    const inj = new FaultInjector([host], log);
    const a = await inj.inject({ id: 'nic', who: { host: 'h0' }, what: { kind: 'nic.down' }, when: {} });
    expect(calls).toEqual(['nic down']);
    expect(inj.activeFaults().map((f) => f.key)).toEqual([a.key]);
    expect(await inj.healAll()).toBe(1);
    expect(calls).toEqual(['nic down', 'nic up']);
    expect(inj.activeFaults()).toHaveLength(0);
    expect(inj.history[0]).toMatchObject({ id: 'nic', kind: 'nic.down', host: 'h0' });
    expect(inj.history[0].healedAt).toBeGreaterThanOrEqual(inj.history[0].injectedAt);
  });

  it("a kind decides per fault whether it is over once it happened (a guest's kill) or lasts (the hardware's)", async () => {
    const { host, calls } = fakeHost();
    const inj = new FaultInjector([host], log);
    const guest = await inj.inject({ id: 'k', who: { domain: 'g1' }, what: { kind: 'process.kill' }, when: {} });
    expect(guest.healed).toBe(true);
    const hw = await inj.inject({ id: 'hw', who: { host: 'h0', runtime: 'hwsim' }, what: { kind: 'process.kill' }, when: {} });
    expect(hw.healed).toBe(false);
    await inj.heal('hw');
    expect(calls).toEqual(['kill g1', 'kill hwsim', 'revive hwsim']);
  });

  it('records a target that is not there as the fault\'s error, with a typed error', async () => {
    const { host } = fakeHost();
    const inj = new FaultInjector([host], log);
    await expect(inj.inject({ id: 'x', who: { domain: 'nobody' }, what: { kind: 'process.kill' }, when: {} })).rejects.toMatchObject({ code: 'RV_ERR_FAULT_TARGET' });
    await expect(inj.inject({ id: 'y', who: {}, what: { kind: 'nope' as 'nic.down' }, when: {} })).rejects.toMatchObject({ code: 'RV_ERR_FAULT_KIND' });
    expect(inj.history.map((r) => r.error)).toEqual(['x: no guest domain "nobody"', 'y: no fault kind "nope"']);
  });
});
