/**
 * The per-mode device attachers of a host, in the order a domain's devices are released (pv
 * backends, then emulated models, then direct functions, then SV-IO VIFs), and what they do
 * together when the hardware under them restarts.
 */
import type { RpcPeer } from '@ringvisor/shared';
import type { HostContext } from '../host-context.js';
import type { Dom0IoStack } from '../io-stack.js';
import type { DiskRegions } from '../disk-regions.js';
import type { HardwareDependents } from '../hardware-supervisor.js';
import type { DeviceAttacher, HardwareAccess } from './attacher.js';
import { PvAttacher } from './pv.js';
import { EmulatedAttacher } from './emulated.js';
import { DirectAttacher } from './direct.js';
import { SvioAttacher } from './svio.js';

export type { DeviceAttacher, HardwareAccess } from './attacher.js';
export { PvAttacher, EmulatedAttacher, DirectAttacher, SvioAttacher };

export interface HostAttachers {
  /** Every mode's attacher, in release order. */
  all: readonly DeviceAttacher[];
  direct: DirectAttacher;
  svio: SvioAttacher;
}

export function createAttachers(ctx: HostContext, io: Dom0IoStack, hardware: HardwareAccess, regions: DiskRegions): HostAttachers {
  const direct = new DirectAttacher(ctx, hardware, regions);
  const svio = new SvioAttacher(ctx, hardware, regions);
  return { all: [new PvAttacher(ctx, io, regions), new EmulatedAttacher(ctx, io, regions), direct, svio], direct, svio };
}

/**
 * What the devices do when the hardware restarts: each mode's devices are stale once it goes;
 * once a new one is up, dom0's own queues are redone first, then each mode brings its devices
 * back (direct functions of every domain, then VIFs), and what did not come back is listed.
 */
export function devicesOnHardware(ctx: HostContext, io: Dom0IoStack, attachers: readonly DeviceAttacher[]): HardwareDependents {
  return {
    hardwareGoing: () => {
      for (const a of attachers) for (const c of ctx.registry.created) a.hardwareGoing?.(c);
    },
    hardwareBack: async (peer: RpcPeer) => {
      await io.reattachPhysicalDevices(peer);
      const missing: string[] = [];
      for (const a of attachers)
        for (const c of ctx.registry.created) {
          const notBack = (device: string, e: Error) => {
            missing.push(`${c.domain.name}/${device} (${e.message})`);
            ctx.log.warn({ err: e, guest: c.domain.name, device }, 'device did not come back after the hardware restart');
          };
          await a.hardwareBack?.(c, notBack);
        }
      return missing;
    },
  };
}
