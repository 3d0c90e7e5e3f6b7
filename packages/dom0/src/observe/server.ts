/**
 * The control endpoint: dom0's one door for watching and steering a running cluster, in both
 * transports. node:http serves the dashboard, JSON views and Prometheus `/metrics`; WebSocket
 * upgrades carry the live snapshot stream and trace streams.
 *
 * Authentication. Reads need the read token — `Authorization: Bearer <token>`, or the HttpOnly
 * SameSite=Strict cookie set when a browser opens the printed `/?token=…` URL. Actions need the
 * admin secret: the request carries a single-use HMAC of its method, path, body length and body
 * digest, a nonce and a timestamp (signAdminRequest); cookies never authorise an action, so no
 * other page can forge one. Every rejection names what is missing and how to get it.
 *
 * Exposure rules (docs/observe.md, "Security"): short header / request / keep-alive timeouts, a
 * connection cap with a share per remote address, an action's signature checked from its headers
 * before any body byte is read, then at most Content-Length (≤ 16 KiB) read and checked against
 * the signed digest; refusals of unread bodies answer completely and drain a bounded amount so
 * the client sees the status rather than a reset; WebSocket upgrades only from the page's own
 * origin (or, without an Origin, with a bearer token); security headers on every response;
 * refusals logged at a bounded rate with counts.
 *
 *   GET  /                      dashboard            GET /api/snapshot   ClusterSnapshot
 *   GET  /metrics               Prometheus           GET /api/ring?id=   RingEntries
 *   GET  /api/direct/faults     the IOMMU fault records of every host
 *   WS   /api/live              a snapshot per second
 *   WS   /api/trace?kinds=&host=&domain=&device=&ring=&frames=1   trace events, batched
 *   POST /api/backend/pause|resume  {domain, device}  (admin)
 *   POST /api/direct/reclaim|assign {domain, device}  (admin): a direct device's function
 *   GET  /api/svio              every SV-IO VIF: bound guest and device, core, weight, rate, counters
 *   POST /api/svio/qos {domain, device, weight, rate?}  (admin): a VIF's QoS (the management API)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  DomainError,
  InvalidArgumentError,
  ControlEndpointError,
  ADMIN_CONTENT_DIGEST_HEADER,
  ADMIN_SIGNATURE_HEADER,
  ADMIN_SIGNATURE_SKEW_MS,
  AdminNonceLedger,
  TRACE_KINDS,
  adminContentDigest,
  TraceBuffer,
  bigintAsDecimal,
  matchesFilter,
  serializeTrace,
  subscribeTrace,
  tokensEqual,
  verifyAdminRequest,
  type Logger,
  type TraceFilter,
  type TraceKind,
} from '@ringvisor/shared';
import type { Registry } from 'prom-client';
import type { Observatory } from './observatory.js';
import { createMetricsRegistry } from './metrics.js';
import { RemoteTraceHub } from './remote-trace.js';
import type { FaultInjector } from '../faults/injector.js';
import { parseFault } from '../faults/plan.js';
import { RefusalLog } from './refusal-log.js';

export interface ControlServerOptions {
  host: string;
  port: number;
  readToken: string;
  adminSecret: Uint8Array;
  log: Logger;
  /** Fault injection for `ringvisor fault` (admin). */
  injector?: FaultInjector;
  /** Overrides of CONTROL_LIMITS (tests use short timeouts). */
  limits?: Partial<ControlServerLimits>;
}

/** What one client may cost the endpoint. */
export interface ControlServerLimits {
  /** From connection (or the previous response) to the request's complete headers. */
  headersTimeoutMs: number;
  /** From connection to the complete request, body included. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** Open connections (HTTP and WebSocket) at a time; more are dropped on accept. */
  maxConnections: number;
  /** Open connections from one remote address, so one peer cannot take every slot. */
  maxConnectionsPerAddress: number;
  /** Largest action body (Content-Length). */
  maxBodyBytes: number;
  /** After refusing a request whose body was not read: at most this much is drained… */
  drainBytes: number;
  /** …for at most this long, before the connection is closed. */
  drainMs: number;
}

export const CONTROL_LIMITS: ControlServerLimits = {
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 256,
  maxConnectionsPerAddress: 64,
  maxBodyBytes: 16 * 1024,
  drainBytes: 1 << 20,
  drainMs: 2_000,
};

/**
 * On every response. The dashboard is its own files only (no inline script or style, no
 * third-party origin); its WebSocket and fetches go to this origin. No page may frame it.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const DASHBOARD_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));
const require = createRequire(import.meta.url);
const VENDOR: Record<string, string> = {
  'uPlot.iife.min.js': require.resolve('uplot/dist/uPlot.iife.min.js'),
  'uPlot.min.css': require.resolve('uplot/dist/uPlot.min.css'),
};
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml' };
const COOKIE = 'rv_token';
/** How often a trace stream flushes its batch to the socket. */
const TRACE_FLUSH_MS = 100;
/** Streams each cost dom0 a subscriber on the data path: a bounded number at a time. */
const MAX_TRACE_STREAMS = 8;
const MAX_VIEWERS = 64;

export class ControlServer {
  private server?: Server;
  private wss?: WebSocketServer;
  private readonly metrics: Registry;
  private readonly sockets = new Set<WebSocket>();
  private readonly traceSockets = new WeakSet<WebSocket>();
  private readonly remote: RemoteTraceHub;
  readonly limits: ControlServerLimits;
  /** Nonces of accepted admin signatures: each signature acts once. */
  private readonly adminNonces = new AdminNonceLedger();
  readonly refusals: RefusalLog;
  private readonly connectionsPerAddress = new Map<string, number>();
  /** Sockets with a response under way: a client error there must not write a raw answer into it. */
  private readonly responding = new WeakSet<Socket | Duplex>();

  constructor(
    readonly obs: Observatory,
    readonly opts: ControlServerOptions,
  ) {
    this.metrics = createMetricsRegistry(obs);
    this.remote = new RemoteTraceHub(obs.hosts, opts.log);
    this.limits = { ...CONTROL_LIMITS, ...opts.limits };
    this.refusals = new RefusalLog(opts.log);
  }

  get url(): string {
    const a = this.server?.address();
    if (!a || typeof a === 'string') throw new ControlEndpointError('control endpoint is not listening');
    const host = this.opts.host === '0.0.0.0' ? '127.0.0.1' : this.opts.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`;
  }

  /** The URL a person opens: carries the read token once; the page then keeps it in a cookie. */
  get dashboardUrl(): string {
    return `${this.url}/?token=${this.opts.readToken}`;
  }

  async listen(): Promise<void> {
    const l = this.limits;
    const server = createServer({
      headersTimeout: l.headersTimeoutMs,
      requestTimeout: l.requestTimeoutMs,
      keepAliveTimeout: l.keepAliveTimeoutMs,
      // Node checks both timeouts on this period (30 s by default, which let slow headers stay ~90 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(l.headersTimeoutMs / 4))),
    });
    const handle = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
      this.responding.add(req.socket);
      res.once('finish', () => this.responding.delete(req.socket));
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      void this.route(req, res, expectsContinue).catch((e) => this.fail(res, 500, (e as Error).message));
    };
    server.on('request', (req: IncomingMessage, res: ServerResponse) => handle(req, res, false));
    // `Expect: 100-continue`: the client waits for our go before sending the body; an action
    // gets it only once its signature holds (see action()).
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => handle(req, res, true));
    server.maxConnections = l.maxConnections;
    server.on('drop', (d?: { remoteAddress?: string }) => this.refusals.refused('connection-cap', { remote: d?.remoteAddress }));
    server.on('connection', (socket: Socket) => this.admitConnection(socket));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket));
    this.server = server;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const origin = this.upgradeOriginRefusal(req);
      if (origin) return this.refuseUpgrade(req, socket, origin.status, origin.reason, origin.message);
      if (!this.canRead(req)) return this.refuseUpgrade(req, socket, 401, 'read-token', 'read token required');
      if (url.pathname !== '/api/live' && url.pathname !== '/api/trace') return this.refuseUpgrade(req, socket, 404, 'not-found', `nothing at ${url.pathname}`);
      const streams = [...this.sockets].filter((x) => this.traceSockets.has(x)).length;
      if (url.pathname === '/api/trace' && streams >= MAX_TRACE_STREAMS)
        return this.refuseUpgrade(req, socket, 503, 'trace-streams', `at most ${MAX_TRACE_STREAMS} trace streams at a time`);
      if (this.sockets.size >= MAX_VIEWERS) return this.refuseUpgrade(req, socket, 503, 'viewers', `at most ${MAX_VIEWERS} viewers at a time`);
      this.wss!.handleUpgrade(req, socket, head, (ws) => {
        if (url.pathname === '/api/trace') this.traceSockets.add(ws);
        this.sockets.add(ws);
        ws.once('close', () => this.sockets.delete(ws));
        // Viewers only listen: anything they send closes their connection, nobody else's.
        ws.on('message', () => ws.close(1008, 'this endpoint takes no messages'));
        if (url.pathname === '/api/live') this.serveLive(ws);
        else this.serveTrace(ws, url.searchParams);
      });
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', rej);
        res();
      });
    });
  }

  async close(): Promise<void> {
    this.refusals.close();
    for (const ws of this.sockets) ws.terminate();
    this.wss?.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections();
  }

  /** One remote address gets at most its share of the connections (the total is server.maxConnections). */
  private admitConnection(socket: Socket): void {
    const addr = socket.remoteAddress ?? '?';
    const n = (this.connectionsPerAddress.get(addr) ?? 0) + 1;
    if (n > this.limits.maxConnectionsPerAddress) {
      this.refusals.refused('connections-per-address', { remote: addr });
      socket.destroy();
      return;
    }
    this.connectionsPerAddress.set(addr, n);
    socket.once('close', () => {
      const left = (this.connectionsPerAddress.get(addr) ?? 1) - 1;
      if (left > 0) this.connectionsPerAddress.set(addr, left);
      else this.connectionsPerAddress.delete(addr);
    });
  }

  /**
   * Malformed requests and timeouts (slow headers or body): answer when no response is under way
   * on the socket (as Node does when nobody listens), count it, close.
   */
  private clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const reason = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? 'headers-too-large' : 'bad-request';
    if (err.code !== 'ECONNRESET') this.refusals.refused(reason, { remote: (socket as Socket).remoteAddress, code: err.code });
    if (socket.writable && !this.responding.has(socket)) {
      const status = reason === 'timeout' ? '408 Request Timeout' : reason === 'headers-too-large' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      socket.write(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  }

  private bearerReads(req: IncomingMessage): boolean {
    const auth = req.headers.authorization;
    return auth?.startsWith('Bearer ') === true && tokensEqual(auth.slice(7).trim(), this.opts.readToken);
  }

  private canRead(req: IncomingMessage): boolean {
    if (this.bearerReads(req)) return true;
    const cookie = parseCookies(req.headers.cookie)[COOKIE];
    return cookie !== undefined && tokensEqual(cookie, this.opts.readToken);
  }

  /**
   * Who may open a WebSocket. A browser always sends Origin on an upgrade, and would attach the
   * dashboard's cookie to a connection any page opens: so an Origin must be this endpoint's own
   * (scheme http/https, host:port equal to the Host header). Without an Origin the client is not
   * a browser, and must bring the bearer token (the cookie is a browser's credential).
   */
  private upgradeOriginRefusal(req: IncomingMessage): { status: number; reason: string; message: string } | undefined {
    const origin = req.headers.origin;
    if (origin === undefined) {
      if (this.bearerReads(req)) return undefined;
      return { status: 401, reason: 'read-token', message: 'read token required: a client without an Origin sends "Authorization: Bearer <token>"' };
    }
    const host = normalHost(req.headers.host);
    let o: URL | undefined;
    try {
      o = new URL(origin);
    } catch {
      o = undefined;
    }
    if (!o || (o.protocol !== 'http:' && o.protocol !== 'https:') || host === undefined || o.host.toLowerCase() !== host)
      return { status: 403, reason: 'foreign-origin', message: `WebSocket from origin ${JSON.stringify(origin.slice(0, 100))} refused: only the dashboard's own origin may connect` };
    return undefined;
  }

  private refuseUpgrade(req: IncomingMessage, socket: Duplex, status: number, reason: string, message: string): void {
    this.refusals.refused(reason, { remote: req.socket.remoteAddress, path: req.url?.slice(0, 200), upgrade: true });
    const body = message + '\n';
    const text = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable' }[status] ?? 'Refused';
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  private fail(res: ServerResponse, status: number, message: string): void {
    if (res.headersSent) return void res.destroy();
    if (status === 401 || status === 403) this.refusals.refused(status === 401 ? 'read-token' : 'forbidden', { remote: res.req.socket.remoteAddress, path: res.req.url?.slice(0, 200) });
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ error: message }) + '\n');
  }

  /**
   * Refuse a request whose body was not (fully) read. Closing at once would reset a client still
   * sending its body, and a reset can destroy our answer before the client reads it. So: the
   * whole answer goes out now (Content-Length, `Connection: close`), what the client still sends
   * is discarded up to drainBytes / drainMs, and only then is the connection closed.
   */
  private refuseUnread(req: IncomingMessage, res: ServerResponse, status: number, reason: string, message: string, headers: Record<string, string> = {}): void {
    this.refusals.refused(reason, { remote: req.socket.remoteAddress, path: req.url?.slice(0, 200), contentLength: req.headers['content-length'] });
    const body = JSON.stringify({ error: message }) + '\n';
    res.writeHead(status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.write(body);
    let drained = 0;
    const done = () => {
      clearTimeout(timer);
      if (!res.writableEnded) res.end();
    };
    const timer = setTimeout(done, this.limits.drainMs);
    timer.unref();
    req.on('data', (c: Buffer) => {
      drained += c.length;
      if (drained > this.limits.drainBytes) done();
    });
    req.once('end', done);
    req.once('error', done);
    res.once('close', () => clearTimeout(timer));
  }

  private json(res: ServerResponse, body: unknown): void {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    // Decoded ring entries carry u64 fields as exact bigints: they leave as decimal strings.
    res.end(JSON.stringify(body, bigintAsDecimal));
  }

  private async route(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    if (req.method === 'POST') return this.action(req, res, path, expectsContinue);
    if (expectsContinue) res.writeContinue();
    if (req.method === 'GET' && path === '/' && url.searchParams.has('token')) {
      const token = url.searchParams.get('token') ?? '';
      if (!tokensEqual(token, this.opts.readToken)) return this.fail(res, 401, 'wrong read token: open the dashboard URL `ringvisor up` printed');
      res.writeHead(303, { location: '/', 'set-cookie': `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/` });
      return void res.end();
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.fail(res, 405, `${req.method} is not served here`);
    if (!this.canRead(req) && path === '/') {
      this.refusals.refused('read-token', { remote: req.socket.remoteAddress, path: '/' });
      res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' });
      return void res.end('<!doctype html><title>ringvisor</title><p>This dashboard needs its read token: open the URL <code>ringvisor up</code> printed (it ends in <code>/?token=…</code>).</p>\n');
    }
    if (!this.canRead(req))
      return this.fail(res, 401, 'read token required: send "Authorization: Bearer <token>" (ringvisor derives it from the cluster secret) or open the URL `ringvisor up` printed');
    if (path === '/') return this.file(res, join(DASHBOARD_DIR, 'index.html'));
    if (path.startsWith('/dashboard/')) {
      const name = path.slice('/dashboard/'.length);
      if (!/^[\w-]+(\.[\w-]+)*$/.test(name)) return this.fail(res, 404, 'no such file');
      return this.file(res, join(DASHBOARD_DIR, name));
    }
    if (path.startsWith('/vendor/')) {
      const f = VENDOR[path.slice('/vendor/'.length)];
      return f ? this.file(res, f) : this.fail(res, 404, 'no such file');
    }
    if (path === '/api/snapshot') return this.json(res, this.obs.snapshot());
    if (path === '/api/direct/faults') {
      // The IOMMU's fault records of every host (hw.iommu.faults, the management API).
      const hosts = await Promise.all(this.obs.hosts.map(async (h) => ({ host: h.config.name, ...(await h.iommuFaultLog().catch(() => ({ faults: [], counters: {} }))) })));
      return this.json(res, hosts);
    }
    if (path === '/api/svio') {
      // Every SV-IO VIF of every host (hw.svio.list, the engine's management API).
      const rows = await Promise.all(this.obs.hosts.map((h) => h.svioVifs().catch(() => [])));
      return this.json(res, rows.flat());
    }
    if (path === '/api/ring') {
      const id = url.searchParams.get('id') ?? '';
      const entries = this.obs.ringEntries(id);
      return entries ? this.json(res, entries) : this.fail(res, 404, `no ring ${JSON.stringify(id)} (ids look like host/domain/device/ring; see /api/snapshot)`);
    }
    if (path === '/metrics') {
      const body = await this.metrics.metrics();
      res.writeHead(200, { 'content-type': this.metrics.contentType });
      return void res.end(body);
    }
    this.fail(res, 404, `nothing at ${path}`);
  }

  private async file(res: ServerResponse, path: string): Promise<void> {
    let body: Buffer;
    try {
      body = await readFile(path);
    } catch {
      return this.fail(res, 404, 'no such file');
    }
    const ext = path.slice(path.lastIndexOf('.'));
    res.writeHead(200, { 'content-type': TYPES[ext] ?? 'application/octet-stream' });
    res.end(body);
  }

  /**
   * Admin actions: signed with the cluster secret; a bad request changes nothing. Everything up
   * to the body is decided from the headers (length, signature, freshness, single use, size), so
   * a refused request costs no body read; then at most Content-Length bytes are read and must
   * match the signed digest.
   */
  private async action(req: IncomingMessage, res: ServerResponse, path: string, expectsContinue: boolean): Promise<void> {
    const lengthHeader = req.headers['content-length'];
    if (lengthHeader === undefined || req.headers['transfer-encoding'] !== undefined)
      return this.refuseUnread(req, res, 411, 'length-required', 'an action needs a Content-Length (its signature covers it), not a chunked body');
    const contentLength = Number(lengthHeader);
    const verdict = verifyAdminRequest(this.opts.adminSecret, headerValue(req, ADMIN_SIGNATURE_HEADER), {
      method: 'POST',
      path: req.url ?? path,
      contentLength,
      contentSha256: headerValue(req, ADMIN_CONTENT_DIGEST_HEADER) ?? '',
    });
    if (!verdict.ok) {
      const why = { unsigned: 'it is not signed', malformed: 'its signature headers are malformed', stale: `its signature is not within ${ADMIN_SIGNATURE_SKEW_MS / 1000} s of this server's clock`, forged: 'its signature does not match it' }[verdict.reason];
      return this.refuseUnread(req, res, 403, `admin-${verdict.reason}`, `actions need the admin secret, and ${why}: sign each request (ringvisor does, with the cluster secret from RINGVISOR_SECRET or --secret-file)`);
    }
    const admitted = this.adminNonces.admit(verdict.nonce, verdict.timestamp);
    if (admitted === 'replayed') return this.refuseUnread(req, res, 403, 'admin-replayed', 'replayed: this signed request was already accepted once; sign each request anew');
    if (admitted === 'full') return this.refuseUnread(req, res, 503, 'admin-busy', 'too many admin requests in the signature window; retry shortly', { 'retry-after': '5' });
    const max = this.limits.maxBodyBytes;
    if (contentLength > max) return this.refuseUnread(req, res, 413, 'body-too-large', `request body of ${contentLength} bytes is over the ${max}-byte limit`);
    if (expectsContinue) res.writeContinue();
    const raw = await readBody(req, contentLength);
    if (raw === undefined) return this.fail(res, 400, 'the request body ended early or was longer than its Content-Length');
    if (!tokensEqual(adminContentDigest(raw), headerValue(req, ADMIN_CONTENT_DIGEST_HEADER) ?? ''))
      return this.fail(res, 400, `the body does not match its ${ADMIN_CONTENT_DIGEST_HEADER}`);
    const body = raw.toString('utf8');
    let params: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(body);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new InvalidArgumentError('not an object');
      params = parsed as Record<string, unknown>;
    } catch {
      return this.fail(res, 400, 'body must be a JSON object');
    }
    if (path.startsWith('/api/fault/')) return this.faultAction(res, path, params);
    if (path.startsWith('/api/direct/')) return this.directAction(res, path, params);
    if (path === '/api/svio/qos') return this.svioQos(res, params);
    const m = /^\/api\/backend\/(pause|resume)$/.exec(path);
    if (!m) return this.fail(res, 404, `no action at ${path}`);
    if (typeof params.domain !== 'string' || typeof params.device !== 'string') return this.fail(res, 400, 'body must be {"domain": NAME, "device": "vbd0"|"vif0"|…}');
    const found = this.obs.findBackend(params.domain, params.device);
    if (!found) return this.fail(res, 404, `no backend for ${params.domain}/${params.device}`);
    if (m[1] === 'pause') found.backend.pause();
    else found.backend.resume();
    this.opts.log.info({ domain: params.domain, device: params.device, action: m[1] }, 'backend action');
    this.json(res, { ok: true, domain: params.domain, device: params.device, paused: found.backend.paused });
  }

  /** POST /api/direct/reclaim|assign {domain, device}: `ringvisor direct`. */
  private async directAction(res: ServerResponse, path: string, params: Record<string, unknown>): Promise<void> {
    const m = /^\/api\/direct\/(reclaim|assign)$/.exec(path);
    if (!m) return this.fail(res, 404, `no action at ${path}`);
    const { domain, device } = params;
    if (typeof domain !== 'string' || typeof device !== 'string') return this.fail(res, 400, 'body must be {"domain": NAME, "device": "vif0"|"vbd51712"|…}');
    const host = this.obs.hosts.find((h) => h.guests.some((g) => g.config.name === domain));
    if (!host) return this.fail(res, 404, `no guest ${domain}`);
    try {
      const r = m[1] === 'reclaim' ? await host.reclaimFunction(domain, device) : await host.reattachFunction(domain, device);
      this.opts.log.warn({ domain, device, action: m[1], rid: r.rid }, 'direct device action by an admin');
      return this.json(res, { ok: true, domain, device, ...r });
    } catch (e) {
      return this.fail(res, 400, (e as Error).message);
    }
  }

  /** POST /api/svio/qos {domain, device, weight, rate?}: `ringvisor svio qos`. */
  private async svioQos(res: ServerResponse, params: Record<string, unknown>): Promise<void> {
    const { domain, device, weight, rate } = params;
    if (typeof domain !== 'string' || typeof device !== 'string' || typeof weight !== 'number' || (rate !== undefined && typeof rate !== 'string'))
      return this.fail(res, 400, 'body must be {"domain": NAME, "device": "vif0"|"vbd51712"|"cam0", "weight": 1..1000, "rate"?: "bytes,usec"}');
    const host = this.obs.hosts.find((h) => h.guests.some((g) => g.config.name === domain));
    if (!host) return this.fail(res, 404, `no guest ${domain}`);
    try {
      const r = await host.setVifQos(domain, device, { weight, ...(rate !== undefined ? { rate } : {}) });
      return this.json(res, { ok: true, domain, device, ...r, weight, ...(rate !== undefined ? { rate } : {}) });
    } catch (e) {
      return this.fail(res, 400, (e as Error).message);
    }
  }

  /** POST /api/fault/inject {fault}, /api/fault/heal {id?}, /api/fault/list {}: `ringvisor fault`. */
  private async faultAction(res: ServerResponse, path: string, params: Record<string, unknown>): Promise<void> {
    const inj = this.opts.injector;
    if (!inj) return this.fail(res, 404, 'this endpoint has no fault injector');
    const list = () => inj.activeFaults().map((a) => ({ key: a.key, id: a.spec.id, kind: a.spec.what.kind, host: a.host, who: a.spec.who, startedAt: a.startedAt }));
    try {
      if (path === '/api/fault/inject') {
        const spec = parseFault(params.fault, 'fault');
        const a = await inj.inject(spec);
        this.opts.log.warn({ id: spec.id, kind: spec.what.kind, who: spec.who }, 'fault injected by an admin');
        if (spec.when.for !== undefined) setTimeout(() => void a.heal(), spec.when.for * 1000).unref();
        return this.json(res, { ok: true, key: a.key, active: list() });
      }
      if (path === '/api/fault/heal') {
        const n = typeof params.id === 'string' ? await inj.heal(params.id) : await inj.healAll();
        return this.json(res, { ok: true, healed: n, active: list() });
      }
      if (path === '/api/fault/list') return this.json(res, { ok: true, active: list(), history: inj.history.slice(-200) });
    } catch (e) {
      return this.fail(res, 400, (e as Error).message);
    }
    this.fail(res, 404, `no action at ${path}`);
  }

  private serveLive(ws: WebSocket): void {
    const send = (s: unknown) => {
      // A viewer that cannot keep up skips snapshots rather than queueing them.
      if (ws.readyState === ws.OPEN && ws.bufferedAmount < 1 << 20) ws.send(JSON.stringify({ type: 'snapshot', snapshot: s }));
    };
    send(this.obs.snapshot());
    this.obs.on('snapshot', send);
    ws.once('close', () => this.obs.off('snapshot', send));
  }

  /**
   * A trace stream: subscribe to the asked kinds, filter, decode entries synchronously at the
   * publish site (the slots may be reused a moment later), batch, flush every 100 ms. A reader
   * slower than the cluster loses events (counted in `dropped`), never dom0's memory.
   */
  private serveTrace(ws: WebSocket, q: URLSearchParams): void {
    let filter: TraceFilter;
    try {
      filter = parseTraceFilter(q, this.obs);
    } catch (e) {
      ws.close(1008, (e as Error).message.slice(0, 120));
      return;
    }
    const frames = q.get('frames') === '1';
    const kinds = filter.kinds?.length ? filter.kinds : TRACE_KINDS.filter((k) => k !== 'frame' || frames);
    const buf = new TraceBuffer();
    const unsubscribe = subscribeTrace(kinds, (ev) => {
      if (matchesFilter(ev, filter)) buf.push(serializeTrace(ev, frames));
    });
    const timer = setInterval(() => {
      if (buf.length === 0 && buf.dropped === 0) return;
      const batch = buf.take();
      if (ws.bufferedAmount > 8 << 20) return; // the socket is backed up: this batch is dropped
      ws.send(JSON.stringify({ type: 'events', ...batch }));
    }, TRACE_FLUSH_MS);
    ws.send(JSON.stringify({ type: 'subscribed', kinds, filter }));
    this.remote.acquire();
    ws.once('close', () => {
      clearInterval(timer);
      unsubscribe();
      this.remote.release();
    });
  }
}

/** `kinds=ring.push,frame&host=h&domain=guest1|3&device=vif0&ring=tx` → a filter (domain names resolved). */
export function parseTraceFilter(q: URLSearchParams, obs: Observatory): TraceFilter {
  const f: TraceFilter = {};
  const kinds = q.get('kinds');
  if (kinds) {
    f.kinds = kinds.split(',').map((k) => {
      if (!TRACE_KINDS.includes(k as TraceKind)) throw new InvalidArgumentError(`unknown event kind "${k}" (kinds: ${TRACE_KINDS.join(', ')})`);
      return k as TraceKind;
    });
  }
  const host = q.get('host');
  if (host) f.host = host;
  const domain = q.get('domain');
  if (domain) {
    if (/^\d+$/.test(domain)) f.domid = Number(domain);
    else {
      const d = obs.snapshot().domains.find((x) => x.name === domain && (!host || x.host === host));
      if (!d) throw new DomainError(`no domain named "${domain}"`);
      f.domid = d.domid;
      f.host = d.host;
    }
  }
  const device = q.get('device');
  if (device) f.device = device;
  const ring = q.get('ring');
  if (ring) f.ring = ring;
  return f;
}

function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of header?.split(';') ?? []) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/** A header sent once (a repeated one is not accepted as either value). */
function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

/** The Host header as URL.host spells it (lowercase, default port dropped), or undefined. */
function normalHost(host: string | undefined): string | undefined {
  if (!host) return undefined;
  try {
    const u = new URL(`http://${host}`);
    return u.host.toLowerCase() === host.toLowerCase().replace(/:80$/, '') ? u.host.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The body, exactly `length` bytes (Node's parser stops the stream at Content-Length; the count
 * is checked again here). Undefined if it ends short or runs long. The request timeout bounds a
 * slow sender.
 */
function readBody(req: IncomingMessage, length: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n <= length) chunks.push(c);
    });
    req.once('end', () => resolve(n === length ? Buffer.concat(chunks) : undefined));
    req.once('error', () => resolve(undefined));
    req.once('close', () => resolve(n === length && req.complete ? Buffer.concat(chunks) : undefined));
  });
}
