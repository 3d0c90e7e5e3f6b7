/**
 * One guest's emulated platform: its vCPU's ioreq slot, its port map and the device models it
 * decodes — Lance NICs on the software bridge, ATA disks on the guest's region of the physical
 * disk. Each device gets a virtual IRQ: an event channel from dom0 to the guest, raised when the
 * model asserts its interrupt. Two placements of the models:
 *
 *   dom0     (Xen HVM / QEMU) dom0's ioreq server serves the slot; the models run on dom0's loop
 *            and reach the bridge and the disk driver directly.
 *   hosted   (VMware Workstation) a VMApp worker per guest owns the models (shared/src/vmapp/); the
 *            guest's VMM (shared/trap/hosted-vmm.ts) forwards accesses to it; frames cross dom0's
 *            bridge as VMNet reads/writes and sectors go through dom0's disk driver, on the
 *            VMApp's control link.
 *
 * I/O map (what the guest's drivers probe, as a PC BIOS would assign it):
 *   Lance k      0xc000 + 0x20·k (32-byte window)
 *   ATA primary  0x1f0–0x1f7, 0x3f6;  ATA secondary 0x170–0x177, 0x376
 */
import {
  ClosedError,
  GuestMemoryDma,
  applyGuestWrites,
  type GuestMemoryWrite,
  type IoReq,
  type RpcPeer,
  createIoReqSlot,
  createVmmShared,
  startVmApp,
  publishTrace,
  traceChannel,
  traceNow,
  InvalidArgumentError,
  type EmulatedDeviceSpec,
  type FrameAllocator,
  type Logger,
} from '@ringvisor/shared';
import type { Hypervisor, Domain } from '../hypervisor/hypervisor.js';
import type { PhysicalDiskDriver } from '../physdev/disk.js';
import type { Skb } from '../physdev/skb.js';
import type { BridgePort, SoftwareBridge } from '../backends/net/bridge.js';
import { AtaDevice, IoReqServer, LanceDevice } from '@ringvisor/shared';
import { PhysicalDiskBacking } from './disk-backing.js';
import { IoReqLinkContract, VmAppContract, VmAppHostContract, contractClient, notify, onNotify, serveContract, type InterruptFault, type InterruptFaultCounts, type VmAppPlan, type VmAppSpec, type VmAppStats } from '@ringvisor/shared';

export type EmulationPlacement = 'dom0' | 'hosted';

/** The hosted VMM's optimisations for one Lance (Sugerman et al.): off unless asked for. */
export interface HostedNicOptions {
  vmmIo?: boolean;
  sendCombining?: boolean;
}

const MAX_LANCES = 8;

const frameChannel = traceChannel('frame');

export const LANCE_IO_BASE = 0xc000;
export const LANCE_IO_SIZE = 0x20;
export const ATA_CHANNELS = [
  { command: 0x1f0, control: 0x3f6 },
  { command: 0x170, control: 0x376 },
] as const;

interface IrqLine {
  dom0Port: number;
  guestPort: number;
}

export interface EmulatedNic {
  kind: 'nic';
  devid: number;
  name: string;
  /** The model, when it runs in dom0 (hosted: in the VMApp). */
  model?: LanceDevice;
  mac: string;
  hosted?: HostedNicOptions;
  irq: IrqLine;
  base: number;
  port: BridgePort;
  bridge: SoftwareBridge;
}

export interface EmulatedDisk {
  kind: 'disk';
  devid: number;
  name: string;
  model?: AtaDevice;
  irq: IrqLine;
  channel: (typeof ATA_CHANNELS)[number];
  backing: PhysicalDiskBacking;
  region: { start: number; sectors: number };
}

export interface PlatformStats {
  guest: string;
  domid: number;
  placement: EmulationPlacement;
  ioreq: IoReqServer['counters'];
  perRange: Record<string, number>;
  dma: { bytesRead: number; bytesWritten: number };
  /** hosted: frames the VMApp wrote to / read from VMNet, and transmits the VMM combined. */
  vmnet?: VmAppStats['vmnet'];
  combined?: VmAppStats['combined'];
  /** hosted: the VMApp thread's busy time (ms since it started). */
  busyMs?: number;
  devices: Array<{ name: string; kind: 'nic' | 'disk'; metrics: object }>;
}

export class EmulatedPlatform {
  readonly slot = createIoReqSlot();
  /** dom0 placement: dom0's ioreq server for the slot. */
  readonly server?: IoReqServer;
  readonly dma: GuestMemoryDma;
  readonly nics: EmulatedNic[] = [];
  readonly disks: EmulatedDisk[] = [];
  /** hosted: the status mirrors and transmit queues the guest's VMM shares with the VMApp. */
  readonly vmmShared?: SharedArrayBuffer;
  /** hosted: the VMApp's link — to its worker (threads), or to the guest's process that runs it (ws). */
  private vmappPeer?: RpcPeer;
  /** hosted, threads: the VMApp worker dom0 started. */
  private vmappWorker?: { exited: Promise<number>; terminate(): Promise<number> };
  /** hosted, ws: the guest's own process runs the VMApp next to its vCPU (there is no shared memory with dom0). */
  readonly inGuestProcess: boolean;
  private lastHostedStats?: VmAppStats;
  private readonly ioreq?: IrqLine;
  private destroyed = false;
  /** dom0 placement across a link: the guest's vCPU relay, once it connected. */
  private vcpuPeer?: RpcPeer;
  readonly remote: boolean;
  /** Ranges the models wrote into dom0's copy of guest memory, not yet shipped to the guest. */
  private written: Array<[number, number]> = [];

  constructor(
    private readonly hv: Hypervisor,
    readonly domain: Domain,
    private readonly log: Logger,
    readonly placement: EmulationPlacement = 'dom0',
    private readonly opts: { pollUs?: number; vcpuLink?: boolean } = {},
  ) {
    // A model in dom0 DMAs into the guest's memory and serves a slot the vCPU blocks on: that
    // needs the guest's memory shared with dom0. Hosted models run next to the guest instead.
    if (domain.linked && placement === 'dom0' && !opts.vcpuLink)
      throw new InvalidArgumentError(
        `${domain.name}: emulated devices with placement: dom0 need the guest's memory shared with dom0, or a guest process that can open a vCPU link (the ws transport); use placement: hosted here`,
      );
    this.inGuestProcess = domain.linked && placement === 'hosted';
    // Models in dom0 for a guest across a link: they act on dom0's copy of its memory; what they
    // write there goes back to the guest on the vCPU link (shared/trap/ioreq-link.ts).
    this.remote = domain.linked && placement === 'dom0';
    this.dma = new GuestMemoryDma(domain.memory.bytes);
    if (this.remote) this.dma.onWrite = (gpa, len) => this.written.push([gpa, len]);
    // The event channel that kicks dom0's ioreq server: only when dom0 serves this slot itself
    // (a hosted VMApp sleeps on the slot's doorbell; across a link the relay carries the traps).
    if (placement === 'dom0' && !this.remote) this.ioreq = this.bindChannel();
    // The VMM/VMApp shared state, when dom0 starts the VMApp (in the guest's process, it makes its own).
    if (placement === 'hosted' && !this.inGuestProcess) this.vmmShared = createVmmShared(MAX_LANCES);
    if (placement === 'dom0')
      this.server = new IoReqServer({
        domid: domain.domid,
        slot: this.slot,
        dropKick: () => {
          const f = this.eventFault;
          if (!f || f.lostToModel <= 0 || f.draw() >= f.lostToModel) return false;
          this.faultCounters.kicksLost++;
          return true;
        },
        // Across a link the accesses arrive on the vCPU link, not through this slot.
        ...(this.ioreq ? { events: hv.dom0Events, port: this.ioreq.dom0Port } : {}),
        log,
        global: hv.counters,
        host: hv.host,
        ...(opts.pollUs !== undefined ? { pollUs: opts.pollUs } : {}),
      });
  }

  /** An interdomain event channel dom0 ↔ guest, both ends bound by the hypervisor (as Xen does for ioreq and emulated IRQs). */
  private bindChannel(): IrqLine {
    const dom0Port = this.hv.evtchn.allocUnbound(0, this.domain.domid);
    const guestPort = this.hv.evtchn.bindInterdomain(this.domain.domid, 0, dom0Port);
    return { dom0Port, guestPort };
  }

  /**
   * Fault injection (evtchn.lost / evtchn.delayed on an emulated guest): virtual IRQs to the guest
   * lost or delivered late, and the vCPU's kicks of the ioreq server lost. Drivers recover as on
   * real hardware: the ATA driver polls on a lost interrupt, pcnet and the ioreq server are woken
   * by the missed-event poll.
   */
  eventFault?: { lostToGuest: number; lostToModel: number; delayMs: number; draw: () => number };
  readonly faultCounters = { irqsLost: 0, irqsDelayed: 0, kicksLost: 0 };

  private raise(line: IrqLine): void {
    if (this.destroyed) return;
    const f = this.eventFault;
    if (f) {
      if (f.lostToGuest > 0 && f.draw() < f.lostToGuest) return void this.faultCounters.irqsLost++;
      if (f.delayMs > 0) {
        this.faultCounters.irqsDelayed++;
        setTimeout(() => this.deliverIrq(line), f.delayMs).unref();
        return;
      }
    }
    this.deliverIrq(line);
  }

  private deliverIrq(line: IrqLine): void {
    if (this.destroyed) return;
    if (this.remote) {
      // Across a link: the writes the interrupt announces go first, on the same link.
      this.shipWrites();
      if (this.vcpuPeer) notify(this.vcpuPeer, IoReqLinkContract.notifications.irq, { port: line.guestPort });
      return;
    }
    this.hv.dom0Events.send(line.dom0Port);
  }

  /** The bytes the models wrote into guest memory since the last time, to send to the guest. */
  private takeWrites(): GuestMemoryWrite[] {
    const mem = this.domain.memory.bytes;
    const out = this.written.map(([gpa, len]) => ({ gpa, data: mem.slice(gpa, gpa + len) }));
    this.written = [];
    return out;
  }

  private shipWrites(): void {
    if (!this.remote || this.written.length === 0) return;
    const writes = this.takeWrites();
    if (this.vcpuPeer) notify(this.vcpuPeer, IoReqLinkContract.notifications.dma, { writes });
  }

  /** Models in dom0 across a link: a vCPU relay connected for this guest (ws role `vcpu`). */
  get awaitsVcpuLink(): boolean {
    return this.remote && !this.vcpuPeer && !this.destroyed;
  }

  /**
   * Serve the guest's vCPU relay: each request carries the ranges the driver synced for the
   * device; they land in dom0's copy of guest memory, the model runs, and the answer carries
   * everything the model wrote into guest memory meanwhile.
   */
  serveVcpuLink(peer: RpcPeer): void {
    this.vcpuPeer = peer;
    serveContract(peer, IoReqLinkContract, {
      access: (p) => {
        if (!applyGuestWrites(this.domain.memory.bytes, p.pages)) throw new InvalidArgumentError('ioreq.access: pages outside the guest\'s memory or too large');
        const req: IoReq = {
          seq: p.seq,
          port: p.port,
          size: p.size,
          dir: p.dir,
          data: p.data >>> 0,
          ...(p.pre ? { pre: { port: p.pre.port, data: p.pre.data & 0xffff } } : {}),
        };
        const data = this.server!.handle(req);
        return { data, writes: this.takeWrites() };
      },
    });
    peer.link.onClose(() => {
      if (this.vcpuPeer === peer) this.vcpuPeer = undefined;
    });
  }

  addNic(devid: number, mac: string, bridge: SoftwareBridge, hosted: HostedNicOptions = {}): EmulatedNic {
    const k = this.nics.length;
    if (k >= MAX_LANCES) throw new InvalidArgumentError(`${this.domain.name}: at most ${MAX_LANCES} emulated NICs`);
    const base = LANCE_IO_BASE + LANCE_IO_SIZE * k;
    const name = `lance${devid}`;
    const irq = this.bindChannel();
    const pool = bridge.pool;
    const iface = `${this.domain.name}/${name}`;
    const trace = (dir: 'tx' | 'rx', frame: Uint8Array) => {
      if (frameChannel.hasSubscribers) publishTrace({ kind: 'frame', t: traceNow(), host: this.hv.host, domid: this.domain.domid, device: name, iface, dir, len: frame.length, frame });
    };
    /** A frame the model sent: onto the bridge from this NIC's port. */
    const toBridge = (frame: Uint8Array) => {
      const skb = pool.alloc();
      if (!skb) return;
      const len = Math.min(frame.length, 4096);
      pool.memory.page(skb.pfn).set(frame.subarray(0, len));
      skb.len = len;
      trace('tx', frame);
      bridge.input(port, skb);
    };
    let model: LanceDevice | undefined;
    const port: BridgePort = {
      name: iface,
      deliver: (skb: Skb) => {
        const frame = pool.data(skb);
        if (!this.destroyed) {
          if (this.placement === 'hosted') {
            // A VMNet read by the VMApp: the frame crosses to its thread (a copy).
            if (this.vmappPeer) notify(this.vmappPeer, VmAppHostContract.notifications.frame, { devid, frame: frame.slice() });
            trace('rx', frame);
          } else {
            if (model!.receive(frame) === 'delivered') trace('rx', frame);
            this.shipWrites();
          }
        }
        pool.put(skb);
      },
    };
    if (this.placement === 'dom0') {
      let transmitScheduled = false;
      const m: LanceDevice = new LanceDevice({
        mac: Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16))),
        dma: this.dma,
        irq: (level) => {
          if (level) this.raise(irq);
        },
        transmit: toBridge,
        // The TDMD write's trap is answered first; the transmit runs on dom0's next turn.
        kick: () => {
          if (transmitScheduled || this.destroyed) return;
          transmitScheduled = true;
          setImmediate(() => {
            transmitScheduled = false;
            if (!this.destroyed) m.transmitPoll();
            this.shipWrites();
          });
        },
      });
      model = m;
      this.server!.map({ name, base, length: LANCE_IO_SIZE, handler: m });
    } else this.hostedFrames.set(devid, toBridge);
    bridge.add(port);
    const nic: EmulatedNic = { kind: 'nic', devid, name, mac, ...(model ? { model } : {}), ...(this.placement === 'hosted' ? { hosted } : {}), irq, base, port, bridge };
    this.nics.push(nic);
    return nic;
  }

  /** hosted: where each NIC's frames from the VMApp go (its bridge port), by devid. */
  private readonly hostedFrames = new Map<number, (frame: Uint8Array) => void>();

  addDisk(devid: number, disk: PhysicalDiskDriver, frames: FrameAllocator, region: { start: number; sectors: number }): EmulatedDisk {
    const channel = ATA_CHANNELS[this.disks.length];
    if (!channel) throw new InvalidArgumentError(`${this.domain.name}: at most ${ATA_CHANNELS.length} emulated disks (one per ATA channel)`);
    const name = `ata${devid}`;
    const irq = this.bindChannel();
    const backing = new PhysicalDiskBacking(disk, this.hv.dom0.memory, frames, region);
    let model: AtaDevice | undefined;
    if (this.placement === 'dom0') {
      model = new AtaDevice({ backing, irq: () => this.raise(irq), serial: `RV${this.domain.domid}-${devid}`, model: 'ringvisor ATA disk' });
      this.server!.map({ name: `${name}.cmd`, base: channel.command, length: 8, handler: model.commandBlock });
      this.server!.map({ name: `${name}.ctl`, base: channel.control, length: 1, handler: model.controlBlock });
    }
    const d: EmulatedDisk = { kind: 'disk', devid, name, ...(model ? { model } : {}), irq, channel, backing, region };
    this.disks.push(d);
    return d;
  }

  /**
   * hosted: start the guest's VMApp once its devices are added (before the guest boots). The
   * VMApp gets the guest's memory, the slot, the VMM's shared state and dom0's ends of the IRQ
   * channels; its control link carries VMNet frames and disk requests.
   */
  async start(): Promise<void> {
    if (this.placement !== 'hosted' || this.inGuestProcess || this.vmappWorker) return;
    const spec: VmAppSpec = {
      guest: this.domain.name,
      domid: this.domain.domid,
      memory: this.domain.memory.buffer,
      eventMemory: this.hv.eventMemory,
      localInterrupts: false,
      slot: this.slot,
      vmmShared: this.vmmShared!,
      ...(this.opts.pollUs !== undefined ? { pollUs: this.opts.pollUs } : {}),
      ...this.vmappPlan(false),
    };
    const { peer, worker } = startVmApp(spec);
    const exited = new Promise<number>((r) => worker.once('exit', r));
    worker.on('error', (e) => this.log.error({ err: e, guest: this.domain.name }, 'vmapp crashed'));
    this.vmappWorker = { exited, terminate: () => worker.terminate() };
    this.serveVmApp(peer);
  }

  /** The devices the VMApp models; IRQs on dom0's ends (raised by event send) or the guest's (raised in its process). */
  private vmappPlan(guestPorts: boolean): VmAppPlan {
    return {
      nics: this.nics.map((n, index) => ({ devid: n.devid, name: n.name, mac: n.mac, base: n.base, irqPort: guestPorts ? n.irq.guestPort : n.irq.dom0Port, index })),
      disks: this.disks.map((d) => ({ devid: d.devid, name: d.name, commandBase: d.channel.command, controlBase: d.channel.control, irqPort: guestPorts ? d.irq.guestPort : d.irq.dom0Port, sectors: d.region.sectors })),
    };
  }

  /**
   * hosted: serve a VMApp's link — frames it writes to VMNet go onto the bridge, its disk
   * requests to the guest's region. The link is the VMApp worker's (threads) or the guest's
   * (ws: its process relays for the VMApp it runs).
   */
  serveVmApp(peer: RpcPeer): void {
    if (this.placement !== 'hosted') return;
    this.vmappPeer = peer;
    onNotify(peer, VmAppHostContract.notifications.frame, ({ devid, frame }) => {
      if (!this.destroyed) this.hostedFrames.get(devid)?.(frame);
    });
    serveContract(peer, VmAppHostContract, {
      disk: async (p) => {
        const d = this.disks.find((x) => x.devid === p.devid);
        if (!d || this.destroyed) return { status: -1 };
        if (p.op === 'read') {
          const r = await d.backing.read(p.lba, p.count);
          return typeof r === 'number' ? { status: r || -1 } : { status: 0, data: r };
        }
        if (p.op === 'write') return { status: await d.backing.write(p.lba, p.data) };
        return { status: await d.backing.flush() };
      },
    });
  }

  /**
   * hosted: evtchn.lost / evtchn.delayed act in the VMApp, which raises the virtual IRQs in its own
   * thread (threads) or the guest's process (ws); `null` clears. Answers the VMApp's fault counters.
   */
  setHostedEventFault(f: InterruptFault | null): Promise<InterruptFaultCounts> {
    if (!this.vmappPeer || this.destroyed) throw new ClosedError(`${this.domain.name}: no VMApp to inject into`);
    // The answer may wait until the fault ends (see VMAPP_FAULTS): bounded by its own length.
    return contractClient(VmAppContract, this.vmappPeer).faults(f, { timeoutMs: (f?.forMs ?? 0) + 10_000 });
  }

  /** hosted, threads: the VMApp worker's link, a source of trace events (its traps) for dom0's trace hub. */
  get vmappTraceSource(): RpcPeer | undefined {
    return this.vmappWorker && !this.destroyed ? this.vmappPeer : undefined;
  }

  /** hosted: fetch the VMApp's counters now (stats() returns the last ones fetched). */
  async refresh(): Promise<void> {
    if (!this.vmappPeer || this.destroyed) return;
    try {
      this.lastHostedStats = await contractClient(VmAppContract, this.vmappPeer).stats();
    } catch {
      /* the VMApp is gone; keep the last figures */
    }
  }

  /** What the guest is told about its emulated platform (the "BIOS tables"). */
  bootSpec(): EmulatedDeviceSpec {
    const lances = this.nics.map((n, index) => ({ base: n.base, index, vmmIo: n.hosted?.vmmIo === true, sendCombining: n.hosted?.sendCombining === true }));
    return {
      // Hosted: no event port (the VMApp sleeps on the slot's doorbell); in the guest's process
      // the guest creates the slot and the VMM's shared state itself.
      // Models in dom0 across a link: no slot here either — the guest's relay carries its traps.
      ioreq: this.placement === 'hosted' ? (this.inGuestProcess ? { port: -1 } : { slot: this.slot, port: -1 }) : this.ioreq ? { slot: this.slot, port: this.ioreq.guestPort } : { port: -1 },
      ...(this.placement === 'hosted' ? { hosted: this.inGuestProcess ? { lances, vmapp: this.vmappPlan(true) } : { vmm: this.vmmShared!, lances } } : {}),
      nics: this.nics.map((n) => ({ devid: n.devid, base: n.base, irqPort: n.irq.guestPort })),
      disks: this.disks.map((d) => ({ devid: d.devid, commandBase: d.channel.command, controlBase: d.channel.control, irqPort: d.irq.guestPort })),
    };
  }

  /**
   * Counters for summaries and views: the traps as the device-model side served them, each
   * model's own counters, DMA bytes. Hosted: the VMApp's, as last fetched by refresh().
   */
  stats(): PlatformStats {
    // Hosted, before the first refresh: zeros (the VMApp's figures have not been fetched yet).
    const h = this.lastHostedStats ?? (this.server ? undefined : emptyVmAppStats());
    const ioreq = h ? h.ioreq : { ...this.server!.counters };
    return {
      guest: this.domain.name,
      domid: this.domain.domid,
      placement: this.placement,
      ioreq,
      perRange: h ? h.perRange : Object.fromEntries(this.server!.perRange),
      dma: h ? h.dma : { bytesRead: this.dma.bytesRead, bytesWritten: this.dma.bytesWritten },
      ...(h ? { vmnet: h.vmnet, combined: h.combined, busyMs: h.busyMs } : {}),
      devices: h
        ? h.devices.map((d) => ({ ...d, ...(d.kind === 'disk' ? { metrics: { ...d.metrics, bounceBytesCopied: this.disks.find((x) => x.name === d.name)?.backing.bytesCopied ?? 0 } } : {}) }))
        : [
            ...this.nics.map((n) => ({ name: n.name, kind: 'nic' as const, metrics: { ...n.model!.counters } })),
            ...this.disks.map((d) => ({ name: d.name, kind: 'disk' as const, metrics: { ...d.model!.counters, bounceBytesCopied: d.backing.bytesCopied } })),
          ],
    };
  }

  /** Tear down: the models stop raising interrupts, the bridge forgets the NICs, bounce frames go back. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await this.refresh();
    this.destroyed = true;
    this.server?.close();
    if (this.vmappWorker && this.vmappPeer) {
      const { exited, terminate } = this.vmappWorker;
      await contractClient(VmAppContract, this.vmappPeer).stop().catch(() => undefined);
      this.vmappPeer.close('platform destroyed');
      if ((await Promise.race([exited, new Promise((r) => setTimeout(() => r('late'), 2_000).unref())])) === 'late') await terminate();
    }
    for (const n of this.nics) n.bridge.remove(n.port);
    for (const line of [...(this.ioreq ? [this.ioreq] : []), ...this.nics.map((n) => n.irq), ...this.disks.map((d) => d.irq)]) {
      try {
        this.hv.evtchn.close(0, line.dom0Port);
      } catch {
        /* already closed with the domain */
      }
    }
    await Promise.all(this.disks.flatMap((d) => (d.model ? [d.model.idle()] : [])));
    for (const d of this.disks) d.backing.release();
  }
}

function emptyVmAppStats(): VmAppStats {
  return {
    ioreq: { traps: 0, worldSwitches: 0, reads: 0, writes: 0, polled: 0, wakeups: 0, unassigned: 0, handlerErrors: 0, deferredWrites: 0 },
    perRange: {},
    dma: { bytesRead: 0, bytesWritten: 0 },
    vmnet: { writes: 0, bytesOut: 0, reads: 0, bytesIn: 0 },
    combined: { sent: 0, flushes: 0, timerFlushes: 0 },
    devices: [],
    busyMs: 0,
  };
}
