/**
 * Watching emulated devices, end to end: `ringvisor up --config examples/emulation.yaml
 * --observe` in its own process (emu1: an emulated Lance NIC and ATA disk whose models run in
 * dom0; pv1: split drivers), then the view commands in their own processes against its control
 * endpoint. Checked: list and the snapshot show the emulated devices with their mode, model
 * state, ports, and traps that grow; top shows traps and world switches per host and per device;
 * `trace --kind trap` streams the vCPU's port accesses, all at the devices' ports; /metrics has
 * per-device trap and interrupt series. Then examples/emulation-hosted.yaml: models hosted in
 * VMApps show up the same way, and the host's traps count them. Every process is killed by pid
 * when its suite ends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { ClusterSnapshot, DeviceRow, DomainRow } from '../src/observe/model.js';
import { ROOT, cleanUp, runCli, tempDir, until, type CliResult } from './support/cli.js';

let cwd: string;
let cluster: ChildProcess | undefined;
let url: string;
let token: string;

/** Lance windows are 32 ports from 0xc000; the primary ATA channel is 0x1f0–0x1f7 plus 0x3f6. */
const isLancePort = (p: number) => p >= 0xc000 && p <= 0xc01f;
const isAtaPort = (p: number) => (p >= 0x1f0 && p <= 0x1f7) || p === 0x3f6;

async function cli(args: string[]): Promise<CliResult> {
  const { child, done } = runCli(args, cwd);
  const kill = setTimeout(() => child.pid && child.exitCode === null && process.kill(child.pid, 'SIGKILL'), 30_000);
  const r = await done;
  clearTimeout(kill);
  return r;
}

async function snapshot(): Promise<ClusterSnapshot> {
  const res = await fetch(`${url}/api/snapshot`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as ClusterSnapshot;
}


function domain(s: ClusterSnapshot, name: string): DomainRow {
  const d = s.domains.find((x) => x.name === name);
  expect(d, `${name} in ${s.domains.map((x) => x.name).join(',')}`).toBeDefined();
  return d!;
}

function device(d: DomainRow, prefix: string): DeviceRow {
  const x = d.devices.find((v) => v.name.startsWith(prefix));
  expect(x, `${d.name}: ${prefix}* in ${d.devices.map((v) => v.name).join(',')}`).toBeDefined();
  return x!;
}

/** `ringvisor up --config CONFIG --observe` in a fresh directory; resolves once it prints its dashboard URL. */
async function startCluster(config: string): Promise<void> {
  cwd = tempDir('rv-observe-emu-');
  const child = runCli(['up', '--config', join(ROOT, 'examples', config), '--duration', '180', '--observe', '127.0.0.1:0'], cwd).child;
  cluster = child;
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + String(d)).slice(-4_000)));
  const line = await new Promise<string>((res, rej) => {
    let buf = '';
    const t = setTimeout(() => rej(new Error(`cluster did not print its dashboard URL: ${buf}${err}`)), 45_000);
    child.stdout!.on('data', (d) => {
      buf += d;
      const m = /ringvisor: dashboard (\S+)/.exec(buf);
      if (m) {
        clearTimeout(t);
        res(m[1]);
      }
    });
    child.once('exit', (code) => rej(new Error(`cluster exited (${code}): ${err}`)));
  });
  const u = new URL(line);
  url = u.origin;
  token = u.searchParams.get('token')!;
}

/** An orderly stop first (SIGINT, by pid); cleanUp() SIGKILLs whatever is left and removes the directories. */
async function stopCluster(): Promise<void> {
  const c = cluster;
  cluster = undefined;
  if (c?.pid && c.exitCode === null && c.signalCode === null) {
    const exited = new Promise((r) => c.once('exit', r));
    process.kill(c.pid, 'SIGINT');
    const t = setTimeout(() => c.exitCode === null && c.signalCode === null && process.kill(c.pid!, 'SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }
  cleanUp();
}

describe('views of emulated devices (models in dom0)', () => {
  beforeAll(() => startCluster('emulation.yaml'), 60_000);
  afterAll(stopCluster, 40_000);

  it('ringvisor list shows each device with its mode; the emulated ones trap, more at each sample', async () => {
    const r = await cli(['list']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^Name\s+ID\s+Mem\(MiB\)\s+VCPUs\s+State\s+Time\(s\)\s+Host\s+Devices\s+PID$/);
    const devicesOf = (name: string) => lines.find((l) => l.startsWith(name + ' '))?.split(/\s+/)[7];
    expect(devicesOf('emu1')?.split(',').sort()).toEqual(['ata51712:emulated', 'lance0:emulated']);
    expect(devicesOf('pv1')?.split(',').sort()).toEqual(['vbd51712:pv', 'vif0:pv']);
    expect(devicesOf('Domain-0')).toBe('-');

    type Listed = Array<{ name: string; devices: Array<{ name: string; type: string; mode: string; traps?: number }> }>;
    const listJson = async () => {
      const x = await cli(['list', '--json']);
      expect(x.code, x.stderr).toBe(0);
      return JSON.parse(x.stdout) as Listed;
    };
    const trapsOf = (l: Listed) => new Map(l.find((d) => d.name === 'emu1')!.devices.map((v) => [v.name, v.traps ?? -1]));
    const first = await until('traps on both emulated devices', async () => {
      const t = trapsOf(await listJson());
      return t.get('lance0')! > 0 && t.get('ata51712')! > 0 ? t : undefined;
    });
    // The snapshot is resampled every second: a later one has counted more of the guest's accesses.
    const later = await until('traps growing', async () => {
      const t = trapsOf(await listJson());
      return t.get('lance0')! > first.get('lance0')! && t.get('ata51712')! > first.get('ata51712')! ? t : undefined;
    });
    expect(later.size).toBe(2);
    const pv = (await listJson()).find((d) => d.name === 'pv1')!;
    expect(pv.devices.map((v) => [v.mode, v.traps])).toEqual([
      ['pv', undefined],
      ['pv', undefined],
    ]);
  });

  it('the snapshot carries the models: state, ports, traps/s and interrupts per device; totals from the models; no rings', async () => {
    const s = await until('trap and interrupt rates on both emulated devices', async () => {
      const x = await snapshot();
      const emu = domain(x, 'emu1');
      const io = emu.netTxPackets > 0 && emu.netRxPackets > 0 && emu.vbdReads + emu.vbdWrites > 0;
      return io && emu.devices.every((v) => (v.trapsPerSec ?? 0) > 0 && (v.interrupts ?? 0) > 0) ? x : undefined;
    });
    const emu = domain(s, 'emu1');
    const nic = device(emu, 'lance');
    const disk = device(emu, 'ata');
    expect(nic).toMatchObject({ type: 'vif', mode: 'emulated', placement: 'dom0', devid: 0, backendState: 'running', frontendState: '-', ports: ['0xc000-0xc01f'] });
    expect(disk).toMatchObject({ type: 'vbd', mode: 'emulated', placement: 'dom0', devid: 51712, frontendState: '-', ports: ['0x1f0-0x1f7', '0x3f6'] });
    expect(['idle', 'pio-in', 'pio-out', 'busy (read)', 'busy (write)', 'busy (flush)', 'srst', 'resetting']).toContain(disk.backendState);
    // No event channels or rings of their own: their I/O is traps, their notifications interrupts.
    for (const v of [nic, disk]) expect([v.events, v.notifications, v.suppressed]).toEqual([0, 0, 0]);
    expect(s.rings.filter((r) => r.domain === 'emu1')).toEqual([]);
    expect(s.rings.filter((r) => r.domain === 'pv1').length).toBeGreaterThan(0);
    // The disk's totals are the ATA model's: commands and the sectors they moved.
    expect(emu.vbdReads + emu.vbdWrites).toBeGreaterThan(0);
    expect(emu.vbdSectorsRead + emu.vbdSectorsWritten).toBeGreaterThanOrEqual(emu.vbdReads + emu.vbdWrites);
    // Traps add up: the devices' are the domain's (no unassigned ports), which are the host's (the
    // only emulated guest), two world switches each; a PIO sector is 256 data-port accesses.
    expect(emu.traps).toBe(nic.traps! + disk.traps!);
    const host = s.hosts[0];
    expect(host.traps).toBe(emu.traps);
    expect(host.worldSwitches).toBe(2 * host.traps);
    expect(disk.traps!).toBeGreaterThanOrEqual(256 * (emu.vbdSectorsRead + emu.vbdSectorsWritten));
    expect(host.trapsPerSec).toBeGreaterThan(0);
    expect(host.worldSwitchesPerSec).toBeGreaterThan(0);
    const pv = domain(s, 'pv1');
    expect(pv.traps).toBeUndefined();
    expect(pv.devices.every((v) => v.mode === 'pv' && v.traps === undefined && v.frontendState === 'Connected')).toBe(true);
  });

  it('ringvisor top shows traps/s and world switches/s per host, traps/s per domain and a line per emulated device', async () => {
    const r = await cli(['top', '-b', '-n', '2', '-d', '1']);
    expect(r.code, r.stderr).toBe(0);
    const last = r.stdout.split(/^ringvisor top — /m).at(-1)!;
    const hostLine = /^host0: .*traps\/s (\d+)\s+world switches\/s (\d+)/m.exec(last);
    expect(hostLine, last).not.toBeNull();
    expect(Number(hostLine![1])).toBeGreaterThan(0);
    expect(Number(hostLine![2])).toBeGreaterThan(0);
    const lines = last.split('\n');
    const head = lines.find((l) => l.startsWith('NAME '))!.split(/\s+/);
    const col = (name: string, c: string) => lines.find((l) => l.startsWith(name + ' '))!.split(/\s+/)[head.indexOf(c)];
    expect(Number(col('emu1', 'TRAP/s'))).toBeGreaterThan(0);
    expect(col('pv1', 'TRAP/s')).toBe('-');
    expect(last).toMatch(/^DEVICE\s+TYPE\s+MODEL_IN\s+STATE\s+PORTS\s+TRAPS\s+TRAP\/s\s+IRQS\s+IRQ\/s$/m);
    const nic = /^host0\/emu1\/lance0\s+vif\s+dom0\s+running\s+0xc000-0xc01f\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(last);
    const disk = /^host0\/emu1\/ata51712\s+vbd\s+dom0\s+\S+(?: \(\w+\))?\s+0x1f0-0x1f7,0x3f6\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(last);
    expect(nic, last).not.toBeNull();
    expect(disk, last).not.toBeNull();
    for (const m of [nic!, disk!]) {
      expect(Number(m[1])).toBeGreaterThan(0); // traps
      expect(Number(m[3])).toBeGreaterThan(0); // interrupts
    }
    expect(last).not.toMatch(/^host0\/pv1\//m);
  });

  it('ringvisor trace --kind trap streams the vCPU port accesses of the emulated guest only, at the devices ports', async () => {
    const r = await cli(['trace', '--kind', 'trap', '--count', '5000']);
    expect(r.code, r.stderr).toBe(0);
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string; host: string; domid: number; port: number; size: number; write: boolean; value?: number });
    expect(events).toHaveLength(5000);
    const emuId = domain(await snapshot(), 'emu1').domid;
    for (const e of events) {
      expect(e).toMatchObject({ kind: 'trap', host: 'host0', domid: emuId });
      expect(isLancePort(e.port) || isAtaPort(e.port), `port 0x${e.port.toString(16)}`).toBe(true);
      expect([1, 2, 4]).toContain(e.size);
      // A write carries the value written; a read's value is the model's answer, not traced.
      expect(typeof e.value === 'number').toBe(e.write);
    }
    // Both models are busy: the NIC's register window and the disk's taskfile each see accesses.
    expect(events.some((e) => isLancePort(e.port))).toBe(true);
    expect(events.some((e) => isAtaPort(e.port))).toBe(true);
    // The ATA data port (0x1f0) moves sectors 16 bits at a time.
    expect(events.some((e) => e.port === 0x1f0 && e.size === 2)).toBe(true);
  });

  it('/metrics has per-device trap and interrupt counters labelled with the mode, and the host world switches', async () => {
    const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const body = await res.text();
    const value = (re: RegExp) => Number(re.exec(body)?.[1]);
    expect(body).toContain('# TYPE ringvisor_device_traps_total counter');
    expect(body).toContain('# TYPE ringvisor_device_interrupts_total counter');
    for (const dev of ['lance0', 'ata51712']) {
      expect(value(new RegExp(`^ringvisor_device_traps_total\\{host="host0",domain="emu1",device="${dev}",mode="emulated"\\} (\\d+)$`, 'm'))).toBeGreaterThan(0);
      expect(value(new RegExp(`^ringvisor_device_interrupts_total\\{host="host0",domain="emu1",device="${dev}",mode="emulated"\\} (\\d+)$`, 'm'))).toBeGreaterThan(0);
    }
    // PV devices do not trap: no series for them.
    expect(body).not.toMatch(/^ringvisor_device_traps_total\{[^}]*mode="pv"/m);
    const traps = value(/^ringvisor_traps_total\{host="host0"\} (\d+)$/m);
    expect(traps).toBeGreaterThan(0);
    expect(value(/^ringvisor_domain_traps_total\{host="host0",domain="emu1"\} (\d+)$/m)).toBe(traps);
    expect(value(/^ringvisor_world_switches_total\{host="host0"\} (\d+)$/m)).toBe(2 * traps);
    // The model's frames count as the guest's network traffic.
    expect(value(/^ringvisor_vif_tx_packets_total\{host="host0",domain="emu1"\} (\d+)$/m)).toBeGreaterThan(0);
  });
});

describe('views of emulated devices hosted in VMApps', () => {
  beforeAll(() => startCluster('emulation-hosted.yaml'), 60_000);
  afterAll(stopCluster, 40_000);

  it('hosted models show as emulated devices placed in a VMApp, with the traps they served; the host counts them', async () => {
    const s = await until('traps, interrupts and I/O on every emulated device', async () => {
      const x = await snapshot();
      const devs = x.domains.flatMap((d) => d.devices.filter((v) => v.mode === 'emulated').map((v) => ({ d, v })));
      const busy = ({ d, v }: { d: DomainRow; v: DeviceRow }) =>
        (v.traps ?? 0) > 0 && (v.interrupts ?? 0) > 0 && (v.type === 'vif' ? d.netTxPackets > 0 : d.vbdReads + d.vbdWrites > 0);
      return devs.length === 4 && devs.every(busy) ? x : undefined;
    });
    for (const name of ['hostedA', 'hostedB']) {
      const d = domain(s, name);
      expect(device(d, 'lance')).toMatchObject({ type: 'vif', mode: 'emulated', placement: 'hosted', backendState: 'in VMApp', frontendState: '-', ports: ['0xc000-0xc01f'] });
      expect(d.netTxPackets, name).toBeGreaterThan(0);
      expect(d.traps, name).toBe(device(d, 'lance').traps);
    }
    const disk = domain(s, 'hostedDisk');
    expect(device(disk, 'ata')).toMatchObject({ type: 'vbd', mode: 'emulated', placement: 'hosted', ports: ['0x1f0-0x1f7', '0x3f6'] });
    expect(disk.vbdReads + disk.vbdWrites).toBeGreaterThan(0);
    expect(device(domain(s, 'hvm1'), 'lance')).toMatchObject({ placement: 'dom0', backendState: 'running' });
    // The host's traps are every model's, in dom0 (hvm1) and in the VMApps alike.
    const emulated = s.domains.filter((d) => d.traps !== undefined);
    expect(emulated.map((d) => d.name).sort()).toEqual(['hostedA', 'hostedB', 'hostedDisk', 'hvm1']);
    expect(s.hosts[0].traps).toBe(emulated.reduce((a, d) => a + d.traps!, 0));
    expect(s.hosts[0].worldSwitches).toBe(2 * s.hosts[0].traps);

    const r = await cli(['list']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^hostedA\s.*\slance0:emulated\s+-$/m);
    expect(r.stdout).toMatch(/^hostedDisk\s.*\sata51712:emulated\s+-$/m);
    const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(Number(/^ringvisor_device_traps_total\{host="host0",domain="hostedB",device="lance0",mode="emulated"\} (\d+)$/m.exec(await res.text())?.[1])).toBeGreaterThan(0);
  });

  it('ringvisor trace shows the traps a hosted VMApp served (forwarded from its thread), named by device and pinned to its guest', async () => {
    const r = await cli(['trace', '--kind', 'trap', '--domain', 'hostedDisk', '--count', '200']);
    expect(r.code, r.stderr).toBe(0);
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string; domid: number; device?: string; port: number });
    expect(events).toHaveLength(200);
    const id = domain(await snapshot(), 'hostedDisk').domid;
    for (const e of events) {
      expect(e).toMatchObject({ kind: 'trap', domid: id, device: 'ata51712' });
      expect(isAtaPort(e.port)).toBe(true);
    }
  });
});
