import { describe, expect, it } from 'vitest';
import type { ClusterSnapshot, DeviceRow, DomainRow, HostRow } from '../../../observe/model.js';
import { renderTopTable } from './top.js';

function device(type: DeviceRow['type'], mode: DeviceRow['mode'], name: string): DeviceRow {
  return { type, mode, name, devid: 0, backendState: 'Connected' } as DeviceRow;
}

function domain(domid: number, name: string, devices: DeviceRow[]): DomainRow {
  return {
    host: 'host0', domid, name, state: 'running', memKiB: 65536, vcpus: 1, uptimeSec: 3, cpuPct: 1, netTxPackets: 0, netTxBytes: 0, netRxPackets: 0,
    netRxBytes: 0, vbdReads: 0, vbdWrites: 0, vbdSectorsRead: 0, vbdSectorsWritten: 0, eventsPerSec: 0, integrityChecked: 0, integrityFailures: 0, devices,
  };
}

function snapshot(domains: DomainRow[]): ClusterSnapshot {
  const host = { name: 'host0', eventsPerSec: 0, notificationsPerSec: 0, suppressedPerSec: 0, trapsPerSec: 0, worldSwitchesPerSec: 0, grantOpsPerSec: 0 } as HostRow;
  return { time: 0, uptimeSec: 3, transport: 'threads', hosts: [host], runtimes: [], domains, rings: [], timeline: [] };
}

describe('ringvisor top', () => {
  it("shows each domain's device modes: one mode when its devices share it, else each type's", () => {
    const out = renderTopTable(
      snapshot([
        domain(0, 'Domain-0', []),
        domain(1, 'guest1', [device('vbd', 'pv', 'vbd51712'), device('vif', 'pv', 'vif0')]),
        domain(4, 'guest4', [device('vbd', 'emulated', 'ata0'), device('vif', 'emulated', 'lance0')]),
        domain(5, 'guest5', [device('vbd', 'direct', 'vbd51712'), device('vif', 'direct', 'vif0')]),
        domain(6, 'mixed', [device('vbd', 'svio', 'vbd51712'), device('vbd', 'svio', 'vbd51728'), device('vif', 'pv', 'vif0')]),
      ]),
    );
    const lines = out.split('\n');
    const head = lines.find((l) => l.startsWith('NAME '))!.split(/\s+/);
    const modes = (name: string) => lines.find((l) => l.startsWith(name + ' '))!.split(/\s+/)[head.indexOf('MODES')];
    expect(head.indexOf('MODES')).toBeGreaterThan(0);
    expect(modes('Domain-0')).toBe('-');
    expect(modes('guest1')).toBe('pv');
    expect(modes('guest4')).toBe('emulated');
    expect(modes('guest5')).toBe('direct');
    expect(modes('mixed')).toBe('vbd:svio,vif:pv');
  });
});
