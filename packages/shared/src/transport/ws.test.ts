import { randomBytes } from 'node:crypto';
import { connect as connectTcp, type Socket } from 'node:net';
import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { Logger } from '../log/index.js';
import { ClosedError, DomainError, GrantError, ProtocolError, RemoteError } from '../errors.js';
import { createChallenge, type Identity } from './auth.js';
import { RpcPeer } from './rpc.js';
import { connect, encodeMessage, listen, msgpackProblem, PRE_AUTH_MAX_PAYLOAD, wireMessageProblem, type ListenOptions, type WsLink, type WsServer } from './ws.js';

const secret = new Uint8Array(randomBytes(32));
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

interface Served {
  srv: WsServer;
  peers: RpcPeer[];
  links: WsLink[];
}

/** A server whose connections get an RpcPeer with a few methods. */
async function rpcServer(extra: Partial<ListenOptions> = {}): Promise<Served> {
  const peers: RpcPeer[] = [];
  const links: WsLink[] = [];
  const srv = await listen({
    port: 0,
    secret,
    authorize: () => true,
    onConnection: (link, who) => {
      links.push(link);
      const peer: RpcPeer = new RpcPeer(link, `server:${who.role}/${who.domid}`)
        .handle('add', (p) => {
          const { a, b } = p as { a: number; b: number };
          return a + b;
        })
        .handle('whoami', () => who)
        .handle('echo', (p) => p)
        .handle('hang', () => new Promise(() => {}))
        .handle('grow', (n) => 'x'.repeat(n as number))
        .handle('missing-domain', () => {
          throw new DomainError('domain 9 does not exist');
        })
        .handle('bad-grant', () => {
          throw new GrantError('bad gref', -4);
        })
        .handle('ask-back', async () => {
          const v: number = await peer.call<number>('double', 21);
          return v + 1;
        })
        .on('ping', (payload) => peer.notify('pong', payload));
      peers.push(peer);
      peer.notify('hello-early', { at: 'onConnection' });
    },
    ...extra,
  });
  cleanup.push(() => srv.close());
  return { srv, peers, links };
}

async function client(srv: WsServer, role: Identity['role'] = 'guest', domid = 1, extra: Partial<Parameters<typeof connect>[0]> = {}): Promise<WsLink> {
  const link = await connect({ url: srv.url, secret, role, domid, ...extra });
  cleanup.push(() => link.close('test done'));
  return link;
}

function closedBy(link: WsLink): Promise<string> {
  return new Promise((resolve) => link.onClose(resolve));
}

describe('plain msgpack between independent instances', () => {
  it('round-trips messages through a fresh Unpackr every time, and through a long-lived one', () => {
    const longLived = new Unpackr({ useRecords: false });
    fc.assert(
      fc.property(fc.array(fc.record({ x: fc.integer(), y: fc.string(), z: fc.array(fc.record({ q: fc.boolean(), r: fc.double().map((x) => (Object.is(x, -0) ? 0 : x)) })) }), { maxLength: 5 }), (payload) => {
        const msg = { t: 'notify' as const, topic: 'shape', payload };
        const bytes = encodeMessage(msg);
        // no extension byte anywhere: what other msgpack implementations read as it is
        expect(msgpackProblem(bytes)).toBeNull();
        expect(new Unpackr({ useRecords: false }).unpack(bytes)).toEqual(msg);
        expect(longLived.unpack(bytes)).toEqual(msg);
      }),
      { numRuns: 300, seed: 7 },
    );
  });

  it('refuses to encode what a receiver would refuse (a Date is a timestamp extension)', () => {
    expect(() => encodeMessage({ t: 'notify', topic: 'd', payload: { at: new Date() } })).toThrow(/peer would refuse this message: msgpack extension -1 \(timestamp\)/);
  });

  it('carries Uint8Array as bin and returns it as a Buffer (a Uint8Array)', () => {
    const data = new Uint8Array(randomBytes(1000)).subarray(10, 900);
    const back = unpackr.unpack(encodeMessage({ t: 'notify', topic: 'b', payload: { data } })) as { payload: { data: Uint8Array } };
    expect(back.payload.data).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(back.payload.data)).toEqual(Buffer.from(data));
  });
});

describe('RpcPeer over WsLink', () => {
  it('calls, errors with codes, notifications and binary payloads, both ways', async () => {
    const { srv, links } = await rpcServer();
    const link = await client(srv, 'guest', 4);
    const peer = new RpcPeer(link, 'client').handle('double', (n) => (n as number) * 2);
    const early: unknown[] = [];
    peer.on('hello-early', (p) => early.push(p));
    const pongs: unknown[] = [];
    peer.on('pong', (p) => pongs.push(p));

    expect(await peer.call('add', { a: 2, b: 40 })).toBe(42);
    expect(await peer.call('whoami')).toEqual({ role: 'guest', domid: 4 });
    // a notification sent by the server before connect() resolved was kept, not lost
    expect(early).toEqual([{ at: 'onConnection' }]);

    const e1 = await peer.call('missing-domain').catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(RemoteError);
    expect((e1 as RemoteError).code).toBe('RV_ERR_DOMAIN');
    expect((e1 as Error).message).toMatch(/domain 9/);
    const e2 = await peer.call('bad-grant').catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(GrantError);
    expect((e2 as GrantError).status).toBe(-4);
    const e3 = await peer.call('nope').catch((e: unknown) => e);
    expect((e3 as RemoteError).code).toBe('RV_ERR_PROTOCOL');

    // server → client call, nested inside a client → server call
    expect(await peer.call('ask-back')).toBe(43);

    peer.notify('ping', { n: 1 });
    peer.notify('ping', { n: 2 });
    await expect.poll(() => pongs).toEqual([{ n: 1 }, { n: 2 }]);

    const blob = new Uint8Array(randomBytes(3 * 1024 * 1024));
    const echoed = await peer.call<{ blob: Uint8Array; pages: Array<[number, Uint8Array]> }>('echo', {
      blob,
      pages: [
        [0, blob.subarray(0, 4096)],
        [4096, blob.subarray(4096, 4100)],
      ],
    });
    expect(echoed.blob).toBeInstanceOf(Uint8Array);
    expect(Buffer.compare(echoed.blob, blob)).toBe(0);
    expect(Buffer.from(echoed.pages[1][1])).toEqual(Buffer.from(blob.subarray(4096, 4100)));

    expect(link.counters.framesSent).toBeGreaterThan(5);
    expect(link.counters.bytesReceived).toBeGreaterThan(blob.byteLength);
    expect(links[0].counters.framesReceived).toBe(link.counters.framesSent);

    // closing reports the reason on both sides; later calls fail with it
    const done = closedBy(links[0]);
    link.close('client leaving');
    expect(await done).toBe('closed by peer (1000: client leaving)');
    await expect(peer.call('add', { a: 1, b: 1 })).rejects.toThrow(/client leaving/);
  });

  it('refuses to send a message over maxPayload instead of getting the link killed', async () => {
    const { srv } = await rpcServer({ maxPayload: 64 * 1024 });
    const link = await client(srv, 'guest', 1, { maxPayload: 64 * 1024 });
    const peer = new RpcPeer(link, 'client');
    await expect(peer.call('echo', new Uint8Array(100 * 1024))).rejects.toThrow(ProtocolError);
    expect(() => link.sendRaw(new Uint8Array(65 * 1024))).toThrow(/exceeds the 65536-byte limit/);
    expect(await peer.call('add', { a: 1, b: 2 })).toBe(3);
    // a result too big to send comes back as an error, and the link survives
    const big = await peer.call('grow', 65 * 1024).catch((e: unknown) => e);
    expect(big).toBeInstanceOf(RemoteError);
    expect((big as RemoteError).code).toBe('RV_ERR_PROTOCOL');
    expect(await peer.call('add', { a: 2, b: 2 })).toBe(4);
  });

  it('closes an oversized frame with 1009 and a readable reason', async () => {
    const { srv } = await rpcServer({ maxPayload: 64 * 1024 });
    const link = await client(srv);
    const closed = new Promise<[number, string]>((resolve) => link.ws.once('close', (code, reason) => resolve([code, reason.toString()])));
    link.ws.send(Buffer.alloc(64 * 1024 + 1));
    expect(await closed).toEqual([1009, 'message too big (limit 65536 bytes)']);
    expect(link.closeInfo).toMatchObject({ code: 1009, byPeer: true });
  });
});

describe('hostile peers (bounded fuzzing)', () => {
  type Junk = { kind: 'binary'; bytes: Uint8Array } | { kind: 'text'; text: string } | { kind: 'oversized'; size: number };
  const LIMIT = 32 * 1024;
  const packr = new Packr({ useRecords: false });

  const packed = (v: unknown): Uint8Array => {
    try {
      return packr.pack(v);
    } catch {
      return new Uint8Array([0xc1]); // never-used msgpack byte
    }
  };
  const wireish = fc
    .record(
      {
        t: fc.constantFrom('call', 'result', 'error', 'notify', 'challenge', 'hello', 'welcome', 'nope'),
        id: fc.oneof(fc.nat(), fc.double(), fc.string(), fc.constant(null)),
        method: fc.oneof(fc.string(), fc.integer()),
        topic: fc.oneof(fc.string(), fc.constant(undefined)),
        error: fc.oneof(fc.record({ code: fc.string(), message: fc.string() }), fc.anything()),
        params: fc.anything(),
        v: fc.constantFrom(1, 2),
        role: fc.constantFrom('guest', 'dom0', 'hwsim', 'root'),
        domid: fc.oneof(fc.nat({ max: 0x8001 }), fc.double()),
        nonce: fc.uint8Array({ minLength: 30, maxLength: 33 }),
        mac: fc.uint8Array({ minLength: 31, maxLength: 33 }),
      },
      { requiredKeys: ['t'] },
    )
    .map((o) => packed(o));
  const helloBadMac = fc
    .record({ role: fc.constantFrom('guest', 'dom0', 'hwsim', 'switch', 'control'), domid: fc.nat({ max: 0x7fff }), mac: fc.uint8Array({ minLength: 32, maxLength: 32 }) })
    .map(({ role, domid, mac }) => packed({ t: 'hello', v: 1, role, domid, nonce: new Uint8Array(randomBytes(32)), mac }));
  const junk: fc.Arbitrary<Junk> = fc.oneof(
    fc.uint8Array({ maxLength: 2048 }).map((bytes): Junk => ({ kind: 'binary', bytes })),
    fc
      .anything({ maxDepth: 4, withBigInt: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withNullPrototype: true })
      .map((v): Junk => ({ kind: 'binary', bytes: packed(v) })),
    wireish.map((bytes): Junk => ({ kind: 'binary', bytes })),
    helloBadMac.map((bytes): Junk => ({ kind: 'binary', bytes })),
    fc.nat({ max: 30_000 }).map((n): Junk => ({ kind: 'binary', bytes: new Uint8Array([...new Array<number>(n).fill(0x91), 0xc0]) })), // deep nesting
    fc.constantFrom(new Uint8Array([0xc7, 0x01, 0x78, 0x00]), new Uint8Array([0xd4, 0x65, 0x00]), new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff])).map((bytes): Junk => ({ kind: 'binary', bytes })),
    fc.string({ maxLength: 200 }).map((text): Junk => ({ kind: 'text', text })),
    fc.integer({ min: LIMIT + 1, max: LIMIT + 4096 }).map((size): Junk => ({ kind: 'oversized', size })),
  );

  function sendJunk(ws: WebSocket, j: Junk): void {
    if (j.kind === 'text') ws.send(j.text);
    else if (j.kind === 'oversized') ws.send(Buffer.alloc(j.size, 0x42));
    else ws.send(j.bytes);
  }

  /** Would WsLink accept these bytes as a WireMessage? (Then the peer is not misbehaving.) */
  function acceptable(j: Junk): boolean {
    if (j.kind !== 'binary' || msgpackProblem(j.bytes) !== null) return false;
    try {
      return wireMessageProblem(unpackr.unpack(j.bytes)) === null;
    } catch {
      return false;
    }
  }

  it('survives junk before and after authentication; a well-behaved client is unaffected', async () => {
    const { srv } = await rpcServer({ maxPayload: LIMIT });
    const good = await client(srv, 'guest', 2);
    const goodPeer = new RpcPeer(good, 'good');
    let n = 0;
    const codes = new Map<number, number>();

    await fc.assert(
      fc.asyncProperty(junk, fc.constantFrom('before', 'before-reading-challenge', 'after'), async (j, phase) => {
        let code: number;
        if (phase === 'after') {
          const link = await connect({ url: srv.url, secret, role: 'guest', domid: 9 });
          const closed = new Promise<number>((resolve) => link.ws.once('close', (c) => resolve(c)));
          sendJunk(link.ws, j);
          if (acceptable(j)) {
            link.close('valid by chance');
            code = 1000;
          } else code = await closed;
        } else {
          const ws = new WebSocket(srv.url, { perMessageDeflate: false });
          ws.on('error', () => {});
          const closed = new Promise<number>((resolve) => ws.once('close', (c) => resolve(c)));
          const gotChallenge = new Promise<void>((resolve) => ws.once('message', () => resolve()));
          await new Promise<void>((resolve) => ws.once('open', () => resolve()));
          if (phase === 'before') await gotChallenge;
          sendJunk(ws, j);
          code = await closed;
        }
        codes.set(code, (codes.get(code) ?? 0) + 1);
        if (j.kind === 'oversized') expect(code).toBe(1009);
        else if (phase !== 'after' && j.kind === 'binary' && j.bytes.byteLength > PRE_AUTH_MAX_PAYLOAD) expect(code).toBe(1009);
        else if (phase !== 'after' || !acceptable(j)) expect(code).toBe(1008);
        // the honest client keeps getting correct answers
        n++;
        expect(await goodPeer.call('add', { a: n, b: 1000 })).toBe(n + 1000);
      }),
      { numRuns: 300, seed: 0x5eed },
    );
    expect(good.closed).toBe(false);
    expect(srv.connections).toBeGreaterThanOrEqual(1);
    expect(await goodPeer.call('whoami')).toEqual({ role: 'guest', domid: 2 });
    expect(codes.get(1008)).toBeGreaterThan(100);
    expect(codes.get(1009)).toBeGreaterThan(5);
  });

  it('closes a peer whose msgpack decodes to exotic objects or nests too deep, and logs it', async () => {
    const lines: string[] = [];
    const log: Logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    const { srv } = await rpcServer({ log });
    const cases: Array<[Uint8Array, RegExp]> = [
      // a hostile peer can emit msgpackr's RegExp / Error / record extensions; the receiver refuses them unread
      [new Packr({ moreTypes: true, useRecords: false }).pack({ t: 'notify', topic: 'x', payload: /a+$/ }), /extension 120 \(msgpackr's RegExp\)/],
      [new Packr({ moreTypes: true, useRecords: false }).pack({ t: 'notify', topic: 'x', payload: [new Error('boom')] }), /extension 101 \(msgpackr's Error\)/],
      [new Packr({ useRecords: true }).pack({ t: 'notify', topic: 'x' }), /extension 114 \(msgpackr's record\)/],
      [new Uint8Array([...new Array<number>(100).fill(0x91), 0xc0]), /nested deeper than 64/],
      [new Uint8Array([0x93, 1, 2]), /declares more values/], // truncated array
      [new Uint8Array([0xc1]), /never-used byte 0xc1/], // msgpackr's "never used" marker object
      [new Packr({ useRecords: false }).pack({ t: 'result' }), /result without a valid id/],
      [new Packr({ useRecords: false }).pack({ t: 'welcome', v: 1, mac: new Uint8Array(32) }), /welcome after the handshake/],
    ];
    for (const [bytes, why] of cases) {
      const link = await client(srv);
      const closed = new Promise<[number, string]>((resolve) => link.ws.once('close', (c, r) => resolve([c, r.toString()])));
      link.sendRaw(bytes);
      const [code, reason] = await closed;
      expect(code).toBe(1008);
      expect(reason).toMatch(why);
    }
    // Logged at a bounded rate: the first three refusals from 127.0.0.1, then a count of the rest.
    await srv.close();
    const warned = lines.map((l) => JSON.parse(l) as { level: number; link?: string; reason?: string; code?: number; msg: string; suppressed?: number });
    expect(warned.filter((w) => w.level === 40 && w.code === 1008 && /^guest\/1@127\.0\.0\.1:\d+$/.test(w.link ?? ''))).toHaveLength(3);
    expect(warned.filter((w) => /more refusals from 127\.0\.0\.1 suppressed/.test(w.msg))).toEqual([expect.objectContaining({ suppressed: cases.length - 3 })]);
  });

  it('shrugs off raw TCP garbage and bogus HTTP on the listening port', async () => {
    const { srv } = await rpcServer();
    const good = await client(srv, 'control', 0);
    const peer = new RpcPeer(good, 'good');
    const payloads = [
      randomBytes(4096),
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bogus\r\n\r\n'),
      Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'), // a TLS ClientHello start
    ];
    for (const p of payloads) {
      const sock = connectTcp(srv.port, '127.0.0.1');
      sock.on('error', () => {});
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.write(p);
      await new Promise<void>((r) => {
        sock.once('close', () => r());
        setTimeout(() => {
          sock.destroy();
          r();
        }, 300);
      });
      expect(await peer.call('add', { a: 1, b: 2 })).toBe(3);
    }
  });

  it('a client refuses a hostile server that sends junk instead of a challenge', async () => {
    const { WebSocketServer } = await import('ws');
    const evil = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    evil.on('connection', (ws) => {
      ws.on('error', () => {});
      ws.send(new Uint8Array([0x93, 1, 2]));
    });
    await new Promise<void>((r) => evil.once('listening', () => r()));
    cleanup.push(() => new Promise<void>((r) => evil.close(() => r())));
    const port = (evil.address() as { port: number }).port;
    await expect(connect({ url: `ws://127.0.0.1:${port}`, secret, role: 'guest', domid: 1 })).rejects.toThrow(/malformed message|expected challenge/);
    // and a challenge with a short nonce
    const evil2 = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    evil2.on('connection', (ws) => {
      ws.on('error', () => {});
      ws.send(new Packr({ useRecords: false }).pack({ ...createChallenge(), nonce: new Uint8Array(4) }));
    });
    await new Promise<void>((r) => evil2.once('listening', () => r()));
    cleanup.push(() => new Promise<void>((r) => evil2.close(() => r())));
    const port2 = (evil2.address() as { port: number }).port;
    await expect(connect({ url: `ws://127.0.0.1:${port2}`, secret, role: 'guest', domid: 1 })).rejects.toThrow(/bad nonce/);
  });
});

describe('lifecycle', () => {
  it('server close tells clients why and fails their pending calls', async () => {
    const { srv } = await rpcServer();
    const link = await client(srv, 'hwsim', 0);
    const peer = new RpcPeer(link, 'client');
    const slow = peer.call('hang').catch((e: unknown) => e); // never answered
    const reason = closedBy(link);
    await new Promise((r) => setTimeout(r, 20));
    await srv.close();
    expect(await reason).toBe('closed by peer (1001: server shutting down)');
    const err = await slow;
    expect(err).toBeInstanceOf(ClosedError);
    expect((err as Error).message).toMatch(/server shutting down/);
    expect(srv.connections).toBe(0);
  });

  it('answers plain HTTP with 426, and close() does not wait for half-sent requests', async () => {
    const { srv } = await rpcServer();
    const res = await fetch(`http://127.0.0.1:${srv.port}/`);
    expect(res.status).toBe(426);
    await res.text();
    const sock = connectTcp(srv.port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write('GET / HTTP/1.1\r\nHost: x\r\n'); // and never finish
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await srv.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    sock.destroy();
  });

  it('reports a reason to onClose listeners registered after the fact', async () => {
    const { srv } = await rpcServer();
    const link = await client(srv);
    link.close('done here', 1000);
    expect(await closedBy(link)).toBe('done here');
    expect(link.closeInfo).toEqual({ code: 1000, reason: 'done here', byPeer: false });
  });
});

describe('backpressure', () => {
  function pauseSocket(link: WsLink): Socket {
    const sock = (link.ws as unknown as { _socket: Socket })._socket;
    sock.pause();
    return sock;
  }

  it('queues for a slow reader, then closes it with "peer too slow" past the hard cap', async () => {
    const { srv, links } = await rpcServer({ highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024, maxQueuedBytes: 1024 * 1024 });
    const slow = await client(srv, 'guest', 5);
    const healthy = await client(srv, 'guest', 6);
    const healthyPeer = new RpcPeer(healthy, 'healthy');
    await expect.poll(() => links.length).toBe(2);
    const sender = links[0].identity?.domid === 5 ? links[0] : links[1];
    pauseSocket(slow);
    const reason = closedBy(sender);
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    let peakQueue = 0;
    while (!sender.closed && sent < 2000) {
      sender.send({ t: 'notify', topic: 'flood', payload: { seq: sent, chunk } });
      peakQueue = Math.max(peakQueue, sender.queuedBytes);
      sent++;
    }
    expect(await reason).toBe('peer too slow');
    expect(sender.closeInfo).toMatchObject({ code: 1008, reason: 'peer too slow', byPeer: false });
    expect(peakQueue).toBeGreaterThan(900 * 1024);
    expect(peakQueue).toBeLessThanOrEqual(1024 * 1024);
    expect(sender.queuedBytes).toBe(0);
    // nobody else noticed
    expect(await healthyPeer.call('add', { a: 1, b: 1 })).toBe(2);
  });

  it('delivers everything in order to a reader that stalls and resumes', async () => {
    const { srv, links } = await rpcServer({ highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024, maxQueuedBytes: 64 * 1024 * 1024 });
    const reader = await client(srv, 'guest', 7);
    const got: number[] = [];
    let corrupt = 0;
    const peer = new RpcPeer(reader, 'reader');
    peer.on('seq', (p) => {
      const { seq, data } = p as { seq: number; data: Uint8Array };
      got.push(seq);
      if (data.byteLength !== 8192 || data[0] !== (seq & 0xff) || data[8191] !== (seq & 0xff)) corrupt++;
    });
    await expect.poll(() => links.length).toBe(1);
    const sender = links[0];
    const sock = pauseSocket(reader);
    const N = 3000; // ~24 MiB
    for (let seq = 0; seq < N; seq++) sender.send({ t: 'notify', topic: 'seq', payload: { seq, data: new Uint8Array(8192).fill(seq & 0xff) } });
    expect(sender.queuedBytes).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 100));
    sock.resume();
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(N);
    expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(corrupt).toBe(0);
    expect(sender.queuedBytes).toBe(0);
    expect(sender.peakQueuedBytes).toBeGreaterThan(1024 * 1024);
    expect(sender.counters.framesSent).toBeGreaterThanOrEqual(N);
    expect(sender.closed).toBe(false);
  });
});
