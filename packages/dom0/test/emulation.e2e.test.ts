/**
 * Full device emulation end to end, as a user runs it (`ringvisor up` in its own process): a guest
 * whose NIC is an emulated Lance and whose disk is an emulated ATA drive, next to a PV guest. Every
 * register access of the emulated guest traps to the device models in dom0.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, cleanUp, runCli, tempDir } from './support/cli.js';

afterEach(cleanUp);

interface Device {
  type: string;
  mode: string;
  ops: number;
  bytes: number;
  errors: number;
  detail: Record<string, number>;
}
interface Summary {
  guests: Array<{ name: string; state: string; devices: Device[]; udp: { sent: number; echoed: number; lost: number; corrupted: number }; error?: string }>;
  integrity: { checked: number; failures: number };
  dom0: Record<string, { traps: number; worldSwitches: number; emulated?: Array<{ guest: string; placement: string; vmnet?: { writes: number; reads: number }; combined?: { sent: number }; ioreq: { traps: number; worldSwitches: number; unassigned: number }; devices: Array<{ name: string; metrics: Record<string, number> }> }> }>;
}

describe('full emulation (Lance NIC and ATA disk, models in dom0)', () => {
  it('an emulated guest and a PV guest exchange verified UDP, the emulated disk verifies with no failures, and every access was a counted trap', async () => {
    const cwd = tempDir();
    const { code, stderr } = await runCli(['up', '--config', join(ROOT, 'examples/emulation.yaml'), '--duration', '6', '--json', 'out.json'], cwd).done;
    expect(code, stderr).toBe(0);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary;
    const emu = s.guests.find((g) => g.name === 'emu1')!;
    const pv = s.guests.find((g) => g.name === 'pv1')!;
    expect(emu.state, emu.error).toBe('stopped');
    expect(pv.state, pv.error).toBe('stopped');
    const disk = emu.devices.find((d) => d.type === 'vbd')!;
    const nic = emu.devices.find((d) => d.type === 'vif')!;
    expect(disk.mode).toBe('emulated');
    expect(nic.mode).toBe('emulated');
    expect(disk.ops).toBeGreaterThan(0);
    expect(disk.detail.sectorsWritten).toBeGreaterThan(0);
    expect(disk.errors).toBe(0);
    // UDP both ways between the emulated NIC and the PV vif, every datagram verified.
    expect(emu.udp.echoed).toBeGreaterThan(0);
    expect(pv.udp.echoed).toBeGreaterThan(0);
    expect(emu.udp.corrupted + pv.udp.corrupted).toBe(0);
    expect(nic.detail.txPackets).toBeGreaterThan(0);
    expect(nic.detail.rxPackets).toBeGreaterThan(0);
    expect(s.integrity.checked).toBeGreaterThan(0);
    expect(s.integrity.failures).toBe(0);
    // The traps the guest's vCPU made are the ones dom0 served, two world switches each.
    const host = s.dom0.host0;
    const platform = host.emulated!.find((p) => p.guest === 'emu1')!;
    expect(platform.ioreq.traps).toBe(disk.detail.traps);
    expect(platform.ioreq.worldSwitches).toBe(2 * platform.ioreq.traps);
    expect(host.traps).toBe(platform.ioreq.traps);
    expect(platform.ioreq.unassigned).toBe(0);
    // A PIO sector is 256 data-port accesses: the disk alone accounts for more traps than that.
    expect(platform.ioreq.traps).toBeGreaterThan(256 * (disk.detail.sectorsRead + disk.detail.sectorsWritten));
    // The PV guest made none.
    expect(pv.devices.every((d) => d.mode === 'pv' && d.detail.traps === undefined)).toBe(true);
  }, 120_000);

  it('hosted placement: models in a VMApp per guest; the VMM optimisations cut world switches per packet; nothing lost', async () => {
    const cwd = tempDir();
    const { code, stderr } = await runCli(['up', '--config', join(ROOT, 'examples/emulation-hosted.yaml'), '--duration', '6', '--json', 'out.json'], cwd).done;
    expect(code, stderr).toBe(0);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary & {
      dom0: Record<string, { emulated?: Array<{ guest: string; placement: string; ioreq: { traps: number }; vmnet?: { writes: number; reads: number }; combined?: { sent: number } }> }>;
    };
    for (const g of s.guests) {
      expect(g.state, `${g.name}: ${g.error ?? ''}`).toBe('stopped');
      if (g.name === 'hostedDisk') continue;
      expect(g.udp.echoed, g.name).toBeGreaterThan(0);
      expect(g.udp.corrupted, g.name).toBe(0);
    }
    expect(s.integrity.failures).toBe(0);
    const nic = (name: string) => s.guests.find((g) => g.name === name)!.devices.find((d) => d.type === 'vif')!;
    const a = nic('hostedA').detail;
    const b = nic('hostedB').detail;
    // Unoptimised: the VMM forwards every access, two world switches each.
    expect(a.handledInVmm).toBe(0);
    expect(a.forwarded).toBe(a.traps);
    expect(a.worldSwitches).toBe(2 * a.traps);
    // Optimised: RAP and status reads stay in the VMM, transmits are combined.
    expect(b.handledInVmm).toBeGreaterThan(0);
    expect(b.combinedTransmits).toBeGreaterThan(0);
    const switchesPerPacket = (d: Record<string, number>) => d.worldSwitches / (d.txPackets + d.rxPackets);
    expect(switchesPerPacket(b)).toBeLessThan(switchesPerPacket(a));
    // The VMApp's VMNet writes are the frames the guest sent; what it read is what reached the guest.
    const hostedA = s.dom0.host0.emulated!.find((p) => p.guest === 'hostedA')!;
    expect(hostedA.placement).toBe('hosted');
    expect(hostedA.vmnet!.writes).toBe(a.txPackets);
    expect(hostedA.ioreq.traps).toBe(a.forwarded);
    const hostedB = s.dom0.host0.emulated!.find((p) => p.guest === 'hostedB')!;
    expect(hostedB.combined!.sent).toBeGreaterThan(0);
    // The hosted emulated disk verified too.
    const disk = s.guests.find((g) => g.name === 'hostedDisk')!.devices.find((d) => d.type === 'vbd')!;
    expect(disk.mode).toBe('emulated');
    expect(disk.detail.sectorsWritten).toBeGreaterThan(0);
    expect(disk.errors).toBe(0);
  }, 120_000);

  it('over ws, every runtime a process: hosted models in the guest\'s process, dom0 models over a vCPU link with streaming DMA; UDP and disks verify', async () => {
    const cwd = tempDir();
    const { code, stderr } = await runCli(['up', '--transport', 'ws', '--config', join(ROOT, 'examples/emulation-ws.yaml'), '--duration', '8', '--json', 'out.json'], cwd).done;
    expect(code, stderr).toBe(0);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary & {
      transport: string;
      dom0: Record<string, { emulated?: Array<{ guest: string; placement: string; ioreq: { traps: number }; vmnet?: { writes: number } }> }>;
    };
    expect(s.transport).toBe('ws');
    for (const g of s.guests) {
      expect(g.state, `${g.name}: ${g.error ?? ''}`).toBe('stopped');
      expect(g.udp.echoed, g.name).toBeGreaterThan(0);
      expect(g.udp.corrupted, g.name).toBe(0);
    }
    // Every block of every disk read back and verified, emulated ones included.
    expect(s.integrity.failures).toBe(0);
    for (const name of ['emu1', 'hvm1']) {
      const g = s.guests.find((x) => x.name === name)!;
      expect(g.devices.map((d) => d.mode)).toEqual(['emulated', 'emulated']);
      expect(g.devices.find((d) => d.type === 'vbd')!.detail.sectorsWritten, name).toBeGreaterThan(0);
      expect(g.devices.find((d) => d.type === 'vif')!.detail.rxPackets, name).toBeGreaterThan(0);
    }
    expect(s.guests.find((g) => g.name === 'emu1')!.devices.find((d) => d.type === 'vif')!.detail.handledInVmm).toBeGreaterThan(0);
    const platforms = s.dom0.host0.emulated!;
    const hosted = platforms.find((p) => p.guest === 'emu1')!;
    expect(hosted.placement).toBe('hosted');
    expect(hosted.vmnet!.writes).toBeGreaterThan(0);
    // Models in dom0: every trap the guest's vCPU made crossed the vCPU link and was served here.
    const inDom0 = platforms.find((p) => p.guest === 'hvm1')!;
    expect(inDom0.placement).toBe('dom0');
    const hvm = s.guests.find((g) => g.name === 'hvm1')!.devices.find((d) => d.type === 'vif')!;
    expect(inDom0.ioreq.traps).toBe(hvm.detail.traps);
  }, 120_000);
});
