/**
 * The hypervisor's half of trapped port I/O for one guest (Xen's ioreq server): it owns the
 * guest's I/O port map (which device model decodes which range), claims each request the vCPU
 * posts in its slot (ioreq.ts), runs the device model's handler, and answers.
 *
 * Waking up for every access would cost an event-loop turn per trap (tens of µs on this
 * machine). A driver's accesses come in bursts (RAP then RDP, 256 data words per sector), so
 * after answering, the server keeps polling the slot for `pollUs` — as KVM's halt polling does —
 * and the vCPU skips its kick while the server says it is polling. The server then stops polling
 * and re-checks once, so an access posted as it stopped is never missed (ring.h's final check).
 * Work per wake-up is bounded (`sliceUs`): a guest hammering its ports cannot monopolise dom0.
 */
import { IoReqSlotServer, type IoReq, type IoReqServerCounters } from './ioreq.js';
import { floatingBus, IO_DIR_IN, type IoSize, type PortIoHandler } from './index.js';
import { publishTrace, traceChannel, traceNow } from '../trace/index.js';
import { InvalidArgumentError } from '../errors.js';
import type { EventChannelGate } from '../evtchn/index.js';
import type { Logger } from '../log/index.js';

const trapChannel = traceChannel('trap');

export interface IoPortRange {
  /** Who decodes it, for views and errors (e.g. "lance0", "ata0.cmd"). */
  name: string;
  base: number;
  length: number;
  handler: PortIoHandler;
}

/** What this server counts (the same figures a hosted VMApp's server reports). */
export type IoReqCounters = IoReqServerCounters;

export interface IoReqServerOptions {
  domid: number;
  slot: SharedArrayBuffer;
  /**
   * dom0's event gate and its end of the guest's ioreq channel. Absent when the owner wakes the
   * server itself (a hosted VMApp sleeping on the slot's doorbell calls `wake()`).
   */
  events?: EventChannelGate;
  port?: number;
  log: Logger;
  /** Hypervisor-wide counters (traps, world switches) this server adds to. */
  global?: { traps: number; worldSwitches: number };
  host?: string;
  /** Keep polling the slot this long after an access (0: wake per access). */
  pollUs?: number;
  /** Most time spent handling accesses in one wake-up before yielding to other work. */
  sliceUs?: number;
  /**
   * Run around every access, before the vCPU gets its answer (a hosted VMApp sends queued
   * transmits before, and publishes its status mirror after).
   */
  beforeAccess?(): void;
  afterAccess?(): void;
  /** Fault injection: true drops this kick (a lost event); the missed-event poll recovers. */
  dropKick?(): boolean;
}

export class IoReqServer {
  readonly counters: IoReqCounters = { traps: 0, worldSwitches: 0, reads: 0, writes: 0, polled: 0, wakeups: 0, unassigned: 0, handlerErrors: 0, deferredWrites: 0 };
  private readonly ranges: IoPortRange[] = [];
  /** Accesses per mapped range, by range name. */
  readonly perRange = new Map<string, number>();
  private readonly slot: IoReqSlotServer;
  private readonly pollUs: number;
  private readonly sliceUs: number;
  private closed = false;
  private rescheduled = false;

  constructor(private readonly o: IoReqServerOptions) {
    this.slot = new IoReqSlotServer(o.slot);
    this.pollUs = o.pollUs ?? 50;
    this.sliceUs = o.sliceUs ?? 2_000;
    if (o.events && o.port !== undefined) o.events.on(o.port, (_port, polled) => (polled || !o.dropKick?.() ? this.wake() : undefined));
  }

  /** Decode `[base, base+length)` with `handler`. Ranges may not overlap. */
  map(range: IoPortRange): void {
    const { base, length } = range;
    if (!Number.isInteger(base) || !Number.isInteger(length) || base < 0 || length < 1 || base + length > 0x10000)
      throw new InvalidArgumentError(`I/O range ${range.name} 0x${base.toString(16)}+${length} is outside 0..0xffff`);
    const clash = this.ranges.find((r) => base < r.base + r.length && r.base < base + length);
    if (clash) throw new InvalidArgumentError(`I/O range ${range.name} overlaps ${clash.name}`);
    this.ranges.push(range);
    this.perRange.set(range.name, 0);
  }

  unmap(name: string): void {
    const i = this.ranges.findIndex((r) => r.name === name);
    if (i >= 0) this.ranges.splice(i, 1);
  }

  /** The ranges mapped, for views. */
  portMap(): Array<{ name: string; base: number; length: number }> {
    return this.ranges.map(({ name, base, length }) => ({ name, base, length }));
  }

  close(): void {
    this.closed = true;
    if (this.o.events && this.o.port !== undefined) this.o.events.off(this.o.port);
    this.slot.setPolling(false);
  }

  /**
   * Handle one access that arrived some other way than this server's slot (a vCPU relay across a
   * link): counted and dispatched exactly as a slot access is.
   */
  handle(req: IoReq): number {
    return this.dispatch(req);
  }

  private dispatch = (req: IoReq): number => {
    const c = this.counters;
    c.traps++;
    c.worldSwitches += 2;
    if (this.o.global) {
      this.o.global.traps++;
      this.o.global.worldSwitches += 2;
    }
    this.o.beforeAccess?.();
    if (req.pre) {
      const pr = this.find(req.pre.port, 2);
      if (pr) {
        c.deferredWrites++;
        pr.handler.ioWrite(req.pre.port - pr.base, 2, req.pre.data);
      }
    }
    const read = req.dir === IO_DIR_IN;
    if (read) c.reads++;
    else c.writes++;
    const r = this.find(req.port, req.size);
    if (trapChannel.hasSubscribers)
      publishTrace({
        kind: 'trap',
        t: traceNow(),
        host: this.o.host ?? '',
        domid: this.o.domid,
        // The device, not its register block ("ata51712", not "ata51712.cmd").
        ...(r ? { device: r.name.replace(/\.\w+$/, '') } : {}),
        port: req.port,
        size: req.size,
        write: !read,
        ...(read ? {} : { value: req.data }),
      });
    let value = 0;
    if (!r) {
      c.unassigned++;
      value = read ? floatingBus(req.size) : 0;
    } else {
      this.perRange.set(r.name, (this.perRange.get(r.name) ?? 0) + 1);
      const off = req.port - r.base;
      if (read) value = r.handler.ioRead(off, req.size);
      else r.handler.ioWrite(off, req.size, req.data);
    }
    this.o.afterAccess?.();
    return value;
  };

  private find(port: number, size: IoSize): IoPortRange | undefined {
    // An access decodes to the range holding its first byte and must fit in it.
    for (const r of this.ranges) if (port >= r.base && port + size <= r.base + r.length) return r;
    return undefined;
  }

  private serveOne(): boolean {
    try {
      return this.slot.serve(this.dispatch);
    } catch (e) {
      this.counters.handlerErrors++;
      this.o.log.error({ err: e, domid: this.o.domid }, 'device model handler threw on a port access');
      return true;
    }
  }

  /** An event (or a poll, or a doorbell) for the slot: serve, then keep polling while accesses keep coming. */
  wake(): void {
    if (this.closed) return;
    this.rescheduled = false;
    if (!this.slot.ready()) return;
    this.counters.wakeups++;
    const start = performance.now();
    const sliceEnd = start + this.sliceUs / 1000;
    const pollMs = this.pollUs / 1000;
    this.slot.setPolling(this.pollUs > 0);
    let idleSince = performance.now();
    for (;;) {
      if (this.serveOne()) {
        idleSince = performance.now();
        if (idleSince > sliceEnd) break;
        continue;
      }
      if (this.pollUs === 0 || performance.now() - idleSince > pollMs) break;
      if (this.slot.ready()) this.counters.polled++;
    }
    this.slot.setPolling(false);
    // Final check: an access posted while we were stopping polling skipped its kick.
    if (this.slot.ready() && !this.rescheduled) {
      this.rescheduled = true;
      setImmediate(() => this.wake());
    }
  }
}
