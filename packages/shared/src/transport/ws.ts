/**
 * The ws transport: a MessageLink over a WebSocket, for runtimes in separate processes.
 *
 * Frames. One control message per binary frame, encoded with msgpackr (`useRecords: true`, no
 * shared structures: each frame carries the record definitions it uses, so any two independent
 * Packr/Unpackr instances interoperate — tested in ws.test.ts). `Uint8Array` values travel as
 * msgpack `bin` and arrive as `Buffer` views of the received frame (no copy). perMessageDeflate is
 * off; both ends enforce `maxPayload` (default 16 MiB) before buffering a frame.
 *
 * Hostile peers. A peer that sends a text frame, undecodable bytes, a value of an exotic type
 * (RegExp, Error, class instances), anything nested deeper than MAX_DEPTH, or a message that is not
 * a WireMessage is closed with 1008 and a reason; a frame over the limit gets 1009; a WebSocket
 * framing violation gets ws's own 1002/1007 (with a reason filled in here). Each is logged once at
 * warn and reported to onClose listeners; nothing else on the process notices.
 *
 * Backpressure. `send` writes straight to the socket while `ws.bufferedAmount` is under the
 * high-water mark; past it, encoded frames wait in an in-memory queue (bounded by
 * `maxQueuedBytes`; over it the link is terminated with reason "peer too slow"). The queue drains
 * when the socket's buffered bytes fall to the low-water mark. Wake-ups are event-driven without
 * touching ws internals: every frame written while the socket already holds more than the
 * low-water mark carries ws's per-send write callback, which fires when that frame has left the
 * socket buffer, so as the buffer empties those callbacks re-run the pump. A short timer is the
 * fallback for the corner where the queue is non-empty but no such callback is outstanding.
 *
 * Authentication (listen/connect). Before a link is handed to anyone, the mutual
 * challenge–response of auth.ts runs over the same socket, with a timeout; see auth.ts for the
 * wire format. Listeners bind 127.0.0.1 unless told otherwise.
 */
import { Packr, Unpackr } from 'msgpackr';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { AddressInfo } from 'node:net';
import { createServer, type IncomingMessage } from 'node:http';
import { ClosedError, InvalidArgumentError, ProtocolError, TimeoutError } from '../errors.js';
import type { Logger } from '../log/index.js';
import type { MessageLink, WireMessage } from './rpc.js';
import {
  checkCredential,
  checkIdentity,
  checkSecret,
  createChallenge,
  createHello,
  createWelcome,
  identityKey,
  parseChallenge,
  verifyHello,
  verifyWelcome,
  type Credential,
  type DomainKey,
  type HandshakeMessage,
  type Identity,
  type Role,
} from './auth.js';

const MiB = 1024 * 1024;
export const DEFAULT_MAX_PAYLOAD = 16 * MiB;
export const DEFAULT_HIGH_WATER_MARK = 8 * MiB;
export const DEFAULT_LOW_WATER_MARK = 2 * MiB;
export const DEFAULT_MAX_QUEUED_BYTES = 64 * MiB;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_PENDING_HANDSHAKES = 128;
/** Deepest nesting of arrays/maps accepted in a received message. */
export const MAX_DEPTH = 64;

/** WebSocket close codes used by this transport (RFC 6455 §7.4.1). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  invalidData: 1007,
  policy: 1008,
  tooBig: 1009,
  internalError: 1011,
  tryAgainLater: 1013,
} as const;

/** Flow-control and size limits of one link. */
export interface WsLinkLimits {
  /** Largest frame accepted or sent, in bytes (default 16 MiB). */
  maxPayload?: number;
  /** Queue instead of writing once the socket buffers this many bytes (default 8 MiB). */
  highWaterMark?: number;
  /** Resume writing queued frames when the socket buffer falls to this (default 2 MiB). */
  lowWaterMark?: number;
  /** Hard cap on queued encoded bytes; beyond it the link closes with "peer too slow" (default 64 MiB). */
  maxQueuedBytes?: number;
}

export interface WsLinkOptions extends WsLinkLimits {
  /** Used in log lines and error messages. */
  name?: string;
  log?: Logger;
}

export interface WsLinkCounters {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
}

/** How a link ended. `byPeer` is false when this side decided to close. */
export interface WsCloseInfo {
  code: number;
  reason: string;
  byPeer: boolean;
}

type Gate = (value: unknown) => void;

// Module-private access to WsLink internals for the handshake in listen()/connect().
let internals!: {
  setGate(link: WsLink, gate: Gate | null): void;
  sendHandshake(link: WsLink, msg: HandshakeMessage): void;
  setIdentity(link: WsLink, id: Identity, name: string): void;
  socketClosed(link: WsLink): Promise<void>;
};

const MAX_REASON_BYTES = 123; // RFC 6455: a close frame's reason is at most 123 bytes

function clipReason(s: string): string {
  const b = Buffer.from(s, 'utf8');
  if (b.byteLength <= MAX_REASON_BYTES) return s;
  return `${b.subarray(0, MAX_REASON_BYTES - 3).toString('utf8').replace(/\uFFFD+$/, '')}…`;
}

function autoReason(code: number, maxPayload: number): string {
  switch (code) {
    case CloseCode.tooBig:
      return `message too big (limit ${maxPayload} bytes)`;
    case CloseCode.invalidData:
      return 'invalid UTF-8 in a text frame';
    case CloseCode.protocolError:
      return 'WebSocket framing violation';
    default:
      return 'protocol error';
  }
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function isMessageId(x: unknown): boolean {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Why `v` is not a WireMessage (as WsLink checks every received message), or null if it is one. */
export function wireMessageProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return 'not a map';
  const o = v as Record<string, unknown>;
  switch (o.t) {
    case 'call':
      if (!isMessageId(o.id)) return 'call without a valid id';
      return typeof o.method === 'string' ? null : 'call without a method name';
    case 'result':
      return isMessageId(o.id) ? null : 'result without a valid id';
    case 'error': {
      if (!isMessageId(o.id)) return 'error without a valid id';
      const e = o.error as Record<string, unknown> | null;
      if (typeof e !== 'object' || e === null || typeof e.code !== 'string' || typeof e.message !== 'string')
        return 'error without a code and message';
      return null;
    }
    case 'notify':
      return typeof o.topic === 'string' ? null : 'notify without a topic';
    case 'challenge':
    case 'hello':
    case 'welcome':
      return `${o.t} after the handshake`;
    default:
      return 'unknown message type';
  }
}

/**
 * Why a decoded value holds something other than plain data, or null. msgpackr can materialise
 * RegExp, Error and other objects from extension types; none of them belongs in a control message.
 */
function valueProblem(v: unknown, depth: number): string | null {
  if (v === null || typeof v !== 'object') return null;
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer || v instanceof Date) return null;
  if (depth >= MAX_DEPTH) return `nested deeper than ${MAX_DEPTH}`;
  if (Array.isArray(v) || v instanceof Set) {
    for (const x of v as Iterable<unknown>) {
      const p = valueProblem(x, depth + 1);
      if (p !== null) return p;
    }
    return null;
  }
  if (v instanceof Map) {
    for (const [k, x] of v as Map<unknown, unknown>) {
      const p = valueProblem(k, depth + 1) ?? valueProblem(x, depth + 1);
      if (p !== null) return p;
    }
    return null;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return 'a value of an unsupported type';
  const o = v as Record<string, unknown>;
  for (const k in o) {
    const p = valueProblem(o[k], depth + 1);
    if (p !== null) return p;
  }
  return null;
}

/** A MessageLink over an open `ws` WebSocket (binary frames, msgpack). */
export class WsLink implements MessageLink {
  readonly counters: WsLinkCounters = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0 };
  readonly maxPayload: number;
  readonly highWaterMark: number;
  readonly lowWaterMark: number;
  readonly maxQueuedBytes: number;

  #name: string;
  #identity: Identity | undefined;
  readonly #log: Logger | undefined;
  readonly #packr = new Packr({ useRecords: true });
  readonly #unpackr = new Unpackr({ useRecords: true });

  #queue: Array<Uint8Array | undefined> = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #peakQueuedBytes = 0;
  #writeCallbacksOutstanding = 0;
  #pollTimer: NodeJS.Timeout | undefined;

  #gate: Gate | null = null;
  #messageCbs: Array<(msg: unknown) => void> = [];
  #closeCbs: Array<(reason: string) => void> = [];
  /** Messages that arrived before anyone listened; null once delivered. */
  #backlog: unknown[] | null = [];
  #backlogBytes = 0;
  #backlogFlushScheduled = false;
  #autoClose: { code: number; reason: string } | undefined;
  #closeInfo: WsCloseInfo | undefined;
  #closeReason = '';
  #graceTimer: NodeJS.Timeout | undefined;
  readonly #socketClosed: Promise<void>;

  static {
    internals = {
      setGate: (link, gate) => {
        link.#gate = gate;
      },
      sendHandshake: (link, msg) => {
        if (link.#closeInfo === undefined) link.#enqueue(link.#encode(msg));
      },
      setIdentity: (link, id, name) => {
        link.#identity = id;
        link.#name = name;
      },
      socketClosed: (link) => link.#socketClosed,
    };
  }

  /** Wraps an OPEN WebSocket. The link owns it from now on (error, message and close handling). */
  constructor(
    readonly ws: WebSocket,
    opts: WsLinkOptions = {},
  ) {
    if (ws.readyState !== WebSocket.OPEN) throw new InvalidArgumentError('WsLink needs an open WebSocket');
    this.maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.highWaterMark = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.lowWaterMark = Math.min(opts.lowWaterMark ?? DEFAULT_LOW_WATER_MARK, this.highWaterMark);
    this.maxQueuedBytes = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    for (const [k, v] of Object.entries({ maxPayload: this.maxPayload, highWaterMark: this.highWaterMark, maxQueuedBytes: this.maxQueuedBytes }))
      if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidArgumentError(`WsLink: ${k} must be a positive integer, got ${v}`);
    this.#name = opts.name ?? 'ws';
    this.#log = opts.log;
    ws.binaryType = 'nodebuffer';

    // ws closes by itself on framing errors (1002), invalid UTF-8 (1007) and oversized frames
    // (1009) but sends no reason; fill one in so the peer learns what it did wrong.
    const wsClose = ws.close.bind(ws);
    ws.close = (code?: number, data?: string | Buffer): void => {
      if (data === undefined && code !== undefined && code !== CloseCode.normal && code !== 1005) {
        const reason = autoReason(code, this.maxPayload);
        this.#autoClose = { code, reason };
        wsClose(code, reason);
      } else wsClose(code, data);
    };

    this.#socketClosed = new Promise((resolve) => ws.once('close', () => resolve()));
    ws.on('message', (data, isBinary) => this.#receive(data, isBinary));
    ws.on('error', (err) => this.#onError(err));
    ws.on('close', (code, reason) => this.#onSocketClose(code, reason));
  }

  get name(): string {
    return this.#name;
  }

  /** The identity proven in the handshake (the peer's on a server link, ours on a client link). */
  get identity(): Identity | undefined {
    return this.#identity;
  }

  get closed(): boolean {
    return this.#closeInfo !== undefined;
  }

  get closeInfo(): WsCloseInfo | undefined {
    return this.#closeInfo;
  }

  /** Encoded bytes waiting in the backpressure queue. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** The most bytes that ever waited in the queue at once. */
  get peakQueuedBytes(): number {
    return this.#peakQueuedBytes;
  }

  /**
   * Encodes and sends one message (dropped silently once closed, like PortLink). Throws
   * ProtocolError if the encoding exceeds maxPayload, which the peer would refuse.
   */
  send(msg: WireMessage): void {
    if (this.#closeInfo !== undefined) return;
    this.#enqueue(this.#encode(msg));
  }

  /**
   * Sends bytes that already are one msgpack-encoded WireMessage (e.g. encoded once by a batching
   * or fan-out layer with `encodeMessage`). Same flow control and size limit as `send`.
   */
  sendRaw(bytes: Uint8Array): void {
    if (this.#closeInfo !== undefined) return;
    if (bytes.byteLength > this.maxPayload)
      throw new ProtocolError(`${this.#name}: message of ${bytes.byteLength} bytes exceeds the ${this.maxPayload}-byte limit`);
    this.#enqueue(bytes);
  }

  onMessage(cb: (msg: unknown) => void): void {
    this.#messageCbs.push(cb);
    if (this.#backlog !== null && !this.#backlogFlushScheduled) {
      // Deliver what arrived early once the caller has finished wiring up (e.g. RpcPeer handlers).
      this.#backlogFlushScheduled = true;
      queueMicrotask(() => {
        const backlog = this.#backlog ?? [];
        this.#backlog = null;
        this.#backlogBytes = 0;
        for (const m of backlog) {
          if (this.#closeInfo !== undefined) break;
          this.#dispatch(m);
        }
      });
    }
  }

  /** Called once with the reason the link ended; immediately (next microtask) if it already has. */
  onClose(cb: (reason: string) => void): void {
    if (this.#closeInfo !== undefined) {
      const reason = this.#closeReason;
      queueMicrotask(() => cb(reason));
    } else this.#closeCbs.push(cb);
  }

  /** Closes with `code` (1000 by default) and `reason`; onClose listeners get `reason`. */
  close(reason: string, code: number = CloseCode.normal): void {
    this.#closeLocal(code, reason, false);
  }

  // ---- sending -------------------------------------------------------------------------------

  #encode(value: unknown): Uint8Array {
    const bytes = this.#packr.pack(value);
    if (bytes.byteLength > this.maxPayload)
      throw new ProtocolError(`${this.#name}: message of ${bytes.byteLength} bytes exceeds the ${this.maxPayload}-byte limit`);
    return bytes;
  }

  #enqueue(bytes: Uint8Array): void {
    if (this.#queueHead === this.#queue.length && this.ws.bufferedAmount < this.highWaterMark) {
      this.#write(bytes);
      return;
    }
    if (this.#queuedBytes + bytes.byteLength > this.maxQueuedBytes) {
      this.#log?.warn(
        { link: this.#name, queuedBytes: this.#queuedBytes, bufferedAmount: this.ws.bufferedAmount },
        'ws peer too slow: send queue over its cap, closing',
      );
      this.#closeLocal(CloseCode.policy, 'peer too slow', true);
      return;
    }
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.byteLength;
    if (this.#queuedBytes > this.#peakQueuedBytes) this.#peakQueuedBytes = this.#queuedBytes;
    this.#armWakeup();
  }

  #corked = false;

  /**
   * Writes of one turn of the event loop leave in as few TCP segments as possible: the socket is
   * corked at the first write and uncorked when the turn ends (a ring page update and the event
   * that announces it then cost one segment, not two). `_socket` is ws's internal net.Socket.
   */
  #cork(): void {
    if (this.#corked) return;
    const sock = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (!sock || typeof sock.cork !== 'function') return;
    sock.cork();
    this.#corked = true;
    setImmediate(() => {
      this.#corked = false;
      sock.uncork();
    });
  }

  #write(bytes: Uint8Array): void {
    this.#cork();
    this.counters.framesSent++;
    this.counters.bytesSent += bytes.byteLength;
    if (this.ws.bufferedAmount + bytes.byteLength > this.lowWaterMark) {
      this.#writeCallbacksOutstanding++;
      this.ws.send(bytes, { binary: true }, this.#afterWrite);
    } else this.ws.send(bytes, { binary: true });
  }

  readonly #afterWrite = (): void => {
    this.#writeCallbacksOutstanding--;
    if (this.#queueHead < this.#queue.length && this.ws.bufferedAmount <= this.lowWaterMark) this.#pump();
    else this.#armWakeup();
  };

  #pump(): void {
    if (this.#closeInfo !== undefined) return;
    while (this.#queueHead < this.#queue.length && this.ws.bufferedAmount < this.highWaterMark) {
      const bytes = this.#queue[this.#queueHead];
      this.#queue[this.#queueHead++] = undefined; // let it be collected
      if (bytes === undefined) continue;
      this.#queuedBytes -= bytes.byteLength;
      this.#write(bytes);
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    this.#armWakeup();
  }

  /** Makes sure something will run the pump while frames are queued. */
  #armWakeup(): void {
    if (this.#closeInfo !== undefined || this.#queueHead === this.#queue.length) return;
    if (this.#writeCallbacksOutstanding > 0 || this.#pollTimer !== undefined) return;
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = undefined;
      if (this.ws.bufferedAmount <= this.lowWaterMark) this.#pump();
      else this.#armWakeup();
    }, 5);
  }

  // ---- receiving -----------------------------------------------------------------------------

  #receive(data: RawData, isBinary: boolean): void {
    if (this.#closeInfo !== undefined) return;
    const buf = rawToBuffer(data);
    this.counters.framesReceived++;
    this.counters.bytesReceived += buf.byteLength;
    if (!isBinary) return this.#violation(CloseCode.policy, 'text frames are not part of the protocol');
    let value: unknown;
    try {
      value = this.#unpackr.unpack(buf);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      return this.#violation(CloseCode.policy, `undecodable message (${why.slice(0, 60)})`);
    }
    const bad = valueProblem(value, 0);
    if (bad !== null) return this.#violation(CloseCode.policy, `malformed message: ${bad}`);
    if (this.#gate !== null) {
      this.#gate(value);
      return;
    }
    const notWire = wireMessageProblem(value);
    if (notWire !== null) return this.#violation(CloseCode.policy, `malformed message: ${notWire}`);
    if (this.#backlog !== null) {
      this.#backlogBytes += buf.byteLength;
      if (this.#backlogBytes > this.maxQueuedBytes)
        return this.#violation(CloseCode.policy, 'too many messages before the receiver started listening');
      this.#backlog.push(value);
      return;
    }
    this.#dispatch(value);
  }

  #dispatch(msg: unknown): void {
    for (const cb of this.#messageCbs) {
      try {
        cb(msg);
      } catch (e) {
        this.#log?.error({ link: this.#name, err: e }, 'ws message handler threw; closing the link');
        this.#closeLocal(CloseCode.internalError, 'internal error', false);
        return;
      }
      if (this.#closeInfo !== undefined) return;
    }
  }

  // ---- closing -------------------------------------------------------------------------------

  /** The peer broke the protocol: log once, close with a reason. */
  #violation(code: number, reason: string): void {
    this.#log?.warn({ link: this.#name, code, reason }, `closing ws peer: ${reason}`);
    this.#closeLocal(code, reason, false);
  }

  #closeLocal(code: number, reason: string, terminate: boolean): void {
    if (this.#closeInfo !== undefined) return;
    this.#closeInfo = { code, reason, byPeer: false };
    this.#dropQueue();
    if (terminate) this.ws.terminate();
    else {
      try {
        this.ws.close(code, clipReason(reason));
      } catch {
        this.ws.terminate();
      }
      // A peer that never answers the close frame (or cannot, being stalled) is cut off.
      if (this.ws.readyState !== WebSocket.CLOSED) {
        this.#graceTimer = setTimeout(() => this.ws.terminate(), 2_000);
        this.#graceTimer.unref();
      }
    }
    this.#fireClose(reason);
  }

  #onError(err: Error): void {
    if (this.#closeInfo !== undefined) return;
    const auto = this.#autoClose;
    if (auto !== undefined) {
      // ws already sent the close frame (see the close wrapper in the constructor).
      this.#log?.warn({ link: this.#name, code: auto.code, reason: auto.reason, err: err.message }, `closing ws peer: ${auto.reason}`);
      this.#closeInfo = { code: auto.code, reason: auto.reason, byPeer: false };
      this.#dropQueue();
      this.#fireClose(auto.reason);
    } else {
      this.#log?.info({ link: this.#name, err: err.message }, 'ws connection error');
      this.#closeLocal(CloseCode.internalError, `connection error: ${err.message}`, true);
    }
  }

  #onSocketClose(code: number, reason: Buffer): void {
    if (this.#graceTimer !== undefined) clearTimeout(this.#graceTimer);
    if (this.#pollTimer !== undefined) clearTimeout(this.#pollTimer);
    this.#pollTimer = undefined;
    if (this.#closeInfo !== undefined) return;
    const text = reason.toString('utf8');
    this.#closeInfo = { code, reason: text, byPeer: true };
    this.#dropQueue();
    this.#fireClose(code === 1006 ? 'connection lost' : `closed by peer (${code}${text ? `: ${text}` : ''})`);
  }

  #dropQueue(): void {
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    this.#backlog = null;
    this.#gate = null;
    if (this.#pollTimer !== undefined) clearTimeout(this.#pollTimer);
    this.#pollTimer = undefined;
  }

  #fireClose(reason: string): void {
    this.#closeReason = reason;
    const cbs = this.#closeCbs;
    this.#closeCbs = [];
    for (const cb of cbs) {
      try {
        cb(reason);
      } catch (e) {
        this.#log?.error({ link: this.#name, err: e }, 'ws close handler threw');
      }
    }
  }
}

const sharedPackr = new Packr({ useRecords: true });

/** Encodes a message exactly as WsLink.send would, for `sendRaw` (encode once, send to many). */
export function encodeMessage(msg: WireMessage): Uint8Array {
  return sharedPackr.pack(msg);
}

// ---- server ----------------------------------------------------------------------------------

export interface ListenOptions extends WsLinkLimits {
  /** Interface to bind; 127.0.0.1 unless told otherwise (containers pass '0.0.0.0'). */
  host?: string;
  /** 0 picks an ephemeral port. */
  port: number;
  /** The cluster secret: every peer's key is derived from it for the identity it claims (auth.ts). */
  secret: Uint8Array;
  /**
   * The host whose guest domains this listener serves (its name in the cluster config): keys of
   * guest-side roles are derived for that host's domains, so a guest of another host, holding
   * the key of the same domain id there, is refused. Default DEFAULT_DOMAIN_HOST.
   */
  domainHost?: string;
  /** May this proven identity connect here? (e.g. dom0: a guest only as a domain it runs.) */
  authorize: (claim: Identity) => boolean | Promise<boolean>;
  /** An authenticated connection; the link acts only as `who`. */
  onConnection: (link: WsLink, who: Identity) => void;
  log?: Logger;
  /** Time a new socket has to complete the handshake (default 5 s). */
  handshakeTimeoutMs?: number;
  /** Sockets allowed mid-handshake at once; more are refused with 1013 (default 128). */
  maxPendingHandshakes?: number;
}

export interface WsServer {
  readonly host: string;
  readonly port: number;
  /** ws://host:port */
  readonly url: string;
  /** Authenticated connections currently open. */
  readonly connections: number;
  /** Closes every connection (1001) and stops listening. */
  close(): Promise<void>;
}

function remoteOf(req: IncomingMessage): string {
  const s = req.socket;
  return s.remoteAddress?.includes(':') ? `[${s.remoteAddress}]:${s.remotePort}` : `${s.remoteAddress}:${s.remotePort}`;
}

export async function listen(opts: ListenOptions): Promise<WsServer> {
  checkSecret(opts.secret);
  const secret = opts.secret;
  const host = opts.host ?? '127.0.0.1';
  const maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const maxPending = opts.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
  const log = opts.log;
  const pending = new Set<WsLink>();
  const established = new Set<WsLink>();
  let closing = false;
  let closed: Promise<void> | undefined;

  // Our own HTTP server (rather than ws's) so that close() can cut every connection, including
  // half-sent HTTP requests, and so that slow upgrade requests cannot hold a socket for long.
  const http = createServer((_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end('ringvisor: WebSocket upgrade required\n');
  });
  http.headersTimeout = 10_000;
  http.requestTimeout = 10_000;
  const wss = new WebSocketServer({ server: http, maxPayload, perMessageDeflate: false, clientTracking: false });
  wss.on('error', (e) => log?.error({ err: e }, 'ws server error'));
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(opts.port, host, () => {
      http.off('error', reject);
      resolve();
    });
  });
  http.on('error', (e) => log?.error({ err: e }, 'ws http server error'));
  const port = (http.address() as AddressInfo).port;

  wss.on('connection', (ws, req) => {
    const remote = remoteOf(req);
    if (closing) {
      ws.close(CloseCode.goingAway, 'server shutting down');
      return;
    }
    if (pending.size >= maxPending) {
      log?.warn({ peer: remote, pending: pending.size }, 'ws: too many pending handshakes, refusing');
      ws.close(CloseCode.tryAgainLater, 'too many pending handshakes');
      return;
    }
    const link = new WsLink(ws, {
      name: `ws ${remote}`,
      maxPayload,
      highWaterMark: opts.highWaterMark,
      lowWaterMark: opts.lowWaterMark,
      maxQueuedBytes: opts.maxQueuedBytes,
      log: log?.child({ peer: remote }),
    });
    pending.add(link);
    const challenge = createChallenge();
    let state: 'hello' | 'authorizing' | 'done' = 'hello';

    const fail = (reason: string): void => {
      if (link.closed) return;
      log?.warn({ peer: remote, reason }, `ws handshake failed: ${reason}`);
      link.close(reason, CloseCode.policy);
    };
    const timer = setTimeout(() => fail('authentication timeout'), handshakeTimeoutMs);
    timer.unref();
    link.onClose(() => {
      clearTimeout(timer);
      pending.delete(link);
      established.delete(link);
    });

    const admit = (identity: Identity, welcome: HandshakeMessage): void => {
      state = 'done';
      clearTimeout(timer);
      pending.delete(link);
      internals.setGate(link, null);
      internals.setIdentity(link, identity, `${identity.role}/${identity.domid}@${remote}`);
      internals.sendHandshake(link, welcome);
      established.add(link);
      try {
        opts.onConnection(link, identity);
      } catch (e) {
        log?.error({ peer: remote, err: e }, 'ws onConnection threw; closing the connection');
        link.close('internal error', CloseCode.internalError);
      }
    };

    internals.setGate(link, (value) => {
      if (state !== 'hello') return fail('unexpected message during the handshake');
      state = 'authorizing';
      let verified: ReturnType<typeof verifyHello>;
      try {
        verified = verifyHello(secret, challenge, value, opts.domainHost);
      } catch (e) {
        return fail(e instanceof ProtocolError ? e.message : 'malformed hello');
      }
      const { identity, hello } = verified;
      const welcome = createWelcome(secret, challenge, hello, opts.domainHost);
      const refuse = (): void => fail(`not authorized as ${identity.role} ${identity.domid}`);
      let verdict: boolean | Promise<boolean>;
      try {
        verdict = opts.authorize(identity);
      } catch (e) {
        log?.error({ peer: remote, err: e }, 'ws authorize() threw');
        return fail('authorization error');
      }
      if (typeof verdict === 'boolean') return verdict ? admit(identity, welcome) : refuse();
      verdict.then(
        (ok) => {
          if (link.closed) return;
          if (ok) admit(identity, welcome);
          else refuse();
        },
        (e: unknown) => {
          log?.error({ peer: remote, err: e }, 'ws authorize() rejected');
          fail('authorization error');
        },
      );
    });
    internals.sendHandshake(link, challenge);
  });

  return {
    host,
    port,
    url: `ws://${host.includes(':') ? `[${host}]` : host}:${port}`,
    get connections() {
      return established.size;
    },
    close() {
      closed ??= shutdown();
      return closed;
    },
  };

  async function shutdown(): Promise<void> {
    closing = true;
    const links = [...pending, ...established];
    for (const l of links) l.close('server shutting down', CloseCode.goingAway);
    await Promise.all(
      links.map((l) =>
        Promise.race([
          internals.socketClosed(l),
          new Promise<void>((resolve) => {
            setTimeout(() => {
              l.ws.terminate();
              resolve();
            }, 500);
          }),
        ]),
      ),
    );
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      http.close(() => resolve());
      http.closeAllConnections();
    });
  }
}

// ---- client ----------------------------------------------------------------------------------

export interface ConnectOptions extends WsLinkLimits {
  /** ws://host:port of the listener. */
  url: string;
  /**
   * What we prove our identity with: the cluster secret (trusted runtimes), or — instead — a
   * guest's domain key, which can speak only for its own domain's guest, vcpu and direct roles.
   * Exactly one of the two.
   */
  secret?: Uint8Array;
  domainKey?: DomainKey;
  /** With the cluster secret and a guest-side role: the host whose domain we claim (default DEFAULT_DOMAIN_HOST). */
  domainHost?: string;
  /** The identity this connection speaks for. */
  role: Role;
  domid: number;
  /** Budget for TCP connect, upgrade and handshake together (default 5 s). */
  timeoutMs?: number;
  log?: Logger;
}

/**
 * Opens an authenticated link. Rejects with ProtocolError when the server refuses us (wrong secret,
 * not authorized — its reason is in the message) or fails to prove it knows the secret,
 * ClosedError when the connection cannot be made or drops, TimeoutError when the budget runs out.
 */
export async function connect(opts: ConnectOptions): Promise<WsLink> {
  if ((opts.secret === undefined) === (opts.domainKey === undefined))
    throw new InvalidArgumentError('connect: give either the cluster secret (secret) or a domain key (domainKey)');
  const credential: Credential = opts.secret ?? opts.domainKey!;
  checkCredential(credential);
  const identity: Identity = { role: opts.role, domid: opts.domid };
  checkIdentity(identity);
  const domainHost = opts.domainHost;
  // Refuse here, before any socket, an identity this credential has no key for.
  identityKey(credential, identity, domainHost);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const url = opts.url;

  return new Promise<WsLink>((resolve, reject) => {
    let settled = false;
    let link: WsLink | undefined;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        perMessageDeflate: false,
        maxPayload: opts.maxPayload ?? DEFAULT_MAX_PAYLOAD,
        handshakeTimeout: timeoutMs,
        followRedirects: false,
      });
    } catch (e) {
      reject(new InvalidArgumentError(`cannot connect to ${JSON.stringify(url)}: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    const fail = (err: Error, closeReason?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (link !== undefined) {
        if (closeReason !== undefined) {
          opts.log?.warn({ url, reason: closeReason }, `ws handshake failed: ${closeReason}`);
          link.close(closeReason, CloseCode.policy);
        }
      } else ws.terminate();
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new TimeoutError(`${url}: no authenticated connection within ${timeoutMs} ms`), 'authentication timeout'),
      timeoutMs,
    );
    ws.on('error', (e) => fail(new ClosedError(`${url}: ${e.message}`, { cause: e })));
    ws.once('close', (code, reason) => {
      if (link === undefined) fail(new ClosedError(`${url}: connection closed (${code}${reason.byteLength ? `: ${reason.toString()}` : ''})`));
    });
    ws.once('open', () => {
      if (settled) return;
      const l = new WsLink(ws, {
        name: `ws ${url}`,
        maxPayload: opts.maxPayload,
        highWaterMark: opts.highWaterMark,
        lowWaterMark: opts.lowWaterMark,
        maxQueuedBytes: opts.maxQueuedBytes,
        log: opts.log,
      });
      link = l;
      let challenge: ReturnType<typeof parseChallenge> | undefined;
      let hello: ReturnType<typeof createHello> | undefined;
      l.onClose(() => {
        if (settled) return;
        const info = l.closeInfo;
        if (info?.byPeer && info.code === CloseCode.policy)
          fail(new ProtocolError(`${url}: handshake refused by the server: ${info.reason || 'no reason given'}`));
        else if (info?.byPeer === false) fail(new ProtocolError(`${url}: handshake failed: ${info.reason}`));
        else fail(new ClosedError(`${url}: connection closed during the handshake (${info?.code ?? 'unknown'}${info?.reason ? `: ${info.reason}` : ''})`));
      });
      internals.setGate(l, (value) => {
        try {
          if (challenge === undefined) {
            challenge = parseChallenge(value);
            hello = createHello(credential, challenge, identity, domainHost);
            internals.sendHandshake(l, hello);
          } else if (hello !== undefined) {
            verifyWelcome(credential, challenge, hello, value, domainHost);
            settled = true;
            clearTimeout(timer);
            internals.setGate(l, null);
            internals.setIdentity(l, identity, `${identity.role}/${identity.domid}→${url}`);
            resolve(l);
          }
        } catch (e) {
          const why = e instanceof ProtocolError ? e.message : 'handshake error';
          fail(new ProtocolError(`${url}: ${why}`), why);
        }
      });
    });
  });
}
