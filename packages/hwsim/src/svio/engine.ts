/**
 * SvioEngine — the self-virtualizing device (Raj & Schwan, HPDC 2007): VIF processing moved into
 * the device and spread over a pool of cores. Each core is a long-lived worker thread
 * (core.worker.ts) that owns the VIFs placed on it — not a task pool such as piscina: a VIF is
 * state (attached queues, posted buffers, a camera's clock) that must stay with one core so its
 * messages keep their order, and its work arrives as a stream of doorbells, not as tasks.
 *
 * The engine's own thread is the management side (dom0's toolstack calls it) and the device's
 * front door: it owns the event ports (a guest's doorbell lands here and is forwarded to the VIF's
 * core), the VIFs' stations on the NIC's embedded switch (frames to and from a core cross here),
 * and each VIF's register page (the access API, shared/src/svio/access.ts).
 *
 * Management API: create (kind, bound guest, QoS weight and credit limit; a MAC, a disk partition or a camera
 * format) → VIF id, register page, core; destroy; setQos; list (queue states and counters, from
 * the cores). A guest reaches only VIFs bound to it: an open naming another VIF's id, or queue
 * frames outside the bound guest's memory, is refused.
 */
import { Worker } from 'node:worker_threads';
import {
  DOMID_HW,
  InvalidArgumentError,
  PAGE_SIZE,
  SVIO_PAGE_BASE,
  SVIO_REG_COUNT,
  SVIO_CTRL_OPEN,
  SVIO_ERR_BAD_QUEUE,
  SVIO_ERR_NOT_BOUND,
  SVIO_ERR_ROGUE,
  SVIO_KIND,
  SVIO_REG,
  SVIO_STATUS_ERROR,
  SVIO_STATUS_OPEN,
  SvioRegisters,
  siblingEntry,
  startRuntimeWorker,
  type EventChannelGate,
  type CreditLimit,
  type Logger,
  type MachineLinkEnd,
  type SvioKind,
  type DiskFaultRule,
  InterruptFaults,
  sumInterruptFaultCounts,
  type InterruptFault,
  type InterruptFaultCounts,
} from '@ringvisor/shared';
import type { LanPort } from '../lan/lan-port.js';
import type { LanSegment } from '../lan/segment.js';
import { formatMac, parseMac } from '../lan/mac.js';
import { SvioCore, type CoreIrqCounts, type CoreReply, type CoreRequest, type CoreVifStats } from './core.js';
import type { VifQos } from './scheduler.js';

export interface VifSpec {
  kind: SvioKind;
  domid: number;
  /** The bound guest's memory (threads: the guest's own SharedArrayBuffer). */
  memory: SharedArrayBuffer;
  /** The hardware's end of the guest ↔ hardware event channel: the VIF's doorbell and interrupt. */
  port: number;
  /**
   * ws: the guest's end of that channel. The guest reaches the VIF over its direct link to the
   * hardware (its memory here is a copy that link keeps current): doorbells arrive on the link
   * naming this port, and the VIF's interrupts leave on it, after the pages they announce.
   */
  guestPort?: number;
  mac?: string;
  partition?: { start: number; sectors: number };
  camera?: { width: number; height: number; fps: number };
  /** QoS share (1..1000, default 100). */
  weight?: number;
  /** Credit limit on the guest's requests (netback's `bytes,usec`); absent = unlimited. */
  rate?: CreditLimit;
}

export interface VifInfo {
  vif: number;
  kind: SvioKind;
  domid: number;
  core: number;
  weight: number;
  rate?: CreditLimit;
  state: 'created' | 'opening' | 'open' | 'refused';
  mac?: string;
  stats?: CoreVifStats;
}

/** How the engine reaches one core: its requests out, its replies back (each in order). */
export interface CoreChannel {
  post(r: CoreRequest): void;
  onReply(cb: (r: CoreReply) => void): void;
  stop(): Promise<void>;
}

interface Vif {
  id: number;
  spec: VifSpec;
  core: number;
  regs: SvioRegisters;
  page: SharedArrayBuffer;
  state: VifInfo['state'];
  qos: VifQos;
  lan?: LanPort;
  mac?: Uint8Array;
  /** ws: the late-wake hooks set on the guest's link for the two queue pages. */
  unhook?: () => void;
}

export interface SvioEngineOptions {
  cores: number;
  eventMemory: SharedArrayBuffer;
  gate: EventChannelGate;
  lan: LanSegment;
  disk: { path: string; sizeBytes: number };
  host: string;
  logger?: Logger;
  /** The device's carrier (the physical port's link): without it no VIF frame goes out or comes in. */
  linkUp?: () => boolean;
  /** Tests: run the cores in this thread instead of worker threads (same code, no thread hop). */
  inThread?: boolean;
  /** Tests: each core's channel, built by the test (e.g. one it delivers by hand); overrides inThread. */
  coreChannel?: () => CoreChannel;
}

export class SvioEngine {
  private readonly cores: CoreChannel[] = [];
  private readonly vifs = new Map<number, Vif>();
  /** ws: each guest's direct link, and its VIFs by the guest's port. */
  private readonly links = new Map<number, MachineLinkEnd>();
  private readonly byGuestPort = new Map<string, Vif>();
  private nextId = 1;
  private nextReq = 1;
  private readonly waiting = new Map<number, { left: number; got: CoreVifStats[]; busy: number[]; irq: CoreIrqCounts[]; done: (v: { vifs: CoreVifStats[]; busyMs: number[]; irq: CoreIrqCounts[] }) => void }>();

  constructor(private readonly o: SvioEngineOptions) {
    if (!Number.isInteger(o.cores) || o.cores < 1 || o.cores > 16) throw new InvalidArgumentError(`SV-IO engine cores must be 1..16, got ${o.cores}`);
    for (let i = 0; i < o.cores; i++) {
      const ch = o.coreChannel ? o.coreChannel() : o.inThread ? this.threadCore() : this.workerCore();
      ch.onReply((r) => this.reply(r));
      this.cores.push(ch);
    }
  }

  get coreCount(): number {
    return this.cores.length;
  }

  /** Management API: a VIF bound to `spec.domid`, placed on the least loaded core. */
  create(spec: VifSpec): { vif: number; core: number; page: SharedArrayBuffer } {
    if (!(spec.kind in SVIO_KIND)) throw new InvalidArgumentError(`unknown VIF kind ${String(spec.kind)} (net, blk, cam)`);
    if (spec.kind === 'net' && !spec.mac) throw new InvalidArgumentError('a network VIF needs a MAC');
    if (spec.kind === 'blk' && !spec.partition) throw new InvalidArgumentError('a block VIF needs a disk partition');
    if (spec.kind === 'cam' && !spec.camera) throw new InvalidArgumentError('a camera VIF needs a camera format');
    const qos = this.checkQos({ weight: spec.weight ?? 100, ...(spec.rate ? { rate: spec.rate } : {}) });
    const load = this.cores.map((_, i) => [...this.vifs.values()].filter((v) => v.core === i).length);
    const core = load.indexOf(Math.min(...load));
    const id = this.nextId++;
    const page = new SharedArrayBuffer(PAGE_SIZE);
    const regs = new SvioRegisters(new Uint8Array(page));
    regs.write(SVIO_REG.VIF_ID, id);
    regs.write(SVIO_REG.KIND, SVIO_KIND[spec.kind]);
    const v: Vif = { id, spec, core, regs, page, state: 'created', qos };
    if (spec.kind === 'net') {
      v.mac = parseMac(spec.mac!);
      regs.writeMac(SVIO_REG.MAC_LO, SVIO_REG.MAC_HI, formatMac(v.mac));
      v.lan = this.o.lan.attach(`${this.o.host}:svio${id}`);
      v.lan.onFrame((f) => this.fromWire(v, f));
    }
    if (spec.kind === 'blk') {
      regs.write64(SVIO_REG.SECTORS_LO, SVIO_REG.SECTORS_HI, BigInt(spec.partition!.sectors));
    }
    if (spec.kind === 'cam') {
      regs.write(SVIO_REG.WIDTH, spec.camera!.width);
      regs.write(SVIO_REG.HEIGHT, spec.camera!.height);
      regs.write(SVIO_REG.FPS, spec.camera!.fps);
    }
    this.vifs.set(id, v);
    this.o.gate.on(spec.port, () => this.doorbell(v));
    if (spec.guestPort !== undefined) this.byGuestPort.set(`${spec.domid}:${spec.guestPort}`, v);
    const link = this.links.get(spec.domid);
    if (link) this.mirrorRegisters(v, link);
    this.o.logger?.info({ vif: id, kind: spec.kind, domid: spec.domid, core }, 'VIF created');
    return { vif: id, core, page };
  }

  destroy(id: number): void {
    const v = this.vif(id);
    this.cores[v.core].post({ op: 'close', vif: id });
    this.o.gate.off(v.spec.port);
    v.unhook?.();
    if (v.spec.guestPort !== undefined) this.byGuestPort.delete(`${v.spec.domid}:${v.spec.guestPort}`);
    if (v.lan) this.o.lan.detach(v.lan.name);
    v.regs.write(SVIO_REG.STATUS, 0);
    v.regs.sync = undefined;
    this.vifs.delete(id);
  }

  /**
   * ws: a guest's direct link to the hardware came up. Its VIFs' register pages are mirrored on
   * it from now on (starting with the whole page), and their doorbells and interrupts use it.
   */
  attachLink(domid: number, link: MachineLinkEnd): void {
    this.links.set(domid, link);
    for (const v of this.vifs.values()) if (v.spec.domid === domid) this.mirrorRegisters(v, link);
  }

  detachLink(domid: number, link: MachineLinkEnd): void {
    if (this.links.get(domid) !== link) return;
    this.links.delete(domid);
    for (const v of this.vifs.values())
      if (v.spec.domid === domid) {
        v.regs.sync = undefined;
        v.unhook?.();
      }
  }

  /** ws: the register page of a VIF bound to `domid` (what its link may mirror), if any. */
  registerPage(domid: number, vif: number): Uint8Array | undefined {
    const v = this.vifs.get(vif);
    return v && v.spec.domid === domid ? v.regs.page : undefined;
  }

  /** ws: a doorbell on a guest's direct link, naming the guest's port; false if it is no VIF's. */
  linkDoorbell(domid: number, guestPort: number): boolean {
    const v = this.byGuestPort.get(`${domid}:${guestPort}`);
    if (!v) return false;
    this.doorbell(v);
    return true;
  }

  private mirrorRegisters(v: Vif, link: MachineLinkEnd): void {
    v.regs.sync = link.ringSync(SVIO_PAGE_BASE + v.id, v.regs.page, DOMID_HW);
    link.wrote(DOMID_HW, SVIO_PAGE_BASE + v.id, 0, SVIO_REG_COUNT * 4);
  }

  /** ws: the VIF's interrupt, on the guest's link (after the pages the core sent before it). */
  private interrupt(v: Vif): void {
    const port = v.spec.guestPort;
    if (port !== undefined) this.irqFaults.deliver(v.spec.domid, () => this.links.get(v.spec.domid)?.sendEvent(port));
  }

  /** ws: interrupt faults of the VIFs whose interrupts this thread puts on the guests' links. */
  private readonly irqFaults = new InterruptFaults();

  /**
   * A domain's VIF interrupts lost or delayed (or cleared): here for the ws VIFs, on every core for
   * the VIFs a core interrupts itself. Answers what it did since set, summed over them.
   */
  async setIrqFault(domid: number, fault: InterruptFault | undefined): Promise<InterruptFaultCounts> {
    this.irqFaults.set(domid, fault);
    for (const c of this.cores) c.post({ op: 'irqFault', domid, ...(fault ? { fault } : {}) });
    const { irq } = await this.list();
    return sumInterruptFaultCounts(this.irqFaults.countsOf(domid), ...irq.filter((x) => x.domid === domid));
  }

  /**
   * The drive's fault rules (validated by the caller), for every core's block VIFs; `[]` clears.
   * Resolves once every core has them: a core takes its messages in order, so its answer to a
   * later one says so — a guest's kick reaches a core directly, not behind the engine's messages.
   */
  async setDiskFaults(rules: readonly DiskFaultRule[]): Promise<void> {
    for (const c of this.cores) c.post({ op: 'diskFaults', rules: [...rules] });
    await this.list();
  }

  /** Management API: a VIF's QoS share and credit limit (the limit is dropped when absent). */
  setQos(id: number, qos: VifQos): void {
    const v = this.vif(id);
    v.qos = this.checkQos(qos);
    this.cores[v.core].post({ op: 'qos', vif: id, qos: v.qos });
  }

  /** Management API: every VIF with its queue state and counters (asked of the cores). */
  async list(): Promise<{ vifs: VifInfo[]; coreBusyMs: number[]; irq: CoreIrqCounts[] }> {
    const req = this.nextReq++;
    const stats = await new Promise<{ vifs: CoreVifStats[]; busyMs: number[]; irq: CoreIrqCounts[] }>((done) => {
      this.waiting.set(req, { left: this.cores.length, got: [], busy: [], irq: [], done });
      for (const c of this.cores) c.post({ op: 'stats', req });
    });
    return {
      vifs: [...this.vifs.values()].map((v) => {
        const s = stats.vifs.find((x) => x.vif === v.id);
        return { vif: v.id, kind: v.spec.kind, domid: v.spec.domid, core: v.core, weight: v.qos.weight, ...(v.qos.rate ? { rate: v.qos.rate } : {}), state: v.state, ...(v.mac ? { mac: formatMac(v.mac) } : {}), ...(s ? { stats: s } : {}) };
      }),
      coreBusyMs: stats.busyMs,
      irq: stats.irq,
    };
  }

  /** VIFs bound to a domain (the toolstack destroys them with it). */
  boundTo(domid: number): number[] {
    return [...this.vifs.values()].filter((v) => v.spec.domid === domid).map((v) => v.id);
  }

  async shutdown(): Promise<void> {
    for (const id of [...this.vifs.keys()]) this.destroy(id);
    await Promise.all(this.cores.map((c) => c.stop()));
  }

  private vif(id: number): Vif {
    const v = this.vifs.get(id);
    if (!v) throw new InvalidArgumentError(`no VIF ${id}`);
    return v;
  }

  private checkQos(q: VifQos): VifQos {
    if (!Number.isInteger(q.weight) || q.weight < 1 || q.weight > 1000) throw new InvalidArgumentError(`a VIF's weight must be an integer in 1..1000, got ${q.weight}`);
    const r = q.rate;
    if (r && (!Number.isSafeInteger(r.bytes) || r.bytes < 1 || !Number.isSafeInteger(r.usec) || r.usec < 1000))
      throw new InvalidArgumentError(`a VIF's rate must be bytes ≥ 1 per usec ≥ 1000, got ${r.bytes},${r.usec}`);
    return { weight: q.weight, ...(r ? { rate: { bytes: r.bytes, usec: r.usec } } : {}) };
  }

  /** The guest's doorbell: an open or close it asked for, or work for the VIF's core. */
  private doorbell(v: Vif): void {
    const { regs } = v;
    const open = (regs.read(SVIO_REG.CTRL) & SVIO_CTRL_OPEN) !== 0;
    if (open && (v.state === 'created' || v.state === 'refused')) {
      // The driver's words, read once at the doorbell.
      const openId = regs.read(SVIO_REG.OPEN_ID);
      const outPfn = regs.read(SVIO_REG.OUT_PFN);
      const inPfn = regs.read(SVIO_REG.IN_PFN);
      const frames = v.spec.memory.byteLength / PAGE_SIZE;
      const refuse = (code: number, why: string) => {
        v.state = 'refused';
        regs.write(SVIO_REG.ERRCODE, code);
        regs.write(SVIO_REG.STATUS, SVIO_STATUS_ERROR);
        this.o.logger?.warn({ vif: v.id, domid: v.spec.domid, why }, 'VIF open refused');
      };
      if (openId !== v.id) return refuse(SVIO_ERR_NOT_BOUND, `asked to open VIF ${openId}, not bound to domain ${v.spec.domid}`);
      if (outPfn === 0 || inPfn === 0 || outPfn === inPfn || outPfn >= frames || inPfn >= frames) return refuse(SVIO_ERR_BAD_QUEUE, `queue frames ${outPfn}, ${inPfn} not two of the guest's ${frames}`);
      v.state = 'opening';
      const link = this.links.get(v.spec.domid);
      if (v.spec.guestPort !== undefined && link) {
        // The guest armed an event index behind what the core already did (ring/mirror.ts): it
        // went to sleep with answers waiting or room free — interrupt it. Through the core: what
        // this thread saw is the core's writes to our copy, whose page updates may still be on
        // their way here; the core flushes them and raises the interrupt after them (`wake`).
        const page = (pfn: number) => new Uint8Array(v.spec.memory, pfn * PAGE_SIZE, PAGE_SIZE);
        const hooks = [link.ringSync(outPfn, page(outPfn), v.spec.domid), link.ringSync(inPfn, page(inPfn), v.spec.domid)];
        for (const h of hooks) h.lateWake = () => this.cores[v.core].post({ op: 'wake', vif: v.id });
        v.unhook = () => {
          for (const h of hooks) h.lateWake = undefined;
          v.unhook = undefined;
        };
      }
      this.cores[v.core].post({
        op: 'open',
        vif: v.id,
        kind: v.spec.kind,
        domid: v.spec.domid,
        memory: v.spec.memory,
        outPfn,
        inPfn,
        hwPort: v.spec.port,
        page: v.page,
        qos: v.qos,
        ...(v.spec.guestPort !== undefined ? { mirrored: true } : {}),
        ...(v.spec.partition ? { partition: v.spec.partition } : {}),
        ...(v.spec.camera ? { camera: v.spec.camera } : {}),
      });
      return;
    }
    if (!open && v.state === 'open') {
      this.cores[v.core].post({ op: 'close', vif: v.id });
      v.unhook?.();
      v.state = 'created';
      regs.write(SVIO_REG.STATUS, 0);
      return;
    }
    if (v.state === 'open') this.cores[v.core].post({ op: 'kick', vif: v.id });
  }

  /** Frames dropped for want of carrier (nic.down), both ways. */
  noCarrier = 0;

  private carrier(): boolean {
    if (!this.o.linkUp || this.o.linkUp()) return true;
    this.noCarrier++;
    return false;
  }

  private fromWire(v: Vif, frame: Uint8Array): void {
    if (v.state !== 'open' || !v.mac || frame.byteLength < 14 || !this.carrier()) return;
    // The VIF's own MAC, or a group address (the device's switch does the filtering).
    if ((frame[0] & 1) === 0) for (let i = 0; i < 6; i++) if (frame[i] !== v.mac[i]) return;
    this.cores[v.core].post({ op: 'rx', vif: v.id, frame });
  }

  private reply(r: CoreReply): void {
    if (r.op === 'tx') {
      // The VIF's core sent it; without carrier it never reaches the wire (the driver saw it sent).
      if (this.carrier()) this.vifs.get(r.vif)?.lan?.send(r.frame);
      return;
    }
    if (r.op === 'rogue') {
      // The driver sees it in STATUS (and ERRCODE); the toolstack resets the VIF.
      const v = this.vifs.get(r.vif);
      if (!v) return;
      v.regs.write(SVIO_REG.ERRCODE, SVIO_ERR_ROGUE);
      v.regs.write(SVIO_REG.STATUS, SVIO_STATUS_ERROR);
      this.o.logger?.warn({ vif: v.id, domid: v.spec.domid, reason: r.reason }, 'VIF stopped: rogue queue');
      this.interrupt(v);
      return;
    }
    if (r.op === 'pages' || r.op === 'irq') {
      const v = this.vifs.get(r.vif);
      if (!v) return;
      if (r.op === 'pages') this.links.get(v.spec.domid)?.relayPages(r.updates);
      else this.interrupt(v);
      return;
    }
    if (r.op === 'opened') {
      const v = this.vifs.get(r.vif);
      if (!v || v.state !== 'opening') return;
      v.state = r.ok ? 'open' : 'refused';
      if (!r.ok) v.regs.write(SVIO_REG.ERRCODE, SVIO_ERR_BAD_QUEUE);
      v.regs.write(SVIO_REG.STATUS, r.ok ? SVIO_STATUS_OPEN : SVIO_STATUS_ERROR);
      return;
    }
    const w = this.waiting.get(r.req);
    if (!w) return;
    w.got.push(...r.vifs);
    w.busy.push(r.busyMs);
    w.irq.push(...r.irq);
    if (--w.left === 0) {
      this.waiting.delete(r.req);
      w.done({ vifs: w.got, busyMs: w.busy, irq: w.irq });
    }
  }

  private workerCore(): CoreChannel {
    const worker: Worker = startRuntimeWorker(siblingEntry(import.meta.url, './core.worker'), { workerData: { eventMemory: this.o.eventMemory, disk: this.o.disk } });
    worker.on('error', (e) => this.o.logger?.error({ err: e }, 'SV-IO core failed'));
    return {
      post: (r) => worker.postMessage(r),
      onReply: (cb) => worker.on('message', cb),
      stop: async () => {
        worker.postMessage({ op: 'shutdown' });
        await Promise.race([new Promise((r) => worker.once('exit', r)), new Promise((r) => setTimeout(r, 2_000).unref())]);
        await worker.terminate();
      },
    };
  }

  private threadCore(): CoreChannel {
    let cb: (r: CoreReply) => void = () => {};
    // Replies go out on a later turn, as a worker's would.
    const core = new SvioCore({ eventMemory: this.o.eventMemory, disk: this.o.disk, reply: (r) => setImmediate(() => cb(r)) });
    return {
      post: (r) => setImmediate(() => core.handle(r)),
      onReply: (f) => (cb = f),
      stop: async () => core.shutdown(),
    };
  }
}
