/**
 * Fault plans: the schema's refusals say where and how to fix; the schedule is a pure function of
 * plan and seed (each fault's draws independent of the others'); occurrences land where `when`
 * puts them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@ringvisor/shared';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadConfigFile } from '../toolstack/config.js';
import { loadPlanFile, normalizePlan, parseFault, schedule } from './plan.js';

const fault = (when: object, extra: object = {}) => ({ who: { domain: 'g1', device: 'vbd51712' }, what: { kind: 'backend.pause' }, when, ...extra });

describe('fault plans', () => {
  it('fills defaults and ids', () => {
    const p = normalizePlan({ faults: [fault({ at: 1 })] }, 'p');
    expect(p).toMatchObject({ name: 'p', seed: 1, duration: 10, settle: 3 });
    expect(p.faults[0].id).toBe('backend.pause#1');
  });

  it('refuses mistakes with their path', () => {
    const bad = (raw: unknown, re: RegExp) => expect(() => normalizePlan(raw, 'p')).toThrow(re);
    bad({ faults: [{ who: {}, what: { kind: 'nope' } }] }, /\/faults\/0\/what\/kind: must be one of/);
    bad({ faults: [fault({ at: 1 }, { extra: 1 })] }, /unknown key "extra"/);
    bad({ faults: [{ who: { domain: 'g' }, what: { kind: 'backend.pause' } }] }, /needs who\.device/);
    bad({ faults: [fault({ times: 3 })] }, /times > 1 needs when\.every/);
    bad({ faults: [fault({ at: 1, after: { kind: 'ring.push', count: 3 } })] }, /exclude each other/);
    bad({ faults: [{ who: { host: 'h' }, what: { kind: 'disk.eio', sectors: [10, 5] } }] }, /start < end/);
    bad({ faults: [{ who: { domain: 'g' }, what: { kind: 'evtchn.storm' } }] }, /needs what\.ratePerSec/);
    bad({ faults: [fault({}, { id: 'a' }), fault({}, { id: 'a' })] }, /"a" appears twice/);
    expect(() => parseFault({ who: { domain: 'g', device: 'vbd51712' }, what: { kind: 'backend.lie' } })).toThrow(ConfigError);
    // dom0 (its I/O stack) and the hardware are runtimes of the process kinds; dom0 has no link of its own.
    bad({ faults: [{ who: { host: 'h', runtime: 'dom0' }, what: { kind: 'link.latency', latencyMs: 5 } }] }, /runtime: dom0 takes the process kinds only/);
    for (const kind of ['process.kill', 'process.restart', 'process.pause']) expect(parseFault({ who: { host: 'h', runtime: 'dom0' }, what: { kind } }).who.runtime).toBe('dom0');
  });

  it('a plan may name an SV-IO camera (cam<devid>), which svio.reset acts on', () => {
    expect(parseFault({ who: { domain: 'g', device: 'cam0' }, what: { kind: 'svio.reset' } }).who.device).toBe('cam0');
    expect(() => parseFault({ who: { domain: 'g', device: 'cam0' }, what: { kind: 'svio.hostile' } })).toThrow(/vif<devid> \| vbd<devid>/);
  });

  it('schedules occurrences at at + n·every, healed `for` later, each drawn from (seed, fault, n)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 20 }), (seed, p, times) => {
        const plan = normalizePlan(
          { faults: [fault({ at: 0.5, every: 0.25, times, probability: p, for: 0.1 }, { id: 'x' }), fault({ at: 2 }, { id: 'y' })] },
          'p',
        );
        const a = schedule(plan, seed);
        expect(schedule(plan, seed)).toEqual(a);
        for (const o of a.timed.filter((t) => t.fault.id === 'x')) {
          expect(o.atMs).toBe(Math.round((0.5 + o.n * 0.25) * 1000));
          expect(o.healMs).toBe(o.atMs + 100);
        }
        // Adding a fault does not change the draws of the others.
        const more = normalizePlan({ faults: [...plan.faults.map((f) => ({ id: f.id, who: f.who, what: f.what, when: f.when })), fault({ at: 3 }, { id: 'z' })] }, 'p');
        const b = schedule(more, seed);
        expect(b.timed.filter((t) => t.fault.id === 'x').map((t) => t.n)).toEqual(a.timed.filter((t) => t.fault.id === 'x').map((t) => t.n));
        if (p === 1) expect(a.timed.filter((t) => t.fault.id === 'x')).toHaveLength(times);
        if (p === 0) expect(a.timed.filter((t) => t.fault.id === 'x')).toHaveLength(0);
      }),
      { numRuns: 100 },
    );
  });

  it('keeps `after`-triggered occurrences relative to their trigger', () => {
    const plan = normalizePlan({ faults: [fault({ after: { kind: 'ring.push', count: 10 }, every: 1, times: 2, for: 0.5 })] }, 'p');
    const s = schedule(plan);
    expect(s.timed).toHaveLength(0);
    expect(s.relative.map((o) => [o.atMs, o.healMs])).toEqual([
      [0, 500],
      [1000, 1500],
    ]);
  });

  it('every plan in examples/faults loads, and so does the cluster it names (the library must not rot)', () => {
    const dir = resolve(import.meta.dirname, '../../../../examples/faults');
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThanOrEqual(10);
    for (const f of files) {
      const p = loadPlanFile(join(dir, f));
      expect(p.faults.length, f).toBeGreaterThan(0);
      if (p.cluster) expect(loadConfigFile(p.cluster).hosts.length, f).toBeGreaterThan(0);
    }
  });
});
