/**
 * One guest's emulated platform in dom0 (Xen HVM with QEMU in dom0): the guest's ioreq server
 * and port map, and the device models it decodes — Lance NICs on the software bridge, ATA disks
 * on the guest's region of the physical disk. Each device gets a virtual IRQ: an event channel
 * from dom0 to the guest, raised when the model asserts its interrupt.
 *
 * I/O map (what the guest's drivers probe, as a PC BIOS would assign it):
 *   Lance k      0xc000 + 0x20·k (32-byte window)
 *   ATA primary  0x1f0–0x1f7, 0x3f6;  ATA secondary 0x170–0x177, 0x376
 */
import {
  GuestMemoryDma,
  createIoReqSlot,
  publishTrace,
  traceChannel,
  traceNow,
  InvalidArgumentError,
  type EmulatedDeviceSpec,
  type FrameAllocator,
  type Logger,
} from '@ringvisor/shared';
import type { Hypervisor, Domain } from '../hypervisor/hypervisor.js';
import { IoReqServer } from '../hypervisor/ioreq.js';
import type { PhysicalDiskDriver } from '../drivers/disk.js';
import type { Skb } from '../drivers/skb.js';
import type { BridgePort, SoftwareBridge } from '../backends/net/bridge.js';
import { LanceDevice } from './lance/index.js';
import { AtaDevice } from './ata/index.js';
import { PhysicalDiskBacking } from './disk-backing.js';

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
  model: LanceDevice;
  irq: IrqLine;
  base: number;
  port: BridgePort;
  bridge: SoftwareBridge;
}

export interface EmulatedDisk {
  kind: 'disk';
  devid: number;
  name: string;
  model: AtaDevice;
  irq: IrqLine;
  channel: (typeof ATA_CHANNELS)[number];
  backing: PhysicalDiskBacking;
  region: { start: number; sectors: number };
}

export class EmulatedPlatform {
  readonly slot = createIoReqSlot();
  readonly server: IoReqServer;
  readonly dma: GuestMemoryDma;
  readonly nics: EmulatedNic[] = [];
  readonly disks: EmulatedDisk[] = [];
  private readonly ioreq: IrqLine;
  private destroyed = false;

  constructor(
    private readonly hv: Hypervisor,
    readonly domain: Domain,
    private readonly log: Logger,
    opts: { pollUs?: number } = {},
  ) {
    // Full emulation needs the guest's memory here (the model DMAs into it) and a vCPU that can
    // block on a shared slot: shared memory, i.e. the threads transport.
    if (domain.linked) throw new InvalidArgumentError(`${domain.name}: emulated devices need the guest's memory shared with dom0 (threads transport)`);
    this.dma = new GuestMemoryDma(domain.memory.bytes);
    this.ioreq = this.bindChannel();
    this.server = new IoReqServer({
      domid: domain.domid,
      slot: this.slot,
      events: hv.dom0Events,
      port: this.ioreq.dom0Port,
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

  private raise(line: IrqLine): void {
    if (this.destroyed) return;
    this.hv.dom0Events.send(line.dom0Port);
  }

  addNic(devid: number, mac: string, bridge: SoftwareBridge): EmulatedNic {
    const k = this.nics.length;
    const base = LANCE_IO_BASE + LANCE_IO_SIZE * k;
    const name = `lance${devid}`;
    const irq = this.bindChannel();
    const pool = bridge.pool;
    const iface = `${this.domain.name}/${name}`;
    const trace = (dir: 'tx' | 'rx', frame: Uint8Array) => {
      if (frameChannel.hasSubscribers) publishTrace({ kind: 'frame', t: traceNow(), host: this.hv.host, domid: this.domain.domid, device: name, iface, dir, len: frame.length, frame });
    };
    let transmitScheduled = false;
    const port: BridgePort = {
      name: iface,
      deliver: (skb: Skb) => {
        const frame = pool.data(skb);
        const r = this.destroyed ? 'stopped' : model.receive(frame);
        if (r === 'delivered') trace('rx', frame);
        pool.put(skb);
      },
    };
    const model: LanceDevice = new LanceDevice({
      mac: Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16))),
      dma: this.dma,
      irq: (level) => {
        if (level) this.raise(irq);
      },
      transmit: (frame) => {
        const skb = pool.alloc();
        if (!skb) return;
        pool.memory.page(skb.pfn).set(frame.subarray(0, 4096));
        skb.len = Math.min(frame.length, 4096);
        trace('tx', frame);
        bridge.input(port, skb);
      },
      // The TDMD write's trap is answered first; the transmit runs on dom0's next turn.
      kick: () => {
        if (transmitScheduled || this.destroyed) return;
        transmitScheduled = true;
        setImmediate(() => {
          transmitScheduled = false;
          if (!this.destroyed) model.transmitPoll();
        });
      },
    });
    this.server.map({ name, base, length: LANCE_IO_SIZE, handler: model });
    bridge.add(port);
    const nic: EmulatedNic = { kind: 'nic', devid, name, model, irq, base, port, bridge };
    this.nics.push(nic);
    return nic;
  }

  addDisk(devid: number, disk: PhysicalDiskDriver, frames: FrameAllocator, region: { start: number; sectors: number }): EmulatedDisk {
    const channel = ATA_CHANNELS[this.disks.length];
    if (!channel) throw new InvalidArgumentError(`${this.domain.name}: at most ${ATA_CHANNELS.length} emulated disks (one per ATA channel)`);
    const name = `ata${devid}`;
    const irq = this.bindChannel();
    const backing = new PhysicalDiskBacking(disk, this.hv.dom0.memory, frames, region);
    const model = new AtaDevice({ backing, irq: () => this.raise(irq), serial: `RV${this.domain.domid}-${devid}`, model: 'ringvisor ATA disk' });
    this.server.map({ name: `${name}.cmd`, base: channel.command, length: 8, handler: model.commandBlock });
    this.server.map({ name: `${name}.ctl`, base: channel.control, length: 1, handler: model.controlBlock });
    const d: EmulatedDisk = { kind: 'disk', devid, name, model, irq, channel, backing, region };
    this.disks.push(d);
    return d;
  }

  /** What the guest is told about its emulated platform (the "BIOS tables"). */
  bootSpec(): EmulatedDeviceSpec {
    return {
      ioreq: { slot: this.slot, port: this.ioreq.guestPort },
      nics: this.nics.map((n) => ({ devid: n.devid, base: n.base, irqPort: n.irq.guestPort })),
      disks: this.disks.map((d) => ({ devid: d.devid, commandBase: d.channel.command, controlBase: d.channel.control, irqPort: d.irq.guestPort })),
    };
  }

  /** Counters for summaries and views: the vCPU's traps as dom0 served them, each model's own, DMA bytes. */
  stats(): { guest: string; domid: number; ioreq: IoReqServer['counters']; dma: { bytesRead: number; bytesWritten: number }; devices: Array<{ name: string; kind: 'nic' | 'disk'; metrics: object }> } {
    return {
      guest: this.domain.name,
      domid: this.domain.domid,
      ioreq: { ...this.server.counters },
      dma: { bytesRead: this.dma.bytesRead, bytesWritten: this.dma.bytesWritten },
      devices: [
        ...this.nics.map((n) => ({ name: n.name, kind: 'nic' as const, metrics: { ...n.model.metrics } })),
        ...this.disks.map((d) => ({ name: d.name, kind: 'disk' as const, metrics: { ...d.model.metrics, bounceBytesCopied: d.backing.bytesCopied } })),
      ],
    };
  }

  /** Tear down: the models stop raising interrupts, the bridge forgets the NICs, bounce frames go back. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.server.close();
    for (const n of this.nics) n.bridge.remove(n.port);
    for (const line of [this.ioreq, ...this.nics.map((n) => n.irq), ...this.disks.map((d) => d.irq)]) {
      try {
        this.hv.evtchn.close(0, line.dom0Port);
      } catch {
        /* already closed with the domain */
      }
    }
    await Promise.all(this.disks.map((d) => d.model.idle()));
    for (const d of this.disks) d.backing.release();
  }
}
