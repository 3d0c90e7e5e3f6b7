/**
 * A guest: boots its frontends, brings up its network stack, runs its workloads, and reports.
 * Stopping is orderly: workloads stop issuing, in-flight I/O drains, every acknowledged block is
 * read back and checked, then the frontends close (Closing → Closed) and release their grants.
 */
import { BootSpecError, HostedVmm, NoSuchDeviceError, VcpuPortIo, doorbellKick, processCpuMs, type DirectFunctionSpec, type SvioVifSpec, type RpcPeer, type GuestBootSpec, type PortIo, type GuestDeviceStats, type DeviceMetrics, type GuestStats, type Logger, type DomainKey } from '@ringvisor/shared';
import { GuestKernel } from './kernel/kernel.js';
import { openVif } from './kernel/svio.js';
import { BlockLoad } from './workloads/block-load.js';
import { sharedMemoryFunction, type DirectFunction } from './kernel/direct.js';
import { connectDirectLink, identityArrived, type DirectLink } from './kernel/direct-link.js';
import type { BlockDevice } from './workloads/block-verifier.js';
import { startLocalVmApp, type LocalVmApp } from './kernel/local-vmapp.js';
import { startIoReqRelay, type IoReqRelay } from './kernel/ioreq-relay.js';
import { NetStack } from './net/index.js';
import { BlockVerifier } from './workloads/block-verifier.js';
import { UdpEchoServer, UdpFlowClient } from './workloads/udp-flows.js';
import { UdpSink, UdpStreamSender } from './workloads/udp-stream.js';
import { bootDevices, directFunctionDevice, guestDeviceEntry, statsRank, statsType, svioVifDevice, type GuestDevice, type GuestDeviceContext } from './drivers/registry.js';
import type { AttackResult } from './drivers/guest-device.js';

const ECHO_PORT = 7;
const FLOW_PORT_BASE = 40000;
const UDP_TICK_MS = 10;

/** How a guest process reaches its own links (ws): dom0's URL and its domain key, nothing more. */
export interface GuestLinkCredentials {
  url: string;
  domainKey: DomainKey;
}

/** One booted device of this guest, and the network stack the guest put on it if it is a NIC. */
export interface GuestDeviceSlot extends GuestDevice {
  readonly stack?: NetStack;
  /** Its line in the registry: the device's place in this guest's stats. */
  readonly rank: number;
}

export class Guest {
  /** Every device of this guest, in boot order, each built by its registry entry. */
  readonly devices: GuestDeviceSlot[] = [];
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
    const d = this.spec.direct;
    const sv = this.spec.svio;
    const linkedVifs = sv?.vifs.filter((v) => !v.page) ?? [];
    if ((d && (d.hwUrl !== undefined || d.functions.some((f) => !f.bar))) || linkedVifs.length > 0) {
      // No shared memory with the hardware (ws): link to it directly for our functions and VIFs.
      const url = d?.hwUrl ?? sv?.hwUrl;
      if (!url || !this.link) throw new BootSpecError('direct I/O or SV-IO without shared memory needs the hardware\'s direct-link URL and the domain key');
      this.directLink = await connectDirectLink(this.kernel, url, this.link.domainKey);
    }
    // One device at a time, in the boot spec's order (event-channel ports are allocated in it).
    const ctx = this.deviceContext();
    for (const entry of bootDevices(this.spec)) {
      const dev = await guestDeviceEntry(entry.kind, entry.mode).attach(entry, ctx);
      const nic = dev.nic;
      let stack: NetStack | undefined;
      if (nic) {
        stack = new NetStack({ mac: nic.mac, ip: entry.ip ?? '', transmit: (f) => nic.transmit(f) });
        const s = stack;
        nic.onReceive((f) => s.receive(f));
      }
      this.devices.push({ ...dev, ...(stack ? { stack } : {}), rank: statsRank(entry.kind, entry.mode) });
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

  /** What the registry's device builders may use from this guest. */
  private deviceContext(): GuestDeviceContext {
    return {
      kernel: this.kernel,
      spec: this.spec,
      log: this.log,
      ...(this.io ? { io: this.io } : {}),
      irq: (port) => (handler) => this.kernel.events.on(port, () => handler()),
      // The vCPU's traps (one vCPU serves every emulated device of this guest). Hosted: every
      // access traps into the VMM; only those it forwards reach the slot (and switch worlds).
      vcpuTraps: () => {
        const vc = this.vcpu?.counters;
        const vm = this.vmm?.counters;
        return {
          traps: vm?.traps ?? vc?.traps ?? 0,
          forwarded: vc?.traps ?? 0,
          worldSwitches: vm ? vm.worldSwitches : 2 * (vc?.traps ?? 0),
          handledInVmm: vm?.handledInVmm ?? 0,
          combinedTransmits: vm?.combinedTransmits ?? 0,
          kicks: vc?.kicks ?? 0,
          kicksSuppressed: vc?.kicksSuppressed ?? 0,
          trapTimeouts: vc?.timeouts ?? 0,
        };
      },
      directFunction: (f) => this.directFunction(f),
      openVif: (v) => openVif(this.kernel, v, v.page ? undefined : this.directLink?.vif(v)),
      hardwareAt: (url) => this.hardwareAt(url),
      hasDirectLink: () => this.directLink !== undefined,
    };
  }

  /** Our device `kind` × `mode` with `devid`, if we have it. */
  private device(key: { kind: string; mode: string; devid: number }): GuestDeviceSlot | undefined {
    return this.devices.find(({ device: { identity: i } }) => i.kind === key.kind && i.mode === key.mode && i.devid === key.devid);
  }

  /** The devices in stats order: the registry's line, then boot order. */
  private byStatsOrder(): GuestDeviceSlot[] {
    return [...this.devices].sort((a, b) => a.rank - b.rank);
  }

  /** A function was assigned to us again (hot-plug after a reclaim): its driver starts over on it. */
  async plugDirect(f: DirectFunctionSpec, hwUrl?: string): Promise<void> {
    const d = this.device(directFunctionDevice(f));
    if (!d?.plugFunction) throw new NoSuchDeviceError(`guest.direct.plug: no direct ${f.kind} ${f.devid} to attach ${f.rid} to`);
    await d.plugFunction(f, hwUrl);
  }

  /**
   * One of our VIFs was created again (a device reset, a hardware restart): the device's driver
   * opens the new one and starts over on it (block: resubmit what the old VIF never answered).
   */
  async plugVif(v: SvioVifSpec, hwUrl?: string): Promise<void> {
    const d = this.device(svioVifDevice(v));
    if (!d?.plugVif) throw new NoSuchDeviceError(`guest.svio.plug: no SV-IO ${v.kind} ${v.devid} to attach VIF ${v.vif} to`);
    await d.plugVif(v, hwUrl);
  }

  /** The toolstack reclaimed one of our functions: stop using it. */
  unplugDirect(kind: DirectFunctionSpec['kind'], devid: number): void {
    const d = this.device(directFunctionDevice({ kind, devid }));
    if (!d?.unplugFunction) throw new NoSuchDeviceError(`guest.direct.unplug: no direct ${kind} ${devid}`);
    d.unplugFunction('unplugged by the toolstack');
  }

  /**
   * Turn this guest's own driver against its device (fault plans, hostile-driver tests):
   * `device` is the name the device answers to ("vbd51712", "vif0", "cam0", "lance0", "ata51712").
   */
  attack(device: string, attack: string, count: number, seed: number): AttackResult {
    const d = this.devices.find((x) => x.attackName === device && x.attack);
    if (!d?.attack)
      throw new NoSuchDeviceError(`guest.attack: no device ${device} of ${this.spec.name} (attacks exist for PV vbds "vbd<devid>", emulated "lance<devid>", "ata<devid>", direct and SV-IO devices)`);
    return d.attack(attack, count, seed);
  }

  /** Start the configured workloads (once). */
  startWorkloads(): void {
    if (this.started || this.stopRequested) return;
    this.started = true;
    // A camera streams from the start; its consumer checks every frame.
    for (const { camera } of this.devices) camera?.start();
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
    const stack = this.byStatsOrder().find((x) => x.stack)?.stack;
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

  /** The block device with `devid`, whichever way it is reached; else the first block device. */
  private blockDevice(devid: number): BlockDevice {
    const blocks = this.byStatsOrder().filter((x) => x.block);
    const dev = blocks.find((x) => x.device.identity.devid === devid) ?? blocks[0];
    if (!dev?.block) throw new NoSuchDeviceError(`${this.spec.name} has no block device for its block workload`);
    return dev.block;
  }

  stats(): GuestStats {
    // Each device maps its own counters (emulated ones carry the vCPU's traps too).
    const devices: GuestDeviceStats[] = this.byStatsOrder().map((x) => {
      const { kind, mode, devid } = x.device.identity;
      return { type: statsType(kind), devid, mode, ...numericRow(x.metrics()) };
    });
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
    const cam = { frames: 0, corrupted: 0, reordered: 0 };
    for (const { camera } of this.devices) {
      if (!camera) continue;
      const c = camera.consumer.stats;
      cam.frames += c.frames;
      cam.corrupted += c.corrupted;
      cam.reordered += c.reordered;
    }
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
    for (const { camera } of this.devices) camera?.stopStream();
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
    // Network interfaces close first, then the rest (each device knows how it closes, if it must).
    for (const x of this.devices) if (x.nic) await x.close?.();
    for (const x of this.devices) if (!x.nic) await x.close?.();
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
