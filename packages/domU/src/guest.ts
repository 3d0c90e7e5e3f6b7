/**
 * A guest: boots its frontends, brings up its network stack, runs its workloads, and reports.
 * Stopping is orderly: workloads stop issuing, in-flight I/O drains, every acknowledged block is
 * read back and checked, then the frontends close (Closing → Closed) and release their grants.
 */
import { BootSpecError, NoSuchDeviceError, InvalidArgumentError, errorFields, HostedVmm, VcpuPortIo, doorbellKick, processCpuMs, type DirectFunctionSpec, type SvioVifSpec, type RpcPeer, type GuestBootSpec, type PortIo, type GuestDeviceStats, type DeviceMetrics, type GuestStats, type Logger, type DomainKey } from '@ringvisor/shared';
import { GuestKernel } from './kernel/kernel.js';
import { BlkFront } from './drivers/blkfront/index.js';
import { NetFront } from './drivers/netfront/index.js';
import { PcnetDriver } from './drivers/pcnet/index.js';
import { AtaDriver } from './drivers/ata/index.js';
import { VfBlkDriver } from './drivers/vf-blk/index.js';
import { VfNicDriver } from './drivers/vf-nic/index.js';
import { SvioNetDriver } from './drivers/svio-net/index.js';
import { SvioBlkDriver } from './drivers/svio-blk/index.js';
import { SvioCamDriver } from './drivers/svio-cam/index.js';
import { openVif } from './kernel/svio.js';
import { BlockLoad } from './workloads/block-load.js';
import { VIF_ATTACKS, attackVif, type HostileVifDriver, type VifAttack, type VifAttackOutcome } from './kernel/svio-misbehave.js';
import { sharedMemoryFunction, type DirectFunction } from './kernel/direct.js';
import { connectDirectLink, identityArrived, type DirectLink } from './kernel/direct-link.js';
import { strayDiskDma, type StrayDmaOutcome } from './drivers/vf-blk/misbehave.js';
import { strayNicDma } from './drivers/vf-nic/misbehave.js';
import type { BlockDevice } from './workloads/block-verifier.js';
import { LANCE_ATTACKS, lanceAttack, type LanceAttack, type PortAttackOutcome } from './drivers/pcnet/misbehave.js';
import { startLocalVmApp, type LocalVmApp } from './kernel/local-vmapp.js';
import { startIoReqRelay, type IoReqRelay } from './kernel/ioreq-relay.js';
import { ATA_ATTACKS, ataAttack, type AtaAttack, type AtaAttackOutcome } from './drivers/ata/misbehave.js';
import { NetStack } from './net/index.js';
import { BlockVerifier } from './workloads/block-verifier.js';
import { UdpEchoServer, UdpFlowClient } from './workloads/udp-flows.js';
import { UdpSink, UdpStreamSender } from './workloads/udp-stream.js';

const ECHO_PORT = 7;
const FLOW_PORT_BASE = 40000;
const UDP_TICK_MS = 10;

function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16)));
}

/** How a guest process reaches its own links (ws): dom0's URL and its domain key, nothing more. */
export interface GuestLinkCredentials {
  url: string;
  domainKey: DomainKey;
}

export class Guest {
  readonly blk: BlkFront[] = [];
  readonly net: Array<{ front: NetFront; stack: NetStack }> = [];
  /** Emulated devices: their drivers do port I/O, each access a trap of this vCPU. */
  readonly ata: Array<{ devid: number; driver: AtaDriver }> = [];
  readonly pcnet: Array<{ devid: number; driver: PcnetDriver; stack: NetStack }> = [];
  /** Assigned device functions (direct I/O): the guest drives them itself. */
  readonly vfBlk: Array<{ devid: number; driver: VfBlkDriver }> = [];
  readonly vfNic: Array<{ devid: number; driver: VfNicDriver; stack: NetStack }> = [];
  /** SV-IO VIFs: the guest's VIF drivers over each VIF's two queues. */
  readonly vifBlk: Array<{ devid: number; driver: SvioBlkDriver }> = [];
  readonly vifNet: Array<{ devid: number; driver: SvioNetDriver; stack: NetStack }> = [];
  /** SV-IO cameras: each frame checked by the camera consumer (order, gaps, integrity). */
  readonly vifCam: Array<{ devid: number; driver: SvioCamDriver }> = [];
  vcpu?: VcpuPortIo;
  /** Hosted placement: the VMM in this guest's world that every access goes through first. */
  vmm?: HostedVmm;
  /** What the emulated-device drivers execute their in/out instructions on. */
  private io?: PortIo;
  /** Hosted without shared memory with dom0: the VMApp this process runs. */
  private localVmApp?: LocalVmApp;
  /** Models in dom0 without shared memory: the thread carrying this vCPU's traps. */
  private relay?: IoReqRelay;
  /** Direct I/O without shared memory (ws): this guest's own link to the hardware. */
  private directLink?: DirectLink;

  /** Runtimes this guest's process carries whose trace events it forwards (its own VMApp). */
  traceDownstream(): RpcPeer[] {
    return this.localVmApp ? [this.localVmApp.peer] : [];
  }
  private verifier?: BlockVerifier;
  private verifierRun?: Promise<void>;
  private load?: BlockLoad;
  private loadRun?: Promise<void>;
  private echo?: UdpEchoServer;
  private flows: UdpFlowClient[] = [];
  private sink?: UdpSink;
  private streams: UdpStreamSender[] = [];
  private udpTimer?: NodeJS.Timeout;
  private stopRequested = false;
  private quiesced = false;
  private started = false;
  private state: GuestStats['state'] = 'booting';
  private error?: string;
  private readonly integrity = { checked: 0, failures: 0, kinds: {} as Record<string, number> };

  constructor(
    readonly kernel: GuestKernel,
    readonly spec: GuestBootSpec,
    readonly log: Logger,
    /** dom0's URL and this domain's key, when this guest runs as a process (ws). */
    private readonly link?: GuestLinkCredentials,
  ) {}

  async boot(): Promise<void> {
    const emu = this.spec.emulated;
    if (emu) {
      const { events } = this.kernel;
      if (emu.hosted) {
        // Hosted: the VMM forwards what it cannot handle to the VMApp, which sleeps on the doorbell.
        // Without shared memory with dom0 (ws) this process runs the VMApp itself.
        let { slot } = emu.ioreq;
        let vmm = emu.hosted.vmm;
        if (!slot || !vmm) {
          if (!emu.hosted.vmapp) throw new BootSpecError('hosted emulation: the boot spec has neither shared state nor a VMApp plan');
          this.localVmApp = startLocalVmApp(this.kernel, this.spec.name, emu.hosted.vmapp);
          ({ slot, vmm } = this.localVmApp);
        }
        this.vcpu = new VcpuPortIo(slot, doorbellKick(slot));
        this.vmm = new HostedVmm(this.vcpu, vmm, emu.hosted.lances);
        this.io = this.vmm;
      } else if (emu.ioreq.slot) {
        const slot = emu.ioreq.slot;
        this.vcpu = new VcpuPortIo(slot, () => events.send(emu.ioreq.port));
        this.io = this.vcpu;
      } else {
        // Models in dom0, no memory shared with it (ws): a relay thread carries the traps.
        if (!this.link) throw new BootSpecError('emulation in dom0 across a link needs the dom0 URL and the domain key for the vCPU link');
        this.relay = await startIoReqRelay(this.kernel, this.link);
        this.vcpu = new VcpuPortIo(this.relay.slot, doorbellKick(this.relay.slot), 10_000, 20, this.relay.syncList);
        this.io = this.vcpu;
      }
    }
    const irq = (port: number) => (handler: () => void) => this.kernel.events.on(port, () => handler());
    const d = this.spec.direct;
    const sv = this.spec.svio;
    const linkedVifs = sv?.vifs.filter((v) => !v.page) ?? [];
    if ((d && (d.hwUrl !== undefined || d.functions.some((f) => !f.bar))) || linkedVifs.length > 0) {
      // No shared memory with the hardware (ws): link to it directly for our functions and VIFs.
      const url = d?.hwUrl ?? sv?.hwUrl;
      if (!url || !this.link) throw new BootSpecError('direct I/O or SV-IO without shared memory needs the hardware\'s direct-link URL and the domain key');
      this.directLink = await connectDirectLink(this.kernel, url, this.link.domainKey);
    }
    const vifTransport = (v: { vif: number; port: number; page?: SharedArrayBuffer }) => (v.page ? undefined : this.directLink?.vif(v));
    const direct = async (kind: 'nic' | 'disk', devid: number): Promise<DirectFunction> => {
      const f = d?.functions.find((x) => x.kind === kind && x.devid === devid);
      if (!f) throw new BootSpecError(`direct ${kind === 'nic' ? 'vif' : 'vbd'} ${devid}: no function was assigned for it`);
      return this.directFunction(f);
    };
    const vifSpec = (kind: 'net' | 'blk', devid: number) => {
      const x = this.spec.svio?.vifs.find((y) => y.kind === kind && y.devid === devid);
      if (!x) throw new BootSpecError(`svio ${kind === 'net' ? 'vif' : 'vbd'} ${devid}: no VIF was created for it`);
      return x;
    };
    for (const v of this.spec.vbds) {
      if (v.mode === 'svio') {
        const spec = vifSpec('blk', v.devid);
        const vif = await openVif(this.kernel, spec, vifTransport(spec));
        this.vifBlk.push({ devid: v.devid, driver: new SvioBlkDriver(vif, this.kernel.memory, this.kernel.frames) });
        continue;
      }
      if (v.mode === 'direct') {
        const driver = new VfBlkDriver({ fn: await direct('disk', v.devid), memory: this.kernel.memory, frames: this.kernel.frames });
        await driver.open();
        this.vfBlk.push({ devid: v.devid, driver });
        continue;
      }
      if (v.mode === 'emulated') {
        const d = emu?.disks.find((x) => x.devid === v.devid);
        if (!d || !this.io) throw new BootSpecError(`emulated vbd ${v.devid}: the platform describes no such disk`);
        const driver = new AtaDriver({ io: this.io, onInterrupt: irq(d.irqPort), commandBase: d.commandBase, controlBase: d.controlBase });
        await driver.probe();
        this.ata.push({ devid: v.devid, driver });
        continue;
      }
      const b = new BlkFront(this.kernel, v.devid);
      await b.connect();
      this.blk.push(b);
    }
    for (const c of this.spec.svio?.vifs.filter((x) => x.kind === 'cam') ?? []) {
      const vif = await openVif(this.kernel, c, vifTransport(c));
      this.vifCam.push({ devid: c.devid, driver: new SvioCamDriver(vif, this.kernel.memory, this.kernel.frames) });
    }
    for (const v of this.spec.vifs) {
      if (v.mode === 'svio') {
        const spec = vifSpec('net', v.devid);
        const vif = await openVif(this.kernel, spec, vifTransport(spec));
        const driver = new SvioNetDriver(vif, this.kernel.memory, this.kernel.frames);
        const stack = new NetStack({ mac: macBytes(driver.mac), ip: v.ip, transmit: (f) => driver.transmit(f) });
        driver.onReceive((f) => stack.receive(f));
        this.vifNet.push({ devid: v.devid, driver, stack });
        continue;
      }
      if (v.mode === 'direct') {
        const driver = new VfNicDriver({
          fn: await direct('nic', v.devid),
          memory: this.kernel.memory,
          frames: this.kernel.frames,
          traceLabel: { host: this.kernel.host, domid: this.spec.domid, device: `vif${v.devid}`, iface: `${this.spec.name}/vif${v.devid}` },
        });
        await driver.open();
        const stack = new NetStack({ mac: macBytes(driver.mac), ip: v.ip, transmit: (f) => driver.transmit(f) });
        driver.onReceive((f) => stack.receive(f));
        this.vfNic.push({ devid: v.devid, driver, stack });
        continue;
      }
      if (v.mode === 'emulated') {
        const n = emu?.nics.find((x) => x.devid === v.devid);
        if (!n || !this.io) throw new BootSpecError(`emulated vif ${v.devid}: the platform describes no such NIC`);
        const driver = new PcnetDriver({ io: this.io, base: n.base, memory: this.kernel.memory, frames: this.kernel.frames, onInterrupt: irq(n.irqPort) });
        const { mac } = driver.probe();
        await driver.open();
        const stack = new NetStack({ mac, ip: v.ip, transmit: (f) => driver.transmit(f) });
        driver.onReceive((f) => stack.receive(f));
        this.pcnet.push({ devid: v.devid, driver, stack });
        continue;
      }
      const front = new NetFront(this.kernel, v.devid);
      await front.connect();
      const stack = new NetStack({ mac: macBytes(front.mac || v.mac), ip: v.ip, transmit: (f) => front.transmit(f) });
      front.onReceive((f) => {
        stack.receive(f);
      });
      this.net.push({ front, stack });
    }
    this.state = 'running';
  }

  /** How this guest reaches an assigned function: shared memory (threads), or its direct link (ws). */
  private async directFunction(f: DirectFunctionSpec): Promise<DirectFunction> {
    if (f.bar) return sharedMemoryFunction(this.kernel, f);
    if (!this.directLink) throw new BootSpecError(`function ${f.rid}: no register page and no direct link to the hardware`);
    const fn = this.directLink.fn(f);
    await identityArrived(fn);
    return fn;
  }

  /**
   * ws: the hardware that now holds our functions and VIFs is at `url` — after a hardware restart a
   * new process, so the old direct link (closed with the old process) is replaced by a new one.
   */
  private async hardwareAt(url: string | undefined): Promise<void> {
    if (url === undefined || (this.directLink && this.directLink.url === url && !this.directLink.closed)) return;
    if (!this.link) throw new BootSpecError('a direct link to the hardware needs the domain key');
    this.directLink?.close();
    this.directLink = await connectDirectLink(this.kernel, url, this.link.domainKey);
  }

  /** A function was assigned to us again (hot-plug after a reclaim): its driver starts over on it. */
  async plugDirect(f: DirectFunctionSpec, hwUrl?: string): Promise<void> {
    const d = f.kind === 'nic' ? this.vfNic.find((x) => x.devid === f.devid)?.driver : this.vfBlk.find((x) => x.devid === f.devid)?.driver;
    if (!d) throw new NoSuchDeviceError(`guest.direct.plug: no direct ${f.kind} ${f.devid} to attach ${f.rid} to`);
    await this.hardwareAt(hwUrl);
    await d.reattach(await this.directFunction(f));
  }

  /**
   * One of our VIFs was created again (a device reset, a hardware restart): open the new one —
   * over the direct link when we have no shared memory with the hardware — and let its driver
   * start over on it (block: resubmit what the old VIF never answered).
   */
  async plugVif(v: SvioVifSpec, hwUrl?: string): Promise<void> {
    const known = this.spec.svio?.vifs.find((x) => x.kind === v.kind && x.devid === v.devid);
    const driver = v.kind === 'net' ? this.vifNet.find((x) => x.devid === v.devid)?.driver : v.kind === 'blk' ? this.vifBlk.find((x) => x.devid === v.devid)?.driver : this.vifCam.find((x) => x.devid === v.devid)?.driver;
    if (!known || !driver) throw new NoSuchDeviceError(`guest.svio.plug: no SV-IO ${v.kind} ${v.devid} to attach VIF ${v.vif} to`);
    if (!v.page) await this.hardwareAt(hwUrl);
    const transport = v.page ? undefined : this.directLink?.vif(v);
    if (!v.page && !transport) throw new BootSpecError(`guest.svio.plug: VIF ${v.vif} has no page and there is no direct link to the hardware`);
    const vif = await openVif(this.kernel, v, transport);
    Object.assign(known, v);
    driver.reattach(vif);
  }

  /** The driver of one of our SV-IO devices ("vif0", "vbd51712", "cam0"), if it is one. */
  svioDriver(device: string): HostileVifDriver | undefined {
    const m = /^(vif|vbd|cam)(\d+)$/.exec(device);
    if (!m) return undefined;
    const devid = Number(m[2]);
    const list = m[1] === 'vif' ? this.vifNet : m[1] === 'vbd' ? this.vifBlk : this.vifCam;
    return list.find((x) => x.devid === devid)?.driver;
  }

  /** Turn our own VIF driver on its VIF (fault plans' svio.hostile). */
  attackVif(device: string, attack: string, count: number, seed: number): Promise<VifAttackOutcome> {
    const d = this.svioDriver(device);
    if (!d) throw new NoSuchDeviceError(`guest.attack: ${device} is not an SV-IO device of ${this.spec.name}`);
    if (!VIF_ATTACKS.includes(attack as VifAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for an SV-IO device (one of ${VIF_ATTACKS.join(', ')})`);
    return attackVif(d, attack as VifAttack, count, seed, this.kernel.memory.frames);
  }

  /** Program our own function to DMA where it must not (fault plans' iommu.stray-dma). */
  async attackDirect(device: string, count: number, seed: number): Promise<StrayDmaOutcome> {
    const m = /^(vif|vbd)(\d+)$/.exec(device);
    const frames = this.kernel.memory.frames;
    if (m?.[1] === 'vbd') {
      const d = this.vfBlk.find((x) => x.devid === Number(m[2]));
      if (d) return strayDiskDma(d.driver, frames, count, seed);
    }
    if (m?.[1] === 'vif') {
      const d = this.vfNic.find((x) => x.devid === Number(m[2]));
      if (d) return strayNicDma(d.driver, frames, count, seed);
    }
    throw new NoSuchDeviceError(`guest.attack: ${device} is not a direct device of ${this.spec.name}`);
  }

  /** Is `device` ("vif0", "vbd51712") one of our direct devices? */
  isDirect(device: string): boolean {
    const m = /^(vif|vbd)(\d+)$/.exec(device);
    return m !== null && (m[1] === 'vif' ? this.vfNic : this.vfBlk).some((x) => x.devid === Number(m[2]));
  }

  /** The toolstack reclaimed one of our functions: stop using it. */
  unplugDirect(kind: 'nic' | 'disk', devid: number): void {
    const d = kind === 'nic' ? this.vfNic.find((x) => x.devid === devid)?.driver : this.vfBlk.find((x) => x.devid === devid)?.driver;
    if (!d) throw new NoSuchDeviceError(`guest.direct.unplug: no direct ${kind} ${devid}`);
    d.detach('unplugged by the toolstack');
  }

  /** Start the configured workloads (once). */
  startWorkloads(): void {
    if (this.started || this.stopRequested) return;
    this.started = true;
    // A camera streams from the start; its consumer checks every frame.
    for (const { driver } of this.vifCam) driver.start();
    const w = this.spec.workloads;
    if (w.block) {
      const dev = this.blockDevice(w.block.devid);
      this.verifier = new BlockVerifier({
        device: dev,
        writer: this.spec.domid,
        blocks: w.block.blocks,
        queueDepth: w.block.queueDepth,
        seed: this.spec.seed,
        freshDevice: false,
        volatileCache: w.block.volatileCache === true,
      });
      this.verifierRun = this.verifier.runFor(Infinity, () => this.stopRequested).catch((e: Error) => {
        this.fail(`block workload: ${e.message}`);
      });
    }
    if (w.io) {
      const { devid, ...o } = w.io;
      this.load = new BlockLoad({ device: this.blockDevice(devid), ...o, seed: this.spec.seed });
      this.loadRun = this.load.runFor(() => this.stopRequested).catch((e: Error) => this.fail(`io workload: ${e.message}`));
    }
    const stack = this.net[0]?.stack ?? this.pcnet[0]?.stack ?? this.vfNic[0]?.stack ?? this.vifNet[0]?.stack;
    if (stack) {
      this.echo = new UdpEchoServer({ stack, port: ECHO_PORT });
      this.sink = new UdpSink(stack);
      const u = w.udp;
      if (u && u.mode === 'stream') {
        u.peers.forEach((p, i) => {
          const s = new UdpStreamSender({ stack, dstIp: p.ip, srcPort: FLOW_PORT_BASE + i, flowId: (this.spec.domid << 16) | i, payloadSize: u.payloadBytes, ratePps: u.ratePps ?? 0, burst: u.window });
          s.start();
          this.streams.push(s);
        });
        this.udpTimer = setInterval(() => stack.poll(), UDP_TICK_MS);
      } else if (u) {
        u.peers.forEach((p, i) => {
          this.flows.push(
            new UdpFlowClient({
              stack,
              dstIp: p.ip,
              dstPort: ECHO_PORT,
              srcPort: FLOW_PORT_BASE + i,
              flowId: (this.spec.domid << 16) | i,
              payloadSize: u.payloadBytes,
              window: u.window,
            }),
          );
        });
        this.udpTimer = setInterval(() => {
          const now = performance.now();
          // Retries ARP requests that went unanswered (a peer still booting, a partition).
          stack.poll();
          for (const f of this.flows) f.tick(now);
        }, UDP_TICK_MS);
      }
    }
  }

  /** The host's writeback disk lost power: writes not yet durable are in doubt for good. */
  powerLost(): void {
    this.verifier?.powerLost();
  }

  /** Forget round-trip samples so far (a benchmark's window starts). */
  resetRtt(): void {
    for (const f of this.flows) f.resetRtt();
    this.verifier?.resetLatency();
    this.load?.resetLatency();
  }

  private fail(message: string): void {
    this.state = 'failed';
    this.error = message;
    this.log.error({ err: message }, 'guest workload failed');
  }

  /**
   * Turn this vCPU against one of its own emulated devices (fault plans, hostile-driver tests):
   * `device` is "lance<devid>" or "ata<devid>". The driver re-opens or resets the device after.
   */
  async attackEmulated(device: string, attack: string, count: number, seed: number): Promise<PortAttackOutcome | AtaAttackOutcome> {
    const emu = this.spec.emulated;
    const m = /^(lance|ata)(\d+)$/.exec(device);
    if (!m || !emu || !this.io) throw new NoSuchDeviceError(`guest.attack: ${device} is not an emulated device of ${this.spec.name}`);
    const devid = Number(m[2]);
    if (m[1] === 'lance') {
      const nic = this.pcnet.find((x) => x.devid === devid);
      const where = emu.nics.find((x) => x.devid === devid);
      if (!nic || !where) throw new NoSuchDeviceError(`guest.attack: no emulated NIC ${device}`);
      if (!LANCE_ATTACKS.includes(attack as LanceAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for a Lance (one of ${LANCE_ATTACKS.join(', ')})`);
      const out = lanceAttack({ io: this.io, base: where.base, memory: this.kernel.memory, frames: this.kernel.frames }, attack as LanceAttack, count, seed);
      await nic.driver.reopen();
      return { ...out, recovered: true };
    }
    const disk = this.ata.find((x) => x.devid === devid);
    const where = emu.disks.find((x) => x.devid === devid);
    if (!disk || !where) throw new NoSuchDeviceError(`guest.attack: no emulated disk ${device}`);
    if (!ATA_ATTACKS.includes(attack as AtaAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for an ATA disk (one of ${ATA_ATTACKS.join(', ')})`);
    const io = this.io;
    return disk.driver.exclusive(() => ataAttack({ io, commandBase: where.commandBase, controlBase: where.controlBase, sectors: disk.driver.sectors }, attack as AtaAttack, count, seed));
  }

  /** The block device with `devid`, whichever way it is reached (PV frontend or emulated disk). */
  private blockDevice(devid: number): BlockDevice {
    return (
      this.blk.find((b) => b.devid === devid) ??
      this.ata.find((a) => a.devid === devid)?.driver ??
      this.vfBlk.find((a) => a.devid === devid)?.driver ??
      this.vifBlk.find((a) => a.devid === devid)?.driver ??
      this.blk[0] ??
      this.ata[0]?.driver ??
      this.vfBlk[0]?.driver ??
      this.vifBlk[0].driver
    );
  }

  stats(): GuestStats {
    const devices: GuestDeviceStats[] = [];
    // The split-driver frontends map their own counters (Device.metrics()).
    // Their detail holds only counters (numbers), which is what guest stats carry.
    const pv = (m: DeviceMetrics) => ({ mode: 'pv' as const, ops: m.ops, bytes: m.bytes, errors: m.errors, detail: m.detail as Record<string, number> });
    for (const b of this.blk) devices.push({ type: 'vbd', devid: b.devid, ...pv(b.metrics()) });
    for (const { front } of this.net) devices.push({ type: 'vif', devid: front.devid, ...pv(front.metrics()) });
    // The vCPU's traps (one vCPU serves every emulated device of this guest). Hosted: every
    // access traps into the VMM; only those it forwards reach the slot (and switch worlds).
    const c = this.vcpu?.counters;
    const vm = this.vmm?.counters;
    const trapStats = () => ({
      traps: vm?.traps ?? c?.traps ?? 0,
      forwarded: c?.traps ?? 0,
      worldSwitches: vm ? vm.worldSwitches : 2 * (c?.traps ?? 0),
      handledInVmm: vm?.handledInVmm ?? 0,
      combinedTransmits: vm?.combinedTransmits ?? 0,
      kicks: c?.kicks ?? 0,
      kicksSuppressed: c?.kicksSuppressed ?? 0,
      trapTimeouts: c?.timeouts ?? 0,
    });
    for (const { devid, driver } of this.ata) {
      const m = driver.counters;
      devices.push({
        type: 'vbd',
        devid,
        mode: 'emulated',
        ops: m.commands,
        bytes: (m.sectorsRead + m.sectorsWritten) * 512,
        errors: m.errors,
        detail: { ...m, bytesRead: m.sectorsRead * 512, bytesWritten: m.sectorsWritten * 512, ...trapStats() },
      });
    }
    for (const { devid, driver } of this.pcnet) {
      const m = driver.counters;
      devices.push({
        type: 'vif',
        devid,
        mode: 'emulated',
        ops: m.txPackets + m.rxPackets,
        bytes: m.txBytes + m.rxBytes,
        // Frames the NIC missed for want of a posted buffer (the vCPU was busy) are drops, as
        // netback's rxDropped are for a PV guest, not errors: `detail.rxMissed` has them.
        errors: m.txErrors + m.rxErrors - m.rxMissed + m.txDropped,
        detail: { ...m, ...trapStats() },
      });
    }
    // Direct and SV-IO drivers map their own counters (Device.metrics()).
    for (const { devid, driver } of this.vfBlk) devices.push({ type: 'vbd', devid, mode: 'direct', ...numericRow(driver.metrics()) });
    for (const { devid, driver } of this.vfNic) devices.push({ type: 'vif', devid, mode: 'direct', ...numericRow(driver.metrics()) });
    for (const { devid, driver } of this.vifBlk) devices.push({ type: 'vbd', devid, mode: 'svio', ...numericRow(driver.metrics()) });
    for (const { devid, driver } of this.vifNet) devices.push({ type: 'vif', devid, mode: 'svio', ...numericRow(driver.metrics()) });
    for (const { devid, driver } of this.vifCam) devices.push({ type: 'cam', devid, mode: 'svio', ...numericRow(driver.metrics()) });
    const v = this.verifier?.stats;
    const udp = { sent: 0, echoed: 0, lost: 0, late: 0, duplicated: 0, reordered: 0, corrupted: 0 };
    for (const f of this.flows) {
      const s = f.stats;
      udp.sent += s.sent;
      udp.echoed += s.echoed;
      udp.lost += s.lost;
      udp.late += s.late;
      udp.duplicated += s.duplicated;
      udp.reordered += s.reordered;
      udp.corrupted += s.corrupted;
    }
    const rtt = this.flows.map((f) => f.stats).filter((x) => x.rttP50Us !== undefined);
    const udpRtt = rtt.length
      ? { rttP50Us: Math.max(...rtt.map((x) => x.rttP50Us!)), rttP99Us: Math.max(...rtt.map((x) => x.rttP99Us!)), rttP999Us: Math.max(...rtt.map((x) => x.rttP999Us ?? 0)) }
      : {};
    const sink = this.sink?.stats;
    const stream = sink || this.streams.length
      ? {
          sent: this.streams.reduce((a, x) => a + x.stats.sent, 0),
          refused: this.streams.reduce((a, x) => a + x.stats.refused, 0),
          received: sink?.received ?? 0,
          bytesReceived: sink?.bytes ?? 0,
          corrupted: sink?.corrupted ?? 0,
          gaps: sink?.gaps ?? 0,
        }
      : undefined;
    const kinds: Record<string, number> = { ...(v?.failureKinds ?? {}) };
    // Camera frames: each verified by its consumer; a damaged or out-of-order frame is a failure.
    const cam = this.vifCam.reduce((a, { driver }) => ({ frames: a.frames + driver.consumer.stats.frames, corrupted: a.corrupted + driver.consumer.stats.corrupted, reordered: a.reordered + driver.consumer.stats.reordered }), { frames: 0, corrupted: 0, reordered: 0 });
    if (cam.corrupted + cam.reordered) kinds.cameraFrames = cam.corrupted + cam.reordered;
    if (udp.corrupted + (stream?.corrupted ?? 0)) kinds.udpCorrupted = udp.corrupted + (stream?.corrupted ?? 0);
    return {
      name: this.spec.name,
      domid: this.spec.domid,
      state: this.state,
      devices,
      // Integrity: every block read back and classified, plus every echoed datagram verified.
      integrity: {
        checked: (v?.checked ?? 0) + udp.echoed + (stream?.received ?? 0) + cam.frames,
        failures: (v?.failures ?? 0) + udp.corrupted + (stream?.corrupted ?? 0) + cam.corrupted + cam.reordered,
        kinds,
      },
      udp: { ...udp, ...udpRtt },
      ...(stream ? { stream } : {}),
      ...(this.verifier
        ? {
            block: {
              checked: v!.checked,
              failures: v!.failures,
              kinds: { ...v!.failureKinds },
              indeterminate: this.verifier.indeterminate,
              writeErrors: v!.errors,
              unflushed: v!.unflushed,
              ...(v!.latencyP50Us !== undefined ? { latencyP50Us: v!.latencyP50Us, latencyP99Us: v!.latencyP99Us, latencyP999Us: v!.latencyP999Us } : {}),
            },
          }
        : {}),
      ...(this.load ? { io: this.load.stats } : {}),
      // Time this runtime's event loop (its vCPU) was busy, for CPU% in views.
      busyMs: performance.eventLoopUtilization().active,
      ...(processCpuMs() !== undefined ? { processCpuMs: processCpuMs() } : {}),
      ...(this.error ? { error: this.error } : {}),
    };
  }

  /**
   * Stop issuing work and drain: block workload finishes in-flight I/O and reads back every
   * acknowledged block; UDP flows stop sending and wait (bounded) for their echoes. Devices stay
   * connected so the other guests' flows can drain through this one's echo server.
   */
  async quiesce(): Promise<GuestStats> {
    if (this.quiesced) return this.stats();
    this.quiesced = true;
    const failed = this.state === 'failed';
    this.state = 'stopping';
    this.stopRequested = true;
    for (const { driver } of this.vifCam) driver.stopStream();
    for (const f of this.flows) f.stopSending();
    for (const x of this.streams) x.stop();
    await this.verifierRun;
    await this.loadRun;
    if (this.verifier && !failed) {
      try {
        await this.blockDevice(this.spec.workloads.block!.devid).flush();
        await this.verifier.verifyAll();
      } catch (e) {
        this.fail(`final verification: ${(e as Error).message}`);
      }
    }
    // Echoes still in flight are waited for as long as they keep coming (a loaded machine is
    // slow, not lossy): 2 s without one ends the wait, and 15 s in all.
    const end = performance.now() + 15_000;
    let heard = -1;
    let quietSince = performance.now();
    while (this.flows.some((f) => f.stats.outstanding > 0) && performance.now() < end) {
      const back = this.flows.reduce((n, f) => n + f.stats.echoed + f.stats.late, 0);
      if (back !== heard) {
        heard = back;
        quietSince = performance.now();
      } else if (performance.now() - quietSince > 2_000) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.udpTimer) clearInterval(this.udpTimer);
    const now = performance.now() + 60_000;
    for (const f of this.flows) f.tick(now); // whatever is still missing now is lost
    return this.stats();
  }

  /** Quiesce, then close every frontend (Closing → Closed) and release its grants. */
  async stop(): Promise<GuestStats> {
    if (this.state === 'stopped') return this.stats();
    await this.quiesce();
    for (const f of this.flows) f.close();
    this.echo?.close();
    this.sink?.close();
    for (const { front } of this.net) await front.disconnect().catch((e: Error) => this.log.warn({ err: errorFields(e) }, 'netfront close'));
    for (const b of this.blk) await b.disconnect().catch((e: Error) => this.log.warn({ err: errorFields(e) }, 'blkfront close'));
    for (const { driver } of this.pcnet) driver.close();
    await this.localVmApp?.stop();
    await this.relay?.stop();
    this.directLink?.close();
    if ((this.state as GuestStats['state']) !== 'failed') this.state = 'stopped';
    return this.stats();
  }
}

/** A device's metrics as a guest stats row, whose detail holds numbers only (what the drivers count). */
function numericRow(m: DeviceMetrics): Pick<GuestDeviceStats, 'ops' | 'bytes' | 'errors' | 'detail'> {
  const detail: Record<string, number> = {};
  for (const [k, v] of Object.entries(m.detail)) if (typeof v === 'number') detail[k] = v;
  return { ops: m.ops, bytes: m.bytes, errors: m.errors, detail };
}
