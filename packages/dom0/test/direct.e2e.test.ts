/**
 * Direct I/O end to end, as a user runs it (`ringvisor up` in its own process), in both
 * transports: a guest assigned a NIC function and a disk function exchanges verified UDP with a PV
 * guest and an emulated one, its block verifier reports no failure, the hardware's own counters
 * agree with the guest's, and dom0's drivers carried none of its I/O.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanUp, runCli, tempDir } from './support/cli.js';

afterEach(cleanUp);

interface Device {
  type: string;
  mode: string;
  ops: number;
  errors: number;
  detail: Record<string, number>;
}
interface FunctionStat {
  rid: string;
  kind: 'nic' | 'disk';
  owner: number | null;
  counters: Record<string, number>;
  metrics: Record<string, number>;
}
interface Summary {
  guests: Array<{ name: string; state: string; devices: Device[]; udp: { sent: number; echoed: number; lost: number; corrupted: number }; error?: string }>;
  integrity: { checked: number; failures: number };
  dom0: Record<string, { disk: { submitted: number }; nic: { rxFrames: number; txFrames: number }; direct?: { functions: FunctionStat[]; iommu: Record<string, number> } }>;
}

function run(transport: 'threads' | 'ws', config: object, seconds: number): Promise<{ summary: Summary; stderr: string; code: number | null }> {
  const cwd = tempDir();
  writeFileSync(join(cwd, 'cluster.json'), JSON.stringify(config));
  return runCli(['up', '--transport', transport, '--config', 'cluster.json', '--duration', String(seconds), '--json', 'out.json'], cwd).done.then((r) => ({
    ...r,
    summary: r.code === 0 ? (JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary) : ({} as Summary),
  }));
}

/** PV and emulated guests each stream echoes at the direct guest, which verifies its own disk. */
const mixed = {
  seed: 9,
  hosts: [
    {
      name: 'host0',
      guests: [
        { name: 'pv1', devices: [{ type: 'vif' }], workloads: { udp: { peers: ['direct1'] } } },
        { name: 'hvm1', devices: [{ type: 'vif', mode: 'emulated', placement: 'hosted' }], workloads: { udp: { peers: ['direct1'] } } },
        {
          name: 'direct1',
          devices: [
            { type: 'vbd', mode: 'direct', sizeMiB: 8 },
            { type: 'vif', mode: 'direct' },
          ],
          workloads: { block: { blocks: 128 } },
        },
      ],
    },
  ],
};

function checkMixed(s: Summary): void {
  const g = (n: string) => s.guests.find((x) => x.name === n)!;
  for (const n of ['pv1', 'hvm1', 'direct1']) expect(g(n).state, g(n).error).toBe('stopped');
  const d = g('direct1');
  const vbd = d.devices.find((x) => x.type === 'vbd')!;
  const vif = d.devices.find((x) => x.type === 'vif')!;
  expect(vbd.mode).toBe('direct');
  expect(vif.mode).toBe('direct');
  expect(vbd.ops).toBeGreaterThan(0);
  expect(vbd.detail.sectorsWritten).toBeGreaterThan(0);
  expect(vbd.errors + vif.errors).toBe(0);
  // The direct guest answered every peer: PV through dom0's bridge and the PF, emulated likewise.
  expect(g('pv1').udp.echoed).toBeGreaterThan(0);
  expect(g('hvm1').udp.echoed).toBeGreaterThan(0);
  expect(g('pv1').udp.corrupted + g('hvm1').udp.corrupted).toBe(0);
  expect(vif.detail.rxPackets).toBeGreaterThan(0);
  expect(vif.detail.txPackets).toBeGreaterThan(0);
  expect(s.integrity.checked).toBeGreaterThan(0);
  expect(s.integrity.failures).toBe(0);
  // The hardware's view: the functions did exactly the guest's I/O, and nothing was blocked.
  const host = s.dom0.host0;
  const fns = host.direct!.functions;
  const disk = fns.find((f) => f.kind === 'disk')!;
  const nic = fns.find((f) => f.kind === 'nic')!;
  expect(disk.metrics.reads + disk.metrics.writes + disk.metrics.flushes).toBe(vbd.ops);
  expect(nic.metrics.txPackets).toBe(vif.detail.txPackets);
  expect(nic.metrics.rxPackets).toBe(vif.detail.rxPackets);
  expect(disk.counters.dmaFaults + nic.counters.dmaFaults).toBe(0);
  expect(host.direct!.iommu.faults).toBe(0);
  // Shutdown reclaimed both the VFIO way: each function reset once and back in the pool.
  for (const f of [disk, nic]) {
    expect(f.owner).toBeNull();
    expect(f.counters.flrs).toBe(1);
  }
  // dom0's physical disk driver carried none of the direct guest's requests (nobody else has a disk).
  expect(host.disk.submitted).toBe(0);
}

describe('direct I/O (SR-IOV functions behind the IOMMU)', () => {
  it('threads: a direct guest talks to PV and emulated guests and verifies its disk; dom0 carried none of its block I/O', async () => {
    const { code, stderr, summary } = await run('threads', mixed, 5);
    expect(code, stderr).toBe(0);
    checkMixed(summary);
  }, 60_000);

  it('threads: two direct guests talk to each other with dom0 off the data path (only flooded broadcasts reach it)', async () => {
    const config = {
      seed: 4,
      hosts: [
        {
          guests: ['d1', 'd2'].map((name, i) => ({
            name,
            devices: [
              { type: 'vbd', mode: 'direct', sizeMiB: 4 },
              { type: 'vif', mode: 'direct' },
            ],
            workloads: { block: { blocks: 64 }, udp: { peers: [i === 0 ? 'd2' : 'd1'] } },
          })),
        },
      ],
    };
    const { code, stderr, summary: s } = await run('threads', config, 4);
    expect(code, stderr).toBe(0);
    const echoed = s.guests.reduce((a, g) => a + g.udp.echoed, 0);
    expect(echoed).toBeGreaterThan(1000);
    expect(s.integrity.failures).toBe(0);
    // Frames between the two functions cross the NIC's embedded switch only: the PF (dom0's NIC
    // driver) hears the ARP broadcasts and the first frames flooded before the switch learned.
    const rx = s.dom0.host0.nic.rxFrames;
    expect(rx).toBeLessThan(50);
    expect(s.dom0.host0.disk.submitted).toBe(0);
  }, 60_000);

  it('ws: the same over processes, the direct guest linked to the hardware simulator itself', async () => {
    const { code, stderr, summary } = await run('ws', mixed, 6);
    expect(code, stderr).toBe(0);
    checkMixed(summary);
  }, 90_000);
});
