/**
 * The hardware simulator's runtime as dom0 supervises it: started (a worker thread, or over ws
 * its own process that connects back), restarted, killed until a heal, frozen; an unplanned death
 * noticed and answered with a restart; the hardware's fault rules set; and its last figures and
 * shutdown at the end of the run.
 */
import { MessageChannel } from 'node:worker_threads';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  onNotify,
  serveContract,
  HardwareBootContract,
  ClosedError,
  DOMID_HW,
  InvalidStateError,
  PortLink,
  RecoveryError,
  RpcPeer,
  ToxicLink,
  UnsupportedOperationError,
  runtimeEntry,
  startRuntimeWorker,
  type DiskFaultRule,
  type InterruptFault,
  type InterruptFaultCounts,
  type WsLink,
} from '@ringvisor/shared';
import { hardware, guestControl } from './clients.js';
import type { Domain } from '../hypervisor/hypervisor.js';
import type { HostContext, RuntimeTracer } from './host-context.js';
import type { HardwareDisk, HwsimRuntime, RuntimeCrash, RuntimeExit } from './host-types.js';
import type { HardwareAccess } from './attach/attacher.js';
import { delay, exitOf, killQuietly, repoBin, settled } from './runtime-util.js';

/** Unplanned hardware deaths dom0 restarts the hardware after, in one run. */
const MAX_HW_CRASH_RESTARTS = 5;

/** What depends on the hardware, told when it goes and when a new one is up. */
export interface HardwareDependents {
  /** The hardware is going away: whatever is bound to it is stale from now. */
  hardwareGoing(): void;
  /** A new hardware is up (memory registered again): attach everything again; returns what did not come back. */
  hardwareBack(peer: RpcPeer): Promise<string[]>;
}

export class HardwareSupervisor implements HardwareAccess {
  /** The hardware's runtime now (replaced by each restart). */
  runtime?: HwsimRuntime;
  /** The hardware simulator's runtime exited. */
  down = false;
  /** Hardware restarts survived. */
  restarts = 0;
  /** The hardware's own counters, read just before it powers off. */
  stats?: Record<string, unknown>;
  private disk?: HardwareDisk;
  /** ws: where guests with assigned functions reach the hardware directly. */
  private directUrl?: string;
  /** ws: the hardware's connection is expected; called with its link's peer. */
  private awaitingHwsim?: (peer: RpcPeer) => void;
  /** Dependents are told of the hardware's restarts; set once the host's modules exist. */
  dependents?: HardwareDependents;

  constructor(
    private readonly ctx: HostContext,
    private readonly trace: RuntimeTracer,
    /** ws: dom0's listener's URL, which the hardware process connects back to. */
    private readonly dom0Url: () => string,
  ) {}

  private get hwsim(): HwsimRuntime | undefined {
    return this.runtime;
  }

  /** ws: where guests reach the hardware now (their boot spec, and every re-plug: a restarted hardware is a new process). */
  hwUrlForGuests(): { hwUrl?: string } {
    return this.ctx.opts.ws && this.directUrl ? { hwUrl: this.directUrl } : {};
  }

  /** Start the hardware on `disk` (ws: a process connecting back to dom0's listener, which must be listening). */
  async start(disk: HardwareDisk): Promise<void> {
    this.disk = disk;
    if (this.ctx.opts.ws) await this.startProcess(disk);
    else this.startWorker();
    this.trace(`${this.ctx.config.name}/hwsim`, 'hwsim', 'up', DOMID_HW, this.hwsim!.pid);
  }

  /** Make a domain's memory reachable by device DMA (a copy kept current, across a link). */
  async attachMemory(d: Domain): Promise<void> {
    const peer = this.hwsim!.peer;
    if (this.ctx.hv.hardwareLink) await hardware(peer).attachMemory({ domid: d.domid, frames: d.memory.frames });
    else await hardware(peer).attachMemory({ domid: d.domid, buffer: d.memory.buffer });
  }

  /** ws: a hardware connection is expected (and none is attached). */
  awaitsConnection(): boolean {
    return this.awaitingHwsim !== undefined && !this.ctx.hv.hardwareLink;
  }

  /** ws: the hardware's authenticated link arrived at dom0's listener. */
  attachLink(link: WsLink): void {
    const { hv, config } = this.ctx;
    if (hv.hardwareLink) return link.close('hardware already attached');
    // Every runtime link passes through a ToxicLink: a no-op until a fault plan sets toxics.
    const tl = new ToxicLink(link);
    this.ctx.links.byRuntime.set('hwsim', tl);
    const peer = new RpcPeer(tl, `${config.name}/hwsim`);
    hv.attachHardware(peer);
    return this.awaitingHwsim?.(peer);
  }

  /** ws: the hardware simulator is its own process that connects back as the hardware domain. */
  private async startProcess(disk: HardwareDisk): Promise<void> {
    const ws = this.ctx.opts.ws!;
    let child: ChildProcess | undefined;
    const connected = new Promise<RpcPeer>((res, rej) => {
      this.awaitingHwsim = (peer) => {
        this.awaitingHwsim = undefined; // one hardware per host: a second connection is refused
        res(peer);
      };
      if (ws.spawn !== false) {
        child = spawn(process.execPath, [ws.bin ?? repoBin(import.meta.url), 'hwsim', '--dom0', this.dom0Url()], {
          env: { ...process.env, RINGVISOR_SECRET: Buffer.from(ws.secret).toString('hex') },
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        child.once('exit', (code, signal) => rej(new ClosedError(`hwsim process exited (${signal ?? code}) before it connected`)));
      }
    });
    const peer = await connected;
    await this.bootOverLink(peer, disk);
    const exited = child ? new Promise<number>((r) => (child!.exitCode !== null ? r(child!.exitCode) : child!.once('exit', (c) => r(c ?? 1)))) : new Promise<number>(() => {});
    const hw: HwsimRuntime = {
      peer,
      exited,
      ...(child?.pid ? { pid: child.pid } : {}),
      kill: async () => {
        if (child?.pid && child.exitCode === null && child.signalCode === null) killQuietly(child.pid);
      },
    };
    this.runtime = hw;
    this.watchProcess(hw, child);
  }

  /** ws: answer the hardware's request for its boot spec, and wait until it says it is ready. */
  private async bootOverLink(peer: RpcPeer, disk: HardwareDisk): Promise<void> {
    const { config, opts } = this.ctx;
    const ready = new Promise<void>((r) =>
      onNotify(peer, HardwareBootContract.notifications.ready, ({ directUrl }) => {
        if (/^wss?:\/\//.test(directUrl)) this.directUrl = directUrl;
        r();
      }),
    );
    serveContract(peer, HardwareBootContract, {
      boot: () => ({
        host: config.name,
        disk,
        nic: { mac: config.nic.mac },
        svioCores: config.svio.cores,
        ...(opts.lan ? { lan: { url: opts.lan.url, hostIndex: opts.lan.hostIndex } } : {}),
      }),
    });
    await ready;
  }

  /**
   * ws: the hardware's death is noticed by whichever comes first: the process exit (SIGCHLD, at
   * once) or the link closing (the only sign when it runs elsewhere, in compose).
   */
  private watchProcess(hw: HwsimRuntime, child: ChildProcess | undefined): void {
    if (child) {
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => this.gone(hw, { code, signal });
      if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
      else child.once('exit', onExit);
    }
    // A child's exit says how it died: give it a moment to arrive before the link's word is taken.
    hw.peer.link.onClose((reason) => void delay(child ? 1000 : 0).then(() => this.gone(hw, { code: null, signal: null }, reason)));
  }

  /** threads: the hardware simulator as a worker thread (started by entry point). */
  private startWorker(): void {
    const { config, opts, hv, log } = this.ctx;
    const { port1, port2 } = new MessageChannel();
    const worker = startRuntimeWorker(runtimeEntry(import.meta.url, 'hwsim', 'hwsim.worker'), {
      workerData: {
        control: port1,
        eventMemory: hv.eventMemory,
        host: config.name,
        disk: this.disk!,
        nic: { mac: config.nic.mac },
        svioCores: config.svio.cores,
        ...(opts.lan ? { lan: opts.lan } : {}),
      },
      transferList: [port1],
    });
    const peer = new RpcPeer(new PortLink(port2), `${config.name}/hwsim`);
    const hw: HwsimRuntime = { peer, exited: exitOf(worker), kill: async () => void (await worker.terminate()) };
    this.runtime = hw;
    worker.on('error', (e) => log.error({ err: e }, 'hwsim failed'));
    void hw.exited.then((code) => this.gone(hw, { code, signal: null }));
  }

  /**
   * The hardware simulator's runtime is gone. Planned (a restart, a kill fault, shutdown): the
   * caller handles it. Unplanned (kill -9 from outside, a crash): dom0 brings new hardware up
   * exactly as the process.restart fault does — same image, memory registered again, dom0's
   * queues redone with every unanswered request resubmitted, functions and VIFs back — so the
   * guests recover and nothing acknowledged is lost.
   */
  private gone(hw: HwsimRuntime, exit: RuntimeExit, linkReason?: string): void {
    const { config, log, crashLog } = this.ctx;
    if (hw.exit === undefined && (exit.code !== null || exit.signal !== null)) hw.exit = exit;
    if (hw.gone) return;
    hw.gone = true;
    if (this.hwsim === hw) this.down = true;
    if (this.ctx.stopping && this.hwsim === hw) this.trace(`${config.name}/hwsim`, 'hwsim', 'down', DOMID_HW, hw.pid, hw.exit?.code ?? undefined);
    if (hw.planned || this.ctx.stopping || this.hwsim !== hw) return;
    const crash: RuntimeCrash = { host: config.name, runtime: 'hwsim', name: `${config.name}/hwsim`, ...(hw.pid ? { pid: hw.pid } : {}), exit: hw.exit ?? exit, at: Date.now() };
    crashLog.record(crash);
    // A hardware that dies again and again (a crash loop) is left down after a few tries: the
    // run then ends with the recovery failed, rather than restarting forever.
    if (crashLog.crashes.filter((c) => c.runtime === 'hwsim').length > MAX_HW_CRASH_RESTARTS) {
      const error = `the hardware died ${MAX_HW_CRASH_RESTARTS + 1} times; not restarting it again`;
      log.error({ pid: hw.pid, ...crash.exit }, error);
      crashLog.failed(crash, error);
      return;
    }
    log.error({ pid: hw.pid, ...crash.exit, ...(linkReason ? { link: linkReason } : {}) }, 'hardware simulator died unplanned; restarting it');
    crashLog.noticed(crash);
    crashLog.recover(
      crash,
      'restarted',
      this.ctx.lock.run(async () => {
        if (this.ctx.stopping) throw new ClosedError('shutting down');
        await this.crash(true);
        await this.bringUp();
      }),
    );
  }

  /**
   * The hardware crashes (kill -9) and comes back: a new simulator opens the same disk image,
   * every domain's memory is registered for DMA again, and dom0's drivers' queues are attached
   * afresh: the disk driver starts its queue anew and resubmits every request it has not seen
   * answered (the device completed out of order, so the old ring's indices cannot say which);
   * whatever reached the image before the crash is there (the file outlives the process).
   */
  async restart(): Promise<void> {
    await this.ctx.lock.run(async () => {
      await this.crash();
      await this.bringUp();
    });
  }

  /**
   * Fault plans' process.kill with runtime: hwsim — the hardware dies (kill -9) and stays down:
   * dom0's drivers and the direct and SV-IO guests get no answers, their requests wait. The
   * returned revive() (the heal) brings a new one up as a restart does.
   */
  async kill(): Promise<() => Promise<void>> {
    await this.ctx.lock.run(() => this.crash());
    let revived: Promise<void> | undefined;
    return () => (revived ??= this.ctx.lock.run(() => this.bringUp()));
  }

  /** kill -9 the hardware and wait until it is gone (over ws: until dom0 saw its link close). */
  private async crash(alreadyGone = false): Promise<void> {
    const { opts, hv, config } = this.ctx;
    const old = this.hwsim!;
    if (opts.ws && !old.pid && !alreadyGone) throw new UnsupportedOperationError('the hardware runs elsewhere (compose): restart its container instead');
    old.planned = true;
    this.dependents?.hardwareGoing();
    await old.kill();
    // A process run elsewhere that already died has no exit to wait for (its link closed).
    if (!(alreadyGone && !old.pid)) await Promise.race([old.exited, delay(5_000)]);
    if (opts.ws) {
      // The new process may attach only once dom0 has seen the old one's link close.
      for (const deadline = Date.now() + 5_000; hv.hardwareLink && Date.now() < deadline; ) await delay(20);
      hv.hardwareLink?.peer.close('hardware restarted');
      hv.hardwareLink = undefined;
    }
    // A writeback drive's cache died with it: the guests' ledgers hold what was not yet durable in
    // doubt — told before the new hardware answers anything.
    if (config.disk.cache === 'writeback')
      await Promise.all(this.ctx.registry.guests.filter((g) => g.peer && !g.down).map((g) => guestControl(g.peer!).powerLost({}, { timeoutMs: 5_000 }).catch(() => undefined)));
    this.down = true;
    this.trace(`${config.name}/hwsim`, 'hwsim', 'down', DOMID_HW, old.pid);
  }

  /** A new hardware on the same image: memory registered again, dom0's queues redone, direct functions and VIFs back. */
  private async bringUp(): Promise<void> {
    const { opts, hv, config, registry } = this.ctx;
    if (opts.ws) await this.startProcess(this.disk!);
    else this.startWorker();
    this.down = false;
    this.trace(`${config.name}/hwsim`, 'hwsim', 'up', DOMID_HW, this.hwsim!.pid);
    const peer = this.hwsim!.peer;
    // Over ws the new process has blank copies of every domain's memory: what a device reads is
    // handed to it again (the queues, write data, transmit buffers) as a driver re-maps its
    // DMA buffers after a reset.
    await this.attachMemory(hv.dom0);
    for (const c of registry.created) await this.attachMemory(c.domain);
    const missing = (await this.dependents?.hardwareBack(peer)) ?? [];
    this.restarts++;
    // A device that did not come back is a recovery that failed: the fault plan's record says so.
    if (missing.length > 0) throw new RecoveryError(`after the hardware restart, not back: ${missing.join('; ')}`);
  }

  /** Freeze the hardware (its thread blocks; over ws its process is SIGSTOPped) until thaw(). */
  async freeze(maxMs: number): Promise<() => void> {
    // A plan's pause that falls while a kill's heal is still reviving the hardware (late on a
    // loaded machine) freezes the new hardware once it is up, rather than failing on the dead one.
    for (const deadline = Date.now() + 30_000; this.down && Date.now() < deadline; ) await delay(50);
    return this.ctx.lock.run(() => this.freezeNow(maxMs));
  }

  private async freezeNow(maxMs: number): Promise<() => void> {
    const hw = this.hwsim!;
    // A killed hardware not yet revived has nothing to freeze (a plan may overlap a kill and a pause).
    if (this.down) throw new InvalidStateError('the hardware is down (killed, not yet revived): nothing to freeze');
    if (this.ctx.opts.ws) {
      if (!hw.pid) throw new UnsupportedOperationError('the hardware runs elsewhere (compose): pause its container instead');
      const pid = hw.pid;
      process.kill(pid, 'SIGSTOP');
      const t = setTimeout(() => killQuietly(pid, 'SIGCONT'), maxMs);
      return () => {
        clearTimeout(t);
        if (!this.down) killQuietly(pid, 'SIGCONT');
      };
    }
    const word = new SharedArrayBuffer(4);
    await hardware(hw.peer).freeze({ word, maxMs }, { timeoutMs: 5_000 });
    return () => {
      const w = new Int32Array(word);
      Atomics.store(w, 0, 1);
      Atomics.notify(w, 0);
    };
  }

  /**
   * Fault plans' disk.torn: the power goes. A writeback drive's cache reaches the image only in
   * part (each dirty sector with `writeProbability`), the rest is lost; the caller then restarts
   * the hardware. With a writethrough drive nothing is cached and nothing is torn.
   */
  async powerLoss(writeProbability: number, seed: number): Promise<{ written: number; lost: number }> {
    return hardware(this.hwsim!.peer).diskPowerLoss({ writeProbability, seed: seed >>> 0 }, { timeoutMs: 5_000 });
  }

  /** Frame faults on this host's LAN uplink (several hosts only); undefined clears. */
  async setLanFaults(faults: { drop?: number; duplicate?: number; reorder?: number; corrupt?: number; seed?: number } | undefined): Promise<void> {
    await hardware(this.hwsim!.peer).lanFaults({ faults: faults ?? null }, { timeoutMs: 5_000 });
  }

  /** Replace the physical disk's fault rules (blkdebug-style; `[]` clears). */
  async setDiskFaults(rules: DiskFaultRule[]): Promise<void> {
    await hardware(this.hwsim!.peer).diskFaults({ rules }, { timeoutMs: 5_000 });
  }

  /**
   * Fault plans' evtchn.lost / evtchn.delayed on a guest's direct functions and SV-IO VIFs: the
   * hardware loses (`lostToGuest`) or delays their interrupts; `null` clears. Answers what it did.
   */
  async setDeviceIrqFault(domid: number, fault: InterruptFault | null): Promise<InterruptFaultCounts> {
    return hardware(this.hwsim!.peer).irqFaults({ domid, fault }, { timeoutMs: 10_000 });
  }

  /** Carrier of the physical NIC (a pulled cable when false). */
  async setNicLink(up: boolean): Promise<void> {
    await hardware(this.hwsim!.peer).nicLink({ up }, { timeoutMs: 5_000 });
  }

  /** The end of the run: the hardware's last counters, then it powers off (killed if it does not). */
  async shutdown(): Promise<void> {
    if (!this.hwsim) return;
    this.hwsim.planned = true;
    try {
      this.stats = await hardware(this.hwsim.peer).stats({}, { timeoutMs: 5_000 });
      await hardware(this.hwsim.peer).shutdown({}, { timeoutMs: 10_000 });
    } catch (e) {
      this.ctx.log.error({ err: e }, 'hwsim shutdown failed');
    }
    await Promise.race([this.hwsim.exited, delay(5_000)]);
    if (!(await settled(this.hwsim.exited))) await this.hwsim.kill();
  }
}
