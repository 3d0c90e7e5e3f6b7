import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import type { DeviceKind, DeviceMode, GuestBootSpec } from '@ringvisor/shared';
import { GUEST_DEVICE_ENTRIES, UnknownDeviceModeError, bootDevices, directFunctionDevice, guestDeviceEntry, statsRank, statsType, svioVifDevice } from './registry.js';

/** What a guest's configuration allows: block and network devices in every mode, cameras over SV-IO. */
const MODES: readonly DeviceMode[] = ['pv', 'emulated', 'direct', 'svio'];
const ALLOWED: ReadonlyArray<[DeviceKind, DeviceMode]> = [...MODES.map((m): [DeviceKind, DeviceMode] => ['blk', m]), ...MODES.map((m): [DeviceKind, DeviceMode] => ['net', m]), ['cam', 'svio']];

describe('guest device registry', () => {
  it('has exactly one entry for every kind × mode the configuration allows', () => {
    for (const [kind, mode] of ALLOWED) {
      const e = guestDeviceEntry(kind, mode);
      expect(e.kind).toBe(kind);
      expect(e.mode).toBe(mode);
      expect(GUEST_DEVICE_ENTRIES.filter((x) => x.kind === kind && x.mode === mode)).toHaveLength(1);
    }
    expect(GUEST_DEVICE_ENTRIES).toHaveLength(ALLOWED.length);
  });

  it('refuses an unknown pair with a typed error', () => {
    for (const [kind, mode] of [
      ['cam', 'pv'],
      ['cam', 'emulated'],
      ['blk', 'hosted'],
      ['tape', 'svio'],
    ]) {
      let err: unknown;
      try {
        guestDeviceEntry(kind, mode);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UnknownDeviceModeError);
      expect(err).toMatchObject({ code: 'RV_ERR_INVALID_ARG', kind, mode });
    }
  });

  it('lists the boot spec in boot order (block devices, cameras, network interfaces), pv by default', () => {
    const spec = {
      vbds: [{ devid: 51712 }, { devid: 51728, mode: 'svio' }],
      vifs: [{ devid: 0, ip: '10.0.0.2', mac: '00:16:3e:00:00:02', mode: 'emulated' }, { devid: 1, ip: '10.0.1.2', mac: '00:16:3e:00:01:02' }],
      svio: { vifs: [{ kind: 'blk', devid: 51728, vif: 1, port: 5 }, { kind: 'cam', devid: 0, vif: 2, port: 6 }] },
    } as unknown as GuestBootSpec;
    expect(bootDevices(spec)).toEqual([
      { kind: 'blk', mode: 'pv', devid: 51712 },
      { kind: 'blk', mode: 'svio', devid: 51728 },
      { kind: 'cam', mode: 'svio', devid: 0 },
      { kind: 'net', mode: 'emulated', devid: 0, ip: '10.0.0.2', mac: '00:16:3e:00:00:02' },
      { kind: 'net', mode: 'pv', devid: 1, ip: '10.0.1.2', mac: '00:16:3e:00:01:02' },
    ]);
  });

  it('orders stats by mode (pv, emulated, direct, SV-IO), block before network, cameras last', () => {
    const order = ALLOWED.map(([k, m]) => ({ k, m, r: statsRank(k, m) })).sort((a, b) => a.r - b.r).map((x) => `${x.k}/${x.m}`);
    expect(order).toEqual(['blk/pv', 'net/pv', 'blk/emulated', 'net/emulated', 'blk/direct', 'net/direct', 'blk/svio', 'net/svio', 'cam/svio']);
    expect([statsType('blk'), statsType('net'), statsType('cam')]).toEqual(['vbd', 'vif', 'cam']);
  });

  it('maps a direct function and an SV-IO VIF onto the device they belong to, and refuses other kinds', () => {
    expect(directFunctionDevice({ kind: 'disk', devid: 51712 })).toEqual({ kind: 'blk', mode: 'direct', devid: 51712 });
    expect(directFunctionDevice({ kind: 'nic', devid: 0 })).toEqual({ kind: 'net', mode: 'direct', devid: 0 });
    expect(svioVifDevice({ kind: 'cam', devid: 0 })).toEqual({ kind: 'cam', mode: 'svio', devid: 0 });
    expect(() => directFunctionDevice({ kind: 'gpu', devid: 0 })).toThrow(expect.objectContaining({ code: 'RV_ERR_NO_SUCH_DEVICE' }));
    expect(() => svioVifDevice({ kind: 'tape', devid: 0 })).toThrow(expect.objectContaining({ code: 'RV_ERR_NO_SUCH_DEVICE' }));
  });
});

describe('the guest branches on no mode or kind', () => {
  // Modes and kinds are compared only in the registry and the device folders.
  const literal = `'(?:pv|emulated|direct|svio|vbd|vif|cam|blk|net)'`;
  const comparison = new RegExp(`[!=]==?\\s*${literal}|${literal}\\s*[!=]==?|case\\s+${literal}`);
  for (const file of ['../guest.ts', '../runtime.ts']) {
    it(`${file.slice(3)} compares no mode or kind string`, () => {
      const lines = readFileSync(new URL(file, import.meta.url), 'utf8').split('\n');
      expect(lines.filter((l) => comparison.test(l))).toEqual([]);
    });
  }
});
