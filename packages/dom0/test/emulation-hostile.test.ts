/**
 * A hostile guest driver against the emulated devices: a real guest (worker thread) turns its own
 * vCPU against its Lance and its ATA drive — random port I/O, DMA pointed outside its memory,
 * absurd ring lengths, interrupt storms, commands past the end of its disk. The device models
 * answer with device errors; dom0 and the other guests carry on untouched, and the attacker's own
 * drivers recover.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GUEST_ATTACK, createLogger, type GuestStats } from '@ringvisor/shared';
import { Host } from '../src/toolstack/host.js';
import { normalizeConfig } from '../src/toolstack/config.js';
import type { AtaMetrics, LanceMetrics } from '@ringvisor/shared';

let dir: string;
let host: Host;

const stats = async (name: string): Promise<GuestStats> => (await host.guestStats()).find((g) => g?.name === name)!;
const ops = (g: GuestStats) => g.devices.reduce((a, d) => a + d.ops, 0);
const attack = (device: string, kind: string, count: number) =>
  host.guests.find((g) => g.config.name === 'evil')!.peer!.call<Record<string, number | boolean>>(GUEST_ATTACK, { device, attack: kind, count, seed: 42 });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rv-emu-hostile-'));
  const config = normalizeConfig({
    hosts: [
      {
        disk: { path: join(dir, 'disk.img'), sizeMiB: 64 },
        guests: [
          { name: 'evil', memoryMiB: 16, devices: [{ type: 'vbd', mode: 'emulated', sizeMiB: 4 }, { type: 'vif', mode: 'emulated' }], workloads: { block: { blocks: 16 }, udp: { peers: ['good'] } } },
          { name: 'good', memoryMiB: 16, devices: [{ type: 'vbd', sizeMiB: 8 }, { type: 'vif' }], workloads: { block: { blocks: 64 }, udp: { peers: ['other'] } } },
          { name: 'other', memoryMiB: 16, devices: [{ type: 'vif' }], workloads: { udp: { peers: ['good'] } } },
        ],
      },
    ],
  }).hosts[0];
  host = new Host(config, { seed: 3, log: createLogger('test') });
  await host.start();
}, 60_000);

afterAll(async () => {
  await host?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('a hostile guest driver against its emulated devices', () => {
  it('random port I/O, wild DMA and an interrupt storm on the Lance get device errors; nothing else notices', async () => {
    const good0 = ops(await stats('good'));
    const other0 = ops(await stats('other'));
    const garbage = await attack('lance0', 'port-garbage', 50);
    const wild = await attack('lance0', 'wild-dma', 20);
    await attack('lance0', 'irq-storm', 20);
    expect(garbage.accesses).toBeGreaterThan(1000);
    // MERR (0x0800) for rings and buffers outside the guest's memory.
    expect((wild.errorBits as number) & 0x0800).toBe(0x0800);
    // The attacker's own driver re-opened the chip: its UDP flow to good is answered again.
    const echoed0 = (await stats('evil')).udp.echoed;
    const until = Date.now() + 20_000;
    while ((await stats('evil')).udp.echoed <= echoed0 + 5 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    expect((await stats('evil')).udp.echoed).toBeGreaterThan(echoed0 + 5);
    const platform = host.platformOf(host.guests.find((g) => g.config.name === 'evil')!.domain.domid)!;
    const lance = platform.stats().devices.find((d) => d.name === 'lance0')!.metrics as LanceMetrics;
    expect(lance.merr).toBeGreaterThan(0);
    expect(lance.interrupts).toBeGreaterThan(20 * 16);
    // Every access went through the ioreq server; none made a device model throw.
    expect(platform.server!.counters.handlerErrors).toBe(0);
    expect(platform.server!.counters.unassigned).toBeGreaterThan(0);
    // The others kept doing I/O throughout.
    expect(ops(await stats('good'))).toBeGreaterThan(good0);
    expect(ops(await stats('other'))).toBeGreaterThan(other0);
  }, 120_000);

  it('commands past the end of its disk and register garbage get ATA errors; its own disk keeps working', async () => {
    const before = await stats('evil');
    const bad = await attack('ata51712', 'bad-commands', 10);
    const garbage = await attack('ata51712', 'port-garbage', 30);
    expect(bad.errors).toBeGreaterThanOrEqual(40);
    // IDNF (0x10) for ranges past the end, ABRT (0x04) for unknown commands.
    expect((bad.errorBits as number) & 0x14).toBe(0x14);
    expect(garbage.accesses).toBeGreaterThan(500);
    const platform = host.platformOf(host.guests.find((g) => g.config.name === 'evil')!.domain.domid)!;
    const ata = platform.stats().devices.find((d) => d.name === 'ata51712')!.metrics as AtaMetrics;
    expect(ata.errors.idnf).toBeGreaterThanOrEqual(30);
    expect(ata.errors.abrt).toBeGreaterThanOrEqual(10);
    // Its own block workload goes on after the driver resets the drive.
    const until = Date.now() + 20_000;
    let after = await stats('evil');
    while (after.devices.find((d) => d.type === 'vbd')!.ops <= before.devices.find((d) => d.type === 'vbd')!.ops + 5 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 200));
      after = await stats('evil');
    }
    expect(after.devices.find((d) => d.type === 'vbd')!.ops).toBeGreaterThan(before.devices.find((d) => d.type === 'vbd')!.ops + 5);
  }, 120_000);

  it('after the attacks: the other guests verified every block and datagram, the attacker was the only one to lose anything', async () => {
    await host.quiesce();
    const all = await host.guestStats();
    const good = all.find((g) => g?.name === 'good')!;
    const other = all.find((g) => g?.name === 'other')!;
    expect(good.integrity.failures).toBe(0);
    expect(good.block!.checked).toBeGreaterThan(0);
    expect(other.integrity.failures).toBe(0);
    // good ↔ other never crossed the attacker's NIC: nothing lost, nothing corrupted.
    expect(other.udp.echoed).toBeGreaterThan(0);
    expect(other.udp.corrupted + good.udp.corrupted).toBe(0);
    expect(other.udp.lost).toBe(0);
    const evil = all.find((g) => g?.name === 'evil')!;
    expect(evil.block!.failures).toBe(0);
  }, 120_000);
});
