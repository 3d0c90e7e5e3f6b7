/**
 * One simulated host: this runtime is Domain 0 (hypervisor core, store, backends, toolstack); the
 * hardware simulator and every guest are worker threads started by entry point, or (ws) processes
 * that connect back to dom0's listener.
 *
 * `Host` is the facade the CLI, the fault injector, the observatory and the bench use; the work
 * is done by one module per job:
 *   hardware-supervisor.ts  the hardware's runtime: start, restart, kill, freeze, crash supervision
 *   io-stack.ts             dom0's drivers, bridge and PV backends' lifecycle (restarts, kill, pause)
 *   attach/                 one attacher per I/O mode (pv, emulated, direct, svio)
 *   guest-lifecycle.ts      a domain built with its devices, reclaimed, rebooted
 *   guest-launcher.ts       guests as threads or processes, watched; figures, quiesce, stop
 *   dom0-listener.ts        ws: the listener every other runtime connects to
 *
 * Bring-up order matters: dom0's memory is registered with the hardware before its device queues
 * are attached; each guest's memory is registered for DMA before its backends can submit
 * requests naming its frames; backends publish InitWait before the guest boots and probes.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidStateError, type DiskFaultRule, type HwStatsSummary, type GuestStats, type InterruptFault, type InterruptFaultCounts, type LinkToxics, type Logger } from '@ringvisor/shared';
import { guestControl, hardware } from './clients.js';
import { Hypervisor, type Domain } from '../hypervisor/hypervisor.js';
import type { BlkBackend } from '../backends/blk/device.js';
import type { NetBackend } from '../backends/net/device.js';
import type { EmulatedPlatform } from '../devicemodels/platform.js';
import type { GuestConfig, HostConfig } from './config.js';
import type { AssignedFunction, BoundVif, GuestHandle, HostOptions, HwsimRuntime, RuntimeCrash, SvioVifRow } from './host-types.js';
import type { HostContext, RuntimeTracer } from './host-context.js';
import { HostRegistry } from './registry.js';
import { CrashLog } from './crash-log.js';
import { RuntimeLinks } from './runtime-links.js';
import { DiskRegions } from './disk-regions.js';
import { HardwareSupervisor } from './hardware-supervisor.js';
import { Dom0IoStack } from './io-stack.js';
import { GuestLauncher } from './guest-launcher.js';
import { GuestLifecycle } from './guest-lifecycle.js';
import { Dom0Listener } from './dom0-listener.js';
import { createAttachers, devicesOnHardware, type HostAttachers } from './attach/index.js';
import { LifecycleLock, killQuietly, traceRuntime } from './runtime-util.js';
import { vifsOf } from './device-kinds.js';

export * from './host-types.js';
export { guestEnvironment } from './runtime-util.js';

const MISSED_EVENT_POLL_MS = 500;

export class Host {
  readonly hv: Hypervisor;
  private readonly ctx: HostContext;
  private readonly hardware: HardwareSupervisor;
  private readonly io: Dom0IoStack;
  private readonly attachers: HostAttachers;
  private readonly launcher: GuestLauncher;
  private readonly lifecycle: GuestLifecycle;
  private readonly listener: Dom0Listener;
  private quiesced = false;

  constructor(
    readonly config: HostConfig,
    readonly opts: HostOptions,
  ) {
    this.hv = new Hypervisor(opts.log, (config.dom0MemoryMiB * 1024 * 1024) / 4096, config.name);
    this.hv.dom0.state = 'running';
    const ctx: HostContext = {
      config,
      opts,
      hv: this.hv,
      log: this.hv.log,
      registry: new HostRegistry(config.name),
      crashLog: new CrashLog(this.hv.log),
      lock: new LifecycleLock(),
      links: new RuntimeLinks(config.name, opts.ws !== undefined),
      stopping: false,
    };
    this.ctx = ctx;
    const trace: RuntimeTracer = (...event) => traceRuntime(config.name, ...event);
    this.hardware = new HardwareSupervisor(ctx, trace, () => this.wsUrl);
    this.io = new Dom0IoStack(ctx, trace);
    this.attachers = createAttachers(ctx, this.io, this.hardware, new DiskRegions(() => this.io.disk.sectors));
    this.hardware.dependents = devicesOnHardware(ctx, this.io, this.attachers.all);
    const devices = { vifsOf: (domid: number) => this.vifsOf(domid), functionsOf: (domid: number) => this.functionsOf(domid) };
    this.launcher = new GuestLauncher(ctx, this.hardware, devices, trace, () => this.wsUrl);
    this.lifecycle = new GuestLifecycle(ctx, this.attachers.all, this.hardware, this.launcher, trace);
    this.listener = new Dom0Listener(ctx, this.hardware, this.launcher);
  }

  get log(): Logger {
    return this.hv.log;
  }
  /** Every guest launched on this host, in config order. */
  get guests(): GuestHandle[] {
    return this.ctx.registry.guests;
  }
  /** The guest named `name`; throws NoSuchGuestError (RV_ERR_NO_SUCH_GUEST) when there is none. */
  guest(name: string): GuestHandle {
    return this.ctx.registry.guest(name);
  }
  /** The hardware simulator's runtime now (a restart replaces it). */
  get hwsim(): HwsimRuntime | undefined {
    return this.hardware.runtime;
  }
  /** The hardware simulator's figures now (hw.stats), checked against its contract. */
  readHardwareStats(): Promise<HwStatsSummary> {
    if (!this.hwsim) throw new InvalidStateError(`${this.config.name}: the hardware simulator is not running`);
    return hardware(this.hwsim.peer).stats({}, { timeoutMs: 5_000 });
  }
  /** The hardware simulator's runtime exited (and is not back yet). */
  get hwsimDown(): boolean {
    return this.hardware.down;
  }
  /** Hardware restarts survived. */
  get restartedHardware(): number {
    return this.hardware.restarts;
  }
  /** The hardware's own counters, read just before it powers off. */
  get hardwareStats(): Record<string, unknown> | undefined {
    return this.hardware.stats;
  }
  /** SV-IO: every VIF's counters as the engine's cores had them at shutdown. */
  get svioStats(): Record<string, unknown> | undefined {
    return this.attachers.svio.finalStats;
  }
  /** Runtimes that died unplanned during the run, and what was done about each. */
  get crashes(): RuntimeCrash[] {
    return this.ctx.crashLog.crashes;
  }
  /** Called when a runtime's unplanned death is noticed and when its recovery ends (`up` prints a line). */
  get onCrash(): CrashLog['onCrash'] {
    return this.ctx.crashLog.onCrash;
  }
  set onCrash(f: CrashLog['onCrash']) {
    this.ctx.crashLog.onCrash = f;
  }
  get disk(): Dom0IoStack['disk'] {
    return this.io.disk;
  }
  get nic(): Dom0IoStack['nic'] {
    return this.io.nic;
  }
  get bridge(): Dom0IoStack['bridge'] {
    return this.io.bridge;
  }
  get pool(): Dom0IoStack['pool'] {
    return this.io.pool;
  }
  /** dom0 I/O-stack restarts survived. */
  get restartedDom0(): number {
    return this.io.restarts;
  }
  /** Functions taken back from running guests (reclaim), for views and reports. */
  get reclaimedFunctions(): Array<AssignedFunction & { guest: string }> {
    return this.attachers.direct.reclaimedFunctions;
  }
  /** Guests whose domains were reclaimed after their runtime died (and not restarted since). */
  get reclaimed(): string[] {
    return this.lifecycle.reclaimed;
  }
  /** Guests rebooted during the run (their earlier incarnation's ledger died with it). */
  get restarted(): string[] {
    return this.lifecycle.restarted;
  }
  /** ws: each runtime's link to this dom0 (guests by name, and "hwsim"), for link faults. */
  get runtimeLinks(): RuntimeLinks['byRuntime'] {
    return this.ctx.links.byRuntime;
  }
  get wsUrl(): string {
    return this.listener.url;
  }

  /** Bring up hardware, dom0's drivers and every guest; `startWorkloads` false defers workloads. */
  async start(startWorkloads = true): Promise<void> {
    const diskPath = resolve(this.opts.baseDir ?? process.cwd(), this.config.disk.path);
    mkdirSync(dirname(diskPath), { recursive: true });
    const hwDisk = { path: diskPath, sizeBytes: this.config.disk.sizeMiB * 1024 * 1024, ...(this.config.disk.cache ? { cache: this.config.disk.cache } : {}) };
    if (this.opts.ws) await this.listener.listen();
    await this.hardware.start(hwDisk);
    const peer = this.hardware.runtime!.peer;
    this.hv.dom0Events.start();
    // A lost notification (injected, or a bug) costs at most this much, never a stalled ring.
    this.hv.dom0Events.startMissedEventPoll(MISSED_EVENT_POLL_MS);
    await this.hardware.attachMemory(this.hv.dom0);
    await this.io.attachPhysicalDevices(peer, diskPath);
    const { ips } = this.launcher;
    for (const g of this.config.guests) {
      const vif = vifsOf(g.devices)[0];
      if (vif) ips.set(g.name, vif.ip);
    }
    for (const [n, ip] of this.opts.clusterIps ?? []) ips.set(n, ip);
    for (const g of this.config.guests) await this.addGuest(g);
    await Promise.all(this.guests.map((g) => g.ready));
    if (startWorkloads) await this.startWorkloads();
  }

  /** Start every guest's workloads (once all guests that talk to each other are up). */
  async startWorkloads(): Promise<void> {
    await Promise.all(this.guests.map((g) => guestControl(g.peer!).start()));
  }

  /** Create a domain with its devices and backends, and boot its guest runtime. */
  addGuest(config: GuestConfig): Promise<GuestHandle> {
    return this.lifecycle.add(config);
  }
  /** The toolstack half of creating a guest (xl create without booting): domain, devices, backends in InitWait. */
  createDomainWithDevices(config: GuestConfig): Promise<{ domain: Domain; blk: BlkBackend[]; net: NetBackend[] }> {
    return this.lifecycle.createDomainWithDevices(config);
  }
  /** Reboot a guest: its runtime killed, its domain reclaimed and built again from the same config, booted (GuestLifecycle.restart). */
  restartGuest(name: string): Promise<void> {
    return this.lifecycle.restart(name);
  }
  /** Wait (bounded) until a reboot of `name` in progress has finished; at once if there is none. */
  rebooted(name: string, maxMs = 30_000): Promise<void> {
    return this.lifecycle.rebooted(name, maxMs);
  }
  /** Guests whose runtime crashed (not killed by the toolstack) and were not rebooted since: name → how it ended. */
  crashedGuests(): Array<{ handle: GuestHandle; crash: RuntimeCrash }> {
    return this.lifecycle.crashedGuests();
  }

  /** The hardware crashes and comes back on the same image, every device attached again (HardwareSupervisor.restart). */
  restartHwsim(): Promise<void> {
    return this.hardware.restart();
  }
  /** Fault plans' process.kill of the hardware: it stays down until the returned revive() (HardwareSupervisor.kill). */
  killHwsim(): Promise<() => Promise<void>> {
    return this.hardware.kill();
  }
  /** Freeze the hardware (its thread blocks; over ws its process is SIGSTOPped) until thaw(). */
  freezeHwsim(maxMs: number): Promise<() => void> {
    return this.hardware.freeze(maxMs);
  }
  /** Fault plans' disk.torn: the power goes; a writeback drive's cache reaches the image only in part. */
  powerLoss(writeProbability: number, seed: number): Promise<{ written: number; lost: number }> {
    return this.hardware.powerLoss(writeProbability, seed);
  }
  /** Frame faults on this host's LAN uplink (several hosts only); undefined clears. */
  setLanFaults(faults: { drop?: number; duplicate?: number; reorder?: number; corrupt?: number; seed?: number } | undefined): Promise<void> {
    return this.hardware.setLanFaults(faults);
  }
  /** Replace the physical disk's fault rules (blkdebug-style; `[]` clears). */
  setDiskFaults(rules: DiskFaultRule[]): Promise<void> {
    return this.hardware.setDiskFaults(rules);
  }
  /** Fault plans' evtchn.lost / evtchn.delayed on a guest's direct functions and SV-IO VIFs; `null` clears. */
  setDeviceIrqFault(domid: number, fault: InterruptFault | null): Promise<InterruptFaultCounts> {
    return this.hardware.setDeviceIrqFault(domid, fault);
  }
  /** Carrier of the physical NIC (a pulled cable when false). */
  setNicLink(up: boolean): Promise<void> {
    return this.hardware.setNicLink(up);
  }

  /** Generation of a guest's SV-IO device's VIF (see BoundVif.generation); undefined if none or down. */
  vifGeneration(guest: string, device: string): number | undefined {
    return this.attachers.svio.vifGeneration(guest, device);
  }
  /** The SV-IO VIFs bound to a domain now. */
  vifsOf(domid: number): BoundVif[] {
    return this.attachers.svio.vifsOf(domid);
  }
  /** Fault plans' svio.reset: a guest's VIF destroyed under load; `heal` creates it again and its driver starts over. */
  resetVif(guest: string, device: string): Promise<{ vif: number; heal: () => Promise<{ vif: number }> }> {
    return this.attachers.svio.resetVif(guest, device);
  }
  /** `ringvisor svio list`: every VIF of this host's engine, named by the guest and device it is bound to. */
  svioVifs(): Promise<Array<SvioVifRow>> {
    return this.attachers.svio.svioVifs();
  }
  /** `ringvisor svio qos`: a VIF's weight and credit limit, set through the management API. */
  setVifQos(guest: string, device: string, qos: { weight: number; rate?: string }): Promise<{ vif: number }> {
    return this.attachers.svio.setVifQos(guest, device, qos);
  }

  /** Take a function back from its domain (bus master off, FLR, IOMMU teardown), then tell the guest's driver. */
  reclaimFunction(guest: string, device: string): Promise<{ rid: string; steps: string[]; dropped: Record<string, number> }> {
    return this.attachers.direct.reclaimFunction(guest, device);
  }
  /** Assign a function again to a guest whose direct device was reclaimed; its driver starts over on it. */
  reattachFunction(guest: string, device: string): Promise<{ rid: string }> {
    return this.attachers.direct.reattachFunction(guest, device);
  }
  /** The functions assigned to a domain now. */
  functionsOf(domid: number): AssignedFunction[] {
    return this.attachers.direct.functionsOf(domid);
  }
  /** The IOMMU's fault records (the last 1024) and counters. */
  iommuFaultLog(): ReturnType<HostAttachers['direct']['iommuFaultLog']> {
    return this.attachers.direct.iommuFaultLog();
  }
  /** DMA blocked by this host's IOMMU so far (its fault count). */
  iommuFaults(): Promise<number> {
    return this.attachers.direct.iommuFaults();
  }
  /** The hardware's view of its functions (hw.vf.list): owner, state, counters. */
  functionStats(): ReturnType<HostAttachers['direct']['functionStats']> {
    return this.attachers.direct.functionStats();
  }

  /** The emulated platform of a domain (its ioreq server and device models), if it has one. */
  platformOf(domid: number): EmulatedPlatform | undefined {
    return this.ctx.registry.platformOf(domid);
  }
  platforms(): EmulatedPlatform[] {
    return this.ctx.registry.platforms();
  }
  blkBackends(): BlkBackend[] {
    return this.ctx.registry.created.flatMap((c) => c.blk);
  }
  netBackends(): NetBackend[] {
    return this.ctx.registry.created.flatMap((c) => c.net);
  }

  /** Restart a vbd's or vif's backend: the old one drains and goes, a new one offers the device; the frontend recovers. */
  restartBackend(domain: string, device: string): Promise<void> {
    return this.io.restartBackend(domain, device);
  }
  /** dom0's I/O stack crashes and comes back, every PV device offered again (Dom0IoStack.restart). */
  restartDom0(): Promise<{ backends: number }> {
    return this.ctx.lock.run(() => this.io.restart());
  }
  /** Fault plans' process.kill of dom0's I/O stack: every PV backend down until the returned revive() (Dom0IoStack.crash). */
  async killDom0(): Promise<() => Promise<void>> {
    const all = await this.ctx.lock.run(() => this.io.crash());
    let revived: Promise<void> | undefined;
    return () => (revived ??= this.ctx.lock.run(() => this.io.revive(all)));
  }
  /** Fault plans' process.pause with runtime: dom0: every PV backend stops consuming until thaw(). */
  freezeDom0(): () => void {
    return this.io.freeze();
  }

  /** Toxics on a runtime's link (ws transport): latency, bandwidth, partition; `{}` heals. */
  setLinkToxics(runtime: string, toxics: LinkToxics): void {
    this.ctx.links.setToxics(runtime, toxics);
  }
  /** Reset a runtime's link (a TCP reset): the runtime loses dom0; a guest's domain is reclaimed. */
  resetLink(runtime: string): void {
    this.ctx.links.reset(runtime);
  }
  /** kill -9 a guest's runtime (fault injection); its domain is then reclaimed. */
  killGuest(name: string): Promise<void> {
    return this.launcher.kill(name);
  }
  /** Freeze a guest's runtime until the returned thaw() (fault injection; bounded by maxMs). */
  freezeGuest(name: string, maxMs: number): Promise<() => void> {
    return this.launcher.freeze(name, maxMs);
  }

  /** Every process this host started and that still runs (ws): the hardware simulator and the guests. */
  childPids(): number[] {
    const pids = [this.hwsim?.gone ? undefined : this.hwsim?.pid, ...this.guests.filter((g) => !g.down).map((g) => g.pid)];
    return pids.filter((p): p is number => p !== undefined);
  }
  /** A forced exit: SIGKILL every process this host started, by pid (no orphans). */
  killChildren(): number[] {
    const pids = this.childPids();
    for (const pid of pids) killQuietly(pid);
    return pids;
  }

  guestStats(): Promise<GuestStats[]> {
    return this.launcher.stats();
  }

  /**
   * First phase of shutdown: every guest stops issuing work and drains, devices still connected
   * — so no guest closes its vif while another's datagrams to it are still in flight.
   */
  async quiesce(): Promise<void> {
    if (this.quiesced) return;
    this.quiesced = true;
    await this.launcher.quiesceAll();
  }

  /**
   * Orderly shutdown: each guest stops its workloads, verifies, closes its frontends
   * (Closing → Closed); backends release grants and ports; domains are destroyed; the disk is
   * flushed; every worker has exited when this resolves.
   */
  async stop(): Promise<GuestStats[]> {
    if (this.ctx.stopping) return this.guests.map((g) => g.lastStats!);
    this.ctx.stopping = true;
    await this.quiesce();
    // A VMApp in a guest's own process (ws) goes with the guest: take its last figures first.
    await Promise.all(this.platforms().map((p) => p.refresh()));
    const finals = await this.launcher.stopAll();
    // The VIFs' last counters, from the engine's cores, before their domains (and they) go.
    await this.attachers.svio.collectFinalStats();
    await this.lifecycle.destroyAll();
    await this.hardware.shutdown();
    await this.listener.close();
    this.hv.dom0Events.stop();
    return finals;
  }
}
