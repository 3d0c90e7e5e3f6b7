/**
 * The control endpoint's exposure rules against a live ControlServer over real sockets: slow
 * headers and slow bodies are cut off by the server's own timeouts, an action's signature is
 * judged from its headers before any body is read, oversized bodies get a 413 a real client
 * reads, a signed action is accepted once, WebSocket upgrades only from the page's own origin,
 * security headers on every response, per-address connection shares, and refusals logged at a
 * bounded rate. Each test's server and sockets are closed when it ends, pass or fail.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { WebSocket } from 'ws';
import { ADMIN_SIGNATURE_HEADER, deriveReadToken, signAdminRequest } from '@ringvisor/shared';
import { Observatory } from './observatory.js';
import { ControlServer, CONTROL_LIMITS, type ControlServerLimits } from './server.js';
import type { FaultInjector } from '../faults/injector.js';
import { postAction } from '../toolstack/cli/endpoint.js';

const secret = new Uint8Array(randomBytes(32));
const token = deriveReadToken(secret);
const ACTION = '/api/fault/list';

/** Just what `/api/fault/list` reads: an injector with nothing active. */
const idleInjector = { activeFaults: () => [], history: [] } as unknown as FaultInjector;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Started {
  server: ControlServer;
  port: number;
  url: string;
  /** The warning lines the server logged. */
  logLines: string[];
}

async function start(limits: Partial<ControlServerLimits> = {}): Promise<Started> {
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(String(chunk));
      cb();
    },
  });
  const log = pino({ level: 'warn' }, sink);
  const server = new ControlServer(new Observatory([], 'threads'), { host: '127.0.0.1', port: 0, readToken: token, adminSecret: secret, log, injector: idleInjector, limits });
  await server.listen();
  cleanups.push(() => server.close());
  return { server, port: Number(new URL(server.url).port), url: server.url, logLines };
}

/** A raw TCP client: what it received, and whether the server has closed it. */
function rawClient(port: number): { socket: Socket; received: () => string; closed: () => boolean } {
  const socket = connect(port, '127.0.0.1');
  let data = '';
  let closed = false;
  socket.on('data', (d) => (data += String(d)));
  socket.on('error', () => {});
  socket.on('close', () => (closed = true));
  cleanups.push(() => socket.destroy());
  return { socket, received: () => data, closed: () => closed };
}

/** Writes `text` one byte per `everyMs` until stopped (the slow client's pacing, not a wait). */
function dribble(socket: Socket, text: string, everyMs: number): void {
  let i = 0;
  const t = setInterval(() => {
    if (socket.destroyed || i >= text.length) return clearInterval(t);
    socket.write(text[i++]);
  }, everyMs);
  cleanups.push(() => clearInterval(t));
}

function signedHeaders(path: string, body: string): Record<string, string> {
  return { 'content-type': 'application/json', ...signAdminRequest(secret, 'POST', path, body) };
}

describe('timeouts: a slow client is cut off by the server', () => {
  it('headers sent a byte at a time: the server closes the socket once headersTimeout passes (408)', async () => {
    const { port } = await start({ headersTimeoutMs: 400, requestTimeoutMs: 800 });
    const c = rawClient(port);
    dribble(c.socket, `GET /api/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nX-Padding: ${'a'.repeat(10_000)}\r\n\r\n`, 50);
    await expect.poll(c.closed, { timeout: 15_000, interval: 50 }).toBe(true);
    expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('a connection that sends nothing is closed too', async () => {
    const { port } = await start({ headersTimeoutMs: 400, requestTimeoutMs: 800 });
    const c = rawClient(port);
    await expect.poll(c.closed, { timeout: 15_000, interval: 50 }).toBe(true);
  });

  it('a signed action whose body arrives a byte at a time is cut off by requestTimeout, and does not act', async () => {
    const { port, server } = await start({ headersTimeoutMs: 400, requestTimeoutMs: 800 });
    const body = JSON.stringify({ pad: 'x'.repeat(200) });
    const h = signedHeaders(ACTION, body);
    const c = rawClient(port);
    const head = Object.entries({ ...h, host: '127.0.0.1', 'content-length': String(body.length) })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    c.socket.write(`POST ${ACTION} HTTP/1.1\r\n${head}\r\n`);
    dribble(c.socket, body, 50);
    await expect.poll(c.closed, { timeout: 15_000, interval: 50 }).toBe(true);
    expect(c.received()).not.toMatch(/^HTTP\/1\.1 200 /);
    expect(server.refusals.totals.get('timeout')).toBeGreaterThanOrEqual(1);
  });
});

describe('actions: the signature is judged from the headers, before the body', () => {
  it('an unsigned POST announcing a huge body is refused at once (403) without the body being sent', async () => {
    const { port } = await start();
    const c = rawClient(port);
    c.socket.write(`POST ${ACTION} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n`);
    await expect.poll(c.received, { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 403 [^]*\r\n\r\n\{"error":"actions need the admin secret, and it is not signed/);
    expect(c.received()).toMatch(/\r\nconnection: close\r\n/i);
  });

  it('a POST signed with another secret, or for another path, is refused before its body (403)', async () => {
    const { port } = await start();
    for (const h of [signAdminRequest(new Uint8Array(randomBytes(32)), 'POST', ACTION, '{}'), signAdminRequest(secret, 'POST', '/api/fault/heal', '{}')]) {
      const c = rawClient(port);
      const lines = Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      c.socket.write(`POST ${ACTION} HTTP/1.1\r\nHost: 127.0.0.1\r\n${lines}Content-Length: 2\r\n\r\n`); // the body "{}" never follows
      await expect.poll(c.received, { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 403 [^]*does not match it/);
    }
  });

  it('a chunked action (no Content-Length to sign) gets 411', async () => {
    const { url } = await start();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(url + ACTION, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write('{}');
      req.end();
    });
    expect(status).toBe(411);
  });

  it('a signed body over the cap gets 413 that fetch and node:http read (not a reset)', async () => {
    const { url, port } = await start();
    const big = JSON.stringify({ pad: 'x'.repeat(CONTROL_LIMITS.maxBodyBytes * 40) });
    const viaFetch = await fetch(url + ACTION, { method: 'POST', headers: signedHeaders(ACTION, big), body: big });
    expect(viaFetch.status).toBe(413);
    expect(await viaFetch.text()).toMatch(/over the 16384-byte limit/);
    const viaHttp = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(url + ACTION, { method: 'POST', headers: signedHeaders(ACTION, big), agent: false }, (res) => {
        let body = '';
        res.on('data', (d) => (body += String(d)));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end(big);
    });
    expect(viaHttp.status).toBe(413);
    expect(viaHttp.body).toMatch(/over the 16384-byte limit/);
    // A Content-Length over the cap with no body sent: 413 at once.
    const c = rawClient(port);
    const h = signAdminRequest(secret, 'POST', ACTION, big);
    c.socket.write(`POST ${ACTION} HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}Content-Length: ${big.length}\r\n\r\n`);
    await expect.poll(c.received, { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 413 /);
  });

  it('a signed action is accepted once: the same request again is refused as replayed (403)', async () => {
    const { url } = await start();
    const body = '{}';
    const headers = signedHeaders(ACTION, body);
    const first = await fetch(url + ACTION, { method: 'POST', headers, body });
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({ ok: true });
    const again = await fetch(url + ACTION, { method: 'POST', headers, body });
    expect(again.status).toBe(403);
    expect(await again.text()).toMatch(/replayed/);
    // A fresh signature of the same action works, and so does the CLI's client (it signs each call).
    expect((await fetch(url + ACTION, { method: 'POST', headers: signedHeaders(ACTION, body), body })).status).toBe(200);
    const creds = { url, readToken: token, secret };
    await expect(postAction(creds, ACTION, {})).resolves.toMatchObject({ ok: true });
    await expect(postAction(creds, ACTION, {})).resolves.toMatchObject({ ok: true });
  });

  it('a body that differs from the signed digest is refused (400) and does not act', async () => {
    const { url } = await start();
    const headers = signedHeaders(ACTION, '{"a":1}');
    const res = await fetch(url + ACTION, { method: 'POST', headers, body: '{"a":2}' });
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/does not match its x-ringvisor-content-sha256/);
  });

  it('Expect: 100-continue: the go-ahead only after the signature holds', async () => {
    const { url } = await start();
    const send = (headers: Record<string, string>, body: string) =>
      new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
        let continued = false;
        const req = request(url + ACTION, { method: 'POST', headers: { ...headers, expect: '100-continue', 'content-length': String(body.length) }, agent: false }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, continued });
        });
        req.on('continue', () => {
          continued = true;
          req.end(body);
        });
        req.on('error', reject);
      });
    expect(await send(signedHeaders(ACTION, '{}'), '{}')).toEqual({ status: 200, continued: true });
    expect(await send({ [ADMIN_SIGNATURE_HEADER]: 'nonsense' }, '{}')).toEqual({ status: 403, continued: false });
  });
});

describe('WebSocket upgrades: only from the dashboard’s own origin', () => {
  /** Resolves with 101 when the upgrade succeeds, else the refusal's status. */
  function upgrade(url: string, headers: Record<string, string>): Promise<number> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`${url.replace('http', 'ws')}/api/live`, { headers });
      cleanups.push(() => ws.terminate());
      ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => {
        resolve(101);
        ws.close();
      });
      ws.on('error', () => {});
    });
  }

  it('a foreign Origin is refused (403) even with the cookie; the same origin connects', async () => {
    const { url } = await start();
    const cookie = `rv_token=${token}`;
    expect(await upgrade(url, { origin: 'http://evil.example', cookie })).toBe(403);
    expect(await upgrade(url, { origin: url.replace('127.0.0.1', 'localhost'), cookie })).toBe(403);
    expect(await upgrade(url, { origin: 'null', cookie })).toBe(403);
    expect(await upgrade(url, { origin: url, cookie })).toBe(101);
    expect(await upgrade(url, { origin: url, authorization: `Bearer ${token}` })).toBe(101);
  });

  it('without an Origin (not a browser) the bearer token is needed; the cookie alone is refused', async () => {
    const { url } = await start();
    expect(await upgrade(url, { cookie: `rv_token=${token}` })).toBe(401);
    expect(await upgrade(url, {})).toBe(401);
    expect(await upgrade(url, { authorization: `Bearer ${token}` })).toBe(101);
  });
});

describe('responses and refusals', () => {
  it('authenticated responses carry CSP, nosniff, frame denial, no referrer and no-store', async () => {
    const { url } = await start();
    const auth = { authorization: `Bearer ${token}` };
    const responses = [
      await fetch(url + '/api/snapshot', { headers: auth }),
      await fetch(url + '/', { headers: auth }),
      await fetch(url + '/dashboard/app.js', { headers: auth }),
      await fetch(url + '/metrics', { headers: auth }),
      await fetch(url + ACTION, { method: 'POST', headers: signedHeaders(ACTION, '{}'), body: '{}' }),
    ];
    for (const res of responses) {
      expect(res.status, res.url).toBe(200);
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toMatch(/default-src 'self'/);
      expect(csp).toMatch(/script-src 'self'(;|$)/);
      expect(csp).toMatch(/frame-ancestors 'none'/);
      expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('cache-control')).toBe('no-store');
      await res.arrayBuffer();
    }
  });

  it('one remote address gets its share of connections; a slot frees when one closes', async () => {
    const { port } = await start({ maxConnectionsPerAddress: 3, headersTimeoutMs: 30_000, requestTimeoutMs: 30_000 });
    const held = [rawClient(port), rawClient(port), rawClient(port)];
    for (const c of held) await new Promise((r) => c.socket.once('connect', r));
    const extra = rawClient(port);
    await expect.poll(extra.closed, { timeout: 10_000 }).toBe(true);
    expect(held.some((c) => c.closed())).toBe(false);
    held[0].socket.destroy();
    await expect
      .poll(
        async () => (await fetch(`http://127.0.0.1:${port}/api/snapshot`, { headers: { authorization: `Bearer ${token}`, connection: 'close' } }).catch(() => undefined))?.status,
        { timeout: 10_000 },
      )
      .toBe(200);
  });

  it('refusals are counted, and logged at a bounded rate', async () => {
    const { url, server, logLines } = await start();
    const t0 = Date.now();
    for (let i = 0; i < 200; i++) expect((await fetch(url + '/api/snapshot')).status).toBe(401);
    const elapsed = Date.now() - t0;
    expect(server.refusals.totals.get('read-token')).toBe(200);
    const lines = logLines.filter((l) => l.includes('refused a request'));
    expect(lines.length).toBeGreaterThanOrEqual(1);
    // At most 3 lines of a reason per 10 s window (however slow the machine made the loop).
    expect(lines.length).toBeLessThanOrEqual(3 * (1 + Math.ceil(elapsed / server.refusals.windowMs)));
    server.refusals.flush();
    // Every refusal is accounted for: one per written line, plus what the summaries say they suppressed.
    const parsed = logLines.map((l) => JSON.parse(l) as { msg: string; reason?: string; suppressed?: number });
    const written = parsed.filter((l) => l.msg === 'control endpoint refused a request' && l.reason === 'read-token').length;
    const suppressed = parsed.filter((l) => l.reason === 'read-token' && typeof l.suppressed === 'number').reduce((n, l) => n + (l.suppressed ?? 0), 0);
    const counted = written + suppressed;
    expect(counted).toBe(200);
  });
});
