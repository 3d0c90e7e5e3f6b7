/**
 * One core of the SV-IO engine: the VIFs placed on it, each a processor over its two queues
 * (vif.ts). A core runs in its own worker thread (core.worker.ts) and talks to the engine only by
 * messages; what it touches directly is the bound guests' memory (shared), the disk image (its
 * own file descriptor) and the event memory (to interrupt a guest). Its VIFs share it under a QoS
 * scheduler (scheduler.ts: weighted deficit round robin, credit limits). The engine forwards doorbells
 * and frames from the wire; a core sends frames for the wire back.
 *
 *   engine → core   open {vif, kind, domid, memory, outPfn, inPfn, hwPort, qos, …}   attach a VIF's queues
 *                   close {vif}   kick {vif}   wake {vif}   rx {vif, frame}   qos {vif, qos}   stats {req}
 *   core → engine   opened {vif, ok, reason?}   tx {vif, frame}   stats {req, vifs}
 *                   pages {vif, updates}   irq {vif}   (ws: the guest's copy of what the core wrote, then its interrupt)
 *                   rogue {vif, reason}    the VIF was stopped: its driver broke the queue protocol
 */
import { DOMID_HW, EventChannelGate, GuestMemory, PageMirror, SVIO_REG, SVIO_REG_COUNT, pageId, type DiskFaultRule, type Logger, type PageUpdate, InterruptFaults, type InterruptFault, type InterruptFaultCounts } from '@ringvisor/shared';
import { PhysicalDisk } from '../devices/disk/device.js';
import { DiskFaultTable } from '../devices/disk/faults.js';
import { BlkVif, CamVif, NetVif, type VifCounters, type VifEnv, type VifProcessor } from './vif.js';
import { VifScheduler, type SchedCounters, type VifQos } from './scheduler.js';

export type CoreRequest =
  | {
      op: 'open';
      vif: number;
      kind: 'net' | 'blk' | 'cam';
      domid: number;
      memory: SharedArrayBuffer;
      outPfn: number;
      inPfn: number;
      hwPort: number;
      /** The VIF's register page: the core sleeps on its KICK word. */
      page: SharedArrayBuffer;
      partition?: { start: number; sectors: number };
      camera?: { width: number; height: number; fps: number };
      qos: VifQos;
      /**
       * ws: the guest has its own copy of its memory. The core logs what it writes (a PageMirror)
       * and sends it to the engine (`pages`), and raises the interrupt as `irq` after it, for the
       * engine to put both on the guest's link in that order.
       */
      mirrored?: boolean;
    }
  | { op: 'close'; vif: number }
  | { op: 'qos'; vif: number; qos: VifQos }
  | { op: 'kick'; vif: number }
  /**
   * ws: the guest armed an event index behind what this core already wrote (a late wake seen by
   * the engine's link): raise the VIF's interrupt after this core's page updates (`pages`, `irq`).
   */
  | { op: 'wake'; vif: number }
  | { op: 'rx'; vif: number; frame: Uint8Array }
  | { op: 'stats'; req: number }
  /** The drive's fault rules (hw.disk.faults): this core's block VIFs take them; `[]` clears. */
  | { op: 'diskFaults'; rules: DiskFaultRule[] }
  /** A domain's VIF interrupts lost or delayed (shared/hw/irq-faults.ts); no `fault` clears. */
  | { op: 'irqFault'; domid: number; fault?: InterruptFault };

/** What a core's interrupt faults did to one domain since set. */
export interface CoreIrqCounts extends InterruptFaultCounts {
  domid: number;
}

export interface CoreVifStats {
  vif: number;
  kind: 'net' | 'blk' | 'cam';
  domid: number;
  stopped: string | null;
  counters: VifCounters;
  /** What the core's QoS scheduler gave the VIF. */
  sched: SchedCounters;
  detail: Record<string, number>;
}

export type CoreReply =
  | { op: 'opened'; vif: number; ok: boolean; reason?: string }
  | { op: 'tx'; vif: number; frame: Uint8Array }
  | { op: 'pages'; vif: number; updates: PageUpdate[] }
  | { op: 'irq'; vif: number }
  | { op: 'rogue'; vif: number; reason: string }
  | { op: 'stats'; req: number; vifs: CoreVifStats[]; busyMs: number; irq: CoreIrqCounts[] };

export class SvioCore {
  private readonly vifs = new Map<number, { p: VifProcessor; domid: number; stopWatch: () => void; lateWake?: () => void }>();
  private readonly gate: EventChannelGate;
  private readonly sched = new VifScheduler();
  private disk: PhysicalDisk | undefined;
  /** This core's copy of the drive's fault rules (its own draws: one table per core). */
  private readonly diskFaults = new DiskFaultTable();
  /** The interrupts this core raises itself (threads), under any injected fault. */
  private readonly irqFaults = new InterruptFaults();

  constructor(
    private readonly o: { eventMemory: SharedArrayBuffer; disk: { path: string; sizeBytes: number }; reply: (r: CoreReply) => void; logger?: Logger },
  ) {
    // Only to send: the hardware's ports are dispatched by the engine's thread.
    this.gate = new EventChannelGate(o.eventMemory, DOMID_HW);
  }

  handle(r: CoreRequest): void {
    switch (r.op) {
      case 'open': {
        try {
          const memory = new GuestMemory(r.domid, r.memory);
          const mirror = r.mirrored ? new PageMirror((updates) => this.o.reply({ op: 'pages', vif: r.vif, updates })) : undefined;
          const env: VifEnv = {
            memory,
            outPfn: r.outPfn,
            inPfn: r.inPfn,
            notify: mirror
              ? () => {
                  mirror.flush();
                  this.o.reply({ op: 'irq', vif: r.vif });
                }
              : () =>
                  this.irqFaults.deliver(r.domid, () => {
                    try {
                      this.gate.send(r.hwPort);
                    } catch {
                      /* the guest's end is gone: nobody to interrupt */
                    }
                  }),
            scheduler: this.sched,
            diskFaults: this.diskFaults,
            rogue: (reason: string) => this.o.reply({ op: 'rogue', vif: r.vif, reason }),
            ...(mirror
              ? {
                  queueSync: (pfn: number) => mirror.syncFor(pageId(r.domid, pfn), memory.page(pfn)),
                  wrote: (gfn: number, offset: number, length: number) => mirror.wrote(pageId(r.domid, gfn), memory.page(gfn), offset, length),
                }
              : {}),
          };
          const p =
            r.kind === 'net'
              ? new NetVif(r.vif, env, (frame) => this.o.reply({ op: 'tx', vif: r.vif, frame }))
              : r.kind === 'blk'
                ? new BlkVif(r.vif, env, (this.disk ??= PhysicalDisk.open(this.o.disk)), r.partition!)
                : new CamVif(r.vif, env, r.camera!);
          const old = this.vifs.get(r.vif);
          old?.p.halt('replaced');
          old?.stopWatch();
          this.sched.add(p, r.qos);
          this.vifs.set(r.vif, { p, domid: r.domid, stopWatch: this.watchKicks(r.page, p), ...(mirror ? { lateWake: env.notify } : {}) });
          this.o.reply({ op: 'opened', vif: r.vif, ok: true });
          p.kick();
        } catch (e) {
          this.o.reply({ op: 'opened', vif: r.vif, ok: false, reason: (e as Error).message });
        }
        return;
      }
      case 'close': {
        const v = this.vifs.get(r.vif);
        v?.p.halt('closed');
        v?.stopWatch();
        this.sched.remove(r.vif);
        this.vifs.delete(r.vif);
        return;
      }
      case 'qos':
        this.sched.setQos(r.vif, r.qos);
        return;
      case 'diskFaults':
        this.diskFaults.set(r.rules);
        return;
      case 'irqFault':
        this.irqFaults.set(r.domid, r.fault);
        return;
      case 'kick':
        this.vifs.get(r.vif)?.p.kick();
        return;
      case 'wake': {
        // Every write this core made to the queue pages is in its mirror's log or already sent:
        // flushing first puts the interrupt behind all of them.
        const v = this.vifs.get(r.vif);
        if (v && v.p.stopReason === undefined) v.lateWake?.();
        return;
      }
      case 'rx': {
        const v = this.vifs.get(r.vif)?.p;
        if (v instanceof NetVif) v.receive(r.frame);
        return;
      }
      case 'stats':
        this.o.reply({
          op: 'stats',
          req: r.req,
          busyMs: performance.eventLoopUtilization().active,
          irq: this.irqFaults.allCounts(),
          vifs: [...this.vifs].map(([vif, { p, domid }]) => ({
            vif,
            kind: p.kind,
            domid,
            stopped: p.stopReason ?? null,
            counters: { ...p.counters },
            sched: this.sched.counters(vif) ?? { turns: 0, served: 0, throttled: 0, idle: 0, blocked: 0 },
            detail: p instanceof NetVif ? { ...p.net } : p instanceof BlkVif ? { ...p.blk } : p instanceof CamVif ? { ...p.camera.metrics } : {},
          })),
        });
        return;
    }
  }

  /**
   * Sleep on the VIF's KICK word; each change is a doorbell for this core (no hop through the
   * engine's thread). Returns the function that stops watching.
   */
  private watchKicks(page: SharedArrayBuffer, p: VifProcessor): () => void {
    const words = new Int32Array(page, 0, SVIO_REG_COUNT);
    let live = true;
    const arm = (seen: number): void => {
      if (!live) return;
      const w = Atomics.waitAsync(words, SVIO_REG.KICK, seen);
      const next = () => {
        if (!live) return;
        const now = Atomics.load(words, SVIO_REG.KICK);
        p.kick();
        arm(now);
      };
      if (w.async) void w.value.then(next);
      else next(); // already changed
    };
    arm(Atomics.load(words, SVIO_REG.KICK));
    return () => {
      live = false;
      // Wake the pending wait so it settles (it sees live = false and stops).
      Atomics.notify(words, SVIO_REG.KICK);
    };
  }

  shutdown(): void {
    this.sched.stop();
    for (const { p, stopWatch } of this.vifs.values()) {
      p.halt('shutdown');
      stopWatch();
    }
    this.vifs.clear();
    this.disk?.close();
  }
}
