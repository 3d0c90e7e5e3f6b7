/** What a guest runtime is told at boot: its domain, memory, devices per mode, and workloads. */
import type { GuestBootSpec } from '@ringvisor/shared';
import type { Domain } from '../hypervisor/hypervisor.js';
import type { EmulatedPlatform } from '../devicemodels/platform.js';
import type { GuestConfig, HostConfig } from './config.js';
import { directSpec, vifSpec, type AssignedFunction, type BoundVif } from './host-types.js';
import { vbdsOf, vifsOf } from './device-kinds.js';

export interface BootSpecInput {
  host: HostConfig;
  seed: number;
  guest: GuestConfig;
  domain: Domain;
  /** Every guest's IP by name (UDP peers are named). */
  ips: Map<string, string>;
  /** threads with shared memory: the event memory every runtime shares; undefined for linked guests. */
  eventMemory?: SharedArrayBuffer;
  platform?: EmulatedPlatform;
  vifs: BoundVif[];
  functions: AssignedFunction[];
  /** ws: where the guest reaches the hardware for direct I/O and SV-IO. */
  hwUrl: { hwUrl?: string };
}

/** The UDP peers a guest's workload sends to: named guests by their IP, or IPs as given. */
function udpPeers(guest: GuestConfig, ips: Map<string, string>): Array<{ name: string; ip: string }> {
  const udp = guest.workloads.udp;
  if (!udp) return [];
  return (udp.peers === 'all' ? [...ips.keys()].filter((n) => n !== guest.name) : udp.peers).flatMap((name) => {
    const ip = /^\d+\.\d+\.\d+\.\d+$/.test(name) ? name : ips.get(name);
    return ip ? [{ name, ip }] : [];
  });
}

/** The guest's workloads as its runtime runs them (block and io on its first vbd, UDP on its vifs). */
function workloadsSpec(i: BootSpecInput, vbds: GuestBootSpec['vbds'], hasVifs: boolean): GuestBootSpec['workloads'] {
  const { guest } = i;
  const udp = guest.workloads.udp;
  return {
    ...(guest.workloads.block && vbds.length ? { block: { devid: vbds[0].devid, ...guest.workloads.block, ...(i.host.disk.cache === 'writeback' ? { volatileCache: true } : {}) } } : {}),
    ...(guest.workloads.io && vbds.length
      ? {
          io: {
            devid: vbds[0].devid,
            op: guest.workloads.io.op,
            pattern: guest.workloads.io.pattern,
            blockBytes: guest.workloads.io.blockKiB * 1024,
            queueDepth: guest.workloads.io.queueDepth,
            regionBytes: guest.workloads.io.regionMiB * 1024 * 1024,
          },
        }
      : {}),
    ...(udp && hasVifs ? { udp: { peers: udpPeers(guest, i.ips), payloadBytes: udp.payloadBytes, window: udp.window, ...(udp.mode ? { mode: udp.mode, ratePps: udp.ratePps ?? 0 } : {}) } } : {}),
  };
}

export function guestBootSpec(i: BootSpecInput): GuestBootSpec {
  const { guest, domain } = i;
  const vifs = vifsOf(guest.devices).map((d) => ({ devid: d.devid, ip: d.ip, mac: d.mac, mode: d.mode }));
  const vbds = vbdsOf(guest.devices).map((d) => ({ devid: d.devid, mode: d.mode }));
  return {
    domid: domain.domid,
    name: guest.name,
    host: i.host.name,
    seed: i.seed * 1000 + domain.domid,
    memoryFrames: domain.memory.frames,
    ...(i.eventMemory ? { shared: { memory: domain.memory.buffer, grantTable: domain.grantTable, eventMemory: i.eventMemory } } : {}),
    vbds,
    vifs,
    ...(i.platform ? { emulated: i.platform.bootSpec() } : {}),
    ...(i.vifs.length > 0 ? { svio: { vifs: i.vifs.map(vifSpec), ...i.hwUrl } } : {}),
    ...(i.functions.length > 0 ? { direct: { functions: i.functions.map(directSpec), ...i.hwUrl } } : {}),
    workloads: workloadsSpec(i, vbds, vifs.length > 0),
  };
}
