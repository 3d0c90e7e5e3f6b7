/**
 * Event channels — Xen's 2-level ABI, on shared memory.
 *
 * All event state of one host lives in one SharedArrayBuffer, the *event memory*, laid out per
 * domain slot (slot = domid; DOMID_HW is the hardware simulator's pseudo-domain):
 *
 *   word 0                 upcall_pending — the doorbell the domain sleeps on (Atomics.wait)
 *   words 4 .. 4+32        pending bitmap, one bit per port (1024 ports)
 *   words 36 .. 36+32      mask bitmap
 *   words 68 .. 68+3*1024  port table: state, remote domid, remote port (written by the
 *                          hypervisor only, read by senders)
 *
 * Who writes what: the hypervisor (dom0's EventChannelAuthority) alone changes the port table.
 * A sender sets a bit in the *receiver's* pending bitmap; the receiver clears it. Mask bits are
 * the owner's.
 *
 * Send semantics (evtchn_send → evtchn_set_pending): atomically set the pending bit. If it was
 * already set the send is a no-op — events coalesce, which is why a handler must drain its ring
 * rather than count events. If the port is masked, the bit stays pending and no upcall happens;
 * unmask re-raises the upcall if the bit is pending, so nothing is lost. Otherwise set the
 * receiver's upcall word and Atomics.notify it.
 *
 * In threads mode a send runs on the sender's own thread — as a Xen hypercall runs on the
 * calling vCPU — and the gate restricts every operation to the caller's own ports; the port
 * table itself is only changed through the authority.
 */
import { evtDeliverChannel, evtSendChannel, traceNow } from '../trace/index.js';
import { EventChannelError, InvalidArgumentError } from '../errors.js';

export const MAX_DOMAINS = 128;
/** Pseudo-domain of the hardware simulator: device interrupts and doorbells are its ports. */
export const DOMID_HW = MAX_DOMAINS - 1;
export const NR_EVENT_PORTS = 1024;

const UPCALL = 0;
const PENDING = 4;
const MASK = PENDING + NR_EVENT_PORTS / 32;
const TABLE = MASK + NR_EVENT_PORTS / 32;
const WORDS_PER_DOMAIN = TABLE + 3 * NR_EVENT_PORTS + 60; // padded so slots start on fresh cache lines

export enum PortState {
  Free = 0,
  Unbound = 1,
  Interdomain = 2,
  /** Reserved by the hypervisor (port 0 is never valid). */
  Reserved = 3,
}

/** `forwarded`: handed to a link; the receiving side decides delivered/coalesced/masked. */
export type SendOutcome = 'delivered' | 'coalesced' | 'masked' | 'forwarded';

export function createEventMemory(): SharedArrayBuffer {
  return new SharedArrayBuffer(MAX_DOMAINS * WORDS_PER_DOMAIN * 4);
}

/** Raw accessors over the event memory; both the authority and the gates use them. */
export class EventMemory {
  readonly words: Int32Array;
  constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
  }
  base(domid: number): number {
    if (!Number.isInteger(domid) || domid < 0 || domid >= MAX_DOMAINS) throw new InvalidArgumentError(`domid ${domid} out of range`);
    return domid * WORDS_PER_DOMAIN;
  }
  state(domid: number, port: number): PortState {
    return Atomics.load(this.words, this.base(domid) + TABLE + port * 3) as PortState;
  }
  remote(domid: number, port: number): { domid: number; port: number } {
    const b = this.base(domid) + TABLE + port * 3;
    return { domid: Atomics.load(this.words, b + 1), port: Atomics.load(this.words, b + 2) };
  }
  /** Publish a port table row: remote fields first, state last, so a sender never sees a half row. */
  setPort(domid: number, port: number, state: PortState, remoteDom: number, remotePort: number): void {
    const b = this.base(domid) + TABLE + port * 3;
    Atomics.store(this.words, b + 1, remoteDom);
    Atomics.store(this.words, b + 2, remotePort);
    Atomics.store(this.words, b, state);
  }
  isPending(domid: number, port: number): boolean {
    return (Atomics.load(this.words, this.base(domid) + PENDING + (port >>> 5)) & (1 << (port & 31))) !== 0;
  }
  isMasked(domid: number, port: number): boolean {
    return (Atomics.load(this.words, this.base(domid) + MASK + (port >>> 5)) & (1 << (port & 31))) !== 0;
  }
  clearPending(domid: number, port: number): void {
    Atomics.and(this.words, this.base(domid) + PENDING + (port >>> 5), ~(1 << (port & 31)));
  }
  setMask(domid: number, port: number, masked: boolean): void {
    const i = this.base(domid) + MASK + (port >>> 5);
    if (masked) Atomics.or(this.words, i, 1 << (port & 31));
    else Atomics.and(this.words, i, ~(1 << (port & 31)));
  }
  /** evtchn_set_pending: the heart of delivery. */
  setPending(domid: number, port: number): SendOutcome {
    const b = this.base(domid);
    const bit = 1 << (port & 31);
    const old = Atomics.or(this.words, b + PENDING + (port >>> 5), bit);
    if (old & bit) return 'coalesced';
    if (Atomics.load(this.words, b + MASK + (port >>> 5)) & bit) return 'masked';
    this.raiseUpcall(domid);
    return 'delivered';
  }
  raiseUpcall(domid: number): void {
    const i = this.base(domid) + UPCALL;
    Atomics.store(this.words, i, 1);
    Atomics.notify(this.words, i);
  }
  upcallIndex(domid: number): number {
    return this.base(domid) + UPCALL;
  }
  /** Pending-and-unmasked word `w` of a domain (32 ports). */
  deliverable(domid: number, w: number): number {
    const b = this.base(domid);
    return Atomics.load(this.words, b + PENDING + w) & ~Atomics.load(this.words, b + MASK + w);
  }
  resetDomain(domid: number): void {
    const b = this.base(domid);
    for (let i = 0; i < WORDS_PER_DOMAIN; i++) Atomics.store(this.words, b + i, 0);
  }
}

export interface EventPortStatus {
  port: number;
  state: 'free' | 'unbound' | 'interdomain' | 'reserved';
  remoteDomid: number;
  remotePort: number;
  pending: boolean;
  masked: boolean;
}

export interface EventCounters {
  sent: number;
  delivered: number;
  coalesced: number;
  masked: number;
  forwarded: number;
  received: number;
  upcalls: number;
  /** Missed-interrupt poll rounds (startMissedEventPoll). */
  polls: number;
}

export function newEventCounters(): EventCounters {
  return { sent: 0, delivered: 0, coalesced: 0, masked: 0, forwarded: 0, received: 0, upcalls: 0, polls: 0 };
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port <= 0 || port >= NR_EVENT_PORTS) throw new EventChannelError(`invalid port ${port}`);
}

/**
 * The hypervisor's side: allocation and binding (EVTCHNOP_alloc_unbound, bind_interdomain,
 * close, status). Lives in dom0 only; guests reach it by hypercall (RPC).
 */
export class EventChannelAuthority {
  readonly mem: EventMemory;
  constructor(buffer: SharedArrayBuffer) {
    this.mem = new EventMemory(buffer);
  }

  createDomain(domid: number): void {
    this.mem.resetDomain(domid);
    this.mem.setPort(domid, 0, PortState.Reserved, 0, 0);
  }

  /** Tear down every port of a dying domain; interdomain peers fall back to unbound. */
  destroyDomain(domid: number): void {
    for (let p = 1; p < NR_EVENT_PORTS; p++) if (this.mem.state(domid, p) !== PortState.Free) this.close(domid, p);
    this.mem.resetDomain(domid);
  }

  private freePort(domid: number): number {
    for (let p = 1; p < NR_EVENT_PORTS; p++) if (this.mem.state(domid, p) === PortState.Free) return p;
    throw new EventChannelError(`domain ${domid} has no free event-channel ports`);
  }

  allocUnbound(domid: number, remoteDom: number): number {
    this.mem.base(remoteDom);
    const p = this.freePort(domid);
    this.mem.setPort(domid, p, PortState.Unbound, remoteDom, 0);
    return p;
  }

  bindInterdomain(domid: number, remoteDom: number, remotePort: number): number {
    checkPort(remotePort);
    if (this.mem.state(remoteDom, remotePort) !== PortState.Unbound)
      throw new EventChannelError(`port ${remotePort} of domain ${remoteDom} is not unbound`);
    if (this.mem.remote(remoteDom, remotePort).domid !== domid)
      throw new EventChannelError(`port ${remotePort} of domain ${remoteDom} is not offered to domain ${domid}`);
    const p = this.freePort(domid);
    this.mem.setPort(domid, p, PortState.Interdomain, remoteDom, remotePort);
    this.mem.setPort(remoteDom, remotePort, PortState.Interdomain, domid, p);
    return p;
  }

  /** Close one end; an interdomain peer becomes unbound (it may be re-bound later). */
  close(domid: number, port: number): void {
    checkPort(port);
    const st = this.mem.state(domid, port);
    if (st === PortState.Free) throw new EventChannelError(`port ${port} of domain ${domid} is not open`);
    if (st === PortState.Interdomain) {
      const r = this.mem.remote(domid, port);
      if (this.mem.state(r.domid, r.port) === PortState.Interdomain && this.mem.remote(r.domid, r.port).port === port)
        this.mem.setPort(r.domid, r.port, PortState.Unbound, domid, 0);
    }
    this.mem.setPort(domid, port, PortState.Free, 0, 0);
    this.mem.clearPending(domid, port);
    this.mem.setMask(domid, port, false);
  }

  /**
   * EVTCHNOP_send made by a domain across a link: the hypervisor validates the binding itself
   * (the sender's view is never trusted) and returns where the event must go.
   */
  resolveSend(domid: number, port: number): { domid: number; port: number } {
    checkPort(port);
    if (this.mem.state(domid, port) !== PortState.Interdomain) throw new EventChannelError(`port ${port} of domain ${domid} is not bound`);
    return this.mem.remote(domid, port);
  }

  status(domid: number, port: number): EventPortStatus {
    checkPort(port);
    const st = this.mem.state(domid, port);
    const r = this.mem.remote(domid, port);
    const names = ['free', 'unbound', 'interdomain', 'reserved'] as const;
    return {
      port,
      state: names[st] ?? 'free',
      remoteDomid: r.domid,
      remotePort: r.port,
      pending: this.mem.isPending(domid, port),
      masked: this.mem.isMasked(domid, port),
    };
  }
}

/** `polled`: run by the missed-event poll, not by a delivered event. */
export type PortHandler = (port: number, polled?: boolean) => void;

/**
 * How a gate reaches domains that are not in this process's event memory (ws transport).
 * `forward` replaces the whole send (a guest across a link hands its port to the hypervisor,
 * which validates the binding); `deliver` is consulted for each target domain and returns an
 * outcome when it delivered remotely, undefined to deliver locally.
 */
export interface EventRouting {
  forward?: (port: number) => SendOutcome;
  deliver?: (domid: number, port: number) => SendOutcome | undefined;
}

/**
 * A domain's own view: send, mask, unmask, and the upcall loop that dispatches pending ports.
 * Every operation is confined to `domid`'s ports.
 */
export class EventChannelGate {
  readonly mem: EventMemory;
  readonly counters = newEventCounters();
  private readonly handlers = new Map<number, PortHandler>();
  private running = false;
  private readonly upcall: number;
  /** Host name in trace events. */
  traceHost = '';

  constructor(
    buffer: SharedArrayBuffer,
    readonly domid: number,
    readonly routing: EventRouting = {},
  ) {
    this.mem = new EventMemory(buffer);
    this.upcall = this.mem.upcallIndex(domid);
  }

  /** EVTCHNOP_send on one of our interdomain ports. */
  send(port: number): SendOutcome {
    checkPort(port);
    let outcome: SendOutcome;
    if (this.routing.forward) outcome = this.routing.forward(port);
    else {
      if (this.mem.state(this.domid, port) !== PortState.Interdomain)
        throw new EventChannelError(`port ${port} of domain ${this.domid} is not bound`);
      const r = this.mem.remote(this.domid, port);
      outcome = this.routing.deliver?.(r.domid, r.port) ?? this.mem.setPending(r.domid, r.port);
    }
    this.counters.sent++;
    this.counters[outcome]++;
    if (evtSendChannel.hasSubscribers) evtSendChannel.publish({ kind: 'evtchn.send', t: traceNow(), host: this.traceHost, domid: this.domid, port, outcome });
    return outcome;
  }

  mask(port: number): void {
    checkPort(port);
    this.mem.setMask(this.domid, port, true);
  }

  /** Unmasking a port with an event pending re-raises the upcall: masked events are deferred, not lost. */
  unmask(port: number): void {
    checkPort(port);
    this.mem.setMask(this.domid, port, false);
    if (this.mem.isPending(this.domid, port)) this.mem.raiseUpcall(this.domid);
  }

  on(port: number, handler: PortHandler): void {
    this.handlers.set(port, handler);
  }

  off(port: number): void {
    this.handlers.delete(port);
  }

  /**
   * Dispatch every pending, unmasked port once. The upcall word is cleared *before* the scan so a
   * send racing with the scan re-raises it and the next wait returns at once.
   */
  dispatchPending(): number {
    Atomics.store(this.mem.words, this.upcall, 0);
    let n = 0;
    for (let w = 0; w < NR_EVENT_PORTS / 32; w++) {
      let bits = this.mem.deliverable(this.domid, w);
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= ~(1 << b);
        const port = w * 32 + b;
        this.mem.clearPending(this.domid, port);
        n++;
        this.counters.received++;
        if (evtDeliverChannel.hasSubscribers) evtDeliverChannel.publish({ kind: 'evtchn.deliver', t: traceNow(), host: this.traceHost, domid: this.domid, port });
        const h = this.handlers.get(port);
        if (h) h(port);
      }
    }
    return n;
  }

  /** Block the calling thread until an upcall is raised (or timeout). For synchronous vCPU loops. */
  waitSync(timeoutMs = Infinity): boolean {
    const r = Atomics.wait(this.mem.words, this.upcall, 0, timeoutMs);
    return r !== 'timed-out';
  }

  hasUpcall(): boolean {
    return Atomics.load(this.mem.words, this.upcall) !== 0;
  }

  /**
   * The asynchronous upcall loop: sleep on the doorbell with Atomics.waitAsync, dispatch, repeat.
   * (waitAsync does not keep a worker alive by itself; each runtime holds its control port open.)
   */
  start(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  stop(): void {
    this.running = false;
    clearInterval(this.pollTimer);
    Atomics.notify(this.mem.words, this.upcall);
  }

  private pollTimer?: NodeJS.Timeout;

  /**
   * Missed-interrupt polling (as Linux's irqpoll): every `ms`, run every bound port's handler as
   * if its event had arrived. Handlers are idempotent (consume what is there, final-check), so a
   * lost notification — injected, or a bug — delays service by at most `ms` instead of stalling
   * a ring forever. Counted in `counters.polls`.
   */
  startMissedEventPoll(ms: number): void {
    clearInterval(this.pollTimer);
    this.pollTimer = setInterval(() => {
      this.counters.polls++;
      for (const [port, h] of [...this.handlers]) h(port, true);
    }, ms);
    this.pollTimer.unref();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      if (Atomics.load(this.mem.words, this.upcall) === 0) {
        const r = Atomics.waitAsync(this.mem.words, this.upcall, 0, 1000);
        if (r.async) await r.value;
        if (!this.running) break;
        // The timeout only lets stop() be noticed; no upcall means nothing is pending.
        if (Atomics.load(this.mem.words, this.upcall) === 0) continue;
      }
      this.counters.upcalls++;
      this.dispatchPending();
    }
  }
}
