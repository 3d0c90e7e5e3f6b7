/**
 * The ws transport: a MessageLink over a WebSocket, for runtimes in separate processes.
 *
 * Frames. One control message per binary frame, plain msgpack as msgpackr writes it with
 * `useRecords: false` (objects are msgpack maps; no records, no shared structures, no extension
 * types), so any two msgpack implementations interoperate. `Uint8Array` values travel as msgpack
 * `bin` and arrive as `Buffer` views of the received frame (no copy); `undefined` as a property
 * value travels as msgpackr's `d4 00 00`. perMessageDeflate is off; both ends enforce a frame size
 * limit while ws reads the frame's header, before buffering it: PRE_AUTH_MAX_PAYLOAD (512 bytes;
 * a hello is about 120) until the connection has authenticated, `maxPayload` (default 16 MiB)
 * after.
 *
 * Every received frame, before and after authentication, is first checked byte by byte
 * (msgpack-check.ts: plain data only, every extension type refused, nesting at most MAX_DEPTH,
 * at most MAX_VALUES values, containers that promise more values than the frame has bytes
 * refused at once — work proportional to the frame's length), then decoded by an Unpackr that has nothing to
 * materialise beyond plain data, then checked against the message shapes. `send` does not walk
 * what it encodes (that would double the check's cost on the hot path), so a value the peer
 * refuses — a Date is the one msgpackr would write as an extension — closes the link with a
 * reason that names it; `encodeMessage` does check, and throws ProtocolError.
 *
 * Hostile peers. A peer that sends a text frame, bytes that are not one plain msgpack value, an
 * extension type, anything nested deeper than MAX_DEPTH, or a message that is not a WireMessage
 * is closed with 1008 and a reason; a frame over the current limit gets 1009; a WebSocket framing
 * violation gets ws's own 1002/1007 (with a reason filled in here). Each is reported to onClose
 * listeners and logged at warn — through a RateLimitedLog on a listener's links, so a flood
 * writes a bounded number of lines with counts; nothing else on the process notices.
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
 * challenge–response of auth.ts runs over the same socket; see auth.ts for the wire format.
 * Listeners bind 127.0.0.1 unless told otherwise. Until the handshake completes:
 *  - frames are capped at PRE_AUTH_MAX_PAYLOAD (both ends), and every frame goes to the
 *    handshake, which takes exactly one message per step; nothing is queued for later;
 *  - a listener counts every TCP connection from accept to authentication as pending: at most
 *    `maxPendingPerAddress` (default 8) per remote address (IPv6: per /64) and
 *    `maxPendingHandshakes` (default 128) in all; a connection over either cap is answered
 *    `503` and closed before its HTTP request is read, so one address's flood cannot lock out
 *    another address (`connect` tries again after a 503, backing off, within its budget);
 *  - one deadline, `handshakeTimeoutMs` (default 5 s) from TCP accept, covers the upgrade and the
 *    handshake: a socket that has not authenticated by then is closed (1008 "authentication
 *    timeout" once upgraded; cut before that).
 * The raised limit is set on ws's Receiver (`_receiver._maxPayload`, which ws reads at every
 * frame header), guarded by setReceiveLimit: if ws stops having it, connections fail loudly.
 */
import { Packr, Unpackr } from 'msgpackr';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { createServer } from 'node:http';
import { isIPv6, type AddressInfo, type Socket } from 'node:net';
import { ClosedError, InvalidArgumentError, ProtocolError, TimeoutError } from '../errors.js';
import type { Logger } from '../log/index.js';
import { RateLimitedLog } from '../log/rate-limit.js';
import { MAX_DEPTH, MAX_VALUES, msgpackProblem } from './msgpack-check.js';
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
import { errorFields } from '../log/error-fields.js';

const MiB = 1024 * 1024;
export const DEFAULT_MAX_PAYLOAD = 16 * MiB;
export const DEFAULT_HIGH_WATER_MARK = 8 * MiB;
export const DEFAULT_LOW_WATER_MARK = 2 * MiB;
export const DEFAULT_MAX_QUEUED_BYTES = 64 * MiB;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_PENDING_HANDSHAKES = 128;
export const DEFAULT_MAX_PENDING_PER_ADDRESS = 8;
/**
 * Largest frame either end accepts before the handshake has completed. The handshake's messages
 * are 50–120 bytes encoded; 512 leaves room for a longer role name or an extra field.
 */
export const PRE_AUTH_MAX_PAYLOAD = 512;
export { MAX_DEPTH, MAX_VALUES, msgpackProblem };

/** WebSocket close codes used by this transport (RFC 6455 §7.4.1). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  invalidData: 1007,
  policy: 1008,
  tooBig: 1009,
  internalError: 1011,
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
  /**
   * Where this link's protocol violations are logged, keyed by `peerAddress` (a listener passes
   * its own, so a flood from one address writes a bounded number of lines). Default: `log`.
   */
  refusals?: RateLimitedLog;
  peerAddress?: string;
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
  /** Sets the largest frame the link's socket accepts from now on (see setReceiveLimit). */
  setReceiveLimit(link: WsLink, bytes: number): void;
};

/**
 * Sets the largest frame `ws` accepts from now on. ws's Receiver compares each frame header's
 * length with its `_maxPayload` before buffering the frame (receiver.js, haveLength), and offers
 * no public way to change it on an open socket; we need one to keep frames handshake-sized until
 * a connection has authenticated. Guarded: if ws stops having that field, this throws rather than
 * leaving a connection with a limit it does not enforce.
 */
export function setReceiveLimit(ws: WebSocket, bytes: number): void {
  const receiver = (ws as unknown as { _receiver?: { _maxPayload?: unknown } | null })._receiver;
  if (receiver === undefined || receiver === null || typeof receiver._maxPayload !== 'number')
    throw new ProtocolError('ws: cannot set the receive limit (ws internals changed: no _receiver._maxPayload)');
  receiver._maxPayload = bytes;
}

/**
 * Plain msgpack only. `useRecords: false` writes objects as maps; moreTypes and structuredClone
 * off keep Sets, Errors, RegExps and typed arrays out of extension types (they are refused on
 * receipt anyway, before the Unpackr sees them).
 */
const PACKR_OPTIONS = { useRecords: false, moreTypes: false, structuredClone: false, bundleStrings: false } as const;
const UNPACKR_OPTIONS = { useRecords: false, mapsAsObjects: true, moreTypes: false, structuredClone: false } as const;

const MAX_REASON_BYTES = 123; // RFC 6455: a close frame's reason is at most 123 bytes

function clipReason(s: string): string {
  const b = Buffer.from(s, 'utf8');
  if (b.byteLength <= MAX_REASON_BYTES) return s;
  return `${b.subarray(0, MAX_REASON_BYTES - 3).toString('utf8').replace(/\uFFFD+$/, '')}…`;
}

function autoReason(code: number, receiveLimit: number, authenticated: boolean): string {
  switch (code) {
    case CloseCode.tooBig:
      return `message too big (limit ${receiveLimit} bytes${authenticated ? '' : ' before authentication'})`;
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
  readonly #refusals: RateLimitedLog | undefined;
  readonly #peerAddress: string;
  readonly #packr = new Packr(PACKR_OPTIONS);
  readonly #unpackr = new Unpackr(UNPACKR_OPTIONS);
  /** What the socket accepts now (ws enforces it); `maxPayload` once authenticated. */
  #receiveLimit: number;

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
      setReceiveLimit: (link, bytes) => {
        setReceiveLimit(link.ws, bytes);
        link.#receiveLimit = bytes;
      },
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
    this.#refusals = opts.refusals;
    this.#peerAddress = opts.peerAddress ?? this.#name;
    const receiver = (ws as unknown as { _receiver?: { _maxPayload?: unknown } })._receiver;
    this.#receiveLimit = typeof receiver?._maxPayload === 'number' && receiver._maxPayload > 0 ? receiver._maxPayload : this.maxPayload;
    ws.binaryType = 'nodebuffer';

    // ws closes by itself on framing errors (1002), invalid UTF-8 (1007) and oversized frames
    // (1009) but sends no reason; fill one in so the peer learns what it did wrong.
    const wsClose = ws.close.bind(ws);
    ws.close = (code?: number, data?: string | Buffer): void => {
      if (data === undefined && code !== undefined && code !== CloseCode.normal && code !== 1005) {
        const reason = autoReason(code, this.#receiveLimit, this.#identity !== undefined);
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
    // The byte check bounds everything after it: what msgpackr builds is plain data, at most as
    // many values as the frame has bytes, at most MAX_DEPTH deep.
    const bad = msgpackProblem(buf);
    if (bad !== null) return this.#violation(CloseCode.policy, `malformed message: ${bad}`);
    let value: unknown;
    try {
      value = this.#unpackr.unpack(buf);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      return this.#violation(CloseCode.policy, `undecodable message (${why.slice(0, 60)})`);
    }
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
    this.#warnRefusal({ link: this.#name, code, reason }, `closing ws peer: ${reason}`);
    this.#closeLocal(code, reason, false);
  }

  #warnRefusal(fields: Record<string, unknown>, msg: string): void {
    if (this.#refusals !== undefined) this.#refusals.warn(this.#peerAddress, fields, msg);
    else this.#log?.warn(fields, msg);
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
      this.#warnRefusal({ link: this.#name, code: auto.code, reason: auto.reason, err: errorFields(err) }, `closing ws peer: ${auto.reason}`);
      this.#closeInfo = { code: auto.code, reason: auto.reason, byPeer: false };
      this.#dropQueue();
      this.#fireClose(auto.reason);
    } else {
      this.#log?.info({ link: this.#name, err: errorFields(err) }, 'ws connection error');
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

const sharedPackr = new Packr(PACKR_OPTIONS);

/**
 * Encodes a message exactly as WsLink.send would, for `sendRaw` (encode once, send to many).
 * Throws ProtocolError for a value a receiver would refuse (see msgpack-check.ts).
 */
export function encodeMessage(msg: WireMessage): Uint8Array {
  const bytes = sharedPackr.pack(msg);
  const problem = msgpackProblem(bytes);
  if (problem !== null) throw new ProtocolError(`the peer would refuse this message: ${problem}`);
  return bytes;
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
  /** Time from TCP accept to a completed handshake, upgrade included (default 5 s). */
  handshakeTimeoutMs?: number;
  /** Connections not yet authenticated, over all addresses; more are answered 503 (default 128). */
  maxPendingHandshakes?: number;
  /** Connections not yet authenticated from one address (IPv6: one /64); more get 503 (default 8). */
  maxPendingPerAddress?: number;
}

export interface WsServer {
  readonly host: string;
  readonly port: number;
  /** ws://host:port */
  readonly url: string;
  /** Authenticated connections currently open. */
  readonly connections: number;
  /** TCP connections accepted and not yet authenticated. */
  readonly pending: number;
  /** Refusals so far: connections over a cap, failed handshakes, protocol violations. */
  readonly refusals: number;
  /** Closes every connection (1001) and stops listening. */
  close(): Promise<void>;
}

/**
 * What pending connections are counted under: an IPv4 address (IPv4-mapped IPv6 included) as it
 * is, an IPv6 address by its /64 (one host usually has a whole /64 to pick addresses from).
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown';
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (v4mapped) return v4mapped[1];
  const bare = address.split('%')[0];
  if (!isIPv6(bare)) return address;
  const halves = bare.split('::');
  const part = (s: string | undefined): string[] => (s === undefined || s === '' ? [] : s.split(':'));
  const left = part(halves[0]);
  const right = part(halves[1]);
  const last = right.length > 0 ? right[right.length - 1] : left[left.length - 1];
  const embeddedV4 = last !== undefined && last.includes('.') ? 1 : 0; // a dotted tail is two groups
  const groups = halves.length === 2 ? [...left, ...new Array<string>(Math.max(0, 8 - embeddedV4 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

function remoteOf(s: Socket): string {
  return s.remoteAddress?.includes(':') ? `[${s.remoteAddress}]:${s.remotePort}` : `${s.remoteAddress}:${s.remotePort}`;
}

/** A TCP connection from accept until it authenticates or goes. */
interface PendingConnection {
  readonly socket: Socket;
  /** addressKey of the peer: what the per-address cap counts. */
  readonly key: string;
  readonly remote: string;
  readonly timer: NodeJS.Timeout;
  /** Set once the WebSocket upgrade has happened: ends the handshake with a 1008 and a reason. */
  fail?: (reason: string) => void;
}

/** Answers a connection over a cap without reading its request, and closes it. */
function refuseSocket(socket: Socket, reason: string): void {
  const body = `ringvisor: ${reason}\n`;
  socket.on('error', () => {});
  socket.end(
    `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    () => socket.destroy(),
  );
}

/** What a listener's connections share while they authenticate. */
interface ListenerState {
  readonly opts: ListenOptions;
  readonly maxPayload: number;
  readonly refusals: RateLimitedLog;
  readonly log: Logger | undefined;
  /** Every link not yet closed, and those of them authenticated. */
  readonly links: Set<WsLink>;
  readonly established: Set<WsLink>;
  /** The connection is no longer pending: it authenticated, or it went. */
  settle(conn: PendingConnection): void;
}

/**
 * A connection upgraded to WebSocket: the challenge out, the peer's hello verified against the
 * cluster secret, its identity authorized, then the welcome and the link handed over (auth.ts).
 */
function authenticate(ws: WebSocket, conn: PendingConnection, s: ListenerState): void {
  const { maxPayload, refusals, log, links, established, settle } = s;
  const secret = s.opts.secret;
  const { key, remote } = conn;
  const link = new WsLink(ws, {
    name: `ws ${remote}`,
    maxPayload,
    highWaterMark: s.opts.highWaterMark,
    lowWaterMark: s.opts.lowWaterMark,
    maxQueuedBytes: s.opts.maxQueuedBytes,
    log: log?.child({ peer: remote }),
    refusals,
    peerAddress: key,
  });
  links.add(link);
  const challenge = createChallenge();
  let state: 'hello' | 'authorizing' | 'done' = 'hello';

  const fail = (reason: string): void => {
    if (link.closed) return;
    refusals.warn(key, { peer: remote, reason }, `ws handshake failed: ${reason}`);
    link.close(reason, CloseCode.policy);
  };
  conn.fail = fail;
  link.onClose(() => {
    settle(conn);
    links.delete(link);
    established.delete(link);
  });

  const admit = (identity: Identity, welcome: HandshakeMessage): void => {
    state = 'done';
    settle(conn);
    internals.setGate(link, null);
    try {
      // Before the welcome leaves: the peer may send full-size frames as soon as it has it.
      internals.setReceiveLimit(link, maxPayload);
    } catch (e) {
      log?.error({ peer: remote, err: e }, 'ws: cannot raise the frame limit after the handshake');
      link.close('internal error', CloseCode.internalError);
      return;
    }
    internals.setIdentity(link, identity, `${identity.role}/${identity.domid}@${remote}`);
    internals.sendHandshake(link, welcome);
    established.add(link);
    try {
      s.opts.onConnection(link, identity);
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
      verified = verifyHello(secret, challenge, value, s.opts.domainHost);
    } catch (e) {
      return fail(e instanceof ProtocolError ? e.message : 'malformed hello');
    }
    const { identity, hello } = verified;
    const welcome = createWelcome(secret, challenge, hello, s.opts.domainHost);
    const refuse = (): void => fail(`not authorized as ${identity.role} ${identity.domid}`);
    let verdict: boolean | Promise<boolean>;
    try {
      verdict = s.opts.authorize(identity);
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
}

export async function listen(opts: ListenOptions): Promise<WsServer> {
  checkSecret(opts.secret);
  const host = opts.host ?? '127.0.0.1';
  const maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const maxPending = opts.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
  const maxPerAddress = opts.maxPendingPerAddress ?? DEFAULT_MAX_PENDING_PER_ADDRESS;
  for (const [k, v] of Object.entries({ handshakeTimeoutMs, maxPendingHandshakes: maxPending, maxPendingPerAddress: maxPerAddress }))
    if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidArgumentError(`listen: ${k} must be a positive integer, got ${v}`);
  const log = opts.log;
  const refusals = new RateLimitedLog({ log, what: 'refusals' });
  const pending = new Map<Socket, PendingConnection>();
  const pendingByKey = new Map<string, number>();
  const links = new Set<WsLink>();
  const established = new Set<WsLink>();
  let closing = false;
  let closed: Promise<void> | undefined;

  // Our own HTTP server (rather than ws's) so that close() can cut every connection, including
  // half-sent HTTP requests, and so that every TCP connection is counted from accept.
  const http = createServer({ maxHeaderSize: 4096 }, (_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end('ringvisor: WebSocket upgrade required\n');
  });
  http.headersTimeout = 10_000;
  http.requestTimeout = 10_000;
  // Frames stay handshake-sized until a connection authenticates (raised in admit below).
  const wss = new WebSocketServer({ server: http, maxPayload: Math.min(PRE_AUTH_MAX_PAYLOAD, maxPayload), perMessageDeflate: false, clientTracking: false });
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

  /** The connection is no longer pending: it authenticated, or it went. */
  const settle = (conn: PendingConnection): void => {
    if (!pending.delete(conn.socket)) return;
    clearTimeout(conn.timer);
    const n = (pendingByKey.get(conn.key) ?? 1) - 1;
    if (n <= 0) pendingByKey.delete(conn.key);
    else pendingByKey.set(conn.key, n);
  };
  const listener: ListenerState = { opts, maxPayload, refusals, log, links, established, settle };

  http.on('connection', (socket: Socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    const key = addressKey(socket.remoteAddress);
    const remote = remoteOf(socket);
    const fromKey = pendingByKey.get(key) ?? 0;
    const over =
      fromKey >= maxPerAddress ? `too many pending connections from ${key}` : pending.size >= maxPending ? 'too many pending connections' : undefined;
    if (over !== undefined) {
      refusals.warn(key, { peer: remote, pending: pending.size, fromAddress: fromKey }, `ws: refusing a connection: ${over}`);
      refuseSocket(socket, over);
      return;
    }
    const conn: PendingConnection = {
      socket,
      key,
      remote,
      timer: setTimeout(() => {
        if (conn.fail !== undefined) return conn.fail('authentication timeout');
        refusals.warn(key, { peer: remote }, `ws: no WebSocket upgrade within ${handshakeTimeoutMs} ms, closing`);
        socket.destroy();
      }, handshakeTimeoutMs),
    };
    conn.timer.unref();
    pending.set(socket, conn);
    pendingByKey.set(key, fromKey + 1);
    socket.once('close', () => settle(conn));
  });

  wss.on('connection', (ws, req) => {
    const conn = pending.get(req.socket);
    if (closing) {
      ws.close(CloseCode.goingAway, 'server shutting down');
      return;
    }
    if (conn === undefined) {
      // Timed out or refused while the upgrade was under way.
      ws.terminate();
      return;
    }
    authenticate(ws, conn, listener);
  });

  return {
    host,
    port,
    url: `ws://${host.includes(':') ? `[${host}]` : host}:${port}`,
    get connections() {
      return established.size;
    },
    get pending() {
      return pending.size;
    },
    get refusals() {
      return refusals.total;
    },
    close() {
      closed ??= shutdown();
      return closed;
    },
  };

  async function shutdown(): Promise<void> {
    closing = true;
    const open = [...links];
    for (const l of open) l.close('server shutting down', CloseCode.goingAway);
    await Promise.all(
      open.map((l) =>
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
    for (const conn of pending.values()) clearTimeout(conn.timer);
    refusals.close();
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
  const maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  const url = opts.url;
  const deadline = Date.now() + timeoutMs;
  // Connections a listener answers 503 (too many pending from our address, or in all) are tried
  // again, backing off, within the same budget: a burst of runtimes starting together gets in.
  const busy = new WeakSet<Error>();

  const attempt = (budgetMs: number): Promise<WsLink> => new Promise<WsLink>((resolve, reject) => {
    let settled = false;
    let link: WsLink | undefined;
    let ws: WebSocket;
    try {
      // Handshake-sized frames only until the server has proven it knows the secret.
      ws = new WebSocket(url, {
        perMessageDeflate: false,
        maxPayload: Math.min(PRE_AUTH_MAX_PAYLOAD, maxPayload),
        handshakeTimeout: budgetMs,
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
      budgetMs,
    );
    ws.on('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      const err = new ClosedError(`${url}: the server answered ${res.statusCode ?? '?'} ${res.statusMessage ?? ''}`.trimEnd());
      if (res.statusCode === 503) busy.add(err);
      fail(err);
    });
    // Once the link exists it reports errors itself (with the reason it closed for) via onClose.
    ws.on('error', (e) => {
      if (link !== undefined) return;
      const err = new ClosedError(`${url}: ${e.message}`, { cause: e });
      // A listener over its cap may reset the connection before its 503 is read.
      if ((e as NodeJS.ErrnoException).code === 'ECONNRESET' || e.message === 'socket hang up') busy.add(err);
      fail(err);
    });
    ws.once('close', (code, reason) => {
      if (link === undefined) fail(new ClosedError(`${url}: connection closed (${code}${reason.byteLength ? `: ${reason.toString()}` : ''})`));
    });
    ws.once('open', () => {
      if (settled) return;
      const l = new WsLink(ws, {
        name: `ws ${url}`,
        maxPayload,
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
        else if (info?.byPeer === false && info.code !== CloseCode.internalError) fail(new ProtocolError(`${url}: handshake failed: ${info.reason}`));
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
            // Raised before the next frame's header is read: frames after the welcome may be big.
            internals.setReceiveLimit(l, maxPayload);
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

  for (let tries = 0; ; tries++) {
    try {
      return await attempt(Math.max(1, deadline - Date.now()));
    } catch (e) {
      const backoffMs = Math.min(1000, 50 * 2 ** tries) * (0.5 + Math.random() / 2);
      if (!(e instanceof Error) || !busy.has(e) || Date.now() + backoffMs >= deadline) throw e;
      opts.log?.debug({ url, backoffMs }, 'ws: server busy (503), trying again');
      await new Promise((r) => setTimeout(r, backoffMs));
    }
  }
}

/**
 * `connect`, tried again while the listener is not ready for this identity yet: dom0 admits a
 * guest only once it has built the domain, and a hardware simulator only while it has none
 * attached, so a runtime started beside its dom0 (compose, or a restart) is refused or finds no
 * listener at first. Retries every 500 ms until `untilMs` (RINGVISOR_CONNECT_TIMEOUT_MS, 120 s by
 * default), as a restarted container would; a wrong key is never retried.
 */
export async function connectUntilAdmitted(opts: ConnectOptions, untilMs = Number(process.env.RINGVISOR_CONNECT_TIMEOUT_MS ?? 120_000)): Promise<WsLink> {
  const deadline = Date.now() + untilMs;
  for (;;) {
    try {
      return await connect(opts);
    } catch (e) {
      const why = (e as Error).message;
      const retriable = /not authorized|ECONNREFUSED|connect/i.test(why) && !/authentication failed/.test(why);
      if (!retriable || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
