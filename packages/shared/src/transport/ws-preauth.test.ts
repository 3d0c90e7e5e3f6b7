/**
 * The ws transport's rules for strangers, against a live listener: handshake-sized frames before
 * authentication (both ends), no msgpack extension type ever, work bounded by a frame's bytes,
 * pending connections capped per address from TCP accept, refusals logged at a bounded rate.
 * Floods come from 127.0.0.2 and beyond (the loopback range); the legitimate client from 127.0.0.1.
 */
import { randomBytes } from 'node:crypto';
import { connect as connectTcp, type Socket } from 'node:net';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../log/index.js';
import { ClosedError, ProtocolError } from '../errors.js';
import { createChallenge } from './auth.js';
import { RpcPeer } from './rpc.js';
import { anyExtension, embedded } from './test-support/msgpack-frames.js';
import { addressKey, connect, DEFAULT_MAX_PENDING_PER_ADDRESS, listen, PRE_AUTH_MAX_PAYLOAD, type ListenOptions, type WsServer } from './ws.js';

const secret = new Uint8Array(randomBytes(32));
const plain = new Packr({ useRecords: false });

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

interface LogLine {
  level: number;
  msg: string;
  peer?: string;
  suppressed?: number;
}

/** A listener answering `ping` on every connection, with a log we can read. */
async function server(extra: Partial<ListenOptions> = {}): Promise<{ srv: WsServer; lines: LogLine[] }> {
  const lines: LogLine[] = [];
  const log: Logger = pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const srv = await listen({
    port: 0,
    secret,
    log,
    authorize: () => true,
    onConnection: (link) => {
      new RpcPeer(link, 'server').handle('ping', (p) => ({ pong: p }));
    },
    ...extra,
  });
  cleanup.push(() => srv.close());
  return { srv, lines };
}

/** What `ringvisor health` does: connect as control from 127.0.0.1, ask, leave. */
async function healthCheck(srv: WsServer): Promise<unknown> {
  const link = await connect({ url: srv.url, secret, role: 'control', domid: 0, timeoutMs: 10_000 });
  try {
    return await new RpcPeer(link, 'health').call('ping', 1);
  } finally {
    link.close('done');
  }
}

/** A raw WebSocket that sends `frame` before authenticating; resolves with how it was closed. */
async function sendBeforeAuth(srv: WsServer, frame: Uint8Array, readChallengeFirst: boolean): Promise<[number, string]> {
  const ws = new WebSocket(srv.url, { perMessageDeflate: false });
  ws.on('error', () => {});
  const closed = new Promise<[number, string]>((resolve) => ws.once('close', (c, r) => resolve([c, r.toString()])));
  const challenge = new Promise<void>((resolve) => ws.once('message', () => resolve()));
  await new Promise<void>((resolve) => ws.once('open', () => resolve()));
  if (readChallengeFirst) await challenge;
  ws.send(frame);
  return closed;
}

/** Raw TCP sockets from `localAddress` that never say anything. */
function halfOpen(srv: WsServer, localAddress: string, n: number): Array<{ sock: Socket; closed: boolean; data: string }> {
  return Array.from({ length: n }, () => {
    const s = { sock: connectTcp({ port: srv.port, host: '127.0.0.1', localAddress }), closed: false, data: '' };
    s.sock.on('error', () => {});
    s.sock.on('data', (d) => (s.data += d.toString()));
    s.sock.on('close', () => (s.closed = true));
    cleanup.push(() => s.sock.destroy());
    return s;
  });
}

describe('before authentication', () => {
  it('closes every frame carrying a msgpack extension with 1008 and a reason, and keeps serving', async () => {
    const { srv } = await server();
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(anyExtension.chain(embedded), fc.boolean(), async (frame, readChallengeFirst) => {
        expect(frame.byteLength).toBeLessThanOrEqual(PRE_AUTH_MAX_PAYLOAD);
        const [code, reason] = await sendBeforeAuth(srv, frame, readChallengeFirst);
        expect(code).toBe(1008);
        expect(reason).toMatch(/^malformed message: msgpack extension -?\d+ .*is not accepted$/);
        if (++runs % 10 === 0) expect(await healthCheck(srv)).toEqual({ pong: 1 });
      }),
      { numRuns: 80, seed: 0xe7 },
    );
    expect(await healthCheck(srv)).toEqual({ pong: 1 });
    expect(srv.pending).toBe(0);
  });

  it('closes a frame over the pre-authentication limit with 1009 before reading it', async () => {
    const { srv } = await server();
    for (const size of [PRE_AUTH_MAX_PAYLOAD + 1, 15 * 1024 * 1024]) {
      const [code, reason] = await sendBeforeAuth(srv, new Uint8Array(size).fill(0xc0), true);
      expect(code).toBe(1009);
      expect(reason).toBe(`message too big (limit ${PRE_AUTH_MAX_PAYLOAD} bytes before authentication)`);
    }
    // A frame of exactly the limit is read (and refused as a hello, 1008), not cut off.
    const [code, reason] = await sendBeforeAuth(srv, Uint8Array.from([0xc5, 0x01, 0xfd, ...new Uint8Array(PRE_AUTH_MAX_PAYLOAD - 3)]), true);
    expect(code).toBe(1008);
    expect(reason).toMatch(/hello|challenge|authentication failed/);
    expect(await healthCheck(srv)).toEqual({ pong: 1 });
  });

  it('refuses pathological frames at once (promises, nesting, structured clones) and serves the next client', async () => {
    const { srv } = await server();
    const cyclic: Record<string, unknown> = { a: [1, 2, 3] };
    cyclic.self = cyclic;
    cyclic.again = cyclic.a;
    let dag: unknown = [1];
    for (let i = 0; i < 30; i++) dag = [dag, dag]; // 2^30 leaves through shared references: the frame that stopped dom0
    const frames: Array<[Uint8Array, RegExp]> = [
      [new Packr({ structuredClone: true }).pack({ t: 'hello', v: 1, role: 'guest', domid: 1, nonce: dag }), /extension .* not accepted/],
      [Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff]), /declares more values than its 5 bytes/],
      [Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x91, 0x91, 0x91]), /declares more values/],
      [Uint8Array.from([...new Array<number>(PRE_AUTH_MAX_PAYLOAD - 1).fill(0x91), 0xc0]), /nested deeper than 64/],
      [Uint8Array.from([0xdc, 0x01, 0xfd, ...new Array<number>(PRE_AUTH_MAX_PAYLOAD - 3).fill(0x9f)]), /declares more values/],
      [new Packr({ structuredClone: true }).pack(cyclic), /extension .* not accepted/],
      [new Packr({ useRecords: true }).pack([{ a: 1 }, { a: 2 }, { a: 3 }]), /extension 114/],
    ];
    for (const [frame, why] of frames) {
      expect(frame.byteLength).toBeLessThanOrEqual(PRE_AUTH_MAX_PAYLOAD);
      const [code, reason] = await sendBeforeAuth(srv, frame, false);
      expect(code).toBe(1008);
      expect(reason).toMatch(why);
    }
    expect(await healthCheck(srv)).toEqual({ pong: 1 });
  });

  it('a client takes only handshake-sized frames from a server that has not proven itself', async () => {
    const closes: number[] = [];
    const evil = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    let mode: 'huge-first' | 'challenge-then-big' = 'huge-first';
    evil.on('connection', (ws) => {
      ws.on('error', () => {});
      ws.on('close', (c) => closes.push(c));
      if (mode === 'huge-first') ws.send(new Uint8Array(8 * 1024 * 1024));
      else {
        ws.send(plain.pack(createChallenge()));
        ws.send(new Uint8Array(PRE_AUTH_MAX_PAYLOAD + 1));
      }
    });
    await new Promise<void>((r) => evil.once('listening', () => r()));
    cleanup.push(() => new Promise<void>((r) => evil.close(() => r())));
    const url = `ws://127.0.0.1:${(evil.address() as { port: number }).port}`;
    for (const m of ['huge-first', 'challenge-then-big'] as const) {
      mode = m;
      const err = await connect({ url, secret, role: 'guest', domid: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as Error).message).toMatch(`message too big (limit ${PRE_AUTH_MAX_PAYLOAD} bytes before authentication)`);
    }
    await expect.poll(() => closes).toEqual([1009, 1009]);
  });

  it('full-size frames flow both ways from the first message after the welcome', async () => {
    const big = new Uint8Array(randomBytes(256 * 1024));
    const srv = await listen({
      port: 0,
      secret,
      authorize: () => true,
      onConnection: (link) => {
        const peer = new RpcPeer(link, 'server').handle('echo', (p) => p);
        peer.notify('first', big); // in the same turn as the welcome
      },
    });
    cleanup.push(() => srv.close());
    const link = await connect({ url: srv.url, secret, role: 'guest', domid: 3 });
    cleanup.push(() => link.close('done'));
    const peer = new RpcPeer(link, 'client');
    const first = new Promise<Uint8Array>((resolve) => peer.on('first', (p) => resolve(p as Uint8Array)));
    expect(Buffer.compare(await first, big)).toBe(0);
    expect(Buffer.compare(await peer.call<Uint8Array>('echo', big), big)).toBe(0);
  });
});

describe('after authentication', () => {
  it('a frame with an extension, a broken promise or deep nesting closes only its own link', async () => {
    const { srv } = await server();
    const good = await connect({ url: srv.url, secret, role: 'guest', domid: 1 });
    cleanup.push(() => good.close('done'));
    const goodPeer = new RpcPeer(good, 'good');
    const big = (head: number[], fill: number): Uint8Array => {
      const b = new Uint8Array(4 * 1024 * 1024).fill(fill);
      b.set(head);
      return b;
    };
    const hostile = fc.oneof(
      anyExtension.chain(embedded).map((f): [Uint8Array, RegExp] => [f, /extension/]),
      fc.constant<[Uint8Array, RegExp]>([big([0xdd, 0x00, 0x40, 0x00, 0x00], 0xc0), /declares more values/]),
      fc.constant<[Uint8Array, RegExp]>([big([], 0x91), /nested deeper than 64/]),
      // 4 Mi empty arrays: decodable, proportional, and still seconds of allocation — over MAX_VALUES
      fc.constant<[Uint8Array, RegExp]>([big([0xdd, 0x00, 0x3f, 0xff, 0xfb], 0x90), /declares more than 1048576 values/]),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(hostile, async ([frame, why]) => {
        const link = await connect({ url: srv.url, secret, role: 'guest', domid: 2 });
        const closed = new Promise<[number, string]>((resolve) => link.ws.once('close', (c, r) => resolve([c, r.toString()])));
        link.ws.send(frame);
        const [code, reason] = await closed;
        expect(code).toBe(1008);
        expect(reason).toMatch(why);
        n++;
        expect(await goodPeer.call('ping', n)).toEqual({ pong: n });
      }),
      { numRuns: 40, seed: 0xaf7e },
    );
    expect(good.closed).toBe(false);
  });
});

describe('pending connections', () => {
  it(`holds at most ${DEFAULT_MAX_PENDING_PER_ADDRESS} half-open sockets per address; a health check from another address gets in; the rest are cut at the deadline`, async () => {
    const { srv, lines } = await server({ handshakeTimeoutMs: 1500 });
    const flood = halfOpen(srv, '127.0.0.2', 20);
    await expect.poll(() => flood.filter((s) => s.closed).length).toBe(20 - DEFAULT_MAX_PENDING_PER_ADDRESS);
    expect(srv.pending).toBe(DEFAULT_MAX_PENDING_PER_ADDRESS);
    for (const s of flood.filter((f) => f.closed)) expect(s.data).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*too many pending connections from 127\.0\.0\.2/);
    // during the flood
    expect(await healthCheck(srv)).toEqual({ pong: 1 });
    expect(flood.filter((s) => !s.closed)).toHaveLength(DEFAULT_MAX_PENDING_PER_ADDRESS);
    // the held ones never sent a request: cut at the deadline
    await expect.poll(() => flood.every((s) => s.closed), { timeout: 15_000 }).toBe(true);
    await expect.poll(() => srv.pending).toBe(0);
    expect(srv.refusals).toBe(20);
    // logged at a bounded rate, with the count of the rest
    await srv.close();
    const about = lines.filter((l) => l.level === 40 && (l.peer?.startsWith('127.0.0.2') ?? false));
    const summaries = about.filter((l) => /more refusals from 127\.0\.0\.2 suppressed/.test(l.msg));
    const written = about.length - summaries.length;
    expect(written).toBeGreaterThanOrEqual(1);
    expect(written).toBeLessThanOrEqual(6);
    expect(written + summaries.reduce((s, l) => s + (l.suppressed ?? 0), 0)).toBe(20);
  });

  it('counts upgraded but silent WebSockets the same way, and closes them with 1008 at the deadline', async () => {
    const { srv } = await server({ handshakeTimeoutMs: 1500 });
    const opened: WebSocket[] = [];
    const outcomes: Array<[number, string] | 'refused'> = [];
    for (let i = 0; i < 12; i++) {
      const ws = new WebSocket(srv.url, { perMessageDeflate: false, localAddress: '127.0.0.3' });
      ws.on('error', () => {});
      ws.on('unexpected-response', (_req, res) => {
        outcomes.push(res.statusCode === 503 ? 'refused' : [res.statusCode ?? 0, 'http']);
        ws.terminate();
      });
      ws.on('open', () => opened.push(ws));
      ws.on('close', (c, r) => {
        if (opened.includes(ws)) outcomes.push([c, r.toString()]);
      });
      cleanup.push(() => ws.terminate());
    }
    await expect.poll(() => outcomes.filter((o) => o === 'refused').length).toBe(12 - DEFAULT_MAX_PENDING_PER_ADDRESS);
    await expect.poll(() => opened.length).toBe(DEFAULT_MAX_PENDING_PER_ADDRESS);
    expect(await healthCheck(srv)).toEqual({ pong: 1 });
    await expect.poll(() => outcomes.length, { timeout: 15_000 }).toBe(12);
    expect(outcomes.filter((o) => o !== 'refused')).toEqual(new Array(DEFAULT_MAX_PENDING_PER_ADDRESS).fill([1008, 'authentication timeout']));
  });

  it('caps pending connections over all addresses too, and lets clients in again once they go', async () => {
    const { srv } = await server({ maxPendingHandshakes: 3 });
    const held = [...halfOpen(srv, '127.0.0.2', 1), ...halfOpen(srv, '127.0.0.3', 1), ...halfOpen(srv, '127.0.0.4', 1)];
    await expect.poll(() => srv.pending).toBe(3);
    const [fourth] = halfOpen(srv, '127.0.0.5', 1);
    await expect.poll(() => fourth.closed).toBe(true);
    expect(fourth.data).toMatch(/503 Service Unavailable[\s\S]*too many pending connections\n$/);
    const err = await connect({ url: srv.url, secret, role: 'control', domid: 0, timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClosedError);
    expect((err as Error).message).toMatch(/answered 503 Service Unavailable/);
    for (const h of held) h.sock.destroy();
    await expect.poll(() => srv.pending).toBe(0);
    expect(await healthCheck(srv)).toEqual({ pong: 1 });
  });

  it('a client answered 503 tries again within its budget: runtimes starting together all get in', async () => {
    const { srv } = await server({ maxPendingPerAddress: 2 });
    const held = halfOpen(srv, '127.0.0.1', 2);
    await expect.poll(() => srv.pending).toBe(2);
    const burst = Array.from({ length: 4 }, (_, i) => connect({ url: srv.url, secret, role: 'guest', domid: 10 + i, timeoutMs: 20_000 }));
    await expect.poll(() => srv.refusals).toBeGreaterThanOrEqual(4); // each was turned away at least once
    for (const h of held) h.sock.destroy();
    const links = await Promise.all(burst);
    for (const l of links) cleanup.push(() => l.close('done'));
    expect(links.map((l) => l.identity?.domid)).toEqual([10, 11, 12, 13]);
    expect(srv.connections).toBe(4);
  });

  it('keys addresses: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64', () => {
    expect(addressKey('127.0.0.2')).toBe('127.0.0.2');
    expect(addressKey('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(addressKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2::7')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey(undefined)).toBe('unknown');
  });
});
