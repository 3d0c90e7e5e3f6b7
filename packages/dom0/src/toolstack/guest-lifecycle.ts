/**
 * A guest's life as the toolstack runs it (xl create, reboot, and the reclaim after a death): its
 * domain is built with each device attached by its mode's attacher, its runtime launched and
 * watched; when the runtime goes, what the domain held is handed back; a reboot builds it again.
 */
import { UnsupportedOperationError } from '@ringvisor/shared';
import { hardware, guestControl } from './clients.js';
import type { Domain } from '../hypervisor/hypervisor.js';
import type { BlkBackend } from '../backends/blk/device.js';
import type { NetBackend } from '../backends/net/device.js';
import type { GuestConfig } from './config.js';
import type { HostContext, RuntimeTracer } from './host-context.js';
import type { CreatedDomain, GuestHandle, HwsimRuntime, RuntimeCrash } from './host-types.js';
import type { DeviceAttacher } from './attach/attacher.js';
import type { GuestLauncher } from './guest-launcher.js';
import type { HardwareSupervisor } from './hardware-supervisor.js';
import { delay } from './runtime-util.js';

export class GuestLifecycle {
  /** Guests whose domains were reclaimed after their runtime died (and not restarted since). */
  readonly reclaimed: string[] = [];
  /** Guests rebooted during the run (their earlier incarnation's ledger died with it). */
  readonly restarted: string[] = [];
  /** Reboots in progress, by guest name (settled when the guest is back, or the reboot failed). */
  private readonly rebooting = new Map<string, Promise<void>>();

  constructor(
    private readonly ctx: HostContext,
    /** One per I/O mode, in the order a domain's devices are released (pv, emulated, direct, svio). */
    private readonly attachers: readonly DeviceAttacher[],
    private readonly hardware: HardwareSupervisor,
    private readonly launcher: GuestLauncher,
    private readonly trace: RuntimeTracer,
  ) {}

  private get hwsim(): HwsimRuntime | undefined {
    return this.hardware.runtime;
  }

  private attacherFor(mode: string): DeviceAttacher {
    return this.attachers.find((a) => a.mode === mode)!;
  }

  /** Create a domain with its devices and backends, and boot its guest runtime. */
  async add(config: GuestConfig): Promise<GuestHandle> {
    const { domain, blk, net } = await this.createDomainWithDevices(config);
    const handle = this.launcher.launch(config, domain, blk, net);
    handle.ready.then(
      () => {
        handle.isReady = true;
        this.trace(config.name, 'guest', 'up', domain.domid, handle.pid);
        this.launcher.watch(handle, (h) => this.reclaim(h));
      },
      () => {},
    );
    this.ctx.registry.guests.push(handle);
    return handle;
  }

  /**
   * The toolstack half of creating a guest (xl create without booting): domain, memory registered
   * for DMA, both halves of every device in the store, backends waiting in InitWait.
   */
  async createDomainWithDevices(config: GuestConfig): Promise<{ domain: Domain; blk: BlkBackend[]; net: NetBackend[] }> {
    const { hv, opts } = this.ctx;
    const linked = opts.linkedGuests === true || opts.ws !== undefined;
    for (const a of this.attachers) a.check?.(config, linked);
    const domain = hv.createDomain(config.name, config.memoryMiB, linked);
    await this.hardware.attachMemory(domain);
    const c: CreatedDomain = { domain, blk: [], net: [], direct: [], svio: [] };
    for (const a of this.attachers) a.prepare?.(c, config);
    // In config order: each device's event channels are bound in the order the guest lists them.
    for (const d of config.devices) await this.attacherFor(d.mode).attach(c, d, config);
    for (const a of this.attachers) await a.finish?.(c);
    this.ctx.registry.created.push(c);
    return { domain, blk: c.blk, net: c.net };
  }

  /**
   * A guest's runtime died (crash, kill -9): reclaim what its domain held — backends drain and
   * unmap (grants), its event channels close, its rings go with its backends, its direct
   * functions are reset and taken back, its SV-IO VIFs destroyed, the hardware forgets its memory
   * (no DMA into a dead domain), its store nodes go — so the other guests never notice.
   */
  async reclaim(handle: GuestHandle): Promise<void> {
    const { registry, hv, log, links } = this.ctx;
    const i = registry.created.findIndex((c) => c.domain === handle.domain);
    if (i < 0) return;
    const [c] = registry.created.splice(i, 1);
    c.domain.state = 'crashed';
    log.warn({ domid: c.domain.domid, guest: handle.config.name }, 'guest runtime gone; reclaiming its domain');
    for (const a of this.attachers) await a.release(c, true);
    // The hardware forgets its memory: no DMA into a dead domain.
    if (this.hwsim && !this.hardware.down)
      await hardware(this.hwsim.peer).detachMemory({ domid: c.domain.domid }, { timeoutMs: 5_000 }).catch((e: Error) => log.warn({ err: e, domid: c.domain.domid }, 'detaching memory from the hardware failed'));
    links.release(handle.config.name, 'domain reclaimed');
    try {
      hv.destroyDomain(c.domain.domid);
    } catch {
      /* already gone */
    }
    this.reclaimed.push(handle.config.name);
  }

  /** Every domain goes at the end of the run: each mode's devices released, then the domain destroyed. */
  async destroyAll(): Promise<void> {
    for (const c of this.ctx.registry.created) {
      for (const a of this.attachers) await a.release(c, false);
      this.ctx.hv.destroyDomain(c.domain.domid);
    }
  }

  /** Guests whose runtime crashed (not killed by the toolstack) and were not rebooted since: name → how it ended. */
  crashedGuests(): Array<{ handle: GuestHandle; crash: RuntimeCrash }> {
    const { registry, crashLog } = this.ctx;
    return registry.guests.flatMap((handle) => {
      const crash = crashLog.crashes.findLast((c) => c.runtime === 'guest' && c.name === handle.config.name);
      return handle.down && crash && !handle.killedByToolstack ? [{ handle, crash }] : [];
    });
  }

  /**
   * Reboot a guest (xl reboot, or a crashed guest brought back): its runtime is killed if it
   * still runs, its domain reclaimed, then a new domain is built from the same config — same
   * disk region, same addresses — and booted; its workloads start when it is ready.
   */
  restart(name: string): Promise<void> {
    const run = this.doRestart(name);
    const done = run.catch(() => undefined);
    this.rebooting.set(name, done);
    void done.then(() => {
      if (this.rebooting.get(name) === done) this.rebooting.delete(name);
    });
    return run;
  }

  /** Wait (bounded) until a reboot of `name` in progress has finished; at once if there is none. */
  async rebooted(name: string, maxMs = 30_000): Promise<void> {
    const r = this.rebooting.get(name);
    if (r) await Promise.race([r, delay(maxMs)]);
  }

  private async doRestart(name: string): Promise<void> {
    const { registry, opts } = this.ctx;
    const i = registry.guestIndex(name);
    if (opts.ws && opts.ws.spawn === false) throw new UnsupportedOperationError(`${name} runs elsewhere (compose): restart its container instead`);
    const old = registry.guests[i];
    if (!old.down) await old.kill();
    await Promise.race([old.exited, delay(10_000)]);
    for (let t = 0; !this.reclaimed.includes(name) && t < 500; t++) await delay(20);
    const { domain, blk, net } = await this.createDomainWithDevices(old.config);
    const handle = this.launcher.launch(old.config, domain, blk, net);
    registry.guests[i] = handle;
    this.reclaimed.splice(this.reclaimed.indexOf(name), 1);
    this.restarted.push(name);
    await handle.ready;
    handle.isReady = true;
    this.trace(name, 'guest', 'up', domain.domid, handle.pid);
    this.launcher.watch(handle, (h) => this.reclaim(h));
    await guestControl(handle.peer!).start();
  }
}
