import { createHmac, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../log/index.js';
import { ClosedError, ConfigError, InvalidArgumentError, ProtocolError, TimeoutError } from '../errors.js';
import {
  computeMac,
  createChallenge,
  createHello,
  createWelcome,
  generateSecretFile,
  parseChallenge,
  readSecretFile,
  secretFromEnv,
  verifyHello,
  verifyWelcome,
  type Identity,
} from './auth.js';
import { connect, listen, type ListenOptions, type WsLink, type WsServer } from './ws.js';

const secret = new Uint8Array(randomBytes(32));
const otherSecret = new Uint8Array(randomBytes(32));
const secretHex = Buffer.from(secret).toString('hex');
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** A pino logger whose lines we can inspect. */
function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) }), lines };
}

async function server(
  extra: Partial<ListenOptions> = {},
): Promise<{ srv: WsServer; admitted: Array<{ link: WsLink; who: Identity }>; lines: string[] }> {
  const admitted: Array<{ link: WsLink; who: Identity }> = [];
  const { log, lines } = capturingLogger();
  const srv = await listen({
    port: 0,
    secret,
    authorize: () => true,
    onConnection: (link, who) => admitted.push({ link, who }),
    log,
    ...extra,
  });
  cleanup.push(() => srv.close());
  return { srv, admitted, lines };
}

interface RawPeer {
  ws: WebSocket;
  received: unknown[];
  closed: Promise<{ code: number; reason: string }>;
  next(): Promise<unknown>;
}

/** A bare WebSocket that can misbehave at will. */
async function raw(url: string): Promise<RawPeer> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => {});
  const received: unknown[] = [];
  const waiters: Array<(v: unknown) => void> = [];
  ws.on('message', (data) => {
    const v: unknown = unpackr.unpack(data as Buffer);
    const w = waiters.shift();
    if (w) w(v);
    else received.push(v);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  cleanup.push(() => ws.terminate());
  return {
    ws,
    received,
    closed,
    next: () => (received.length ? Promise.resolve(received.shift()) : new Promise((resolve) => waiters.push(resolve))),
  };
}

describe('handshake messages (pure)', () => {
  const id: Identity = { role: 'guest', domid: 3 };

  it('computes the documented MAC input', () => {
    const ns = new Uint8Array(32).fill(1);
    const nc = new Uint8Array(32).fill(2);
    const input = `ringvisor-v1|client|guest|3|${'01'.repeat(32)}|${'02'.repeat(32)}`;
    const expected = createHmac('sha256', secret).update(input).digest();
    expect(Buffer.from(computeMac(secret, 'client', id, ns, nc))).toEqual(expected);
    const sInput = `ringvisor-v1|server|guest|3|${'01'.repeat(32)}|${'02'.repeat(32)}`;
    expect(Buffer.from(computeMac(secret, 'server', id, ns, nc))).toEqual(createHmac('sha256', secret).update(sInput).digest());
  });

  it('accepts an honest hello and welcome, and they survive msgpack', () => {
    const ch = createChallenge();
    expect(ch.nonce.byteLength).toBe(32);
    const hello = createHello(secret, parseChallenge(unpackr.unpack(packr.pack(ch))), id);
    const { identity, hello: h } = verifyHello(secret, ch, unpackr.unpack(packr.pack(hello)));
    expect(identity).toEqual(id);
    const welcome = createWelcome(secret, ch, h);
    expect(() => verifyWelcome(secret, ch, hello, unpackr.unpack(packr.pack(welcome)))).not.toThrow();
  });

  it('rejects a wrong secret, a tampered identity, a replay and a reflection', () => {
    const ch = createChallenge();
    const hello = createHello(secret, ch, id);
    expect(() => verifyHello(otherSecret, ch, hello)).toThrow(/authentication failed/);
    expect(() => verifyHello(secret, ch, { ...hello, domid: 4 })).toThrow(/authentication failed/);
    expect(() => verifyHello(secret, ch, { ...hello, role: 'dom0' })).toThrow(/authentication failed/);
    expect(() => verifyHello(secret, createChallenge(), hello)).toThrow(/authentication failed/); // replay
    // A server that does not know the secret cannot produce a welcome; nor can it reflect the client's MAC.
    expect(() => verifyWelcome(secret, ch, hello, createWelcome(otherSecret, ch, hello))).toThrow(/server authentication failed/);
    expect(() => verifyWelcome(secret, ch, hello, { t: 'welcome', v: 1, mac: hello.mac })).toThrow(/server authentication failed/);
  });

  it('rejects malformed handshake messages with ProtocolError', () => {
    const ch = createChallenge();
    const hello = createHello(secret, ch, id);
    const bad: unknown[] = [
      null,
      42,
      'hello',
      [hello],
      new Uint8Array(10),
      { ...hello, t: 'welcome' },
      { ...hello, v: 2 },
      { ...hello, role: 'root' },
      { ...hello, domid: 0x8000 },
      { ...hello, domid: -1 },
      { ...hello, domid: 1.5 },
      { ...hello, nonce: new Uint8Array(31) },
      { ...hello, mac: new Uint8Array(33) },
      { ...hello, mac: 'x'.repeat(32) },
    ];
    for (const b of bad) expect(() => verifyHello(secret, ch, b), JSON.stringify(b)).toThrow(ProtocolError);
    expect(() => parseChallenge({ t: 'challenge', v: 1, nonce: new Uint8Array(8) })).toThrow(ProtocolError);
    expect(() => parseChallenge({ t: 'hello', v: 1 })).toThrow(ProtocolError);
    expect(() => createHello(secret, ch, { role: 'guest', domid: 0x8000 })).toThrow(InvalidArgumentError);
    expect(() => createHello(secret, ch, { role: 'wizard' as Identity['role'], domid: 1 })).toThrow(InvalidArgumentError);
  });
});

describe('the cluster secret', () => {
  it('reads hex and base64 from the environment', () => {
    expect(Buffer.from(secretFromEnv('S', { S: secretHex }))).toEqual(Buffer.from(secret));
    expect(Buffer.from(secretFromEnv('S', { S: ` ${Buffer.from(secret).toString('base64')}\n` }))).toEqual(Buffer.from(secret));
    expect(Buffer.from(secretFromEnv('S', { S: Buffer.from(secret).toString('base64url') }))).toEqual(Buffer.from(secret));
    expect(secretFromEnv(undefined, { RINGVISOR_SECRET: secretHex }).byteLength).toBe(32);
  });

  it('fails clearly, without echoing the value, when missing, short or garbled', () => {
    expect(() => secretFromEnv('RV_NOPE', {})).toThrow(ConfigError);
    expect(() => secretFromEnv('RV_NOPE', {})).toThrow(/RV_NOPE is not set/);
    expect(() => secretFromEnv('S', { S: 'abcdef0123' })).toThrow(/too short \(5 bytes; need at least 16\)/);
    let msg = '';
    try {
      secretFromEnv('S', { S: 'not a secret!!!!!!!!!!!!!!!!!!!!!!!' });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/hex or base64/);
    expect(msg).not.toContain('not a secret');
  });

  it('generates a 0600 secret file once and never overwrites it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rv-secret-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'secret');
    const s1 = await generateSecretFile(path);
    expect(s1.byteLength).toBe(32);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const text = await readFile(path, 'utf8');
    expect(text.trim()).toMatch(/^[0-9a-f]{64}$/);
    const s2 = await generateSecretFile(path);
    expect(Buffer.from(s2)).toEqual(Buffer.from(s1));
    expect(await readFile(path, 'utf8')).toBe(text);
    expect(Buffer.from(await readSecretFile(path))).toEqual(Buffer.from(s1));

    const loose = join(dir, 'loose');
    await writeFile(loose, secretHex);
    await chmod(loose, 0o644);
    await expect(readSecretFile(loose)).rejects.toThrow(/chmod 600/);
    await expect(generateSecretFile(loose)).rejects.toThrow(ConfigError);
  });
});

describe('authentication over real sockets', () => {
  it('admits a client with the secret as exactly the identity it proved', async () => {
    const { srv, admitted, lines } = await server();
    expect(srv.host).toBe('127.0.0.1');
    expect(srv.url).toBe(`ws://127.0.0.1:${srv.port}`);
    const link = await connect({ url: srv.url, secret, role: 'guest', domid: 3 });
    cleanup.push(() => link.close('done'));
    expect(link.identity).toEqual({ role: 'guest', domid: 3 });
    await expect.poll(() => admitted.length).toBe(1);
    expect(admitted[0].who).toEqual({ role: 'guest', domid: 3 });
    expect(admitted[0].link.identity).toEqual({ role: 'guest', domid: 3 });
    expect(srv.connections).toBe(1);
    expect(lines.join('')).not.toContain(secretHex);
    link.close('bye');
    await expect.poll(() => srv.connections).toBe(0);
  });

  it('refuses a wrong secret with a reason; onConnection never runs; the secret is not logged', async () => {
    const { srv, admitted, lines } = await server();
    const err = await connect({ url: srv.url, secret: otherSecret, role: 'dom0', domid: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/authentication failed/);
    expect(admitted).toHaveLength(0);
    expect(srv.connections).toBe(0);
    await expect.poll(() => lines.some((l) => l.includes('authentication failed'))).toBe(true);
    const all = lines.join('');
    expect(all).not.toContain(secretHex);
    expect(all).not.toContain(Buffer.from(otherSecret).toString('hex'));
  });

  it('refuses an identity authorize() rejects (a guest claiming another domain)', async () => {
    const { srv, admitted } = await server({ authorize: ({ role, domid }) => role !== 'guest' || domid === 3 });
    const err = await connect({ url: srv.url, secret, role: 'guest', domid: 7 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/not authorized as guest 7/);
    expect(admitted).toHaveLength(0);
    // the legitimate guest still gets in, also with an async authorize
    const ok = await connect({ url: srv.url, secret, role: 'guest', domid: 3 });
    cleanup.push(() => ok.close('done'));
    const { srv: srv2, admitted: admitted2 } = await server({ authorize: async ({ domid }) => domid === 5 });
    await expect(connect({ url: srv2.url, secret, role: 'guest', domid: 6 })).rejects.toThrow(/not authorized/);
    const ok2 = await connect({ url: srv2.url, secret, role: 'guest', domid: 5 });
    cleanup.push(() => ok2.close('done'));
    await expect.poll(() => admitted2.length).toBe(1);
  });

  it('rejects invalid identities and URLs before connecting', async () => {
    await expect(connect({ url: 'not a url', secret, role: 'guest', domid: 1 })).rejects.toThrow(InvalidArgumentError);
    await expect(connect({ url: 'ws://127.0.0.1:1', secret, role: 'guest', domid: 0x8000 })).rejects.toThrow(InvalidArgumentError);
    await expect(connect({ url: 'ws://127.0.0.1:1', secret: new Uint8Array(8), role: 'guest', domid: 1 })).rejects.toThrow(/too short/);
  });

  it('reports an unreachable server as ClosedError', async () => {
    const probe = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((r) => probe.once('listening', () => r()));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await expect(connect({ url: `ws://127.0.0.1:${port}`, secret, role: 'guest', domid: 1 })).rejects.toThrow(ClosedError);
  });

  it('times out on a silent server', async () => {
    const silent = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    silent.on('connection', (ws) => ws.on('error', () => {}));
    await new Promise<void>((r) => silent.once('listening', () => r()));
    cleanup.push(
      () =>
        new Promise<void>((r) => {
          for (const c of silent.clients) c.terminate();
          silent.close(() => r());
        }),
    );
    const port = (silent.address() as { port: number }).port;
    const t0 = Date.now();
    const err = await connect({ url: `ws://127.0.0.1:${port}`, secret, role: 'guest', domid: 1, timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('rejects a server that cannot prove it knows the secret', async () => {
    const impostor = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    const closes: Array<{ code: number; reason: string }> = [];
    impostor.on('connection', (ws) => {
      ws.on('error', () => {});
      ws.on('close', (code, reason) => closes.push({ code, reason: reason.toString() }));
      const ch = createChallenge();
      ws.send(packr.pack(ch));
      ws.once('message', (data) => {
        const hello = unpackr.unpack(data as Buffer) as ReturnType<typeof createHello>;
        ws.send(packr.pack(createWelcome(otherSecret, ch, hello)));
      });
    });
    await new Promise<void>((r) => impostor.once('listening', () => r()));
    cleanup.push(() => new Promise<void>((r) => impostor.close(() => r())));
    const port = (impostor.address() as { port: number }).port;
    const err = await connect({ url: `ws://127.0.0.1:${port}`, secret, role: 'dom0', domid: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/server authentication failed/);
    await expect.poll(() => closes[0]?.code).toBe(1008);
  });

  it('closes a silent client with 1008 after the handshake timeout', async () => {
    const { srv, admitted } = await server({ handshakeTimeoutMs: 200 });
    const peer = await raw(srv.url);
    expect(await peer.next()).toMatchObject({ t: 'challenge', v: 1 });
    expect(await peer.closed).toEqual({ code: 1008, reason: 'authentication timeout' });
    expect(admitted).toHaveLength(0);
  });

  it('closes a client that says hello before reading the challenge', async () => {
    const { srv, admitted } = await server();
    const peer = await raw(srv.url);
    const guessed = createHello(secret, createChallenge(), { role: 'guest', domid: 1 });
    peer.ws.send(packr.pack(guessed));
    expect(await peer.closed).toEqual({ code: 1008, reason: 'authentication failed' });
    expect(admitted).toHaveLength(0);
  });

  it('closes a client that sends garbage, text or a second hello during the handshake', async () => {
    const { srv, admitted } = await server({ authorize: () => new Promise((r) => setTimeout(() => r(true), 50)) });
    const g = await raw(srv.url);
    g.ws.send(Buffer.from([0xc1, 0xff, 0x00]));
    expect((await g.closed).code).toBe(1008);
    const t = await raw(srv.url);
    t.ws.send('{"t":"hello"}');
    expect(await t.closed).toEqual({ code: 1008, reason: 'text frames are not part of the protocol' });
    const twice = await raw(srv.url);
    const ch = parseChallenge(await twice.next());
    const hello = createHello(secret, ch, { role: 'guest', domid: 1 });
    twice.ws.send(packr.pack(hello));
    twice.ws.send(packr.pack(hello)); // while authorize() is still deciding
    expect(await twice.closed).toEqual({ code: 1008, reason: 'unexpected message during the handshake' });
    expect(admitted).toHaveLength(0);
  });

  it('refuses connections beyond maxPendingHandshakes with 503 before the upgrade', async () => {
    const { srv } = await server({ maxPendingHandshakes: 2 });
    await raw(srv.url);
    await raw(srv.url);
    await expect.poll(() => srv.pending).toBe(2);
    const third = new WebSocket(srv.url, { perMessageDeflate: false });
    const status = await new Promise<number | undefined>((resolve) => {
      third.on('error', () => {});
      third.on('unexpected-response', (_req, res) => resolve(res.statusCode));
    });
    third.terminate();
    expect(status).toBe(503);
  });
});
