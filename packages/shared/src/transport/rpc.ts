/**
 * Control-plane messaging between runtimes: request/response calls and one-way notifications
 * over a MessageLink. The data plane (rings, events, grants) never goes through here in threads
 * mode — it is shared memory. In ws mode (a later transport) a WebSocket implements MessageLink.
 *
 * Wire shapes (plain objects; structured clone over MessagePort, msgpack over WebSocket):
 *   { t: 'call', id, method, params }   → { t: 'result', id, value } | { t: 'error', id, error }
 *   { t: 'notify', topic, payload }
 *
 * Methods and topics are not named here: each is defined once in a contract (contracts/), and
 * called and served through contractClient / serveContract, which check params and results.
 */
import { ClosedError, ProtocolError, TimeoutError, fromWireError, toWireError, type WireError } from '../errors.js';
import type { MessagePort } from 'node:worker_threads';

export type WireMessage =
  | { t: 'call'; id: number; method: string; params: unknown }
  | { t: 'result'; id: number; value: unknown }
  | { t: 'error'; id: number; error: WireError }
  | { t: 'notify'; topic: string; payload: unknown };

export interface MessageLink {
  send(msg: WireMessage): void;
  onMessage(cb: (msg: unknown) => void): void;
  onClose(cb: (reason: string) => void): void;
  close(reason: string): void;
}

/** A MessageLink over a worker_threads MessagePort (threads transport). */
export class PortLink implements MessageLink {
  private closed = false;
  private closeCbs: Array<(reason: string) => void> = [];
  constructor(readonly port: MessagePort) {
    port.on('close', () => this.fireClose('port closed'));
  }
  send(msg: WireMessage): void {
    if (!this.closed) this.port.postMessage(msg);
  }
  onMessage(cb: (msg: unknown) => void): void {
    this.port.on('message', cb);
  }
  onClose(cb: (reason: string) => void): void {
    this.closeCbs.push(cb);
  }
  close(reason: string): void {
    this.fireClose(reason);
    this.port.close();
  }
  private fireClose(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const cb of this.closeCbs) cb(reason);
  }
}

export type CallHandler = (params: unknown) => unknown | Promise<unknown>;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

function isWireMessage(m: unknown): m is WireMessage {
  if (typeof m !== 'object' || m === null) return false;
  const o = m as Record<string, unknown>;
  switch (o.t) {
    case 'call':
      return typeof o.id === 'number' && typeof o.method === 'string';
    case 'result':
      return typeof o.id === 'number';
    case 'error':
      return typeof o.id === 'number' && typeof o.error === 'object' && o.error !== null;
    case 'notify':
      return typeof o.topic === 'string';
    default:
      return false;
  }
}

export class RpcPeer {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<string, CallHandler>();
  private readonly listeners = new Map<string, Array<(payload: unknown) => void>>();
  private closedReason: string | undefined;

  constructor(
    readonly link: MessageLink,
    readonly name: string,
  ) {
    link.onMessage((m) => this.receive(m));
    link.onClose((reason) => this.shutdown(reason));
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  handle(method: string, fn: CallHandler): this {
    this.handlers.set(method, fn);
    return this;
  }

  on(topic: string, fn: (payload: unknown) => void): this {
    const l = this.listeners.get(topic) ?? [];
    l.push(fn);
    this.listeners.set(topic, l);
    return this;
  }

  call<T = unknown>(method: string, params: unknown = null, timeoutMs = 30_000): Promise<T> {
    if (this.closedReason !== undefined) return Promise.reject(new ClosedError(`${this.name}: link closed (${this.closedReason})`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { resolve: resolve as (v: unknown) => void, reject };
      if (Number.isFinite(timeoutMs))
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new TimeoutError(`${this.name}: ${method} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
      this.pending.set(id, p);
      this.link.send({ t: 'call', id, method, params });
    });
  }

  notify(topic: string, payload: unknown = null): void {
    if (this.closedReason === undefined) this.link.send({ t: 'notify', topic, payload });
  }

  close(reason = 'closed'): void {
    this.link.close(reason);
  }

  private receive(m: unknown): void {
    if (!isWireMessage(m)) {
      this.link.close(new ProtocolError(`${this.name}: malformed control message`).message);
      return;
    }
    switch (m.t) {
      case 'call':
        void this.dispatch(m.id, m.method, m.params);
        break;
      case 'result':
      case 'error': {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (p.timer) clearTimeout(p.timer);
        if (m.t === 'result') p.resolve(m.value);
        else p.reject(fromWireError(m.error));
        break;
      }
      case 'notify':
        for (const fn of this.listeners.get(m.topic) ?? []) fn(m.payload);
        break;
    }
  }

  private async dispatch(id: number, method: string, params: unknown): Promise<void> {
    const h = this.handlers.get(method);
    try {
      if (!h) throw new ProtocolError(`${this.name}: unknown method ${method}`);
      const value = await h(params);
      this.link.send({ t: 'result', id, value: value ?? null });
    } catch (e) {
      this.link.send({ t: 'error', id, error: toWireError(e) });
    }
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const [, p] of this.pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(new ClosedError(`${this.name}: link closed (${reason})`));
    }
    this.pending.clear();
  }
}
