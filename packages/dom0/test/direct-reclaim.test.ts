/**
 * Reclaim under load with the real guest drivers (threads transport, in process so the test can
 * read guest memory): a direct guest is frozen mid-I/O — its driver has rx buffers posted (the NIC
 * function prefetched them) and block requests in flight — while a PV peer keeps streaming at its
 * MAC. The toolstack reclaims both functions. From then on the guest's memory must not change at
 * all: no DMA lands in the old owner after reclaim. Thawed, the guest's drivers learn they lost
 * their functions; assigned clean ones again, they start over, and the block ledger and the
 * datagrams verify with no failure.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type GuestStats } from '@ringvisor/shared';
import { Host } from '../src/toolstack/host.js';
import { normalizeConfig } from '../src/toolstack/config.js';

const dir = mkdtempSync(join(tmpdir(), 'rv-direct-reclaim-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface Fn {
  rid: string;
  owner: number | null;
  counters: Record<string, number>;
  metrics: Record<string, number>;
}

describe('reclaiming a direct guest\'s functions while it has DMA in flight', () => {
  it('leaves the old owner\'s memory untouched after reclaim, and a clean function that the guest starts over on', async () => {
    const config = normalizeConfig({
      seed: 12,
      hosts: [
        {
          disk: { path: join(dir, 'disk.img'), sizeMiB: 32 },
          guests: [
            {
              name: 'direct1',
              memoryMiB: 16,
              devices: [
                { type: 'vbd', mode: 'direct', sizeMiB: 8 },
                { type: 'vif', mode: 'direct' },
              ],
              workloads: { block: { blocks: 256, queueDepth: 16 }, udp: { peers: ['pv1'] } },
            },
            { name: 'pv1', memoryMiB: 16, devices: [{ type: 'vif' }], workloads: { udp: { peers: ['direct1'], mode: 'stream', ratePps: 5000 } } },
          ],
        },
      ],
    }).hosts[0];
    const host = new Host(config, { seed: 12, log: createLogger('test') });
    let finals: GuestStats[] = [];
    let thaw: (() => void) | undefined;
    try {
      await host.start();
      const g = host.guests.find((x) => x.config.name === 'direct1')!;
      const ops = (s: GuestStats, t: string) => s.devices.find((d) => d.type === t)!.ops;
      const direct1 = async () => (await host.guestStats()).find((s) => s.name === 'direct1')!;
      // Under load: the guest has done disk and network I/O on its functions.
      await vi.waitFor(
        async () => {
          const s = await direct1();
          expect(ops(s, 'vbd') > 0 && ops(s, 'vif') > 0).toBe(true);
        },
        { timeout: 30_000, interval: 100 },
      );
      // The peer holds its stream while the functions are reclaimed: on a loaded machine frames
      // arriving meanwhile would use up the rx buffers the function prefetched before the reset
      // could drop them (which is what this test looks at).
      const thawPeer = await host.freezeGuest('pv1', 20_000);
      // Freeze the guest's vCPU: from now on nothing in the guest writes its memory.
      thaw = await host.freezeGuest('direct1', 20_000);
      let nic: Awaited<ReturnType<Host['reclaimFunction']>>;
      let disk: Awaited<ReturnType<Host['reclaimFunction']>>;
      try {
        nic = await host.reclaimFunction('direct1', 'vif0');
        disk = await host.reclaimFunction('direct1', 'vbd51712');
      } finally {
        thawPeer();
      }
      expect(nic.steps).toEqual(['bus-master-off', 'flr', 'context-cleared', 'released']);
      expect(disk.steps).toEqual(['bus-master-off', 'flr', 'context-cleared', 'released']);
      // The NIC function had prefetched the guest's posted rx buffers: the reset dropped them.
      expect(nic.dropped.rxDescriptors).toBeGreaterThan(0);
      const mem = g.domain.memory.bytes;
      const before = digest(mem);
      const fnsBefore = (await host.functionStats()) as unknown as Fn[];
      const missedBefore = fnsBefore.find((f) => f.rid === nic.rid)!.metrics.rxMissed;
      // The peer keeps streaming at the old owner's MAC through the reclaim.
      const vf = await vi.waitFor(
        async () => {
          const f = ((await host.functionStats()) as unknown as Fn[]).find((x) => x.rid === nic.rid)!;
          expect(f.metrics.rxMissed, 'frames kept arriving for the reclaimed function').toBeGreaterThan(missedBefore);
          return f;
        },
        { timeout: 30_000, interval: 100 },
      );
      expect(vf.owner).toBeNull();
      expect(digest(mem), 'no byte of the old owner changed after reclaim').toBe(before);
      thaw();
      thaw = undefined;
      // Clean functions again; the drivers start over on them.
      await delay(300);
      const back = [await host.reattachFunction('direct1', 'vif0'), await host.reattachFunction('direct1', 'vbd51712')];
      for (const b of back) expect(b.rid).toMatch(/^00:0[34]\.\d$/);
      const a = await direct1();
      await vi.waitFor(
        async () => {
          const b = await direct1();
          expect(ops(b, 'vbd'), 'block I/O resumed on the new function').toBeGreaterThan(ops(a, 'vbd'));
          expect(ops(b, 'vif'), 'network I/O resumed on the new function').toBeGreaterThan(ops(a, 'vif'));
        },
        { timeout: 30_000, interval: 100 },
      );
    } finally {
      thaw?.();
      finals = await host.stop();
    }
    const d = finals.find((s) => s?.name === 'direct1')!;
    expect(d.state, d.error).toBe('stopped');
    expect(d.block!.failures, JSON.stringify(d.block)).toBe(0);
    expect(d.block!.checked).toBeGreaterThan(0);
    expect(d.integrity.failures).toBe(0);
  }, 90_000);
});
