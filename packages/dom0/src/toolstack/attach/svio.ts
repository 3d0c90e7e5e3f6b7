/**
 * SV-IO: a VIF of the self-virtualizing device, created by the engine's management API and bound
 * to the domain; the guest's VIF driver opens it by id. Resets, QoS and the engine's list go
 * through the same API.
 */
import { ConfigError, DOMID_HW, InvalidStateError, NoSuchDeviceError } from '@ringvisor/shared';
import { hardware, guestControl } from '../clients.js';
import type { Domain } from '../../hypervisor/hypervisor.js';
import type { DeviceConfig, GuestConfig } from '../config.js';
import type { HostContext } from '../host-context.js';
import { vifDeviceName, vifSpec, type BoundVif, type CreatedDomain, type HwsimRuntime, type SvioVifRow } from '../host-types.js';
import type { DiskRegions } from '../disk-regions.js';
import type { DeviceAttacher, HardwareAccess } from './attacher.js';

type VifWanted =
  | { kind: 'net'; devid: number; mac: string; weight?: number; rate?: string }
  | { kind: 'blk'; devid: number; partition: { start: number; sectors: number }; weight?: number; rate?: string }
  | { kind: 'cam'; devid: number; camera: { width: number; height: number; fps: number }; weight?: number; rate?: undefined };

export class SvioAttacher implements DeviceAttacher {
  readonly mode = 'svio' as const;
  /** Every VIF's counters as the engine's cores had them at shutdown. */
  finalStats?: Record<string, unknown>;

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

  check(guest: GuestConfig, linked: boolean): void {
    const svioDevices = guest.devices.filter((d) => d.mode === 'svio');
    if (svioDevices.length > 0 && linked && !this.ctx.opts.ws)
      throw new ConfigError(
        `guest ${guest.name}: mode: svio (${svioDevices.map((d) => `${d.type} ${d.devid}`).join(', ')}) needs the guest's memory shared with the hardware's cores (threads), or a guest process with a direct link to the hardware (the ws transport); linked guests in threads have neither`,
      );
  }

  async attach(c: CreatedDomain, d: DeviceConfig, guest: GuestConfig): Promise<void> {
    // A VIF of the self-virtualizing device: created by the management API, bound to this domain.
    c.svio.push(
      await this.createVif(
        c.domain,
        d.type === 'vif'
          ? { kind: 'net', devid: d.devid, mac: d.mac, weight: d.weight, rate: d.rate }
          : d.type === 'cam'
            ? { kind: 'cam', devid: d.devid, camera: { width: d.width, height: d.height, fps: d.fps }, weight: d.weight }
            : { kind: 'blk', devid: d.devid, partition: this.regions.regionOf(guest.name, d.devid, d.sizeMiB), weight: d.weight, rate: d.rate },
      ),
    );
  }

  /** Every VIF dies with the hardware: a verdict in flight about one of them is about a VIF gone. */
  hardwareGoing(c: CreatedDomain): void {
    for (const b of c.svio) b.generation++;
  }

  /** The new device has no VIFs; each is created again (same channel, partition, MAC, QoS) and its guest's driver starts over on it. */
  async hardwareBack(c: CreatedDomain, notBack: (device: string, e: Error) => void): Promise<void> {
    for (const b of c.svio) await this.recreateVif(c, b).catch((e: Error) => notBack(vifDeviceName(b), e));
  }

  async release(c: CreatedDomain): Promise<void> {
    for (const v of c.svio.splice(0)) if (!v.down && this.hwsim) await hardware(this.hwsim.peer).svioDestroy({ vif: v.vif }, { timeoutMs: 5_000 }).catch((e: Error) => this.ctx.log.warn({ err: e, vif: v.vif }, 'VIF destroy failed'));
  }

  /** An event channel between a domain and the hardware: [the hardware's end, the guest's end]. */
  private bindHardwareChannel(domain: Domain): [number, number] {
    const hwPort = this.ctx.hv.evtchn.allocUnbound(DOMID_HW, domain.domid);
    return [hwPort, this.ctx.hv.evtchn.bindInterdomain(domain.domid, DOMID_HW, hwPort)];
  }

  /** Create an SV-IO VIF bound to a domain (the engine's management API) on a fresh channel. */
  private async createVif(domain: Domain, want: VifWanted): Promise<BoundVif> {
    const [hwPort, guestPort] = this.bindHardwareChannel(domain);
    const { devid, weight, rate, ...rest } = want;
    // ws: the guest reaches its VIF over its own direct link to the hardware, which names the guest's port.
    const request = { ...rest, domid: domain.domid, port: hwPort, ...(this.ctx.opts.ws ? { guestPort } : {}), ...(weight !== undefined ? { weight } : {}), ...(rate !== undefined ? { rate } : {}) };
    try {
      const r = await hardware(this.hwsim!.peer).svioCreate(request, { timeoutMs: 10_000 });
      this.ctx.log.info({ domid: domain.domid, vif: r.vif, core: r.core, kind: want.kind, devid }, 'SV-IO VIF created');
      return { kind: want.kind, devid, vif: r.vif, port: guestPort, hwPort, request, generation: 0, ...(r.page ? { page: r.page } : {}) };
    } catch (e) {
      this.ctx.hv.evtchn.close(domain.domid, guestPort);
      throw e;
    }
  }

  /**
   * Create a VIF again on the same channel (a device reset, a new hardware), with the same kind,
   * partition, MAC and QoS; the guest's driver opens it and starts over (its block requests the
   * old VIF never answered are resubmitted).
   */
  private async recreateVif(c: { domain: Domain }, b: BoundVif): Promise<void> {
    const r = await hardware(this.hwsim!.peer).svioCreate(b.request, { timeoutMs: 10_000 });
    b.vif = r.vif;
    b.down = false;
    if (r.page) b.page = r.page;
    else delete b.page;
    this.ctx.log.info({ domid: c.domain.domid, vif: r.vif, device: vifDeviceName(b) }, 'SV-IO VIF created again');
    const g = this.ctx.registry.guestIn(c.domain);
    if (g?.peer && !g.down) await guestControl(g.peer).svioPlug({ vif: vifSpec(b), ...this.hwUrlForGuests() }, { timeoutMs: 30_000 });
  }

  /** Generation of a guest's SV-IO device's VIF (see BoundVif.generation); undefined if none or down. */
  vifGeneration(guest: string, device: string): number | undefined {
    const b = this.ctx.registry.findDomain(guest)?.svio.find((x) => vifDeviceName(x) === device);
    return b && !b.down && !this.hardware.down ? b.generation : undefined;
  }

  /** The SV-IO VIFs bound to a domain now. */
  vifsOf(domid: number): BoundVif[] {
    return this.ctx.registry.domainOf(domid)?.svio ?? [];
  }

  /** A guest's SV-IO device by name; throws NoSuchGuestError / NoSuchDeviceError. */
  private boundVif(guest: string, device: string): { c: CreatedDomain; b: BoundVif } {
    const c = this.ctx.registry.domainNamed(guest, `no guest ${guest} on host ${this.ctx.config.name}`);
    const b = c.svio.find((x) => vifDeviceName(x) === device);
    if (!b) throw new NoSuchDeviceError(`${guest} has no SV-IO device ${device} (has: ${c.svio.map(vifDeviceName).join(', ') || 'none'})`);
    return { c, b };
  }

  /**
   * Fault plans' svio.reset: the VIF behind a guest's SV-IO device is destroyed under load (the
   * device forgets its queues); `heal` creates it again and the guest's driver starts over.
   */
  async resetVif(guest: string, device: string): Promise<{ vif: number; heal: () => Promise<{ vif: number }> }> {
    const { c, b } = this.boundVif(guest, device);
    // A reset and its heal are hardware lifecycle operations too: one that falls in a hardware
    // restart (a slow machine stretches every schedule) waits for it rather than calling a
    // hardware that is going away; the restart has then created the VIF again already.
    const old = await this.ctx.lock.run(async () => {
      if (b.down) throw new InvalidStateError(`${guest}/${device}: its VIF is already down`);
      const vif = b.vif;
      b.generation++;
      await hardware(this.hwsim!.peer).svioDestroy({ vif }, { timeoutMs: 5_000 });
      b.down = true;
      return vif;
    });
    this.ctx.log.warn({ guest, device, vif: old }, 'SV-IO VIF destroyed (reset)');
    return {
      vif: old,
      heal: () =>
        this.ctx.lock.run(async () => {
          if (c.svio.includes(b) && b.down) await this.recreateVif(c, b);
          return { vif: b.vif };
        }),
    };
  }

  /**
   * `ringvisor svio list`: every VIF of this host's engine as the management API lists it (queue
   * states and counters from the cores), named by the guest and device it is bound to.
   */
  async svioVifs(): Promise<Array<SvioVifRow>> {
    const { created } = this.ctx.registry;
    if (!created.some((c) => c.svio.length > 0)) return [];
    const r = await hardware(this.hwsim!.peer).svioList({}, { timeoutMs: 5_000 });
    return r.vifs.flatMap((v) => {
      const c = created.find((x) => x.svio.some((b) => b.vif === v.vif));
      const b = c?.svio.find((x) => x.vif === v.vif);
      return c && b ? [{ ...v, host: this.ctx.config.name, domain: c.domain.name, device: vifDeviceName(b) }] : [];
    });
  }

  /** `ringvisor svio qos`: a VIF's weight and credit limit, set through the management API. */
  async setVifQos(guest: string, device: string, qos: { weight: number; rate?: string }): Promise<{ vif: number }> {
    const { b } = this.boundVif(guest, device);
    await hardware(this.hwsim!.peer).svioQos({ vif: b.vif, weight: qos.weight, ...(qos.rate !== undefined ? { rate: qos.rate } : {}) }, { timeoutMs: 5_000 });
    this.ctx.log.info({ guest, device, vif: b.vif, ...qos }, 'SV-IO QoS set');
    return { vif: b.vif };
  }

  /** The VIFs' last counters, from the engine's cores, before their domains (and they) go. */
  async collectFinalStats(): Promise<void> {
    if (this.ctx.registry.created.some((c) => c.svio.length > 0))
      this.finalStats = await hardware(this.hwsim!.peer).svioList({}, { timeoutMs: 5_000 }).catch(() => undefined);
  }
}
