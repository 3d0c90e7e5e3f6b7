/**
 * Direct I/O: no backend, the toolstack assigns a virtual function of the NIC or the disk to the
 * domain (xl pci-attach) and the guest drives it itself; reclaim takes it back (VFIO's order).
 */
import { DOMID_HW, InvalidStateError, NoSuchDeviceError, publishTrace, traceNow } from '@ringvisor/shared';
import { hardware, guestControl } from '../clients.js';
import type { Domain } from '../../hypervisor/hypervisor.js';
import type { DeviceConfig, GuestConfig, VbdConfig, VifConfig } from '../config.js';
import type { HostContext } from '../host-context.js';
import { directDeviceName, directSpec, type AssignedFunction, type CreatedDomain, type HwsimRuntime } from '../host-types.js';
import type { DiskRegions } from '../disk-regions.js';
import type { DeviceAttacher, HardwareAccess } from './attacher.js';

type FunctionWanted =
  | { kind: 'nic'; devid: number; mac: string; rid?: string; passthrough?: boolean }
  | { kind: 'disk'; devid: number; partition: { start: number; sectors: number }; rid?: string; passthrough?: boolean };

export class DirectAttacher implements DeviceAttacher {
  readonly mode = 'direct' as const;
  /** Functions taken back from running guests (reclaim), for views and reports. */
  readonly reclaimedFunctions: Array<AssignedFunction & { guest: string }> = [];

  constructor(
    private readonly ctx: HostContext,
    private readonly hardware: HardwareAccess,
    private readonly regions: DiskRegions,
  ) {}

  private get hwsim(): HwsimRuntime | undefined {
    return this.hardware.runtime;
  }

  private hwUrlForGuests(): { hwUrl?: string } {
    return this.hardware.hwUrlForGuests();
  }

  async attach(c: CreatedDomain, d: DeviceConfig, guest: GuestConfig): Promise<void> {
    if (d.type === 'cam') return;
    // No backend: the toolstack assigns a virtual function and the guest drives it itself.
    const pt = d.iommu === 'passthrough' ? { passthrough: true } : {};
    c.direct.push(
      await this.assignFunction(c.domain, d.type === 'vif' ? { kind: 'nic', devid: d.devid, mac: d.mac, ...pt } : { kind: 'disk', devid: d.devid, partition: this.regions.regionOf(guest.name, d.devid, d.sizeMiB), ...pt }),
    );
  }

  /**
   * The new hardware's functions are assigned again on the same event channels, and each guest's
   * driver starts over on its function (its block driver resubmits what the old function had not answered).
   */
  async hardwareBack(c: CreatedDomain, notBack: (device: string, e: Error) => void): Promise<void> {
    const peer = this.hwsim!.peer;
    for (const f of c.direct) {
      const r = await hardware(peer).vfAssign(f.request, { timeoutMs: 5_000 });
      f.rid = r.rid;
      if (r.bar) f.bar = r.bar;
      this.traceDirect(c.domain.domid, directDeviceName(f), 'assign', r.rid);
      const g = this.ctx.registry.guestIn(c.domain);
      if (g?.peer && !g.down) await guestControl(g.peer).directPlug({ function: directSpec(f), ...this.hwUrlForGuests() }, { timeoutMs: 30_000 }).catch((e: Error) => notBack(directDeviceName(f), e));
    }
  }

  /** Reclaim every function of a domain that is going away (no notice to its driver). */
  async release(c: CreatedDomain): Promise<void> {
    for (const f of c.direct.splice(0)) if (this.hwsim) await hardware(this.hwsim.peer).vfReclaim({ rid: f.rid }, { timeoutMs: 5_000 }).catch((e: Error) => this.ctx.log.warn({ err: e, rid: f.rid }, 'reclaim failed'));
  }

  /** An event channel between a domain and the hardware: [the hardware's end, the guest's end]. */
  private bindHardwareChannel(domain: Domain): [number, number] {
    const hwPort = this.ctx.hv.evtchn.allocUnbound(DOMID_HW, domain.domid);
    return [hwPort, this.ctx.hv.evtchn.bindInterdomain(domain.domid, DOMID_HW, hwPort)];
  }

  /**
   * Assign a virtual function to a domain (xl pci-attach): an event channel between the domain
   * and the hardware becomes its doorbell and interrupt; the hardware programs the IOMMU context
   * (the domain's frames, nothing else) and an interrupt entry only that function may raise.
   */
  private async assignFunction(domain: Domain, want: FunctionWanted): Promise<AssignedFunction> {
    const [hwPort, guestPort] = this.bindHardwareChannel(domain);
    try {
      const { devid, ...rest } = want;
      const request = { ...rest, domid: domain.domid, frames: domain.memory.frames, port: hwPort, guestPort };
      const r = await hardware(this.hwsim!.peer).vfAssign(request, { timeoutMs: 5_000 });
      this.ctx.log.info({ domid: domain.domid, rid: r.rid, kind: want.kind, devid }, 'device function assigned');
      this.traceDirect(domain.domid, directDeviceName(want), 'assign', r.rid);
      return { kind: want.kind, devid, rid: r.rid, port: guestPort, hwPort, request, ...(r.bar ? { bar: r.bar } : {}) };
    } catch (e) {
      this.ctx.hv.evtchn.close(domain.domid, guestPort);
      throw e;
    }
  }

  /**
   * Take a function back from its domain (VFIO's order, done by the hardware: bus master off, FLR,
   * IOMMU context and interrupt entry torn down), then tell the guest's driver it is gone.
   */
  async reclaimFunction(guest: string, device: string): Promise<{ rid: string; steps: string[]; dropped: Record<string, number> }> {
    const c = this.ctx.registry.domainNamed(guest);
    const i = c.direct.findIndex((f) => directDeviceName(f) === device || f.rid === device);
    if (i < 0) throw new NoSuchDeviceError(`${guest} has no assigned function ${device} (has: ${c.direct.map(directDeviceName).join(', ') || 'none'})`);
    const [f] = c.direct.splice(i, 1);
    const report = await hardware(this.hwsim!.peer).vfReclaim({ rid: f.rid }, { timeoutMs: 5_000 });
    this.traceDirect(c.domain.domid, device, 'flr', f.rid);
    this.traceDirect(c.domain.domid, device, 'reclaim', f.rid);
    try {
      this.ctx.hv.evtchn.close(c.domain.domid, f.port);
    } catch {
      /* already closed with the domain */
    }
    const g = this.ctx.registry.guestIn(c.domain);
    // Told, not waited for: a frozen or wedged guest must not hold up the reclaim (the hardware
    // already guarantees its function can reach nothing).
    if (g?.peer && !g.down) void guestControl(g.peer).directUnplug({ kind: f.kind, devid: f.devid }, { timeoutMs: 5_000 }).catch(() => {});
    this.reclaimedFunctions.push({ guest, ...f });
    return report;
  }

  /**
   * Assign a function again to a guest whose direct device was reclaimed (xl pci-attach after
   * pci-detach; the way back after a migration drill): a free function of the kind — a clean one,
   * reset when it was reclaimed — and the guest's driver starts over on it.
   */
  async reattachFunction(guest: string, device: string): Promise<{ rid: string }> {
    const c = this.ctx.registry.domainNamed(guest);
    const g = this.ctx.registry.guestIn(c.domain);
    const cfg = g?.config;
    const d = cfg?.devices.find((x): x is VbdConfig | VifConfig => x.mode === 'direct' && directDeviceName({ kind: x.type === 'vif' ? 'nic' : 'disk', devid: x.devid }) === device);
    if (!cfg || !d) throw new NoSuchDeviceError(`${guest} has no direct device ${device} in its config`);
    if (c.direct.some((f) => directDeviceName(f) === device)) throw new InvalidStateError(`${guest}/${device} has a function assigned already; reclaim it first`);
    const f = await this.assignFunction(c.domain, d.type === 'vif' ? { kind: 'nic', devid: d.devid, mac: d.mac } : { kind: 'disk', devid: d.devid, partition: this.regions.regionOf(cfg.name, d.devid, d.sizeMiB) });
    c.direct.push(f);
    if (g?.peer && !g.down) await guestControl(g.peer).directPlug({ function: directSpec(f) }, { timeoutMs: 30_000 });
    return { rid: f.rid };
  }

  /** The functions assigned to a domain now. */
  functionsOf(domid: number): AssignedFunction[] {
    return this.ctx.registry.domainOf(domid)?.direct ?? [];
  }

  /** The IOMMU's fault records (the last 1024) and counters. */
  async iommuFaultLog(): Promise<{ faults: Array<{ seq: number; t: number; rid: number; address: number; write: boolean; reason: string; domid?: number }>; counters: Record<string, number> }> {
    return hardware(this.hwsim!.peer).iommuFaults({}, { timeoutMs: 5_000 });
  }

  /** DMA blocked by this host's IOMMU so far (its fault count). */
  async iommuFaults(): Promise<number> {
    const r = await hardware(this.hwsim!.peer).iommuFaults({}, { timeoutMs: 5_000 });
    return r.counters.faults;
  }

  /** The hardware's view of its functions (hw.vf.list): owner, state, counters. */
  async functionStats(): Promise<Array<Record<string, unknown> & { rid: string; owner: number | null; kind: 'nic' | 'disk' }>> {
    if (!this.hwsim || this.hardware.down) return [];
    return hardware(this.hwsim.peer).vfList({}, { timeoutMs: 5_000 });
  }

  /** A function assigned, reset or reclaimed: a `direct` trace event (the dashboard's timeline). */
  private traceDirect(domid: number, device: string, action: 'assign' | 'flr' | 'reclaim', rid: string): void {
    publishTrace({ kind: 'direct', t: traceNow(), host: this.ctx.config.name, domid, device, action, function: rid });
  }
}
