/**
 * The ws transport's data path, end to end, with guests that share NO memory with dom0: each
 * guest worker allocates its own memory, and dom0 works on mirrors kept by the domain link
 * (grant shipping and leases, mirrored rings with late wakes, routed events). Same backends,
 * same frontends, same workloads and checks as threads mode.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type DomainLinkCounters, type GuestStats } from '@ringvisor/shared';
import { Host } from '../src/toolstack/host.js';
import { normalizeConfig } from '../src/toolstack/config.js';

const dir = mkdtempSync(join(tmpdir(), 'rv-linked-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('guests across a link without shared memory', () => {
  it('do verified block and UDP I/O through dom0 mirrors, and shut down cleanly', async () => {
    const config = normalizeConfig({
      hosts: [{ disk: { path: join(dir, 'disk.img'), sizeMiB: 64 }, guests: ['a', 'b', 'c'].map((name) => ({ name, memoryMiB: 16 })) }],
    }).hosts[0];
    const host = new Host(config, { seed: 3, log: createLogger('test'), linkedGuests: true });
    let finals: GuestStats[] = [];
    let links: DomainLinkCounters[] = [];
    try {
      await host.start();
      // Guest memory is private: dom0's view of each guest is a mirror, not the guest's buffer.
      for (const g of host.guests) expect(g.domain.link).toBeDefined();
      // Until every guest has done verified block I/O and had UDP echoed (however slow the machine).
      await vi.waitFor(
        async () => {
          const now = await host.guestStats();
          expect(now.every((g) => g.integrity.checked > 0 && g.udp.echoed > 0 && g.devices.every((d) => d.ops > 0))).toBe(true);
        },
        { timeout: 30_000, interval: 100 },
      );
      links = host.guests.map((g) => ({ ...g.domain.link!.counters }));
    } finally {
      finals = await host.stop();
    }
    expect(finals).toHaveLength(3);
    for (const g of finals) {
      expect(g.state).toBe('stopped');
      const vbd = g.devices.find((d) => d.type === 'vbd')!;
      const vif = g.devices.find((d) => d.type === 'vif')!;
      expect(vbd.ops).toBeGreaterThan(0);
      expect(vif.ops).toBeGreaterThan(0);
      expect(vbd.errors + vif.errors).toBe(0);
      expect(g.integrity.checked).toBeGreaterThan(0);
      expect(g.integrity.failures).toBe(0);
      expect(g.udp.echoed).toBeGreaterThan(0);
      expect(g.udp.lost + g.udp.corrupted + g.udp.duplicated).toBe(0);
      expect(vbd.detail.leakedGrants + vif.detail.leakedGrants).toBe(0);
    }
    for (const c of links) {
      expect(c.grantsReceived).toBeGreaterThan(0);
      expect(c.pageMessages).toBeGreaterThan(0);
      expect(c.eventsSent + c.eventsReceived).toBeGreaterThan(0);
      expect(c.rejected).toBe(0);
    }
  }, 60_000);

  it('an SV-IO device is refused, saying what to use instead (its queues need memory shared with the cores, or a direct link)', async () => {
    const config = normalizeConfig({ hosts: [{ disk: { path: join(dir, 'disk2.img'), sizeMiB: 16 }, guests: [{ name: 's', memoryMiB: 16, devices: [{ type: 'vif', mode: 'svio' }], workloads: {} }] }] }).hosts[0];
    const host = new Host(config, { seed: 3, log: createLogger('test'), linkedGuests: true });
    try {
      await expect(host.start()).rejects.toThrow(/mode: svio \(vif 0\) needs the guest's memory shared with the hardware's cores \(threads\), or a guest process with a direct link to the hardware \(the ws transport\)/);
    } finally {
      await host.stop();
    }
  });
});
