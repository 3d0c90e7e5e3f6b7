import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@ringvisor/shared';
import { defaultConfig, loadConfigFile, normalizeConfig } from './config.js';

describe('cluster config', () => {
  it('the default is one host, three PV guests, an emulated one and a direct one, each with a vbd, a vif and both workloads', () => {
    const c = defaultConfig();
    expect(c.hosts).toHaveLength(1);
    const guests = c.hosts[0].guests;
    expect(guests.map((g) => g.name)).toEqual(['guest1', 'guest2', 'guest3', 'guest4', 'guest5']);
    for (const g of guests) {
      expect(g.devices.map((d) => d.type).sort()).toEqual(['vbd', 'vif']);
      expect(g.workloads.block).toBeDefined();
      expect(g.workloads.udp).toBeDefined();
    }
    expect(guests.map((g) => [...new Set(g.devices.map((d) => d.mode))].join())).toEqual(['pv', 'pv', 'pv', 'emulated', 'direct']);
    // PIO is slow: the emulated disk's block workload is smaller and one request deep.
    expect(guests[3].workloads.block).toEqual({ blocks: 32, queueDepth: 1 });
    const ips = guests.map((g) => g.devices.find((d) => d.type === 'vif')!).map((d) => (d.type === 'vif' ? d.ip : ''));
    expect(new Set(ips).size).toBe(5);
    expect(guests[3].devices.every((d) => 'placement' in d && d.placement === 'dom0')).toBe(true);
    // Over ws (no memory shared with dom0) the emulated guest's models run hosted, in its own process.
    const ws = defaultConfig({ transport: 'ws' }).hosts[0].guests;
    expect(ws.map((g) => g.name)).toEqual(['guest1', 'guest2', 'guest3', 'guest4', 'guest5']);
    expect(ws[3].devices.every((d) => d.mode === 'emulated' && d.placement === 'hosted')).toBe(true);
    expect(defaultConfig({ emulatedGuest: false, directGuest: false }).hosts[0].guests.map((g) => g.name)).toEqual(['guest1', 'guest2', 'guest3']);
  });

  it('SV-IO devices: vifs, vbds and cameras, their weights, and the mistakes people make', () => {
    const one = (devices: unknown[]) => normalizeConfig({ hosts: [{ guests: [{ name: 'g', devices, workloads: {} }] }] }).hosts[0].guests[0];
    const g = one([{ type: 'vif', mode: 'svio', weight: 300 }, { type: 'vbd', mode: 'svio', sizeMiB: 4 }, { type: 'cam', fps: 15 }]);
    expect(g.devices.map((d) => [d.type, d.mode, d.devid])).toEqual([
      ['vif', 'svio', 0],
      ['vbd', 'svio', 51712],
      ['cam', 'svio', 0],
    ]);
    expect(g.devices[0]).toMatchObject({ weight: 300 });
    expect(g.devices[2]).toMatchObject({ width: 160, height: 120, fps: 15 });
    expect(() => one([{ type: 'cam', mode: 'pv' }])).toThrow(/a camera is reached as an SV-IO VIF only \(mode: svio\)/);
    expect(() => one([{ type: 'cam', sizeMiB: 4 }])).toThrow(/cam: "sizeMiB" does not apply to a camera/);
    expect(() => one([{ type: 'vif', weight: 2 }])).toThrow(/"weight" is an SV-IO VIF's QoS share/);
    expect(() => one([{ type: 'vbd', width: 2 }])).toThrow(/"width" belongs on a cam/);
    // A credit limit on an SV-IO VIF, net or block; blkback has none.
    expect(one([{ type: 'vbd', mode: 'svio', rate: '65536,10000' }]).devices[0]).toMatchObject({ rate: '65536,10000' });
    expect(one([{ type: 'vif', mode: 'svio', rate: '125000,10000' }]).devices[0]).toMatchObject({ rate: '125000,10000' });
    expect(() => one([{ type: 'vbd', rate: '65536,10000' }])).toThrow(/blkback has no credit limit/);
    expect(() => one([{ type: 'vif', mode: 'direct', rate: '65536,10000' }])).toThrow(/a direct device has none/);
    expect(() => one([{ type: 'vbd', mode: 'svio', rate: '0,10000' }])).toThrow(/guest g vbd.*"bytes,usec" with bytes ≥ 1/);
  });

  it('emulated devices: placement, the hosted VMM optimisations, and the mistakes people make', () => {
    const one = (devices: unknown[]) => normalizeConfig({ hosts: [{ guests: [{ name: 'g', devices, workloads: {} }] }] }).hosts[0].guests[0];
    const g = one([{ type: 'vif', mode: 'emulated', placement: 'hosted', vmmIo: true, sendCombining: true }, { type: 'vbd', mode: 'emulated', placement: 'hosted' }]);
    expect(g.devices[0]).toMatchObject({ mode: 'emulated', placement: 'hosted', vmmIo: true, sendCombining: true });
    expect(g.devices[1]).toMatchObject({ mode: 'emulated', placement: 'hosted' });
    expect(one([{ type: 'vif', mode: 'emulated' }]).devices[0]).toMatchObject({ placement: 'dom0' });
    expect(() => one([{ type: 'vif', placement: 'hosted' }])).toThrow(/"placement" applies to mode: emulated only/);
    expect(() => one([{ type: 'vif', mode: 'emulated', vmmIo: true }])).toThrow(/optimisation of the hosted VMM/);
    expect(() => one([{ type: 'vbd', mode: 'emulated', placement: 'hosted', sendCombining: true }])).toThrow(/optimisation of the hosted VMM/);
    expect(() => one([{ type: 'vif', mode: 'emulated', rate: '1000,1000' }])).toThrow(/credit limit/);
    expect(() => one([{ type: 'vif', mode: 'emulated' }, { type: 'vbd', mode: 'emulated', placement: 'hosted' }])).toThrow(/mixes placements/);
    expect(() => one([1, 2, 3].map((devid) => ({ type: 'vbd', devid, mode: 'emulated' })))).toThrow(/two ATA channels/);
    expect(() => one([{ type: 'vif', mode: 'magic' }])).toThrow(/must be one of pv, emulated/);
  });

  it('loads YAML and JSON files with the same meaning', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rv-cfg-'));
    try {
      writeFileSync(join(dir, 'c.yaml'), 'seed: 7\nhosts:\n  - name: h\n    guests:\n      - name: a\n        devices: [{ type: vif, rate: "125000,10000" }]\n        workloads: { udp: { peers: all } }\n');
      writeFileSync(
        join(dir, 'c.json'),
        JSON.stringify({ seed: 7, hosts: [{ name: 'h', guests: [{ name: 'a', devices: [{ type: 'vif', rate: '125000,10000' }], workloads: { udp: { peers: 'all' } } }] }] }),
      );
      const y = loadConfigFile(join(dir, 'c.yaml'));
      expect(loadConfigFile(join(dir, 'c.json'))).toEqual(y);
      expect(y.seed).toBe(7);
      const vif = y.hosts[0].guests[0].devices[0];
      expect(vif.type === 'vif' && vif.rate).toBe('125000,10000');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [{ hosts: [{ guests: [{ name: 'a', memoryMB: 3 }] }] }, /\/hosts\/0\/guests\/0: unknown key "memoryMB"/],
    [{ hosts: [{ guests: [{ name: 'a', devices: [{ type: 'floppy' }] }] }] }, /\/hosts\/0\/guests\/0\/devices\/0\/type: must be one of vbd, vif/],
    [{ hosts: [{ guests: [{ name: 'a' }, { name: 'a' }] }] }, /guest name "a" appears twice/],
    [{ hosts: [{ guests: [{ name: 'a', devices: [{ type: 'vif' }], workloads: { block: {} } }] }] }, /block workload but has no vbd/],
    [{ hosts: [{ guests: [{ name: 'a', workloads: { udp: { peers: ['b'] } } }] }] }, /udp peer "b" is not another guest/],
    [{ hosts: [{ disk: { sizeMiB: 8 }, guests: [{ name: 'a', devices: [{ type: 'vbd', sizeMiB: 16 }] }] }] }, /need 16 MiB of vbds but its disk is 8 MiB/],
    [{ hosts: [{ guests: [{ name: 'a', devices: [{ type: 'vbd', mac: '00:16:3e:00:00:01' }] }] }] }, /"mac" belongs on a vif/],
  ])('rejects %j with a message naming the problem', (raw, msg) => {
    expect(() => normalizeConfig(raw)).toThrow(ConfigError);
    expect(() => normalizeConfig(raw)).toThrow(msg);
  });

  it('reports unreadable and unparsable files clearly', () => {
    expect(() => loadConfigFile('/nonexistent/ringvisor.yaml')).toThrow(/cannot read config \/nonexistent\/ringvisor.yaml/);
    const dir = mkdtempSync(join(tmpdir(), 'rv-cfg-'));
    try {
      writeFileSync(join(dir, 'bad.json'), '{ "hosts": [');
      expect(() => loadConfigFile(join(dir, 'bad.json'))).toThrow(/is not valid JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
