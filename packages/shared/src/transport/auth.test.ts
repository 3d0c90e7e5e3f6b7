import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../log/index.js';
import { ClosedError, ConfigError, InvalidArgumentError, ProtocolError, TimeoutError } from '../errors.js';
import { DOMID_HW } from '../evtchn/index.js';
import {
  ADMIN_SIGNATURE_HEADER,
  adminContentDigest,
  GUEST_ROLES,
  ROLES,
  computeMac,
  createChallenge,
  createHello,
  createWelcome,
  deriveDomainKey,
  deriveReadToken,
  formatDomainKey,
  generateSecretFile,
  identityKey,
  identityProblem,
  parseDomainKey,
  signAdminRequest,
  verifyAdminRequest,
  type DomainKey,
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
    expect(() => verifyHello(secret, ch, { ...hello, role: 'vcpu' })).toThrow(/authentication failed/);
    expect(() => verifyHello(secret, ch, { ...hello, role: 'dom0' })).toThrow(/identity refused: role dom0 speaks only as domain 0/);
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

describe('per-identity keys', () => {
  const HOST = 'host-a';
  const salt = Buffer.from('ringvisor-v1');
  const hkdf = (ikm: Uint8Array, info: string) => Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from(info), 32));
  /** Every key a holder of guest `domid`'s domain key can compute: the key itself and its role keys. */
  const keysOf = (k: DomainKey): Uint8Array[] => [k.key, ...GUEST_ROLES.map((role) => identityKey(k, { role, domid: k.domid }))];
  const CLAIMS: Identity[] = [
    { role: 'control', domid: 0 },
    { role: 'dom0', domid: 0 },
    { role: 'hwsim', domid: DOMID_HW },
    { role: 'hwsim', domid: 1 }, // a host's uplink to the LAN switch
    { role: 'switch', domid: 0 },
    { role: 'guest', domid: 4 },
    { role: 'vcpu', domid: 4 },
    { role: 'direct', domid: 4 },
  ];

  it('derives keys as documented: HKDF-SHA256, domain keys per host and domain, role keys from them, infrastructure keys from the secret', () => {
    const k3 = deriveDomainKey(secret, HOST, 3);
    expect(Buffer.from(k3.key)).toEqual(hkdf(secret, 'ringvisor domain key v1|host-a|3'));
    expect(Buffer.from(identityKey(k3, { role: 'vcpu', domid: 3 }))).toEqual(hkdf(k3.key, 'ringvisor role key v1|vcpu|3'));
    // the cluster secret reaches the same guest-side key through the domain key
    expect(Buffer.from(identityKey(secret, { role: 'vcpu', domid: 3 }, HOST))).toEqual(hkdf(k3.key, 'ringvisor role key v1|vcpu|3'));
    expect(Buffer.from(identityKey(secret, { role: 'control', domid: 0 }))).toEqual(hkdf(secret, 'ringvisor infra key v1|control|0'));
    // distinct hosts, domains, roles: distinct keys; and none is the secret or the read token
    const all = [
      k3.key,
      deriveDomainKey(secret, 'host-b', 3).key,
      deriveDomainKey(secret, HOST, 4).key,
      ...ROLES.flatMap((role) => (identityProblem({ role, domid: 3 }) === null ? [identityKey(secret, { role, domid: 3 }, HOST)] : [])),
      ...CLAIMS.map((c) => identityKey(secret, c, HOST)),
      secret,
      Buffer.from(deriveReadToken(secret), 'hex'),
    ].map((k) => Buffer.from(k).toString('hex'));
    expect(new Set(all).size).toBe(all.length);
    expect(formatDomainKey(k3)).toMatch(/^[0-9a-f]{64}$/);
    expect(Buffer.from(parseDomainKey(` ${formatDomainKey(k3)}\n`, 3, 'test').key)).toEqual(Buffer.from(k3.key));
    expect(() => parseDomainKey('abcd', 3, 'test')).toThrow(ConfigError);
    expect(() => parseDomainKey(formatDomainKey(k3), 0, 'test')).toThrow(/guest domain/);
  });

  it('refuses identities no key speaks for: guest-side roles outside the guest domains, dom0/control/switch other than domain 0', () => {
    for (const role of GUEST_ROLES) {
      expect(identityProblem({ role, domid: 0 })).toMatch(/guest domain/);
      expect(identityProblem({ role, domid: DOMID_HW })).toMatch(/guest domain/);
      expect(identityProblem({ role, domid: 1 })).toBeNull();
    }
    for (const role of ['dom0', 'control', 'switch'] as const) expect(identityProblem({ role, domid: 2 })).toMatch(/only as domain 0/);
    expect(() => deriveDomainKey(secret, HOST, 0)).toThrow(InvalidArgumentError);
    expect(() => deriveDomainKey(secret, 'a|b', 1)).toThrow(InvalidArgumentError);
    expect(() => createHello(secret, createChallenge(), { role: 'guest', domid: 0 })).toThrow(InvalidArgumentError);
    // on the wire: refused before the MAC is looked at
    const ch = createChallenge();
    const forged = { t: 'hello', v: 1, role: 'guest', domid: 0, nonce: new Uint8Array(32), mac: new Uint8Array(32) };
    expect(() => verifyHello(secret, ch, forged)).toThrow(/identity refused/);
    expect(() => verifyHello(secret, ch, { ...forged, role: 'control', domid: 5 })).toThrow(/identity refused/);
  });

  it('a domain key speaks for its own guest, vcpu and direct roles, and cannot even form a hello for anything else', () => {
    const k3 = deriveDomainKey(secret, HOST, 3);
    for (const role of GUEST_ROLES) {
      const ch = createChallenge();
      const hello = createHello(k3, ch, { role, domid: 3 });
      const { identity } = verifyHello(secret, ch, hello, HOST);
      expect(identity).toEqual({ role, domid: 3 });
      expect(() => verifyWelcome(k3, ch, hello, createWelcome(secret, ch, hello, HOST))).not.toThrow();
    }
    for (const claim of CLAIMS) expect(() => createHello(k3, createChallenge(), claim), JSON.stringify(claim)).toThrow(/cannot speak for/);
  });

  it('property: no key computable from one domain key proves any other identity, on its own host or another', () => {
    const claimable = fc
      .record({ role: fc.constantFrom(...ROLES), domid: fc.oneof(fc.integer({ min: 0, max: DOMID_HW + 1 }), fc.constantFrom(0, DOMID_HW)) })
      .filter((id) => identityProblem(id) === null);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: DOMID_HW - 1 }), claimable, fc.constantFrom(HOST, 'host-b'), (n, claim, listenerHost) => {
        const own = GUEST_ROLES.some((r) => r === claim.role) && claim.domid === n && listenerHost === HOST;
        const ch = createChallenge();
        const nonce = new Uint8Array(randomBytes(32));
        for (const key of keysOf(deriveDomainKey(secret, HOST, n))) {
          const hello = { t: 'hello', v: 1, ...claim, nonce, mac: computeMac(key, 'client', claim, ch.nonce, nonce) };
          let accepted = true;
          try {
            verifyHello(secret, ch, hello, listenerHost);
          } catch (e) {
            expect((e as Error).message).toBe('authentication failed');
            accepted = false;
          }
          // Only the role key of the claim itself, used on its own host, ever passes.
          if (accepted) expect(own && Buffer.from(key).equals(Buffer.from(identityKey(secret, claim, HOST)))).toBe(true);
        }
        if (own) expect(() => verifyHello(secret, ch, createHello(deriveDomainKey(secret, HOST, n), ch, claim), HOST)).not.toThrow();
      }),
      { numRuns: 300, seed: 17 },
    );
  });

  it('a domain key cannot sign admin actions (they are HMACs under the cluster secret itself)', () => {
    const k3 = deriveDomainKey(secret, HOST, 3);
    const body = '{"domain":"a1","device":"vbd0"}';
    const path = '/api/backend/pause';
    const facts = { method: 'POST', path, contentLength: Buffer.byteLength(body), contentSha256: adminContentDigest(body) };
    const verdict = (key: Uint8Array) => verifyAdminRequest(secret, signAdminRequest(key, 'POST', path, body)[ADMIN_SIGNATURE_HEADER], facts);
    for (const key of keysOf(k3)) expect(verdict(key)).toEqual({ ok: false, reason: 'forged' });
    expect(verdict(secret).ok).toBe(true);
  });
});

describe('per-identity keys against a live listener', () => {
  const HOST = 'host-a';

  /** Opens a raw socket, answers the challenge with a hello for `claim` MACed under `key`; resolves with how it ended. */
  async function forge(url: string, claim: Identity, key: Uint8Array): Promise<{ code: number; reason: string } | 'welcomed'> {
    const peer = await raw(url);
    const ch = parseChallenge(await peer.next());
    const nonce = new Uint8Array(randomBytes(32));
    peer.ws.send(packr.pack({ t: 'hello', v: 1, role: claim.role, domid: claim.domid, nonce, mac: computeMac(key, 'client', claim, ch.nonce, nonce) }));
    const first = await Promise.race([peer.next().then(() => 'welcomed' as const), peer.closed]);
    return first;
  }

  it("a guest's key opens its own guest, vcpu and direct connections, and is refused as control, hardware, dom0, switch and any other domain", async () => {
    // A listener that would admit any identity at all: only the keys decide here.
    const { srv, admitted, lines } = await server({ domainHost: HOST });
    const k3 = deriveDomainKey(secret, HOST, 3);
    for (const role of GUEST_ROLES) {
      const link = await connect({ url: srv.url, domainKey: k3, role, domid: 3 });
      cleanup.push(() => link.close('done'));
      expect(link.identity).toEqual({ role, domid: 3 });
    }
    await expect.poll(() => admitted.map((a) => `${a.who.role}/${a.who.domid}`)).toEqual(['guest/3', 'vcpu/3', 'direct/3']);

    // Through the API a domain key will not even try.
    await expect(connect({ url: srv.url, domainKey: k3, role: 'control', domid: 0 })).rejects.toThrow(InvalidArgumentError);
    // On the wire, with every key the guest can compute: refused, 1008, nothing admitted.
    const mine = [k3.key, ...GUEST_ROLES.map((role) => identityKey(k3, { role, domid: 3 }))];
    const claims: Identity[] = [
      { role: 'control', domid: 0 },
      { role: 'hwsim', domid: DOMID_HW },
      { role: 'hwsim', domid: 0 },
      { role: 'dom0', domid: 0 },
      { role: 'switch', domid: 0 },
      { role: 'guest', domid: 4 },
      { role: 'vcpu', domid: 2 },
      { role: 'direct', domid: 4 },
    ];
    for (const claim of claims)
      for (const key of mine) expect(await forge(srv.url, claim, key), `${claim.role}/${claim.domid}`).toEqual({ code: 1008, reason: 'authentication failed' });
    // A claim no key speaks for is refused as such.
    expect(await forge(srv.url, { role: 'guest', domid: 0 }, k3.key)).toEqual({ code: 1008, reason: 'identity refused: role guest speaks for a guest domain (1..126), not 0' });
    expect(admitted).toHaveLength(3);
    // The same domain id on another host: its listener derives another key.
    const { srv: other, admitted: otherAdmitted } = await server({ domainHost: 'host-b' });
    await expect(connect({ url: other.url, domainKey: k3, role: 'guest', domid: 3 })).rejects.toThrow(/authentication failed/);
    const b3 = await connect({ url: other.url, domainKey: deriveDomainKey(secret, 'host-b', 3), role: 'guest', domid: 3 });
    cleanup.push(() => b3.close('done'));
    await expect.poll(() => otherAdmitted.length).toBe(1);
    // Trusted runtimes holding the secret still open anything the listener authorizes.
    const control = await connect({ url: srv.url, secret, role: 'control', domid: 0 });
    cleanup.push(() => control.close('done'));
    expect(lines.join('')).not.toContain(formatDomainKey(k3));
  });

  it('connect() takes exactly one credential, and a well-formed one', async () => {
    const k3 = deriveDomainKey(secret, HOST, 3);
    await expect(connect({ url: 'ws://127.0.0.1:1', role: 'guest', domid: 3 })).rejects.toThrow(/either the cluster secret/);
    await expect(connect({ url: 'ws://127.0.0.1:1', secret, domainKey: k3, role: 'guest', domid: 3 })).rejects.toThrow(/either the cluster secret/);
    await expect(connect({ url: 'ws://127.0.0.1:1', domainKey: { domid: 3, key: new Uint8Array(5) }, role: 'guest', domid: 3 })).rejects.toThrow(/32 bytes/);
    await expect(connect({ url: 'ws://127.0.0.1:1', domainKey: { ...k3, domid: 0 }, role: 'guest', domid: 0 })).rejects.toThrow(InvalidArgumentError);
  });
});
