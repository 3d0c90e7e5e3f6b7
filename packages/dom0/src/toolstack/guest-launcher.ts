/**
 * Launching guests and watching them: a guest runtime is a worker thread (threads) or a process
 * that connects back to dom0 over an authenticated WebSocket (ws); once up, its death is noticed
 * (planned or a crash) and its domain handed back. Also what the toolstack asks of every guest
 * together: figures, quiesce, stop.
 */
import { MessageChannel } from 'node:worker_threads';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  onNotify,
  serveContract,
  GuestControlContract,
  GuestBootContract,
  ClosedError,
  PortLink,
  RpcPeer,
  TimeoutError,
  ToxicLink,
  deriveDomainKey,
  formatDomainKey,
  runtimeEntry,
  startRuntimeWorker,
  type GuestBootSpec,
  type GuestStats,
  type WsLink,
} from '@ringvisor/shared';
import { guestControl } from './clients.js';
import type { Domain } from '../hypervisor/hypervisor.js';
import type { BlkBackend } from '../backends/blk/device.js';
import type { NetBackend } from '../backends/net/device.js';
import type { GuestConfig } from './config.js';
import type { HostContext, RuntimeTracer } from './host-context.js';
import type { AssignedFunction, BoundVif, GuestHandle, RuntimeCrash } from './host-types.js';
import type { HardwareAccess } from './attach/attacher.js';
import { guestBootSpec } from './boot-spec.js';
import { delay, exitOf, guestEnvironment, killQuietly, repoBin, settled } from './runtime-util.js';

/**
 * Shutdown bounds. A guest's quiesce (stop issuing, drain in-flight I/O) and its stop (final
 * read-back, frontends closed) each get GUEST_DRAIN_MS; a hardware restart still running when
 * shutdown begins gets HW_RESTART_WAIT_MS. `up` adds its own overall bound on top (DRAIN_LIMIT_MS
 * in cluster.ts), so a run ends whatever died.
 */
const GUEST_DRAIN_MS = 20_000;
const HW_RESTART_WAIT_MS = 15_000;

/** What the launcher reads of a domain's devices to tell its guest at boot. */
export interface DomainDevices {
  vifsOf(domid: number): BoundVif[];
  functionsOf(domid: number): AssignedFunction[];
}

export class GuestLauncher {
  /** Guests (ws) that may connect, by domid, with what to do when they do. */
  private readonly awaitingGuests = new Map<number, (peer: RpcPeer) => void>();
  /** Every guest's IP in the cluster by name, for UDP peers. */
  readonly ips = new Map<string, string>();

  constructor(
    private readonly ctx: HostContext,
    private readonly hardware: HardwareAccess,
    private readonly devices: DomainDevices,
    private readonly trace: RuntimeTracer,
    /** ws: dom0's listener's URL, which a guest process connects back to. */
    private readonly dom0Url: () => string,
  ) {}

  /** Boot a guest runtime for a domain built with its devices. */
  launch(config: GuestConfig, domain: Domain, blk: BlkBackend[], net: NetBackend[]): GuestHandle {
    const { hv, opts } = this.ctx;
    const spec = guestBootSpec({
      host: this.ctx.config,
      seed: opts.seed,
      guest: config,
      domain,
      ips: this.ips,
      ...(opts.linkedGuests || opts.ws ? {} : { eventMemory: hv.eventMemory }),
      ...(this.ctx.registry.platformOf(domain.domid) ? { platform: this.ctx.registry.platformOf(domain.domid) } : {}),
      vifs: this.devices.vifsOf(domain.domid),
      functions: this.devices.functionsOf(domain.domid),
      hwUrl: this.hardware.hwUrlForGuests(),
    });
    domain.state = 'running';
    return opts.ws ? this.launchProcess(config, domain, blk, net, spec) : this.launchWorker(config, domain, blk, net, spec);
  }

  private guestReady(config: GuestConfig, peer: RpcPeer): Promise<void> {
    return new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new TimeoutError(`guest ${config.name} did not finish booting within 30 s`)), 30_000);
      onNotify(peer, GuestControlContract.notifications.ready, () => {
        clearTimeout(timer);
        res();
      });
      peer.link.onClose((reason) => {
        clearTimeout(timer);
        rej(new ClosedError(`guest ${config.name} disconnected before it was ready: ${reason}`));
      });
    });
  }

  private launchWorker(config: GuestConfig, domain: Domain, blk: BlkBackend[], net: NetBackend[], spec: GuestBootSpec): GuestHandle {
    const { hv, log, registry } = this.ctx;
    const { port1, port2 } = new MessageChannel();
    const worker = startRuntimeWorker(runtimeEntry(import.meta.url, 'domU', 'guest.worker'), {
      workerData: { control: port1, spec },
      transferList: [port1],
      name: config.name,
    });
    const peer = new RpcPeer(new PortLink(port2), `${config.name}`);
    if (spec.shared) hv.bindGuestHypercalls(peer, domain.domid);
    else hv.attachLinkedGuest(peer, domain.domid);
    // A hosted guest without shared memory runs its VMApp in its own runtime; dom0 serves it on this link.
    if (!spec.shared) registry.platformOf(domain.domid)?.serveVmApp(peer);
    const ready = this.guestReady(config, peer);
    worker.on('error', (e) => {
      domain.state = 'crashed';
      log.error({ err: e, domid: domain.domid }, 'guest crashed');
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
  private launchProcess(config: GuestConfig, domain: Domain, blk: BlkBackend[], net: NetBackend[], spec: GuestBootSpec): GuestHandle {
    const ws = this.ctx.opts.ws!;
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
          serveContract(peer, GuestBootContract, { boot: () => spec });
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
      child = spawn(process.execPath, [ws.bin ?? repoBin(import.meta.url), 'domu', '--id', String(domain.domid), '--dom0', this.dom0Url()], {
        env: guestEnvironment(process.env, formatDomainKey(deriveDomainKey(ws.secret, this.ctx.config.name, domain.domid))),
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      this.watchChild(child, handle, domain, (e) => failBoot(e));
    }
    return handle;
  }

  /** ws: the guest's process we spawned; its exit fails a boot still in progress. */
  private watchChild(child: ChildProcess, handle: GuestHandle, domain: Domain, failBoot: (e: Error) => void): void {
    handle.pid = child.pid;
    handle.exited = new Promise<number>((r) => child.once('exit', (code) => r(code ?? 1)));
    child.once('exit', (code, signal) => {
      handle.exit = { code, signal };
      failBoot(new ClosedError(`guest ${handle.config.name} process exited (${signal ?? code}) before it was ready`));
      if (!this.ctx.stopping) {
        domain.state = 'crashed';
        this.ctx.log.error({ domid: domain.domid, code, signal }, 'guest process exited');
      }
    });
  }

  /** ws: a guest connection is expected for domain `domid` (one we built, with no runtime attached). */
  awaits(domid: number): boolean {
    return this.awaitingGuests.has(domid);
  }

  /** ws: a guest's authenticated link arrived at dom0's listener. */
  attachLink(link: WsLink, domid: number): void {
    const { hv, registry, links } = this.ctx;
    const attach = this.awaitingGuests.get(domid);
    if (!attach) return link.close('domain already attached');
    this.awaitingGuests.delete(domid);
    const tl = new ToxicLink(link);
    links.byRuntime.set(registry.guestName(domid), tl);
    const peer = new RpcPeer(tl, `guest${domid}`);
    hv.attachLinkedGuest(peer, domid);
    registry.platformOf(domid)?.serveVmApp(peer);
    attach(peer);
  }

  /**
   * Once a guest's runtime is up: when it goes (exit, or its link closing for one run elsewhere)
   * its domain is reclaimed; a death the toolstack did not cause is a crash, recorded with how
   * the process ended (the summary's `crashes`, `list`'s "crashed").
   */
  watch(handle: GuestHandle, reclaim: (handle: GuestHandle) => Promise<void>): void {
    const { config, domain } = handle;
    const { log, crashLog } = this.ctx;
    // `exited` is replaced for a guest run elsewhere once it connects: read it now.
    void handle.exited.then((code) => {
      handle.down = true;
      this.trace(config.name, 'guest', 'down', domain.domid, handle.pid, code);
      if (this.ctx.stopping) return;
      if (handle.killedByToolstack) return void reclaim(handle);
      const crash: RuntimeCrash = { host: this.ctx.config.name, runtime: 'guest', name: config.name, ...(handle.pid ? { pid: handle.pid } : {}), exit: handle.exit ?? { code, signal: null }, at: Date.now() };
      crashLog.record(crash);
      log.error({ guest: config.name, domid: domain.domid, pid: handle.pid, ...crash.exit }, 'guest runtime died unplanned; reclaiming its domain');
      crashLog.noticed(crash);
      crashLog.recover(crash, 'reclaimed', reclaim(handle));
    });
  }

  /** kill -9 a guest's runtime (fault injection); its domain is then reclaimed. */
  async kill(name: string): Promise<void> {
    await this.ctx.registry.guest(name).kill();
  }

  /** Freeze a guest's runtime until the returned thaw() (fault injection; bounded by maxMs). */
  async freeze(name: string, maxMs: number): Promise<() => void> {
    const g = this.ctx.registry.runningGuest(name);
    if (g.pid && this.ctx.opts.ws) {
      const pid = g.pid;
      process.kill(pid, 'SIGSTOP');
      const t = setTimeout(() => killQuietly(pid, 'SIGCONT'), maxMs);
      return () => {
        clearTimeout(t);
        if (!g.down) killQuietly(pid, 'SIGCONT');
      };
    }
    const word = new SharedArrayBuffer(4);
    await guestControl(g.peer).freeze({ word, maxMs }, { timeoutMs: 5_000 });
    return () => {
      const w = new Int32Array(word);
      Atomics.store(w, 0, 1);
      Atomics.notify(w, 0);
    };
  }

  /** Every guest's figures now (the last known ones for a guest that does not answer). */
  async stats(): Promise<GuestStats[]> {
    return Promise.all(
      this.ctx.registry.guests.map(async (g) => {
        if (!g.peer || g.peer.closed) return g.lastStats!;
        try {
          g.lastStats = await guestControl(g.peer).stats({}, { timeoutMs: 5_000 });
        } catch {
          /* keep the last known figures */
        }
        return g.lastStats!;
      }),
    );
  }

  /** Every live guest stops issuing work and drains, its devices still connected. */
  async quiesceAll(): Promise<void> {
    const { log, registry, lock } = this.ctx;
    // A hardware restart in progress (an unplanned death) finishes first: until the new hardware
    // answers, the guests' requests cannot drain. Bounded: a restart that hangs does not hold
    // the shutdown (the drain then times out per guest, and the summary says so).
    await Promise.race([lock.idle(), delay(HW_RESTART_WAIT_MS)]);
    await Promise.all(
      // A guest whose runtime is gone (killed, crashed) has nothing to drain.
      registry.guests.filter((g) => !g.down).map((g) =>
        (g.peer ? guestControl(g.peer).quiesce({}, { timeoutMs: GUEST_DRAIN_MS }) : Promise.reject(new ClosedError('never connected'))).catch((e) =>
          log.error({ err: e, guest: g.config.name }, 'guest did not quiesce'),
        ),
      ),
    );
  }

  /** Every guest stops (final read-back, frontends closed) and its runtime exits (killed if it does not); returns the final figures. */
  async stopAll(): Promise<GuestStats[]> {
    const { log, registry } = this.ctx;
    const finals = await Promise.all(
      registry.guests.map(async (g) => {
        try {
          if (g.peer && !g.down) g.lastStats = await guestControl(g.peer).stop({}, { timeoutMs: GUEST_DRAIN_MS });
        } catch (e) {
          log.error({ err: e, guest: g.config.name }, 'guest did not stop cleanly');
        }
        return g.lastStats!;
      }),
    );
    for (const g of registry.guests) {
      await Promise.race([g.exited, delay(5_000)]);
      if (!(await settled(g.exited))) await g.kill();
    }
    return finals;
  }
}
