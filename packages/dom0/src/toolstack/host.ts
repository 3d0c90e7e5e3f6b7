/**
 * One simulated host in threads mode: this thread is Domain 0 (hypervisor core, store, backends,
 * toolstack); the hardware simulator and every guest are worker threads started by entry point.
 *
 * Bring-up order matters: dom0's memory is registered with the hardware before its device queues
 * are attached; each guest's memory is registered for DMA before its backends can submit
 * requests naming its frames; backends publish InitWait before the guest boots and probes.
 */
import { MessageChannel, type Worker } from 'node:worker_threads';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  DOMID_HW,
  ConfigError,
  FrameAllocator,
  CONTROL_PING,
  GUEST_BOOT,
  GUEST_FREEZE,
  GUEST_QUIESCE,
  GUEST_START,
  GUEST_READY,
  GUEST_STATS,
  GUEST_STOP,
  PortLink,
  RpcPeer,
  TimeoutError,
  XenbusState,
  backendPath,
  listen,
  deriveDomainKey,
  formatDomainKey,
  type WsServer,
  frontendPath,
  runtimeEntry,
  startRuntimeWorker,
  publishTrace,
  traceNow,
  ToxicLink,
  type LinkToxics,
  type DiskFaultRule,
  type DirectFunctionSpec,
  GUEST_DIRECT_PLUG,
  GUEST_DIRECT_UNPLUG,
  GUEST_SVIO_PLUG,
  GUEST_POWER_LOST,
  type SvioVifSpec,
  type InterruptFault,
  type InterruptFaultCounts,
  type GuestBootSpec,
  type GuestStats,
  type Logger,
} from '@ringvisor/shared';
import { Hypervisor, type Domain } from '../hypervisor/hypervisor.js';
import { PhysicalDiskDriver, type DriverDma } from '../physdev/disk.js';
import { PhysicalNicDriver } from '../physdev/nic.js';
import { SkbPool } from '../physdev/skb.js';
import { BlkBackend } from '../backends/blk/device.js';
import { NetBackend } from '../backends/net/device.js';
import { SoftwareBridge, type BridgePort } from '../backends/net/bridge.js';
import { EmulatedPlatform } from '../devicemodels/platform.js';
import type { GuestConfig, HostConfig, VbdConfig, VifConfig } from './config.js';

export interface GuestHandle {
  config: GuestConfig;
  domain: Domain;
  /** The guest's control link; set once its runtime connected (at once for a worker). */
  peer?: RpcPeer;
  blk: BlkBackend[];
  net: NetBackend[];
  ready: Promise<void>;
  /** Resolves when the runtime we started is gone (never, for a guest run elsewhere). */
  exited: Promise<number>;
  /** Kill the runtime we started (worker thread or child process, by pid). */
  kill(): Promise<void>;
  pid?: number;
  isReady?: boolean;
  /** Its runtime exited (or its link closed). */
  down?: boolean;
  lastStats?: GuestStats;
  /** How its runtime ended: exit code or signal (a process), code (a worker thread). */
  exit?: RuntimeExit;
  /** The toolstack killed it itself (a fault plan, a reboot): its death was planned. */
  killedByToolstack?: boolean;
}

/** How a runtime ended. */
export interface RuntimeExit {
  code: number | null;
  signal: string | null;
}

/**
 * A runtime that died unplanned (not by the toolstack's hand: kill -9 from outside, an OOM kill,
 * a crash) and what the toolstack did about it — the run summary's `crashes`.
 */
export interface RuntimeCrash {
  host: string;
  runtime: 'hwsim' | 'guest';
  /** "host0/hwsim", or the guest's name. */
  name: string;
  pid?: number;
  exit: RuntimeExit;
  /** When dom0 noticed (ms since the epoch). */
  at: number;
  /** The hardware restarted; the guest's domain reclaimed (grants, ports, rings, functions, VIFs). */
  recovery?: 'restarted' | 'reclaimed' | 'failed';
  /** From noticing to the recovery done. */
  recoveryMs?: number;
  error?: string;
}

/** The hardware simulator's runtime as dom0 holds it. */
interface HwsimRuntime {
  peer: RpcPeer;
  exited: Promise<number>;
  kill(): Promise<void>;
  pid?: number;
  exit?: RuntimeExit;
  /** The toolstack is taking it down itself (a restart, a kill fault, shutdown). */
  planned?: boolean;
  /** Its death was seen (process exit, thread exit or link closed). */
  gone?: boolean;
}

export interface HostOptions {
  seed: number;
  log: Logger;
  /** Base directory for relative disk paths (default: cwd). */
  baseDir?: string;
  /**
   * Run guests without shared memory: each keeps its own memory and talks to dom0 only through
   * the domain link (mirrored rings, grant leases, routed events) — the ws transport's data path.
   */
  linkedGuests?: boolean;
  /**
   * ws transport: guests are processes that connect to dom0 over authenticated WebSockets.
   * `spawn` false leaves starting them to someone else (docker compose); dom0 waits for them.
   */
  ws?: { secret: Uint8Array; host?: string; port?: number; spawn?: boolean; bin?: string };
  /** Several hosts: this host's physical NIC is cabled to a switch runtime at `url`. */
  lan?: { url: string; secret: Uint8Array; hostIndex: number };
  /** Every guest's IP in the cluster, for UDP peers on other hosts (default: this host's). */
  clusterIps?: Map<string, string>;
}

const SKB_POOL_FRAMES = 1024;
/**
 * Shutdown bounds. A guest's quiesce (stop issuing, drain in-flight I/O) and its stop (final
 * read-back, frontends closed) each get GUEST_DRAIN_MS; a hardware restart still running when
 * shutdown begins gets HW_RESTART_WAIT_MS. `up` adds its own overall bound on top (DRAIN_LIMIT_MS
 * in the CLI), so a run ends whatever died.
 */
const GUEST_DRAIN_MS = 20_000;
const HW_RESTART_WAIT_MS = 15_000;
/** Unplanned hardware deaths dom0 restarts the hardware after, in one run. */
const MAX_HW_CRASH_RESTARTS = 5;
const MISSED_EVENT_POLL_MS = 500;

export class Host {
  readonly hv: Hypervisor;
  readonly guests: GuestHandle[] = [];
  hwsim?: HwsimRuntime;
  /** Runtimes that died unplanned during the run, and what was done about each. */
  readonly crashes: RuntimeCrash[] = [];
  /** Called when a runtime's unplanned death is noticed and when its recovery ends (`up` prints a line). */
  onCrash?: (crash: RuntimeCrash, phase: 'noticed' | 'recovered') => void;
  disk!: PhysicalDiskDriver;
  nic!: PhysicalNicDriver;
  bridge!: SoftwareBridge;
  pool!: SkbPool;
  private readonly frames: FrameAllocator;
  private nextSector = 0;
  private stopping = false;

  constructor(
    readonly config: HostConfig,
    readonly opts: HostOptions,
  ) {
    this.hv = new Hypervisor(opts.log, (config.dom0MemoryMiB * 1024 * 1024) / 4096, config.name);
    this.frames = new FrameAllocator(this.hv.dom0.memory);
    this.hv.dom0.state = 'running';
  }

  get log(): Logger {
    return this.hv.log;
  }

  /** Streaming DMA mappings for dom0's drivers when the hardware is across a link. */
  private get driverDma(): DriverDma | undefined {
    if (!this.hv.hardwareLink) return undefined;
    // The link is looked up at each use: a hardware restart replaces it, and a queue made afresh
    // after one (resetQueue) mirrors its page on the new link. Between the crash and the new
    // hardware there is no link, and nothing to hand a buffer to.
    return {
      toDevice: (f) => this.hv.hardwareLink?.wrote(f.domid, f.pfn, 0, 4096),
      ringSync: (pfn, page, lateWake) => {
        const link = this.hv.hardwareLink;
        if (!link) return undefined;
        const sync = link.ringSync(pfn, page, 0);
        sync.lateWake = lateWake;
        return sync;
      },
    };
  }

  /** Make a domain's memory reachable by device DMA (a copy kept current, across a link). */
  private async attachMemoryToHardware(d: Domain): Promise<void> {
    const peer = this.hwsim!.peer;
    if (this.hv.hardwareLink) await peer.call('hw.attachMemory', { domid: d.domid, frames: d.memory.frames });
    else await peer.call('hw.attachMemory', { domid: d.domid, buffer: d.memory.buffer });
  }

  /** ws: the hardware simulator is its own process that connects back as the hardware domain. */
  private async startHwsimProcess(disk: { path: string; sizeBytes: number; cache?: 'writethrough' | 'writeback' }): Promise<void> {
    const ws = this.opts.ws!;
    let child: ChildProcess | undefined;
    const connected = new Promise<RpcPeer>((res, rej) => {
      this.awaitingHwsim = (peer) => {
        this.awaitingHwsim = undefined; // one hardware per host: a second connection is refused
        res(peer);
      };
      if (ws.spawn !== false) {
        child = spawn(process.execPath, [ws.bin ?? repoBin(import.meta.url), 'hwsim', '--dom0', this.wsUrl], {
          env: { ...process.env, RINGVISOR_SECRET: Buffer.from(ws.secret).toString('hex') },
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        child.once('exit', (code, signal) => rej(new Error(`hwsim process exited (${signal ?? code}) before it connected`)));
      }
    });
    const peer = await connected;
    const ready = new Promise<void>((r) =>
      peer.on('hw.ready', (p) => {
        const url = (p as { directUrl?: unknown } | null)?.directUrl;
        if (typeof url === 'string' && /^wss?:\/\//.test(url)) this.hwDirectUrl = url;
        r();
      }),
    );
    peer.handle('hw.boot', () => ({
      host: this.config.name,
      disk,
      nic: { mac: this.config.nic.mac },
      svioCores: this.config.svio.cores,
      ...(this.opts.lan ? { lan: { url: this.opts.lan.url, hostIndex: this.opts.lan.hostIndex } } : {}),
    }));
    await ready;
    const exited = child ? new Promise<number>((r) => (child!.exitCode !== null ? r(child!.exitCode) : child!.once('exit', (c) => r(c ?? 1)))) : new Promise<number>(() => {});
    const hw: HwsimRuntime = {
      peer,
      exited,
      ...(child?.pid ? { pid: child.pid } : {}),
      kill: async () => {
        if (child?.pid && child.exitCode === null && child.signalCode === null) killQuietly(child.pid);
      },
    };
    this.hwsim = hw;
    // Its death is noticed by whichever comes first: the process exit (SIGCHLD, at once) or the
    // link closing (the only sign when it runs elsewhere, in compose).
    if (child) {
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => this.hwsimGone(hw, { code, signal });
      if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
      else child.once('exit', onExit);
    }
    // A child's exit says how it died: give it a moment to arrive before the link's word is taken.
    peer.link.onClose((reason) => void delay(child ? 1000 : 0).then(() => this.hwsimGone(hw, { code: null, signal: null }, reason)));
  }

  private awaitingHwsim?: (peer: RpcPeer) => void;
  /** ws: where guests reach the hardware now (their boot spec, and every re-plug: a restarted hardware is a new process). */
  private hwUrlForGuests(): { hwUrl?: string } {
    return this.opts.ws && this.hwDirectUrl ? { hwUrl: this.hwDirectUrl } : {};
  }
  /** ws: where guests with assigned functions reach the hardware directly. */
  private hwDirectUrl?: string;
  /** SV-IO: every VIF's counters as the engine's cores had them at shutdown. */
  svioStats?: Record<string, unknown>;
  /** The hardware's own counters, read just before it powers off. */
  hardwareStats?: Record<string, unknown>;

  /** Bind dom0 ↔ hardware event channel; returns [dom0 port, hwsim port]. */
  private bindDevicePorts(): [number, number] {
    const hwPort = this.hv.evtchn.allocUnbound(DOMID_HW, 0);
    const dom0Port = this.hv.evtchn.bindInterdomain(0, DOMID_HW, hwPort);
    return [dom0Port, hwPort];
  }

  /** The hardware simulator's runtime exited. */
  hwsimDown = false;
  private hwDisk?: { path: string; sizeBytes: number; cache?: 'writethrough' | 'writeback' };
  /** What dom0 attached the devices with, to attach them again after a hardware restart. */
  private readonly deviceAttachments: { disk?: Record<string, unknown>; nic?: Record<string, unknown> } = {};

  /** threads: the hardware simulator as a worker thread (started by entry point). */
  private startHwsimWorker(): void {
    const { port1, port2 } = new MessageChannel();
    const worker = startRuntimeWorker(runtimeEntry(import.meta.url, 'hwsim', 'hwsim.worker'), {
      workerData: {
        control: port1,
        eventMemory: this.hv.eventMemory,
        host: this.config.name,
        disk: this.hwDisk!,
        nic: { mac: this.config.nic.mac },
        svioCores: this.config.svio.cores,
        ...(this.opts.lan ? { lan: this.opts.lan } : {}),
      },
      transferList: [port1],
    });
    const peer = new RpcPeer(new PortLink(port2), `${this.config.name}/hwsim`);
    const hw: HwsimRuntime = { peer, exited: exitOf(worker), kill: async () => void (await worker.terminate()) };
    this.hwsim = hw;
    worker.on('error', (e) => this.log.error({ err: e }, 'hwsim failed'));
    void hw.exited.then((code) => this.hwsimGone(hw, { code, signal: null }));
  }

  /**
   * The hardware simulator's runtime is gone. Planned (a restart, a kill fault, shutdown): the
   * caller handles it. Unplanned (kill -9 from outside, a crash): dom0 brings new hardware up
   * exactly as the process.restart fault does — same image, memory registered again, dom0's
   * queues redone with every unanswered request resubmitted, functions and VIFs back — so the
   * guests recover and nothing acknowledged is lost.
   */
  private hwsimGone(hw: HwsimRuntime, exit: RuntimeExit, linkReason?: string): void {
    if (hw.exit === undefined && (exit.code !== null || exit.signal !== null)) hw.exit = exit;
    if (hw.gone) return;
    hw.gone = true;
    if (this.hwsim === hw) this.hwsimDown = true;
    if (this.stopping && this.hwsim === hw) this.traceRuntime(`${this.config.name}/hwsim`, 'hwsim', 'down', DOMID_HW, hw.pid, hw.exit?.code ?? undefined);
    if (hw.planned || this.stopping || this.hwsim !== hw) return;
    const crash: RuntimeCrash = { host: this.config.name, runtime: 'hwsim', name: `${this.config.name}/hwsim`, ...(hw.pid ? { pid: hw.pid } : {}), exit: hw.exit ?? exit, at: Date.now() };
    this.crashes.push(crash);
    // A hardware that dies again and again (a crash loop) is left down after a few tries: the
    // run then ends with the recovery failed, rather than restarting forever.
    if (this.crashes.filter((c) => c.runtime === 'hwsim').length > MAX_HW_CRASH_RESTARTS) {
      crash.recovery = 'failed';
      crash.error = `the hardware died ${MAX_HW_CRASH_RESTARTS + 1} times; not restarting it again`;
      this.log.error({ pid: hw.pid, ...crash.exit }, crash.error);
      this.onCrash?.(crash, 'noticed');
      this.onCrash?.(crash, 'recovered');
      return;
    }
    this.log.error({ pid: hw.pid, ...crash.exit, ...(linkReason ? { link: linkReason } : {}) }, 'hardware simulator died unplanned; restarting it');
    this.onCrash?.(crash, 'noticed');
    this.recover(
      crash,
      'restarted',
      this.lifecycle(async () => {
        if (this.stopping) throw new Error('shutting down');
        await this.crashHwsim(true);
        await this.bringUpHwsim();
      }),
    );
  }

  /** Records how a crash's recovery ended (the summary's `crashes`) and tells `onCrash`. */
  private recover(crash: RuntimeCrash, done: 'restarted' | 'reclaimed', recovery: Promise<void>): void {
    void recovery.then(
      () => {
        crash.recovery = done;
        crash.recoveryMs = Date.now() - crash.at;
        this.log.warn({ runtime: crash.name, ms: crash.recoveryMs }, `${crash.name} ${done} after an unplanned death`);
        this.onCrash?.(crash, 'recovered');
      },
      (e: Error) => {
        crash.recovery = 'failed';
        crash.error = e.message;
        crash.recoveryMs = Date.now() - crash.at;
        this.log.error({ runtime: crash.name, err: e.message }, `${crash.name}: recovery after an unplanned death failed`);
        this.onCrash?.(crash, 'recovered');
      },
    );
  }

  /**
   * The hardware crashes (kill -9) and comes back: a new simulator opens the same disk image,
   * every domain's memory is registered for DMA again, and dom0's drivers' queues are attached
   * afresh: the disk driver starts its queue anew and resubmits every request it has not seen
   * answered (the device completed out of order, so the old ring's indices cannot say which);
   * whatever reached the image before the crash is there (the file outlives the process).
   */
  async restartHwsim(): Promise<void> {
    await this.lifecycle(async () => {
      await this.crashHwsim();
      await this.bringUpHwsim();
    });
  }

  /**
   * The toolstack takes one runtime-lifecycle operation (a restart, kill or revive of the hardware
   * or of dom0's I/O stack, a freeze of the hardware, a VIF reset or its heal) at a time, as libxl locks per domain: a kill that arrives while
   * a restart is still re-attaching devices waits for it instead of tearing it down half-way.
   */
  private lifecycle<T>(op: () => Promise<T>): Promise<T> {
    const run = this.lifecycleTail.then(op, op);
    this.lifecycleTail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private lifecycleTail: Promise<void> = Promise.resolve();

  /**
   * Fault plans' process.kill with runtime: hwsim — the hardware dies (kill -9) and stays down:
   * dom0's drivers and the direct and SV-IO guests get no answers, their requests wait. The
   * returned revive() (the heal) brings a new one up as a restart does.
   */
  async killHwsim(): Promise<() => Promise<void>> {
    await this.lifecycle(() => this.crashHwsim());
    let revived: Promise<void> | undefined;
    return () => (revived ??= this.lifecycle(() => this.bringUpHwsim()));
  }

  /** kill -9 the hardware and wait until it is gone (over ws: until dom0 saw its link close). */
  private async crashHwsim(alreadyGone = false): Promise<void> {
    const old = this.hwsim!;
    if (this.opts.ws && !old.pid && !alreadyGone) throw new Error('the hardware runs elsewhere (compose): restart its container instead');
    old.planned = true;
    // Every VIF dies with the hardware: a verdict in flight about one of them is about a VIF gone.
    for (const c of this.created) for (const b of c.svio) b.generation++;
    await old.kill();
    // A process run elsewhere that already died has no exit to wait for (its link closed).
    if (!(alreadyGone && !old.pid)) await Promise.race([old.exited, delay(5_000)]);
    if (this.opts.ws) {
      // The new process may attach only once dom0 has seen the old one's link close.
      for (const deadline = Date.now() + 5_000; this.hv.hardwareLink && Date.now() < deadline; ) await delay(20);
      this.hv.hardwareLink?.peer.close('hardware restarted');
      this.hv.hardwareLink = undefined;
    }
    // A writeback drive's cache died with it: the guests' ledgers hold what was not yet durable in
    // doubt — told before the new hardware answers anything.
    if (this.config.disk.cache === 'writeback')
      await Promise.all(this.guests.filter((g) => g.peer && !g.down).map((g) => g.peer!.call(GUEST_POWER_LOST, {}, 5_000).catch(() => undefined)));
    this.hwsimDown = true;
    this.traceRuntime(`${this.config.name}/hwsim`, 'hwsim', 'down', DOMID_HW, old.pid);
  }

  /** A new hardware on the same image: memory registered again, dom0's queues redone, direct functions and VIFs back. */
  private async bringUpHwsim(): Promise<void> {
    if (this.opts.ws) await this.startHwsimProcess(this.hwDisk!);
    else this.startHwsimWorker();
    this.hwsimDown = false;
    this.traceRuntime(`${this.config.name}/hwsim`, 'hwsim', 'up', DOMID_HW, this.hwsim!.pid);
    const peer = this.hwsim!.peer;
    // Over ws the new process has blank copies of every domain's memory: what a device reads is
    // handed to it again below (the queues, write data, transmit buffers) as a driver re-maps its
    // DMA buffers after a reset.
    await this.attachMemoryToHardware(this.hv.dom0);
    for (const c of this.created) await this.attachMemoryToHardware(c.domain);
    // The disk queue starts afresh with every unanswered request resubmitted: the device answered
    // out of order, so its ring indices cannot tell which ones it finished.
    this.disk.resetQueue();
    this.hv.hardwareLink?.mirror.flush();
    await peer.call('hw.disk.attach', this.deviceAttachments.disk);
    this.disk.resume();
    this.nic.resetQueues();
    this.hv.hardwareLink?.mirror.flush();
    await peer.call('hw.nic.attach', this.deviceAttachments.nic);
    this.nic.resume();
    const missing: string[] = [];
    const notBack = (guest: string, device: string, e: Error) => {
      missing.push(`${guest}/${device} (${e.message})`);
      this.log.warn({ err: e.message, guest, device }, 'device did not come back after the hardware restart');
    };
    // Direct devices: the new hardware's functions are assigned again on the same event channels,
    // and each guest's driver starts over on its function (its block driver resubmits what the
    // old function had not answered).
    for (const c of this.created)
      for (const f of c.direct) {
        const r = await peer.call<{ rid: string; bar?: SharedArrayBuffer }>('hw.vf.assign', f.request, 5_000);
        f.rid = r.rid;
        if (r.bar) f.bar = r.bar;
        this.traceDirect(c.domain.domid, directDeviceName(f), 'assign', r.rid);
        const g = this.guests.find((x) => x.domain === c.domain);
        if (g?.peer && !g.down) await g.peer.call(GUEST_DIRECT_PLUG, { function: directSpec(f), ...this.hwUrlForGuests() }, 30_000).catch((e: Error) => notBack(c.domain.name, directDeviceName(f), e));
      }
    // SV-IO: the new device has no VIFs; each is created again (same channel, partition, MAC,
    // QoS) and its guest's driver starts over on it.
    for (const c of this.created)
      for (const b of c.svio) await this.recreateVif(c, b).catch((e: Error) => notBack(c.domain.name, vifDeviceName(b), e));
    this.restartedHardware++;
    // A device that did not come back is a recovery that failed: the fault plan's record says so.
    if (missing.length > 0) throw new Error(`after the hardware restart, not back: ${missing.join('; ')}`);
  }

  /**
   * Fault plans' disk.torn: the power goes. A writeback drive's cache reaches the image only in
   * part (each dirty sector with `writeProbability`), the rest is lost; the caller then restarts
   * the hardware. With a writethrough drive nothing is cached and nothing is torn.
   */
  async powerLoss(writeProbability: number, seed: number): Promise<{ written: number; lost: number }> {
    return this.hwsim!.peer.call('hw.disk.powerLoss', { writeProbability, seed: seed >>> 0 }, 5_000);
  }

  /** Freeze the hardware (its thread blocks; over ws its process is SIGSTOPped) until thaw(). */
  async freezeHwsim(maxMs: number): Promise<() => void> {
    // A plan's pause that falls while a kill's heal is still reviving the hardware (late on a
    // loaded machine) freezes the new hardware once it is up, rather than failing on the dead one.
    for (const deadline = Date.now() + 30_000; this.hwsimDown && Date.now() < deadline; ) await delay(50);
    return this.lifecycle(() => this.freezeHwsimNow(maxMs));
  }

  private async freezeHwsimNow(maxMs: number): Promise<() => void> {
    const hw = this.hwsim!;
    // A killed hardware not yet revived has nothing to freeze (a plan may overlap a kill and a pause).
    if (this.hwsimDown) throw new Error('the hardware is down (killed, not yet revived): nothing to freeze');
    if (this.opts.ws) {
      if (!hw.pid) throw new Error('the hardware runs elsewhere (compose): pause its container instead');
      const pid = hw.pid;
      process.kill(pid, 'SIGSTOP');
      const t = setTimeout(() => killQuietly(pid, 'SIGCONT'), maxMs);
      return () => {
        clearTimeout(t);
        if (!this.hwsimDown) killQuietly(pid, 'SIGCONT');
      };
    }
    const word = new SharedArrayBuffer(4);
    await hw.peer.call('hw.freeze', { word, maxMs }, 5_000);
    return () => {
      const w = new Int32Array(word);
      Atomics.store(w, 0, 1);
      Atomics.notify(w, 0);
    };
  }

  /** Hardware restarts survived. */
  restartedHardware = 0;

  /** A runtime came up or went away: a `process` trace event (the dashboard's timeline). */
  private traceRuntime(runtime: string, role: string, state: 'up' | 'down', domid: number, pid?: number, code?: number): void {
    publishTrace({
      kind: 'process',
      t: traceNow(),
      host: this.config.name,
      domid,
      runtime,
      role,
      state,
      ...(pid !== undefined ? { pid } : {}),
      ...(code !== undefined ? { code } : {}),
    });
  }

  /** Bring up hardware, dom0's drivers and every guest; `startWorkloads` false defers workloads. */
  async start(startWorkloads = true): Promise<void> {
    const diskPath = resolve(this.opts.baseDir ?? process.cwd(), this.config.disk.path);
    mkdirSync(dirname(diskPath), { recursive: true });
    const hwDisk = { path: diskPath, sizeBytes: this.config.disk.sizeMiB * 1024 * 1024, ...(this.config.disk.cache ? { cache: this.config.disk.cache } : {}) };
    this.hwDisk = hwDisk;
    if (this.opts.ws) {
      await this.listenForGuests();
      await this.startHwsimProcess(hwDisk);
    } else this.startHwsimWorker();
    const peer = this.hwsim!.peer;
    this.traceRuntime(`${this.config.name}/hwsim`, 'hwsim', 'up', DOMID_HW, this.hwsim!.pid);
    this.hv.dom0Events.start();
    // A lost notification (injected, or a bug) costs at most this much, never a stalled ring.
    this.hv.dom0Events.startMissedEventPoll(MISSED_EVENT_POLL_MS);
    await this.attachMemoryToHardware(this.hv.dom0);

    const [diskDom0Port, diskHwPort] = this.bindDevicePorts();
    const queuePfn = this.frames.alloc();
    this.deviceAttachments.disk = { queue: { domid: 0, pfn: queuePfn }, port: diskHwPort };
    this.disk = new PhysicalDiskDriver(this.hv.dom0.memory, queuePfn, this.hv.dom0Events, diskDom0Port, this.driverDma);
    this.hv.hardwareLink?.mirror.flush(); // the device's copy of the queue page before it attaches
    const diskInfo = await peer.call<{ sectors: number }>('hw.disk.attach', { queue: { domid: 0, pfn: queuePfn }, port: diskHwPort });
    this.disk.sectors = diskInfo.sectors;

    this.pool = new SkbPool(this.hv.dom0.memory, this.frames, SKB_POOL_FRAMES);
    const [nicDom0Port, nicHwPort] = this.bindDevicePorts();
    const txPfn = this.frames.alloc();
    const rxPfn = this.frames.alloc();
    this.nic = new PhysicalNicDriver(this.hv.dom0.memory, txPfn, rxPfn, this.hv.dom0Events, nicDom0Port, this.config.nic.mac, this.pool, 64, this.driverDma);
    this.hv.hardwareLink?.mirror.flush();
    this.deviceAttachments.nic = { tx: { domid: 0, pfn: txPfn }, rx: { domid: 0, pfn: rxPfn }, port: nicHwPort };
    await peer.call('hw.nic.attach', this.deviceAttachments.nic);

    this.nic.traceLabel = { host: this.config.name, iface: `${this.config.name}/peth0` };
    this.bridge = new SoftwareBridge(this.pool);
    const uplink: BridgePort = { name: 'peth0', deliver: (skb) => this.nic.transmit(skb) };
    this.nic.onReceive((skb) => this.bridge.input(uplink, skb));
    this.bridge.add(uplink);
    this.log.info({ disk: diskPath, sectors: diskInfo.sectors, mac: this.config.nic.mac }, 'host hardware attached');

    for (const g of this.config.guests) {
      const vif = g.devices.find((d) => d.type === 'vif');
      if (vif && vif.type === 'vif') this.ips.set(g.name, vif.ip);
    }
    for (const [n, ip] of this.opts.clusterIps ?? []) this.ips.set(n, ip);
    for (const g of this.config.guests) await this.addGuest(g);
    await Promise.all(this.guests.map((g) => g.ready));
    if (startWorkloads) await this.startWorkloads();
  }

  /** Start every guest's workloads (once all guests that talk to each other are up). */
  async startWorkloads(): Promise<void> {
    await Promise.all(this.guests.map((g) => g.peer!.call(GUEST_START, {})));
  }

  private readonly ips = new Map<string, string>();

  /** Create a domain with its devices and backends, and boot its guest runtime. */
  async addGuest(config: GuestConfig): Promise<GuestHandle> {
    const { domain, blk, net } = await this.createDomainWithDevices(config);
    const handle = this.launchGuest(config, domain, blk, net);
    handle.ready.then(
      () => {
        handle.isReady = true;
        this.traceRuntime(config.name, 'guest', 'up', domain.domid, handle.pid);
        this.watchGuest(handle);
      },
      () => {},
    );
    this.guests.push(handle);
    return handle;
  }

  /**
   * The toolstack half of creating a guest (xl create without booting): domain, memory registered
   * for DMA, both halves of every device in the store, backends waiting in InitWait.
   */
  async createDomainWithDevices(config: GuestConfig): Promise<{ domain: Domain; blk: BlkBackend[]; net: NetBackend[] }> {
    const { hv } = this;
    const linked = this.opts.linkedGuests === true || this.opts.ws !== undefined;
    const emulated = config.devices.filter((d): d is VbdConfig | VifConfig => d.mode === 'emulated');
    if (emulated.length > 0 && linked && emulated[0].placement !== 'hosted' && !this.opts.ws)
      throw new ConfigError(
        `guest ${config.name}: emulated devices (${emulated.map((d) => `${d.type} ${d.devid}`).join(', ')}) with placement: dom0 need the guest's memory shared with dom0, or a guest process with a vCPU link (the ws transport); with linked guests in threads use placement: hosted.`,
      );
    const svioDevices = config.devices.filter((d) => d.mode === 'svio');
    if (svioDevices.length > 0 && linked && !this.opts.ws)
      throw new ConfigError(
        `guest ${config.name}: mode: svio (${svioDevices.map((d) => `${d.type} ${d.devid}`).join(', ')}) needs the guest's memory shared with the hardware's cores (threads), or a guest process with a direct link to the hardware (the ws transport); linked guests in threads have neither`,
      );
    const domain = hv.createDomain(config.name, config.memoryMiB, linked);
    await this.attachMemoryToHardware(domain);
    const blk: BlkBackend[] = [];
    const net: NetBackend[] = [];
    const platform = emulated.length > 0 ? new EmulatedPlatform(hv, domain, this.log, emulated[0].placement ?? 'dom0', { vcpuLink: this.opts.ws !== undefined }) : undefined;
    const s = hv.dom0Store;
    const direct: AssignedFunction[] = [];
    const svio: BoundVif[] = [];
    for (const d of config.devices) {
      if (d.mode === 'svio') {
        // A VIF of the self-virtualizing device: created by the management API, bound to this domain.
        svio.push(
          await this.createVif(
            domain,
            d.type === 'vif'
              ? { kind: 'net', devid: d.devid, mac: d.mac, weight: d.weight, rate: d.rate }
              : d.type === 'cam'
                ? { kind: 'cam', devid: d.devid, camera: { width: d.width, height: d.height, fps: d.fps }, weight: d.weight }
                : { kind: 'blk', devid: d.devid, partition: this.diskRegion(config.name, d.devid, d.sizeMiB), weight: d.weight, rate: d.rate },
          ),
        );
        continue;
      }
      if (d.mode === 'direct') {
        // No backend: the toolstack assigns a virtual function and the guest drives it itself.
        const pt = d.iommu === 'passthrough' ? { passthrough: true } : {};
        direct.push(
          await this.assignFunction(domain, d.type === 'vif' ? { kind: 'nic', devid: d.devid, mac: d.mac, ...pt } : { kind: 'disk', devid: d.devid, partition: this.diskRegion(config.name, d.devid, d.sizeMiB), ...pt }),
        );
        continue;
      }
      if (d.mode === 'emulated') {
        // No xenbus for an emulated device: the guest finds it at its I/O ports, as on a PC.
        if (d.type === 'vbd') platform!.addDisk(d.devid, this.disk, this.frames, this.diskRegion(config.name, d.devid, d.sizeMiB));
        else platform!.addNic(d.devid, d.mac, this.bridge, { vmmIo: d.vmmIo === true, sendCombining: d.sendCombining === true });
        continue;
      }
      const fdir = frontendPath(domain.domid, d.type, d.devid);
      const bdir = backendPath(0, d.type, domain.domid, d.devid);
      // The toolstack writes both halves of the device before either driver looks (as xl does).
      await s.write(`${fdir}/backend`, bdir);
      await s.write(`${fdir}/backend-id`, '0');
      await s.write(`${fdir}/state`, String(XenbusState.Initialising));
      await s.write(`${bdir}/frontend`, fdir);
      await s.write(`${bdir}/frontend-id`, String(domain.domid));
      await s.write(`${bdir}/online`, '1');
      await s.write(`${bdir}/state`, String(XenbusState.Initialising));
      if (d.type === 'vbd') {
        const region = this.diskRegion(config.name, d.devid, d.sizeMiB);
        await s.write(`${bdir}/params`, `phy:${this.config.name}-disk@${region.start}+${region.sectors}`);
        const b = new BlkBackend(hv, this.disk, domain.domid, d.devid, region, this.log);
        await b.start();
        blk.push(b);
      } else {
        await s.write(`${fdir}/mac`, d.mac);
        await s.write(`${bdir}/mac`, d.mac);
        if (d.rate) await s.write(`${bdir}/rate`, d.rate);
        const n = new NetBackend(hv, this.bridge, domain.domid, d.devid, this.log);
        await n.start();
        net.push(n);
      }
    }
    await platform?.start();
    this.created.push({ domain, blk, net, direct, svio, ...(platform ? { platform } : {}) });
    return { domain, blk, net };
  }

  /** An event channel between a domain and the hardware: [the hardware's end, the guest's end]. */
  private bindHardwareChannel(domain: Domain): [number, number] {
    const hwPort = this.hv.evtchn.allocUnbound(DOMID_HW, domain.domid);
    return [hwPort, this.hv.evtchn.bindInterdomain(domain.domid, DOMID_HW, hwPort)];
  }

  /** Create an SV-IO VIF bound to a domain (the engine's management API) on a fresh channel. */
  private async createVif(
    domain: Domain,
    want:
      | { kind: 'net'; devid: number; mac: string; weight?: number; rate?: string }
      | { kind: 'blk'; devid: number; partition: { start: number; sectors: number }; weight?: number; rate?: string }
      | { kind: 'cam'; devid: number; camera: { width: number; height: number; fps: number }; weight?: number; rate?: undefined },
  ): Promise<BoundVif> {
    const [hwPort, guestPort] = this.bindHardwareChannel(domain);
    const { devid, weight, rate, ...rest } = want;
    // ws: the guest reaches its VIF over its own direct link to the hardware, which names the guest's port.
    const request = { ...rest, domid: domain.domid, port: hwPort, ...(this.opts.ws ? { guestPort } : {}), ...(weight !== undefined ? { weight } : {}), ...(rate !== undefined ? { rate } : {}) };
    try {
      const r = await this.hwsim!.peer.call<{ vif: number; core: number; page?: SharedArrayBuffer }>('hw.svio.create', request, 10_000);
      this.log.info({ domid: domain.domid, vif: r.vif, core: r.core, kind: want.kind, devid }, 'SV-IO VIF created');
      return { kind: want.kind, devid, vif: r.vif, port: guestPort, hwPort, request, generation: 0, ...(r.page ? { page: r.page } : {}) };
    } catch (e) {
      this.hv.evtchn.close(domain.domid, guestPort);
      throw e;
    }
  }

  /** Generation of a guest's SV-IO device's VIF (see BoundVif.generation); undefined if none or down. */
  vifGeneration(guest: string, device: string): number | undefined {
    const b = this.created.find((x) => x.domain.name === guest)?.svio.find((x) => vifDeviceName(x) === device);
    return b && !b.down && !this.hwsimDown ? b.generation : undefined;
  }

  /** The SV-IO VIFs bound to a domain now. */
  vifsOf(domid: number): BoundVif[] {
    return this.created.find((c) => c.domain.domid === domid)?.svio ?? [];
  }

  /**
   * Create a VIF again on the same channel (a device reset, a new hardware), with the same kind,
   * partition, MAC and QoS; the guest's driver opens it and starts over (its block requests the
   * old VIF never answered are resubmitted).
   */
  private async recreateVif(c: { domain: Domain }, b: BoundVif): Promise<void> {
    const r = await this.hwsim!.peer.call<{ vif: number; core: number; page?: SharedArrayBuffer }>('hw.svio.create', b.request, 10_000);
    b.vif = r.vif;
    b.down = false;
    if (r.page) b.page = r.page;
    else delete b.page;
    this.log.info({ domid: c.domain.domid, vif: r.vif, device: vifDeviceName(b) }, 'SV-IO VIF created again');
    const g = this.guests.find((x) => x.domain === c.domain);
    if (g?.peer && !g.down) await g.peer.call(GUEST_SVIO_PLUG, { vif: vifSpec(b), ...this.hwUrlForGuests() }, 30_000);
  }

  /**
   * Fault plans' svio.reset: the VIF behind a guest's SV-IO device is destroyed under load (the
   * device forgets its queues); `heal` creates it again and the guest's driver starts over.
   */
  async resetVif(guest: string, device: string): Promise<{ vif: number; heal: () => Promise<{ vif: number }> }> {
    const c = this.created.find((x) => x.domain.name === guest);
    if (!c) throw new Error(`no guest ${guest} on host ${this.config.name}`);
    const b = c.svio.find((x) => vifDeviceName(x) === device);
    if (!b) throw new Error(`${guest} has no SV-IO device ${device} (has: ${c.svio.map(vifDeviceName).join(', ') || 'none'})`);
    // A reset and its heal are hardware lifecycle operations too: one that falls in a hardware
    // restart (a slow machine stretches every schedule) waits for it rather than calling a
    // hardware that is going away; the restart has then created the VIF again already.
    const old = await this.lifecycle(async () => {
      if (b.down) throw new Error(`${guest}/${device}: its VIF is already down`);
      const vif = b.vif;
      b.generation++;
      await this.hwsim!.peer.call('hw.svio.destroy', { vif }, 5_000);
      b.down = true;
      return vif;
    });
    this.log.warn({ guest, device, vif: old }, 'SV-IO VIF destroyed (reset)');
    return {
      vif: old,
      heal: () =>
        this.lifecycle(async () => {
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
    if (!this.created.some((c) => c.svio.length > 0)) return [];
    const r = await this.hwsim!.peer.call<{ vifs: Array<Record<string, unknown> & { vif: number }> }>('hw.svio.list', {}, 5_000);
    return r.vifs.flatMap((v) => {
      const c = this.created.find((x) => x.svio.some((b) => b.vif === v.vif));
      const b = c?.svio.find((x) => x.vif === v.vif);
      return c && b ? [{ ...v, host: this.config.name, domain: c.domain.name, device: vifDeviceName(b) }] : [];
    });
  }

  /** `ringvisor svio qos`: a VIF's weight and credit limit, set through the management API. */
  async setVifQos(guest: string, device: string, qos: { weight: number; rate?: string }): Promise<{ vif: number }> {
    const c = this.created.find((x) => x.domain.name === guest);
    if (!c) throw new Error(`no guest ${guest} on host ${this.config.name}`);
    const b = c.svio.find((x) => vifDeviceName(x) === device);
    if (!b) throw new Error(`${guest} has no SV-IO device ${device} (has: ${c.svio.map(vifDeviceName).join(', ') || 'none'})`);
    await this.hwsim!.peer.call('hw.svio.qos', { vif: b.vif, weight: qos.weight, ...(qos.rate !== undefined ? { rate: qos.rate } : {}) }, 5_000);
    this.log.info({ guest, device, vif: b.vif, ...qos }, 'SV-IO QoS set');
    return { vif: b.vif };
  }

  private async destroyVifs(c: { svio: BoundVif[] }): Promise<void> {
    for (const v of c.svio.splice(0)) if (!v.down) await this.hwsim?.peer.call('hw.svio.destroy', { vif: v.vif }, 5_000).catch((e: Error) => this.log.warn({ err: e.message, vif: v.vif }, 'VIF destroy failed'));
  }

  /**
   * Assign a virtual function to a domain (xl pci-attach): an event channel between the domain
   * and the hardware becomes its doorbell and interrupt; the hardware programs the IOMMU context
   * (the domain's frames, nothing else) and an interrupt entry only that function may raise.
   */
  private async assignFunction(
    domain: Domain,
    want: { kind: 'nic'; devid: number; mac: string; rid?: string; passthrough?: boolean } | { kind: 'disk'; devid: number; partition: { start: number; sectors: number }; rid?: string; passthrough?: boolean },
  ): Promise<AssignedFunction> {
    const [hwPort, guestPort] = this.bindHardwareChannel(domain);
    try {
      const { devid, ...rest } = want;
      const request = { ...rest, domid: domain.domid, frames: domain.memory.frames, port: hwPort, guestPort };
      const r = await this.hwsim!.peer.call<{ rid: string; bar?: SharedArrayBuffer }>('hw.vf.assign', request, 5_000);
      this.log.info({ domid: domain.domid, rid: r.rid, kind: want.kind, devid }, 'device function assigned');
      this.traceDirect(domain.domid, directDeviceName(want), 'assign', r.rid);
      return { kind: want.kind, devid, rid: r.rid, port: guestPort, hwPort, request, ...(r.bar ? { bar: r.bar } : {}) };
    } catch (e) {
      this.hv.evtchn.close(domain.domid, guestPort);
      throw e;
    }
  }

  /**
   * Take a function back from its domain (VFIO's order, done by the hardware: bus master off, FLR,
   * IOMMU context and interrupt entry torn down), then tell the guest's driver it is gone.
   */
  async reclaimFunction(guest: string, device: string): Promise<{ rid: string; steps: string[]; dropped: Record<string, number> }> {
    const c = this.created.find((x) => x.domain.name === guest);
    if (!c) throw new Error(`no domain ${guest} on ${this.config.name}`);
    const i = c.direct.findIndex((f) => directDeviceName(f) === device || f.rid === device);
    if (i < 0) throw new Error(`${guest} has no assigned function ${device} (has: ${c.direct.map(directDeviceName).join(', ') || 'none'})`);
    const [f] = c.direct.splice(i, 1);
    const report = await this.hwsim!.peer.call<{ rid: string; steps: string[]; dropped: Record<string, number> }>('hw.vf.reclaim', { rid: f.rid }, 5_000);
    this.traceDirect(c.domain.domid, device, 'flr', f.rid);
    this.traceDirect(c.domain.domid, device, 'reclaim', f.rid);
    try {
      this.hv.evtchn.close(c.domain.domid, f.port);
    } catch {
      /* already closed with the domain */
    }
    const g = this.guests.find((x) => x.domain === c.domain);
    // Told, not waited for: a frozen or wedged guest must not hold up the reclaim (the hardware
    // already guarantees its function can reach nothing).
    if (g?.peer && !g.down) void g.peer.call(GUEST_DIRECT_UNPLUG, { kind: f.kind, devid: f.devid }, 5_000).catch(() => {});
    this.reclaimedFunctions.push({ guest, ...f });
    return report;
  }

  /**
   * Assign a function again to a guest whose direct device was reclaimed (xl pci-attach after
   * pci-detach; the way back after a migration drill): a free function of the kind — a clean one,
   * reset when it was reclaimed — and the guest's driver starts over on it.
   */
  async reattachFunction(guest: string, device: string): Promise<{ rid: string }> {
    const c = this.created.find((x) => x.domain.name === guest);
    if (!c) throw new Error(`no domain ${guest} on ${this.config.name}`);
    const cfg = c.domain && this.guests.find((g) => g.domain === c.domain)?.config;
    const d = cfg?.devices.find((x): x is VbdConfig | VifConfig => x.mode === 'direct' && directDeviceName({ kind: x.type === 'vif' ? 'nic' : 'disk', devid: x.devid }) === device);
    if (!cfg || !d) throw new Error(`${guest} has no direct device ${device} in its config`);
    if (c.direct.some((f) => directDeviceName(f) === device)) throw new Error(`${guest}/${device} has a function assigned already; reclaim it first`);
    const f = await this.assignFunction(c.domain, d.type === 'vif' ? { kind: 'nic', devid: d.devid, mac: d.mac } : { kind: 'disk', devid: d.devid, partition: this.diskRegion(cfg.name, d.devid, d.sizeMiB) });
    c.direct.push(f);
    const g = this.guests.find((x) => x.domain === c.domain);
    if (g?.peer && !g.down) await g.peer.call(GUEST_DIRECT_PLUG, { function: directSpec(f) }, 30_000);
    return { rid: f.rid };
  }

  /** The IOMMU's fault records (the last 1024) and counters. */
  async iommuFaultLog(): Promise<{ faults: Array<{ seq: number; t: number; rid: number; address: number; write: boolean; reason: string; domid?: number }>; counters: Record<string, number> }> {
    return this.hwsim!.peer.call('hw.iommu.faults', {}, 5_000);
  }

  /** DMA blocked by this host's IOMMU so far (its fault count). */
  async iommuFaults(): Promise<number> {
    const r = await this.hwsim!.peer.call<{ counters: { faults: number } }>('hw.iommu.faults', {}, 5_000);
    return r.counters.faults;
  }

  /** The hardware's view of its functions (hw.vf.list): owner, state, counters. */
  async functionStats(): Promise<Array<Record<string, unknown> & { rid: string; owner: number | null; kind: 'nic' | 'disk' }>> {
    if (!this.hwsim || this.hwsimDown) return [];
    return this.hwsim.peer.call('hw.vf.list', {}, 5_000);
  }

  /** A function assigned, reset or reclaimed: a `direct` trace event (the dashboard's timeline). */
  private traceDirect(domid: number, device: string, action: 'assign' | 'flr' | 'reclaim', rid: string): void {
    publishTrace({ kind: 'direct', t: traceNow(), host: this.config.name, domid, device, action, function: rid });
  }

  /** Functions taken back from running guests (reclaim), for views and reports. */
  readonly reclaimedFunctions: Array<AssignedFunction & { guest: string }> = [];

  /** The functions assigned to a domain now. */
  functionsOf(domid: number): AssignedFunction[] {
    return this.created.find((c) => c.domain.domid === domid)?.direct ?? [];
  }

  /** Reclaim every function of a domain that is going away (no notice to its driver). */
  private async reclaimAll(c: { domain: Domain; direct: AssignedFunction[] }): Promise<void> {
    for (const f of c.direct.splice(0)) await this.hwsim?.peer.call('hw.vf.reclaim', { rid: f.rid }, 5_000).catch((e: Error) => this.log.warn({ err: e.message, rid: f.rid }, 'reclaim failed'));
  }

  /** A guest disk's region of the physical disk, kept across reboots (its data is there when it comes back). */
  private diskRegion(guest: string, devid: number, sizeMiB: number): { start: number; sectors: number } {
    const sectors = sizeMiB * 2048;
    const key = `${guest}/${devid}`;
    let region = this.regions.get(key);
    if (!region) {
      if (this.nextSector + sectors > this.disk.sectors) throw new Error(`physical disk too small for ${guest}'s disk ${devid}`);
      region = { start: this.nextSector, sectors };
      this.nextSector += sectors;
      this.regions.set(key, region);
    }
    return region;
  }

  /** The emulated platform of a domain (its ioreq server and device models), if it has one. */
  platformOf(domid: number): EmulatedPlatform | undefined {
    return this.created.find((c) => c.domain.domid === domid)?.platform;
  }

  platforms(): EmulatedPlatform[] {
    return this.created.flatMap((c) => (c.platform ? [c.platform] : []));
  }

  /**
   * Once a guest's runtime is up: when it goes (exit, or its link closing for one run elsewhere)
   * its domain is reclaimed; a death the toolstack did not cause is a crash, recorded with how
   * the process ended (the summary's `crashes`, `list`'s "crashed").
   */
  private watchGuest(handle: GuestHandle): void {
    const { config, domain } = handle;
    // `exited` is replaced for a guest run elsewhere once it connects: read it now.
    void handle.exited.then((code) => {
      handle.down = true;
      this.traceRuntime(config.name, 'guest', 'down', domain.domid, handle.pid, code);
      if (this.stopping) return;
      if (handle.killedByToolstack) return void this.reclaim(handle);
      const crash: RuntimeCrash = { host: this.config.name, runtime: 'guest', name: config.name, ...(handle.pid ? { pid: handle.pid } : {}), exit: handle.exit ?? { code, signal: null }, at: Date.now() };
      this.crashes.push(crash);
      this.log.error({ guest: config.name, domid: domain.domid, pid: handle.pid, ...crash.exit }, 'guest runtime died unplanned; reclaiming its domain');
      this.onCrash?.(crash, 'noticed');
      this.recover(crash, 'reclaimed', this.reclaim(handle));
    });
  }

  /** Guests whose runtime crashed (not killed by the toolstack) and were not rebooted since: name → how it ended. */
  crashedGuests(): Array<{ handle: GuestHandle; crash: RuntimeCrash }> {
    return this.guests.flatMap((handle) => {
      const crash = this.crashes.findLast((c) => c.runtime === 'guest' && c.name === handle.config.name);
      return handle.down && crash && !handle.killedByToolstack ? [{ handle, crash }] : [];
    });
  }

  /**
   * A guest's runtime died (crash, kill -9): reclaim what its domain held — backends drain and
   * unmap (grants), its event channels close, its rings go with its backends, its direct
   * functions are reset and taken back, its SV-IO VIFs destroyed, the hardware forgets its memory
   * (no DMA into a dead domain), its store nodes go — so the other guests never notice.
   */
  private async reclaim(handle: GuestHandle): Promise<void> {
    const i = this.created.findIndex((c) => c.domain === handle.domain);
    if (i < 0) return;
    const [c] = this.created.splice(i, 1);
    c.domain.state = 'crashed';
    this.log.warn({ domid: c.domain.domid, guest: handle.config.name }, 'guest runtime gone; reclaiming its domain');
    for (const b of c.blk) await b.destroy().catch(() => {});
    for (const n of c.net) await n.destroy().catch(() => {});
    await c.platform?.destroy().catch(() => {});
    await this.reclaimAll(c);
    await this.destroyVifs(c);
    if (this.hwsim && !this.hwsimDown)
      await this.hwsim.peer.call('hw.detachMemory', { domid: c.domain.domid }, 5_000).catch((e: Error) => this.log.warn({ err: e.message, domid: c.domain.domid }, 'detaching memory from the hardware failed'));
    const link = this.runtimeLinks.get(handle.config.name);
    if (link) {
      if (!link.closed) link.close('domain reclaimed');
      this.runtimeLinks.delete(handle.config.name);
    }
    try {
      this.hv.destroyDomain(c.domain.domid);
    } catch {
      /* already gone */
    }
    this.reclaimed.push(handle.config.name);
  }

  /** Guests whose domains were reclaimed after their runtime died (and not restarted since). */
  readonly reclaimed: string[] = [];
  /** Each guest vbd's region of the physical disk, by "guest/devid" (kept across reboots). */
  private readonly regions = new Map<string, { start: number; sectors: number }>();

  /**
   * Reboot a guest (xl reboot, or a crashed guest brought back): its runtime is killed if it
   * still runs, its domain reclaimed, then a new domain is built from the same config — same
   * disk region, same addresses — and booted; its workloads start when it is ready.
   */
  restartGuest(name: string): Promise<void> {
    const run = this.doRestartGuest(name);
    const done = run.catch(() => undefined);
    this.rebooting.set(name, done);
    void done.then(() => {
      if (this.rebooting.get(name) === done) this.rebooting.delete(name);
    });
    return run;
  }

  /** Reboots in progress, by guest name (settled when the guest is back, or the reboot failed). */
  private readonly rebooting = new Map<string, Promise<void>>();

  /** Wait (bounded) until a reboot of `name` in progress has finished; at once if there is none. */
  async rebooted(name: string, maxMs = 30_000): Promise<void> {
    const r = this.rebooting.get(name);
    if (r) await Promise.race([r, delay(maxMs)]);
  }

  private async doRestartGuest(name: string): Promise<void> {
    const i = this.guests.findIndex((g) => g.config.name === name);
    if (i < 0) throw new Error(`no guest ${name} on ${this.config.name}`);
    if (this.opts.ws && this.opts.ws.spawn === false) throw new Error(`${name} runs elsewhere (compose): restart its container instead`);
    const old = this.guests[i];
    if (!old.down) await old.kill();
    await Promise.race([old.exited, delay(10_000)]);
    for (let t = 0; !this.reclaimed.includes(name) && t < 500; t++) await delay(20);
    const { domain, blk, net } = await this.createDomainWithDevices(old.config);
    const handle = this.launchGuest(old.config, domain, blk, net);
    this.guests[i] = handle;
    this.reclaimed.splice(this.reclaimed.indexOf(name), 1);
    this.restarted.push(name);
    await handle.ready;
    handle.isReady = true;
    this.traceRuntime(name, 'guest', 'up', domain.domid, handle.pid);
    this.watchGuest(handle);
    await handle.peer!.call(GUEST_START, {});
  }

  /** Guests rebooted during the run (their earlier incarnation's ledger died with it). */
  readonly restarted: string[] = [];

  /**
   * Restart a vbd's backend (a crashed and restarted blkback): the old instance drains and lets go
   * of everything, a new one offers the device again (InitWait), and the frontend recovers —
   * re-grants its ring and resubmits what was in flight (blkif_recover). Returns when the new
   * backend is waiting; the frontend reconnects on its own.
   */
  async restartBackend(domain: string, device: string): Promise<void> {
    const c = this.created.find((x) => x.domain.name === domain);
    if (!c) throw new Error(`no domain ${domain} on ${this.config.name}`);
    const old = [...c.blk, ...c.net].find((b) => b.device === device);
    if (!old) throw new Error(`no backend ${domain}/${device} on ${this.config.name}`);
    await this.crashBackend(old);
    await this.offerBackendAgain(c, old);
  }

  /** A backend goes: it lets the device finish what it holds, drops its mappings and channel, and says Closed. */
  private async crashBackend(old: BlkBackend | NetBackend): Promise<void> {
    await old.destroy();
    await this.hv.dom0Store.write(`${old.xb.dir}/state`, String(XenbusState.Closed));
  }

  /** A new backend in place of `old`, offering the device again (InitWait); the frontend reconnects. */
  private async offerBackendAgain(c: Host['created'][number], old: BlkBackend | NetBackend): Promise<void> {
    const g = this.guests.find((x) => x.domain === c.domain);
    if (old instanceof BlkBackend) {
      const fresh = new BlkBackend(this.hv, this.disk, old.frontDomid, old.devid, old.region, this.log);
      c.blk[c.blk.indexOf(old)] = fresh;
      if (g) g.blk[g.blk.indexOf(old)] = fresh;
      await fresh.start();
    } else {
      const fresh = new NetBackend(this.hv, this.bridge, old.frontDomid, old.devid, this.log);
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
  async restartDom0(): Promise<{ backends: number }> {
    return this.lifecycle(() => this.restartDom0Now());
  }

  private async restartDom0Now(): Promise<{ backends: number }> {
    const all = await this.crashDom0Io();
    await this.reviveDom0Io(all);
    return { backends: all.length };
  }

  /** Every PV backend of the host goes at once, and the bridge forgets what it learned; returns what went. */
  private async crashDom0Io(): Promise<Array<{ c: Host['created'][number]; b: BlkBackend | NetBackend }>> {
    const all = this.created.flatMap((c) => [...c.blk, ...c.net].map((b) => ({ c, b })));
    this.traceRuntime(`${this.config.name}/dom0`, 'dom0', 'down', 0);
    await Promise.all(all.map(({ b }) => this.crashBackend(b)));
    this.bridge.forgetLearned();
    return all;
  }

  /** Offer again every device crashDom0Io took down (a guest reclaimed meanwhile has nothing to offer). */
  private async reviveDom0Io(all: Array<{ c: Host['created'][number]; b: BlkBackend | NetBackend }>): Promise<void> {
    for (const { c, b } of all) if (this.created.includes(c)) await this.offerBackendAgain(c, b);
    this.restartedDom0++;
    this.traceRuntime(`${this.config.name}/dom0`, 'dom0', 'up', 0);
  }

  /** dom0 I/O-stack restarts survived. */
  restartedDom0 = 0;

  /**
   * Fault plans' process.kill with runtime: dom0 — dom0's I/O stack dies and stays down (the
   * hypervisor core this runtime also holds goes on, as Xen's outlives a driver domain): every PV
   * backend crashes as in restartDom0, and nothing offers the devices until revive() (the heal).
   * PV frontends wait in their reconnect; direct and SV-IO guests never notice.
   */
  async killDom0(): Promise<() => Promise<void>> {
    const all = await this.lifecycle(() => this.crashDom0Io());
    let revived: Promise<void> | undefined;
    return () => (revived ??= this.lifecycle(() => this.reviveDom0Io(all)));
  }

  /** Fault plans' process.pause with runtime: dom0: every PV backend stops consuming until thaw(). */
  freezeDom0(): () => void {
    const all = this.created.flatMap((c) => [...c.blk, ...c.net]);
    for (const b of all) b.pause();
    // Resumes the ones it paused: a restart meanwhile replaced them with new, running ones.
    return () => all.forEach((b) => b.resume());
  }

  /** ws: each runtime's link to this dom0 (guests by name, and "hwsim"), for link faults. */
  readonly runtimeLinks = new Map<string, ToxicLink>();

  /** Toxics on a runtime's link (ws transport): latency, bandwidth, partition; `{}` heals. */
  setLinkToxics(runtime: string, toxics: LinkToxics): void {
    const l = this.linkOf(runtime);
    if (Object.keys(toxics).length === 0) l.heal();
    else l.set(toxics);
  }

  /** Reset a runtime's link (a TCP reset): the runtime loses dom0; a guest's domain is reclaimed. */
  resetLink(runtime: string): void {
    this.linkOf(runtime).reset('connection reset (fault injected)');
  }

  private linkOf(runtime: string): ToxicLink {
    if (!this.opts.ws) throw new Error('link faults need the ws transport (threads runtimes share memory, not links)');
    const l = this.runtimeLinks.get(runtime);
    if (!l || l.closed) throw new Error(`no live link to ${runtime} on ${this.config.name}`);
    return l;
  }

  /** Frame faults on this host's LAN uplink (several hosts only); undefined clears. */
  async setLanFaults(faults: { drop?: number; duplicate?: number; reorder?: number; corrupt?: number; seed?: number } | undefined): Promise<void> {
    await this.hwsim!.peer.call('hw.lan.faults', { faults: faults ?? null }, 5_000);
  }

  /** Replace the physical disk's fault rules (blkdebug-style; `[]` clears). */
  async setDiskFaults(rules: DiskFaultRule[]): Promise<void> {
    await this.hwsim!.peer.call('hw.disk.faults', { rules }, 5_000);
  }

  /**
   * Fault plans' evtchn.lost / evtchn.delayed on a guest's direct functions and SV-IO VIFs: the
   * hardware loses (`lostToGuest`) or delays their interrupts; `null` clears. Answers what it did.
   */
  async setDeviceIrqFault(domid: number, fault: InterruptFault | null): Promise<InterruptFaultCounts> {
    return this.hwsim!.peer.call('hw.irq.faults', { domid, fault }, 10_000);
  }

  /** Carrier of the physical NIC (a pulled cable when false). */
  async setNicLink(up: boolean): Promise<void> {
    await this.hwsim!.peer.call('hw.nic.link', { up }, 5_000);
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

  /** kill -9 a guest's runtime (fault injection); its domain is then reclaimed. */
  async killGuest(name: string): Promise<void> {
    const g = this.guests.find((x) => x.config.name === name);
    if (!g) throw new Error(`no guest ${name} on ${this.config.name}`);
    await g.kill();
  }

  /** Freeze a guest's runtime until the returned thaw() (fault injection; bounded by maxMs). */
  async freezeGuest(name: string, maxMs: number): Promise<() => void> {
    const g = this.guests.find((x) => x.config.name === name);
    if (!g || !g.peer || g.down) throw new Error(`no running guest ${name} on ${this.config.name}`);
    if (g.pid && this.opts.ws) {
      const pid = g.pid;
      process.kill(pid, 'SIGSTOP');
      const t = setTimeout(() => killQuietly(pid, 'SIGCONT'), maxMs);
      return () => {
        clearTimeout(t);
        if (!g.down) killQuietly(pid, 'SIGCONT');
      };
    }
    const word = new SharedArrayBuffer(4);
    await g.peer.call(GUEST_FREEZE, { word, maxMs }, 5_000);
    return () => {
      const w = new Int32Array(word);
      Atomics.store(w, 0, 1);
      Atomics.notify(w, 0);
    };
  }

  /** Every domain the toolstack created on this host, booted or not. */
  private readonly created: Array<{ domain: Domain; blk: BlkBackend[]; net: NetBackend[]; direct: AssignedFunction[]; svio: BoundVif[]; platform?: EmulatedPlatform }> = [];

  blkBackends(): BlkBackend[] {
    return this.created.flatMap((c) => c.blk);
  }

  netBackends(): NetBackend[] {
    return this.created.flatMap((c) => c.net);
  }

  private launchGuest(config: GuestConfig, domain: Domain, blk: BlkBackend[], net: NetBackend[]): GuestHandle {
    const { hv, ips } = this;
    const vifs = config.devices.flatMap((d) => (d.type === 'vif' ? [{ devid: d.devid, ip: d.ip, mac: d.mac, mode: d.mode }] : []));
    const vbds = config.devices.flatMap((d) => (d.type === 'vbd' ? [{ devid: d.devid, mode: d.mode }] : []));
    const platform = this.platformOf(domain.domid);
    const udp = config.workloads.udp;
    const peers = udp
      ? (udp.peers === 'all' ? [...ips.keys()].filter((n) => n !== config.name) : udp.peers).flatMap((name) => {
          const ip = /^\d+\.\d+\.\d+\.\d+$/.test(name) ? name : ips.get(name);
          return ip ? [{ name, ip }] : [];
        })
      : [];
    const spec: GuestBootSpec = {
      domid: domain.domid,
      name: config.name,
      host: this.config.name,
      seed: this.opts.seed * 1000 + domain.domid,
      memoryFrames: domain.memory.frames,
      ...(this.opts.linkedGuests || this.opts.ws ? {} : { shared: { memory: domain.memory.buffer, grantTable: domain.grantTable, eventMemory: hv.eventMemory } }),
      vbds,
      vifs,
      ...(platform ? { emulated: platform.bootSpec() } : {}),
      ...(this.vifsOf(domain.domid).length > 0 ? { svio: { vifs: this.vifsOf(domain.domid).map(vifSpec), ...this.hwUrlForGuests() } } : {}),
      ...(this.functionsOf(domain.domid).length > 0
        ? { direct: { functions: this.functionsOf(domain.domid).map(directSpec), ...this.hwUrlForGuests() } }
        : {}),
      workloads: {
        ...(config.workloads.block && vbds.length ? { block: { devid: vbds[0].devid, ...config.workloads.block, ...(this.config.disk.cache === 'writeback' ? { volatileCache: true } : {}) } } : {}),
        ...(config.workloads.io && vbds.length
          ? {
              io: {
                devid: vbds[0].devid,
                op: config.workloads.io.op,
                pattern: config.workloads.io.pattern,
                blockBytes: config.workloads.io.blockKiB * 1024,
                queueDepth: config.workloads.io.queueDepth,
                regionBytes: config.workloads.io.regionMiB * 1024 * 1024,
              },
            }
          : {}),
        ...(udp && vifs.length ? { udp: { peers, payloadBytes: udp.payloadBytes, window: udp.window, ...(udp.mode ? { mode: udp.mode, ratePps: udp.ratePps ?? 0 } : {}) } } : {}),
      },
    };
    domain.state = 'running';
    return this.opts.ws ? this.launchGuestProcess(config, domain, blk, net, spec) : this.launchGuestWorker(config, domain, blk, net, spec);
  }

  private guestReady(config: GuestConfig, peer: RpcPeer): Promise<void> {
    return new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new TimeoutError(`guest ${config.name} did not finish booting within 30 s`)), 30_000);
      peer.on(GUEST_READY, () => {
        clearTimeout(timer);
        res();
      });
      peer.link.onClose((reason) => {
        clearTimeout(timer);
        rej(new Error(`guest ${config.name} disconnected before it was ready: ${reason}`));
      });
    });
  }

  private launchGuestWorker(config: GuestConfig, domain: Domain, blk: BlkBackend[], net: NetBackend[], spec: GuestBootSpec): GuestHandle {
    const { port1, port2 } = new MessageChannel();
    const worker = startRuntimeWorker(runtimeEntry(import.meta.url, 'domU', 'guest.worker'), {
      workerData: { control: port1, spec },
      transferList: [port1],
      name: config.name,
    });
    const peer = new RpcPeer(new PortLink(port2), `${config.name}`);
    if (spec.shared) this.hv.bindGuestHypercalls(peer, domain.domid);
    else this.hv.attachLinkedGuest(peer, domain.domid);
    // A hosted guest without shared memory runs its VMApp in its own runtime; dom0 serves it on this link.
    if (!spec.shared) this.platformOf(domain.domid)?.serveVmApp(peer);
    const ready = this.guestReady(config, peer);
    worker.on('error', (e) => {
      domain.state = 'crashed';
      this.log.error({ err: e, domid: domain.domid }, 'guest crashed');
    });
    const handle: GuestHandle = {
      config,
      domain,
      peer,
      blk,
      net,
      ready,
      exited: exitOf(worker).then((code) => {
        handle.exit = { code, signal: null };
        return code;
      }),
      kill: async () => {
        if (handle.exit === undefined) handle.killedByToolstack = true;
        await worker.terminate();
      },
    };
    return handle;
  }

  /** ws: the guest is a process that proves it is this domain, then asks for its boot spec. */
  private launchGuestProcess(config: GuestConfig, domain: Domain, blk: BlkBackend[], net: NetBackend[], spec: GuestBootSpec): GuestHandle {
    const ws = this.opts.ws!;
    let child: ChildProcess | undefined;
    let failBoot: (e: Error) => void = () => {};
    const handle: GuestHandle = {
      config,
      domain,
      blk,
      net,
      ready: new Promise<void>((res, rej) => {
        failBoot = rej;
        this.awaitingGuests.set(domain.domid, (peer) => {
          handle.peer = peer;
          // A guest run elsewhere (compose) is gone for us when its link closes.
          if (!child) handle.exited = new Promise<number>((r) => peer.link.onClose(() => r(0)));
          peer.handle(GUEST_BOOT, () => spec);
          this.guestReady(config, peer).then(res, rej);
        });
      }),
      exited: new Promise<number>(() => {}),
      kill: async () => {
        if (child?.pid && child.exitCode === null && child.signalCode === null) {
          handle.killedByToolstack = true;
          killQuietly(child.pid);
        }
      },
    };
    if (ws.spawn !== false) {
      child = spawn(process.execPath, [ws.bin ?? repoBin(import.meta.url), 'domu', '--id', String(domain.domid), '--dom0', this.wsUrl], {
        env: guestEnvironment(process.env, formatDomainKey(deriveDomainKey(ws.secret, this.config.name, domain.domid))),
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      handle.pid = child.pid;
      handle.exited = new Promise<number>((r) => child!.once('exit', (code) => r(code ?? 1)));
      child.once('exit', (code, signal) => {
        handle.exit = { code, signal };
        failBoot(new Error(`guest ${config.name} process exited (${signal ?? code}) before it was ready`));
        if (!this.stopping) {
          domain.state = 'crashed';
          this.log.error({ domid: domain.domid, code, signal }, 'guest process exited');
        }
      });
    }
    return handle;
  }

  /** Guests (ws) that may connect, by domid, with what to do when they do. */
  private readonly awaitingGuests = new Map<number, (peer: RpcPeer) => void>();
  private server?: WsServer;

  get wsUrl(): string {
    if (!this.server) throw new Error('dom0 is not listening');
    return `ws://${this.server.host === '0.0.0.0' ? '127.0.0.1' : this.server.host}:${this.server.port}`;
  }

  /** Read-only views for CLI commands and healthchecks. */
  private serveControl(peer: RpcPeer): void {
    peer.handle(CONTROL_PING, () => ({
      host: this.config.name,
      guests: this.config.guests.length,
      ready: this.guests.filter((g) => g.isReady).length,
    }));
  }

  private async listenForGuests(): Promise<void> {
    const ws = this.opts.ws!;
    this.server = await listen({
      host: ws.host ?? '127.0.0.1',
      port: ws.port ?? 0,
      secret: ws.secret,
      // Guests' keys are bound to this host: a guest of another host with our domain id's number is refused.
      domainHost: this.config.name,
      log: this.log,
      // A connection may act only as a guest domain we created and that has no runtime attached.
      authorize: (who) =>
        (who.role === 'guest' && this.awaitingGuests.has(who.domid)) ||
        // A guest's vCPU relay (models in dom0 across a link), once per domain that has them.
        (who.role === 'vcpu' && this.platformOf(who.domid)?.awaitsVcpuLink === true) ||
        (who.role === 'control' && who.domid === 0) ||
        (who.role === 'hwsim' && who.domid === DOMID_HW && this.awaitingHwsim !== undefined && !this.hv.hardwareLink),
      onConnection: (link, who) => {
        if (who.role === 'control') return this.serveControl(new RpcPeer(link, 'control'));
        if (who.role === 'vcpu') {
          const p = this.platformOf(who.domid);
          if (!p?.awaitsVcpuLink) return link.close('no vCPU link expected for this domain');
          return p.serveVcpuLink(new RpcPeer(link, `vcpu${who.domid}`));
        }
        if (who.role === 'hwsim') {
          if (this.hv.hardwareLink) return link.close('hardware already attached');
          // Every runtime link passes through a ToxicLink: a no-op until a fault plan sets toxics.
          const tl = new ToxicLink(link);
          this.runtimeLinks.set('hwsim', tl);
          const peer = new RpcPeer(tl, `${this.config.name}/hwsim`);
          this.hv.attachHardware(peer);
          return this.awaitingHwsim?.(peer);
        }
        const attach = this.awaitingGuests.get(who.domid);
        if (!attach) return link.close('domain already attached');
        this.awaitingGuests.delete(who.domid);
        const tl = new ToxicLink(link);
        const name = this.guests.find((g) => g.domain.domid === who.domid)?.config.name ?? `guest${who.domid}`;
        this.runtimeLinks.set(name, tl);
        const peer = new RpcPeer(tl, `guest${who.domid}`);
        this.hv.attachLinkedGuest(peer, who.domid);
        this.platformOf(who.domid)?.serveVmApp(peer);
        attach(peer);
      },
    });
    this.log.info({ url: this.wsUrl }, 'dom0 listening for guests');
  }

  async guestStats(): Promise<GuestStats[]> {
    return Promise.all(
      this.guests.map(async (g) => {
        if (!g.peer || g.peer.closed) return g.lastStats!;
        try {
          g.lastStats = await g.peer.call<GuestStats>(GUEST_STATS, {}, 5_000);
        } catch {
          /* keep the last known figures */
        }
        return g.lastStats!;
      }),
    );
  }

  /**
   * First phase of shutdown: every guest stops issuing work and drains, devices still connected
   * — so no guest closes its vif while another's datagrams to it are still in flight.
   */
  async quiesce(): Promise<void> {
    if (this.quiesced) return;
    this.quiesced = true;
    // A hardware restart in progress (an unplanned death) finishes first: until the new hardware
    // answers, the guests' requests cannot drain. Bounded: a restart that hangs does not hold
    // the shutdown (the drain then times out per guest, and the summary says so).
    await Promise.race([this.lifecycleTail, delay(HW_RESTART_WAIT_MS)]);
    await Promise.all(
      // A guest whose runtime is gone (killed, crashed) has nothing to drain.
      this.guests.filter((g) => !g.down).map((g) =>
        (g.peer ? g.peer.call<GuestStats>(GUEST_QUIESCE, {}, GUEST_DRAIN_MS) : Promise.reject(new Error('never connected'))).catch((e) =>
          this.log.error({ err: e, guest: g.config.name }, 'guest did not quiesce'),
        ),
      ),
    );
  }

  private quiesced = false;

  /**
   * Orderly shutdown: each guest stops its workloads, verifies, closes its frontends
   * (Closing → Closed); backends release grants and ports; domains are destroyed; the disk is
   * flushed; every worker has exited when this resolves.
   */
  async stop(): Promise<GuestStats[]> {
    if (this.stopping) return this.guests.map((g) => g.lastStats!);
    this.stopping = true;
    await this.quiesce();
    // A VMApp in a guest's own process (ws) goes with the guest: take its last figures first.
    await Promise.all(this.platforms().map((p) => p.refresh()));
    const finals = await Promise.all(
      this.guests.map(async (g) => {
        try {
          if (g.peer && !g.down) g.lastStats = await g.peer.call<GuestStats>(GUEST_STOP, {}, GUEST_DRAIN_MS);
        } catch (e) {
          this.log.error({ err: e, guest: g.config.name }, 'guest did not stop cleanly');
        }
        return g.lastStats!;
      }),
    );
    for (const g of this.guests) {
      await Promise.race([g.exited, delay(5_000)]);
      if (!(await settled(g.exited))) await g.kill();
    }
    // The VIFs' last counters, from the engine's cores, before their domains (and they) go.
    if (this.created.some((c) => c.svio.length > 0))
      this.svioStats = await this.hwsim!.peer.call<Record<string, unknown>>('hw.svio.list', {}, 5_000).catch(() => undefined);
    for (const c of this.created) {
      for (const b of c.blk) await b.destroy();
      for (const n of c.net) await n.destroy();
      // Last counters are kept for the summary; a hosted VMApp stops here.
      await c.platform?.destroy();
      await this.reclaimAll(c);
      await this.destroyVifs(c);
      this.hv.destroyDomain(c.domain.domid);
    }
    if (this.hwsim) {
      this.hwsim.planned = true;
      try {
        this.hardwareStats = await this.hwsim.peer.call<Record<string, unknown>>('hw.stats', {}, 5_000);
        await this.hwsim.peer.call('hw.shutdown', {}, 10_000);
      } catch (e) {
        this.log.error({ err: e }, 'hwsim shutdown failed');
      }
      await Promise.race([this.hwsim.exited, delay(5_000)]);
      if (!(await settled(this.hwsim.exited))) await this.hwsim.kill();
    }
    await this.server?.close();
    this.hv.dom0Events.stop();
    return finals;
  }
}

/** A device function assigned to a domain (direct I/O). */
export interface AssignedFunction {
  kind: 'nic' | 'disk';
  devid: number;
  rid: string;
  /** The guest's end of the doorbell/interrupt channel, and the hardware's. */
  port: number;
  hwPort: number;
  /** threads: the function's register page. */
  bar?: SharedArrayBuffer;
  /** What the hardware was asked (hw.vf.assign), to assign it again after a hardware restart. */
  request: Record<string, unknown>;
}

/** An SV-IO VIF bound to a domain. */
/** A VIF as `ringvisor svio list` shows it: the engine's row, and whose device it is. */
export type SvioVifRow = Record<string, unknown> & { vif: number; host: string; domain: string; device: string };

/** The name a VIF's device has in a guest's config and the views: vif0, vbd51712, cam0. */
export function vifDeviceName(v: { kind: 'net' | 'blk' | 'cam'; devid: number }): string {
  return `${v.kind === 'net' ? 'vif' : v.kind === 'blk' ? 'vbd' : 'cam'}${v.devid}`;
}

export interface BoundVif {
  kind: 'net' | 'blk' | 'cam';
  devid: number;
  vif: number;
  /** The guest's end of the VIF's doorbell/interrupt channel, and the hardware's. */
  port: number;
  hwPort: number;
  /** threads: the VIF's access-API register page. */
  page?: SharedArrayBuffer;
  /** What hw.svio.create was asked (to create it again after a reset or a hardware restart). */
  request: Record<string, unknown>;
  /** Destroyed by a reset, not yet created again. */
  down?: boolean;
  /**
   * Bumped each time the VIF goes away (a reset destroys it, the hardware under it dies): a
   * verdict taken across a change would compare two different VIFs.
   */
  generation: number;
}

/** What the guest is told of a VIF. */
function vifSpec(b: BoundVif): SvioVifSpec {
  return { kind: b.kind, devid: b.devid, vif: b.vif, port: b.port, ...(b.page ? { page: b.page } : {}) };
}

/** "vif0", "vbd51712": how views and the CLI name a guest's function. */
export function directDeviceName(f: { kind: 'nic' | 'disk'; devid: number }): string {
  return `${f.kind === 'nic' ? 'vif' : 'vbd'}${f.devid}`;
}

function directSpec(f: AssignedFunction): DirectFunctionSpec {
  return { kind: f.kind, devid: f.devid, rid: f.rid, port: f.port, ...(f.bar ? { bar: f.bar } : {}) };
}

/** The repository's CLI entry (bin/ringvisor.mjs), found from this module's location. */
function repoBin(callerUrl: string): string {
  const i = callerUrl.lastIndexOf('/packages/');
  return fileURLToPath(new URL('bin/ringvisor.mjs', callerUrl.slice(0, i + 1)));
}

/** Cluster-wide credentials a guest process must never inherit from dom0's environment. */
const CLUSTER_CREDENTIALS = ['RINGVISOR_SECRET', 'RINGVISOR_READ_TOKEN'] as const;

/**
 * A guest process's environment: dom0's, minus every cluster credential (whatever the operator
 * had exported), plus the guest's own domain key — the only key it gets (auth.ts).
 */
export function guestEnvironment(parent: NodeJS.ProcessEnv, domainKeyHex: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...parent };
  for (const name of CLUSTER_CREDENTIALS) delete env[name];
  env.RINGVISOR_DOMAIN_KEY = domainKeyHex;
  return env;
}

/** SIGKILL by pid; a process that is already gone is not an error. */
/** Signals a process that may have died meanwhile (a late signal must not throw in dom0). */
function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

function exitOf(w: Worker): Promise<number> {
  return new Promise((r) => w.once('exit', r));
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Whether `p` has settled already (given a turn of the event loop to say so). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}
