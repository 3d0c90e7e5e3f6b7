import { MessageChannel } from 'node:worker_threads';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { PortLink, RpcPeer, type MessageLink, type WireMessage } from './rpc.js';
import { ToxicLink, jsonSize, type LinkToxics } from './toxics.js';

/** Two ends of an in-memory, synchronous, ordered link; closing either end closes both. */
function memoryPair(): [MessageLink, MessageLink] {
  interface End {
    cbs: Array<(m: unknown) => void>;
    closeCbs: Array<(r: string) => void>;
    backlog: unknown[];
  }
  const ends: [End, End] = [
    { cbs: [], closeCbs: [], backlog: [] },
    { cbs: [], closeCbs: [], backlog: [] },
  ];
  let closed = false;
  const close = (reason: string): void => {
    if (closed) return;
    closed = true;
    for (const e of ends) for (const cb of e.closeCbs) cb(reason);
  };
  const link = (me: End, peer: End): MessageLink => ({
    send(msg) {
      if (closed) return;
      if (peer.cbs.length === 0) peer.backlog.push(msg);
      else for (const cb of peer.cbs) cb(msg);
    },
    onMessage(cb) {
      me.cbs.push(cb);
      const early = me.backlog.splice(0);
      for (const m of early) cb(m);
    },
    onClose(cb) {
      me.closeCbs.push(cb);
    },
    close,
  });
  return [link(ends[0], ends[1]), link(ends[1], ends[0])];
}

function note(seq: number, pad = ''): WireMessage {
  return { t: 'notify', topic: 'm', payload: { seq, pad } };
}

function seqOf(m: unknown): number {
  return ((m as { payload: { seq: number } }).payload).seq;
}

/** Records what arrives on a link, and when (fake clock). */
function recorder(link: MessageLink): { seqs: number[]; times: number[] } {
  const r = { seqs: [] as number[], times: [] as number[] };
  link.onMessage((m) => {
    r.seqs.push(seqOf(m));
    r.times.push(performance.now());
  });
  return r;
}

function closeReason(link: MessageLink): { reason: string | undefined } {
  const r: { reason: string | undefined } = { reason: undefined };
  link.onClose((why) => (r.reason = why));
  return r;
}

describe('ToxicLink', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.clearAllTimers();
    vi.useRealTimers();
  });

  it('passes messages straight through in both directions with no toxics, without timers', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const b = new ToxicLink(y);
    const atB = recorder(b);
    const atA = recorder(a);
    for (let i = 0; i < 5; i++) a.send(note(i));
    b.send(note(100));
    expect(atB.seqs).toEqual([0, 1, 2, 3, 4]); // synchronously: nothing queued
    expect(atA.seqs).toEqual([100]);
    expect(vi.getTimerCount()).toBe(0);
    expect(a.counters).toEqual({ delayed: 0, held: 0, released: 0, resets: 0, discarded: 0 });
    a.set({ latencyMs: 5 });
    a.heal();
    a.send(note(5));
    expect(atB.seqs).toEqual([0, 1, 2, 3, 4, 5]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('passes through over a worker MessageChannel (PortLink), closing included', async () => {
    vi.useRealTimers();
    const ch = new MessageChannel();
    const a = new ToxicLink(new PortLink(ch.port1));
    const b = new ToxicLink(new PortLink(ch.port2));
    const got: number[] = [];
    const done = new Promise<void>((resolve) =>
      b.onMessage((m) => {
        got.push(seqOf(m));
        if (got.length === 3) resolve();
      }),
    );
    const closedB = new Promise<string>((resolve) => b.onClose(resolve));
    const closedA = new Promise<string>((resolve) => a.onClose(resolve));
    a.set({ latencyMs: 10, jitterMs: 5 });
    for (let i = 0; i < 3; i++) a.send(note(i));
    await done;
    expect(got).toEqual([0, 1, 2]);
    a.close('bye');
    expect(await closedA).toBe('bye');
    expect(await closedB).toBe('port closed');
    expect(a.closed && b.closed).toBe(true);
  });

  it('delays by latency plus jitter, and jitter never reorders', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const atB = recorder(y);
    a.set({ latencyMs: 50, jitterMs: 40, seed: 7 });
    const sentAt: number[] = [];
    for (let i = 0; i < 40; i++) {
      sentAt.push(performance.now());
      a.send(note(i));
      vi.advanceTimersByTime(i % 3); // some back to back, some spaced
    }
    expect(atB.seqs.length).toBeLessThan(40);
    vi.advanceTimersByTime(200);
    expect(atB.seqs).toEqual([...Array(40).keys()]);
    const delays = atB.times.map((t, i) => t - sentAt[i]);
    for (const d of delays) expect(d).toBeGreaterThanOrEqual(50);
    expect(new Set(delays.map(Math.round)).size).toBeGreaterThan(5); // jitter did something
    for (let i = 1; i < atB.times.length; i++) expect(atB.times[i]).toBeGreaterThanOrEqual(atB.times[i - 1]);
    expect(a.counters.delayed).toBe(40);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('gives the same delays for the same seed, and others for another seed', () => {
    const run = (seed: number): number[] => {
      const [x, y] = memoryPair();
      const a = new ToxicLink(x, { now: () => Date.now() });
      const t0 = Date.now();
      const times: number[] = [];
      y.onMessage(() => times.push(Date.now() - t0));
      a.set({ latencyMs: 20, jitterMs: 100, seed });
      for (let i = 0; i < 20; i++) {
        a.send(note(i));
        vi.advanceTimersByTime(10);
      }
      vi.advanceTimersByTime(1000);
      return times;
    };
    const first = run(42);
    expect(first).toHaveLength(20);
    expect(run(42)).toEqual(first);
    expect(run(43)).not.toEqual(first);
  });

  it('paces messages to the bandwidth, in order', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x, { sizer: () => 100 });
    const atB = recorder(y);
    const t0 = performance.now();
    a.set({ bandwidthBytesPerSec: 1000 }); // 100 ms per message
    for (let i = 0; i < 5; i++) a.send(note(i));
    vi.advanceTimersByTime(250);
    expect(atB.seqs).toEqual([0, 1]);
    vi.advanceTimersByTime(250);
    expect(atB.seqs).toEqual([0, 1, 2, 3, 4]);
    expect(atB.times.map((t) => t - t0)).toEqual([100, 200, 300, 400, 500]);
    // The pipe is free again: a message sent later waits only for itself.
    vi.advanceTimersByTime(1000);
    a.send(note(5));
    vi.advanceTimersByTime(100);
    expect(atB.seqs).toHaveLength(6);
  });

  it('sizes messages by JSON length by default, binary views by their bytes', () => {
    expect(jsonSize({ a: 1 })).toBe(7);
    expect(jsonSize({ b: new Uint8Array(1000) })).toBe('{"b":0}'.length + 1000);
    expect(jsonSize({ b: Buffer.alloc(1000) })).toBe('{"b":0}'.length + 1000);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(jsonSize(cyclic)).toBe(0);
    expect(jsonSize(10n)).toBe(4);
  });

  it('holds outgoing messages in a send partition and releases them in order on heal', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const atB = recorder(y);
    const atA = recorder(a);
    a.set({ partition: 'send' });
    for (let i = 0; i < 3; i++) a.send(note(i));
    y.send(note(100)); // the other direction still flows
    vi.advanceTimersByTime(60_000);
    expect(atB.seqs).toEqual([]);
    expect(atA.seqs).toEqual([100]);
    expect(a.counters.held).toBe(3);
    expect(a.pending).toEqual({ send: 3, receive: 0 });
    a.heal();
    expect(atB.seqs).toEqual([0, 1, 2]);
    expect(a.counters.released).toBe(3);
    a.send(note(3));
    expect(atB.seqs).toEqual([0, 1, 2, 3]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('holds incoming messages in a receive partition, and messages under way wait too', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const atA = recorder(a);
    a.set({ latencyMs: 100 });
    y.send(note(0)); // under way when the partition starts
    vi.advanceTimersByTime(50);
    a.set({ partition: 'receive' });
    y.send(note(1));
    y.send(note(2));
    vi.advanceTimersByTime(10_000);
    expect(atA.seqs).toEqual([]);
    a.set({ latencyMs: 30 }); // healed, with a latency in force: the held ones go on through it
    expect(atA.seqs).toEqual([0]);
    vi.advanceTimersByTime(29);
    expect(atA.seqs).toEqual([0]);
    vi.advanceTimersByTime(1);
    expect(atA.seqs).toEqual([0, 1, 2]);
    expect(a.counters).toMatchObject({ delayed: 1, held: 2, released: 2 });
  });

  it('closes the link with the reason when a partition lasts longer than resetAfterMs', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const atB = recorder(y);
    const reasonA = closeReason(a);
    const reasonB = closeReason(y);
    a.set({ partition: 'both', resetAfterMs: 1000 });
    a.send(note(0));
    vi.advanceTimersByTime(500);
    a.set({ partition: 'send', resetAfterMs: 1000 }); // the same partition goes on
    vi.advanceTimersByTime(499);
    expect(a.closed).toBe(false);
    vi.advanceTimersByTime(2);
    expect(reasonA.reason).toBe('partitioned longer than 1000 ms');
    expect(reasonB.reason).toBe('partitioned longer than 1000 ms');
    expect(a.counters).toMatchObject({ resets: 1, held: 1, released: 0, discarded: 1 });
    expect(atB.seqs).toEqual([]);
    a.send(note(1)); // dropped like any send on a closed link
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does not reset when the partition heals in time', () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const atB = recorder(y);
    a.set({ partition: 'both', resetAfterMs: 1000 });
    a.send(note(0));
    vi.advanceTimersByTime(999);
    a.heal();
    vi.advanceTimersByTime(10_000);
    expect(a.closed).toBe(false);
    expect(atB.seqs).toEqual([0]);
    expect(a.counters.resets).toBe(0);
  });

  it('reset() closes the link at once; an RpcPeer on it fails its calls', async () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const reasonB = closeReason(y);
    const peer = new RpcPeer(a, 'a');
    new RpcPeer(y, 'b').handle('never', () => new Promise(() => {}));
    a.set({ latencyMs: 10 });
    const call = peer.call('never');
    vi.advanceTimersByTime(20);
    a.reset();
    await expect(call).rejects.toBeInstanceOf(ClosedError);
    expect(reasonB.reason).toBe('connection reset (toxic)');
    expect(a.counters.resets).toBe(1);
    expect(peer.closed).toBe(true);
  });

  it('carries RPC calls across latency on both ends', async () => {
    const [x, y] = memoryPair();
    const a = new ToxicLink(x);
    const b = new ToxicLink(y);
    a.set({ latencyMs: 30 });
    b.set({ latencyMs: 20, jitterMs: 10, seed: 1 });
    new RpcPeer(b, 'b').handle('echo', (p) => p);
    const peer = new RpcPeer(a, 'a');
    const t0 = performance.now();
    let rtt = Number.NaN;
    const r = peer.call('echo', { hi: 1 }).then((v) => {
      rtt = performance.now() - t0;
      return v;
    });
    await vi.advanceTimersByTimeAsync(200);
    await expect(r).resolves.toEqual({ hi: 1 });
    // Each message pays the sender's latency out and the receiver's latency in: 2 × (30 + 20 + jitter).
    expect(rtt).toBeGreaterThanOrEqual(100);
    expect(rtt).toBeLessThanOrEqual(121);
    expect(a.counters.delayed).toBe(2);
    expect(b.counters.delayed).toBe(2);
  });

  it('refuses nonsense toxics', () => {
    const a = new ToxicLink(memoryPair()[0]);
    expect(() => a.set({ latencyMs: -1 })).toThrow(InvalidArgumentError);
    expect(() => a.set({ bandwidthBytesPerSec: 0 })).toThrow(InvalidArgumentError);
    expect(() => a.set({ jitterMs: Number.NaN })).toThrow(InvalidArgumentError);
    expect(() => a.set({ partition: 'sideways' as LinkToxics['partition'] })).toThrow(InvalidArgumentError);
  });

  it('property: any messages and toxic changes → the receiver gets exactly the sent sequence, in order, once (unless reset)', () => {
    const toxicsArb: fc.Arbitrary<LinkToxics> = fc.record(
      {
        latencyMs: fc.integer({ min: 0, max: 100 }),
        jitterMs: fc.integer({ min: 0, max: 100 }),
        bandwidthBytesPerSec: fc.integer({ min: 100, max: 100_000 }),
        partition: fc.constantFrom<'send' | 'receive' | 'both'>('send', 'receive', 'both'),
        resetAfterMs: fc.integer({ min: 50, max: 2_000 }),
        seed: fc.integer(),
      },
      { requiredKeys: [] },
    );
    const side = fc.constantFrom<'a' | 'b'>('a', 'b');
    type Cmd =
      | { k: 'send'; from: 'a' | 'b'; pad: string }
      | { k: 'set'; on: 'a' | 'b'; toxics: LinkToxics }
      | { k: 'heal'; on: 'a' | 'b' }
      | { k: 'advance'; ms: number };
    const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
      { weight: 5, arbitrary: fc.record({ k: fc.constant('send' as const), from: side, pad: fc.string({ maxLength: 40 }) }) },
      { weight: 2, arbitrary: fc.record({ k: fc.constant('set' as const), on: side, toxics: toxicsArb }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('heal' as const), on: side }) },
      { weight: 2, arbitrary: fc.record({ k: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 300 }) }) },
    );
    fc.assert(
      fc.property(fc.array(cmdArb, { maxLength: 80, size: 'large' }), (cmds) => {
        vi.clearAllTimers();
        const [x, y] = memoryPair();
        const links = { a: new ToxicLink(x), b: new ToxicLink(y) };
        const got = { a: recorder(links.a), b: recorder(links.b) };
        const sent = { a: [] as number[], b: [] as number[] };
        let seq = 0;
        for (const c of cmds) {
          if (c.k === 'send') {
            sent[c.from].push(seq);
            links[c.from].send(note(seq++, c.pad));
          } else if (c.k === 'set') links[c.on].set(c.toxics);
          else if (c.k === 'heal') links[c.on].heal();
          else vi.advanceTimersByTime(c.ms);
        }
        links.a.heal();
        links.b.heal();
        vi.runAllTimers();
        const reset = links.a.counters.resets + links.b.counters.resets > 0;
        expect(links.a.closed).toBe(reset);
        for (const [to, from] of [['b', 'a'], ['a', 'b']] as const) {
          const received = got[to].seqs;
          if (reset) expect(received).toEqual(sent[from].slice(0, received.length)); // a prefix: nothing lost before the reset
          else expect(received).toEqual(sent[from]);
        }
        expect(vi.getTimerCount()).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
