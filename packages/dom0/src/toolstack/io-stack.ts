/**
 * dom0's I/O stack: the physical disk and NIC drivers, the skb pool and the software bridge, and
 * every PV backend's lifecycle — a backend restarted, the whole stack crashed and offered again
 * (a driver domain's reboot), killed until a heal, or paused.
 */
import { DOMID_HW, FrameAllocator, InvalidStateError, NoSuchDeviceError, XenbusState, type RpcPeer } from '@ringvisor/shared';
import { hardware, type HardwareClient } from './clients.js';
import { PhysicalDiskDriver, type DriverDma } from '../physdev/disk.js';
import { PhysicalNicDriver } from '../physdev/nic.js';
import { SkbPool } from '../physdev/skb.js';
import { BlkBackend } from '../backends/blk/device.js';
import { NetBackend } from '../backends/net/device.js';
import { SoftwareBridge, type BridgePort } from '../backends/net/bridge.js';
import type { HostContext, RuntimeTracer } from './host-context.js';
import type { CreatedDomain } from './host-types.js';

const SKB_POOL_FRAMES = 1024;

type Backend = BlkBackend | NetBackend;
/** A backend that went down with the stack, and the domain it served. */
type DownBackend = { c: CreatedDomain; b: Backend };

export class Dom0IoStack {
  disk!: PhysicalDiskDriver;
  nic!: PhysicalNicDriver;
  bridge!: SoftwareBridge;
  pool!: SkbPool;
  /** dom0's own frames (device queues, the skb pool, emulated disks' bounce buffers). */
  readonly frames: FrameAllocator;
  /** dom0 I/O-stack restarts survived. */
  restarts = 0;
  /** What dom0 attached the devices with, to attach them again after a hardware restart. */
  private readonly deviceAttachments: { disk?: Parameters<HardwareClient['diskAttach']>[0]; nic?: Parameters<HardwareClient['nicAttach']>[0] } = {};

  constructor(
    private readonly ctx: HostContext,
    private readonly trace: RuntimeTracer,
  ) {
    this.frames = new FrameAllocator(ctx.hv.dom0.memory);
  }

  /** Streaming DMA mappings for dom0's drivers when the hardware is across a link. */
  private get driverDma(): DriverDma | undefined {
    const { hv } = this.ctx;
    if (!hv.hardwareLink) return undefined;
    // The link is looked up at each use: a hardware restart replaces it, and a queue made afresh
    // after one (resetQueue) mirrors its page on the new link. Between the crash and the new
    // hardware there is no link, and nothing to hand a buffer to.
    return {
      toDevice: (f) => hv.hardwareLink?.wrote(f.domid, f.pfn, 0, 4096),
      ringSync: (pfn, page, lateWake) => {
        const link = hv.hardwareLink;
        if (!link) return undefined;
        const sync = link.ringSync(pfn, page, 0);
        sync.lateWake = lateWake;
        return sync;
      },
    };
  }

  /** Bind dom0 ↔ hardware event channel; returns [dom0 port, hwsim port]. */
  private bindDevicePorts(): [number, number] {
    const hwPort = this.ctx.hv.evtchn.allocUnbound(DOMID_HW, 0);
    const dom0Port = this.ctx.hv.evtchn.bindInterdomain(0, DOMID_HW, hwPort);
    return [dom0Port, hwPort];
  }

  /** dom0's drivers for the physical disk and NIC, their queues attached to the hardware, and the bridge with the NIC as its uplink. */
  async attachPhysicalDevices(peer: RpcPeer, diskPath: string): Promise<void> {
    const { hv, config, log } = this.ctx;
    const [diskDom0Port, diskHwPort] = this.bindDevicePorts();
    const queuePfn = this.frames.alloc();
    this.deviceAttachments.disk = { queue: { domid: 0, pfn: queuePfn }, port: diskHwPort };
    this.disk = new PhysicalDiskDriver(hv.dom0.memory, queuePfn, hv.dom0Events, diskDom0Port, this.driverDma);
    hv.hardwareLink?.mirror.flush(); // the device's copy of the queue page before it attaches
    const diskInfo = await hardware(peer).diskAttach({ queue: { domid: 0, pfn: queuePfn }, port: diskHwPort });
    this.disk.sectors = diskInfo.sectors;

    this.pool = new SkbPool(hv.dom0.memory, this.frames, SKB_POOL_FRAMES);
    const [nicDom0Port, nicHwPort] = this.bindDevicePorts();
    const txPfn = this.frames.alloc();
    const rxPfn = this.frames.alloc();
    this.nic = new PhysicalNicDriver(hv.dom0.memory, txPfn, rxPfn, hv.dom0Events, nicDom0Port, config.nic.mac, this.pool, 64, this.driverDma);
    hv.hardwareLink?.mirror.flush();
    this.deviceAttachments.nic = { tx: { domid: 0, pfn: txPfn }, rx: { domid: 0, pfn: rxPfn }, port: nicHwPort };
    await hardware(peer).nicAttach(this.deviceAttachments.nic);

    this.nic.traceLabel = { host: config.name, iface: `${config.name}/peth0` };
    this.bridge = new SoftwareBridge(this.pool);
    const uplink: BridgePort = { name: 'peth0', deliver: (skb) => this.nic.transmit(skb) };
    this.nic.onReceive((skb) => this.bridge.input(uplink, skb));
    this.bridge.add(uplink);
    log.info({ disk: diskPath, sectors: diskInfo.sectors, mac: config.nic.mac }, 'host hardware attached');
  }

  /**
   * A new hardware: the disk queue starts afresh with every unanswered request resubmitted (the
   * device answered out of order, so its ring indices cannot tell which ones it finished), and
   * the NIC's queues start afresh.
   */
  async reattachPhysicalDevices(peer: RpcPeer): Promise<void> {
    const { hv } = this.ctx;
    const { disk, nic } = this.deviceAttachments;
    if (!disk || !nic) throw new InvalidStateError('the physical disk and NIC were never attached: nothing to attach again');
    this.disk.resetQueue();
    hv.hardwareLink?.mirror.flush();
    await hardware(peer).diskAttach(disk);
    this.disk.resume();
    this.nic.resetQueues();
    hv.hardwareLink?.mirror.flush();
    await hardware(peer).nicAttach(nic);
    this.nic.resume();
  }

  /**
   * Restart a vbd's backend (a crashed and restarted blkback): the old instance drains and lets go
   * of everything, a new one offers the device again (InitWait), and the frontend recovers —
   * re-grants its ring and resubmits what was in flight (blkif_recover). Returns when the new
   * backend is waiting; the frontend reconnects on its own.
   */
  async restartBackend(domain: string, device: string): Promise<void> {
    const c = this.ctx.registry.domainNamed(domain);
    const old = [...c.blk, ...c.net].find((b) => b.device === device);
    if (!old) throw new NoSuchDeviceError(`no backend ${domain}/${device} on ${this.ctx.config.name}`);
    await this.crashBackend(old);
    await this.offerBackendAgain(c, old);
  }

  /** A backend goes: it lets the device finish what it holds, drops its mappings and channel, and says Closed. */
  private async crashBackend(old: Backend): Promise<void> {
    await old.destroy();
    await this.ctx.hv.dom0Store.write(`${old.xb.dir}/state`, String(XenbusState.Closed));
  }

  /** A new backend in place of `old`, offering the device again (InitWait); the frontend reconnects. */
  private async offerBackendAgain(c: CreatedDomain, old: Backend): Promise<void> {
    const { hv, log } = this.ctx;
    const g = this.ctx.registry.guestIn(c.domain);
    if (old instanceof BlkBackend) {
      const fresh = new BlkBackend(hv, this.disk, old.frontDomid, old.devid, old.region, log);
      c.blk[c.blk.indexOf(old)] = fresh;
      if (g) g.blk[g.blk.indexOf(old)] = fresh;
      await fresh.start();
    } else {
      const fresh = new NetBackend(hv, this.bridge, old.frontDomid, old.devid, log);
      c.net[c.net.indexOf(old)] = fresh;
      if (g) g.net[g.net.indexOf(old)] = fresh;
      await fresh.start();
    }
  }

  /**
   * dom0's I/O stack crashes and comes back (fault plans' process.restart with runtime: dom0):
   * what a driver domain's reboot is under Xen's disaggregation. The hypervisor, the store (as a
   * xenstore stub domain keeps it) and every runtime outside dom0 go on. Every PV backend of the
   * host goes at once — each lets the device finish what it holds (a kernel's device shutdown
   * quiesces DMA before it reboots), drops its grant mappings and channels, and says Closed —
   * and the bridge forgets every MAC it learned; then each device is offered again. Every PV
   * frontend goes Closed → Initialising → Connected and resubmits what was in flight; direct and
   * SV-IO devices are off dom0's data path and never notice. Device models stay (as stub domains
   * keep them). Returns how many backends came back.
   */
  async restart(): Promise<{ backends: number }> {
    const all = await this.crash();
    await this.revive(all);
    return { backends: all.length };
  }

  /**
   * Every PV backend of the host goes at once, and the bridge forgets what it learned; returns what went.
   *
   * Fault plans' process.kill with runtime: dom0 — dom0's I/O stack dies and stays down (the
   * hypervisor core this runtime also holds goes on, as Xen's outlives a driver domain): every PV
   * backend crashes as in restart(), and nothing offers the devices until revive() (the heal).
   * PV frontends wait in their reconnect; direct and SV-IO guests never notice.
   */
  async crash(): Promise<DownBackend[]> {
    const all = this.ctx.registry.created.flatMap((c) => [...c.blk, ...c.net].map((b) => ({ c, b })));
    this.trace(`${this.ctx.config.name}/dom0`, 'dom0', 'down', 0);
    await Promise.all(all.map(({ b }) => this.crashBackend(b)));
    this.bridge.forgetLearned();
    return all;
  }

  /** Offer again every device crash() took down (a guest reclaimed meanwhile has nothing to offer). */
  async revive(all: DownBackend[]): Promise<void> {
    for (const { c, b } of all) if (this.ctx.registry.created.includes(c)) await this.offerBackendAgain(c, b);
    this.restarts++;
    this.trace(`${this.ctx.config.name}/dom0`, 'dom0', 'up', 0);
  }

  /** Every PV backend stops consuming until the returned thaw(). */
  freeze(): () => void {
    const all = this.ctx.registry.created.flatMap((c) => [...c.blk, ...c.net]);
    for (const b of all) b.pause();
    // Resumes the ones it paused: a restart meanwhile replaced them with new, running ones.
    return () => all.forEach((b) => b.resume());
  }
}
