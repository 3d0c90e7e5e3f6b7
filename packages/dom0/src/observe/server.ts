/**
 * The control endpoint: dom0's one door for watching and steering a running cluster, in both
 * transports. node:http serves the dashboard, JSON views and Prometheus `/metrics`; WebSocket
 * upgrades carry the live snapshot stream and trace streams.
 *
 * Authentication (DESIGN §4a). Reads need the read token — `Authorization: Bearer <token>`, or
 * the HttpOnly SameSite=Strict cookie set when a browser opens the printed `/?token=…` URL.
 * Actions need the admin secret: the request carries an HMAC of its method, path, body and a
 * timestamp (x-ringvisor-signature); cookies never authorise an action, so no other page can
 * forge one. Every rejection names what is missing and how to get it.
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
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  ADMIN_SIGNATURE_HEADER,
  TRACE_KINDS,
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

export interface ControlServerOptions {
  host: string;
  port: number;
  readToken: string;
  adminSecret: Uint8Array;
  log: Logger;
  /** Fault injection for `ringvisor fault` (admin). */
  injector?: FaultInjector;
}

const DASHBOARD_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));
const require = createRequire(import.meta.url);
const VENDOR: Record<string, string> = {
  'uPlot.iife.min.js': require.resolve('uplot/dist/uPlot.iife.min.js'),
  'uPlot.min.css': require.resolve('uplot/dist/uPlot.min.css'),
};
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml' };
const COOKIE = 'rv_token';
const MAX_BODY = 16 * 1024;
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
  private liveListener?: () => void;

  private readonly remote: RemoteTraceHub;

  constructor(
    readonly obs: Observatory,
    readonly opts: ControlServerOptions,
  ) {
    this.metrics = createMetricsRegistry(obs);
    this.remote = new RemoteTraceHub(obs.hosts, opts.log);
  }

  get url(): string {
    const a = this.server?.address();
    if (!a || typeof a === 'string') throw new Error('control endpoint is not listening');
    const host = this.opts.host === '0.0.0.0' ? '127.0.0.1' : this.opts.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`;
  }

  /** The URL a person opens: carries the read token once; the page then keeps it in a cookie. */
  get dashboardUrl(): string {
    return `${this.url}/?token=${this.opts.readToken}`;
  }

  async listen(): Promise<void> {
    const server = createServer((req, res) => void this.route(req, res).catch((e) => this.fail(res, 500, (e as Error).message)));
    this.server = server;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
    server.on('upgrade', (req, socket, head) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (!this.canRead(req)) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
        return;
      }
      if (url.pathname !== '/api/live' && url.pathname !== '/api/trace') {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      const streams = [...this.sockets].filter((x) => this.traceSockets.has(x)).length;
      if (url.pathname === '/api/trace' && streams >= MAX_TRACE_STREAMS) {
        socket.end(`HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nat most ${MAX_TRACE_STREAMS} trace streams at a time\r\n`);
        return;
      }
      if (this.sockets.size >= MAX_VIEWERS) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
        return;
      }
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
    for (const ws of this.sockets) ws.terminate();
    this.wss?.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections();
  }

  private canRead(req: IncomingMessage): boolean {
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ') && tokensEqual(auth.slice(7).trim(), this.opts.readToken)) return true;
    const cookie = parseCookies(req.headers.cookie)[COOKIE];
    return cookie !== undefined && tokensEqual(cookie, this.opts.readToken);
  }

  private fail(res: ServerResponse, status: number, message: string): void {
    if (res.headersSent) return void res.destroy();
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ error: message }) + '\n');
  }

  private json(res: ServerResponse, body: unknown): void {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    // Decoded ring entries carry u64 fields as exact bigints: they leave as decimal strings.
    res.end(JSON.stringify(body, bigintAsDecimal));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    if (req.method === 'GET' && path === '/' && url.searchParams.has('token')) {
      const token = url.searchParams.get('token') ?? '';
      if (!tokensEqual(token, this.opts.readToken)) return this.fail(res, 401, 'wrong read token: open the dashboard URL `ringvisor up` printed');
      res.writeHead(303, { location: '/', 'set-cookie': `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/` });
      return void res.end();
    }
    if (req.method === 'POST') return this.action(req, res, path);
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.fail(res, 405, `${req.method} is not served here`);
    if (!this.canRead(req) && path === '/') {
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
    res.writeHead(200, { 'content-type': TYPES[ext] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
    res.end(body);
  }

  /** Admin actions: signed with the cluster secret; a bad request changes nothing. */
  private async action(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const body = await readBody(req, MAX_BODY).catch(() => undefined);
    if (body === undefined) return this.fail(res, 413, `request body over ${MAX_BODY} bytes`);
    const sig = req.headers[ADMIN_SIGNATURE_HEADER];
    if (!verifyAdminRequest(this.opts.adminSecret, typeof sig === 'string' ? sig : undefined, 'POST', req.url ?? path, body))
      return this.fail(res, 403, 'actions need the admin secret: sign the request (ringvisor does, with the cluster secret from RINGVISOR_SECRET or --secret-file)');
    let params: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(body);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
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
      if (!TRACE_KINDS.includes(k as TraceKind)) throw new Error(`unknown event kind "${k}" (kinds: ${TRACE_KINDS.join(', ')})`);
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
      if (!d) throw new Error(`no domain named "${domain}"`);
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

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        reject(new Error('too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
