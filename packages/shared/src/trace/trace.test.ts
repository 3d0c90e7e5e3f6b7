/**
 * Trace events: silent without subscribers, complete with them (every entry that crossed a ring
 * appears in exactly one push batch and one consume batch, decoded as written), bounded buffers,
 * forwarded events pinned to the link's identity, and the control endpoint's credentials.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { msgpackProblem } from '../transport/msgpack-check.js';
import { BackRing, FrontRing, REQ_PROD, initSharedRing } from '../ring/ring.js';
import { blkifProtocol, type BlkifRequest, type BlkifResponse } from '../ring/blkif.js';
import {
  ADMIN_CONTENT_DIGEST_HEADER,
  ADMIN_SIGNATURE_HEADER,
  AdminNonceLedger,
  adminContentDigest,
  deriveReadToken,
  signAdminRequest,
  tokensEqual,
  verifyAdminRequest,
} from '../transport/auth.js';
import { acceptForwardedEvent } from './forward.js';
import { TraceBuffer, matchesFilter, ringPushChannel, serializeTrace, subscribeTrace, type TraceEvent } from './index.js';

const unsubs: Array<() => void> = [];
afterEach(() => {
  for (const u of unsubs.splice(0)) u();
});

function pair() {
  const page = new Uint8Array(new SharedArrayBuffer(4096));
  initSharedRing(page);
  const front = new FrontRing(page, blkifProtocol);
  const back = BackRing.attach(page, blkifProtocol);
  front.label = { host: 'h', domid: 7, device: 'vbd51712', ring: 'blk', side: 'front' };
  back.label = { host: 'h', domid: 7, device: 'vbd51712', ring: 'blk', side: 'back' };
  return { front, back };
}

function req(id: number): BlkifRequest {
  return { operation: 0, nrSegments: 1, handle: 51712, id: BigInt(id), sectorNumber: BigInt(id) * 8n, segments: [{ gref: id % 100, firstSect: 0, lastSect: 7 }] };
}

describe('trace channels', () => {
  it('publish nothing while nobody listens, and stop when the listener leaves', () => {
    const { front } = pair();
    expect(ringPushChannel.hasSubscribers).toBe(false);
    const seen: TraceEvent[] = [];
    const off = subscribeTrace(['ring.push'], (e) => seen.push(e));
    front.putRequest(req(1));
    front.pushRequests();
    off();
    front.putRequest(req(2));
    front.pushRequests();
    expect(seen).toHaveLength(1);
    expect(ringPushChannel.hasSubscribers).toBe(false);
  });

  it('every request crosses in exactly one push batch and one consume batch, decoded as written (any batching)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 8 })), { minLength: 1, maxLength: 60 }), (steps) => {
        const { front, back } = pair();
        const pushed: bigint[] = [];
        const consumed: bigint[] = [];
        const ranges: Array<[number, number]> = [];
        const off = subscribeTrace(['ring.push', 'ring.consume'], (e) => {
          if (e.kind !== 'ring.push' && e.kind !== 'ring.consume') return;
          if (e.side !== 'front' && e.kind === 'ring.push') return;
          const entries = (typeof e.entries === 'function' ? e.entries() : e.entries) as Array<{ index: number; id: bigint }>;
          expect(entries.map((x) => x.index)).toEqual(Array.from({ length: (e.after - e.before) >>> 0 }, (_, i) => e.before + i));
          if (e.kind === 'ring.push') {
            for (const x of entries) pushed.push(x.id);
            ranges.push([e.before, e.after]);
          } else for (const x of entries) consumed.push(x.id);
        });
        let next = 0;
        try {
          for (const [p, c] of steps) {
            for (let i = 0; i < p && !front.isFull(); i++) front.putRequest(req(next++));
            front.pushRequests();
            for (let i = 0; i < c; i++) {
              const r = back.takeRequest();
              if (!r) break;
              back.putResponse({ id: r.id, operation: 0, status: 0 });
            }
            back.traceConsumed();
            back.pushResponses();
            while (front.takeResponse());
          }
        } finally {
          off();
        }
        // Contiguous batches, no gap, no overlap; ids in order, each exactly once.
        for (let i = 1; i < ranges.length; i++) expect(ranges[i][0]).toBe(ranges[i - 1][1]);
        expect(pushed).toEqual(Array.from({ length: next }, (_, i) => BigInt(i)));
        expect(consumed).toEqual(pushed.slice(0, consumed.length));
        expect(consumed.length).toBe(back.reqCons);
      }),
      { numRuns: 150 },
    );
  });

  it('the backend keeps private copies of what crossed; recent() returns them oldest first', () => {
    const { front, back } = pair();
    for (let i = 0; i < 40; i++) {
      front.putRequest(req(i));
      front.pushRequests();
      const r = back.takeRequest()!;
      back.putResponse({ id: r.id, operation: 0, status: 0 });
      back.pushResponses();
      front.takeResponse();
    }
    const rec = back.recent('req');
    expect(rec).toHaveLength(32);
    expect(rec.map((x) => (x.entry as BlkifRequest).id)).toEqual(Array.from({ length: 32 }, (_, i) => BigInt(i + 8)));
    expect(rec.map((x) => x.index)).toEqual(Array.from({ length: 32 }, (_, i) => i + 8));
    expect(back.recent('rsp').at(-1)).toEqual({ index: 39, entry: { id: 39n, operation: 0, status: 0 } });
  });

  it('a push is decoded before req_prod moves: a backend answering in the same slot at once does not change what was traced', () => {
    const page = new Uint8Array(new SharedArrayBuffer(4096));
    initSharedRing(page);
    let back: BackRing<BlkifRequest, BlkifResponse> | undefined;
    // The backend runs the instant req_prod is stored (as another CPU may): it takes every
    // request and writes its response into the same slot — a different operation byte there.
    const sync = {
      wroteBytes: () => {},
      storedIndex: (word: number) => {
        if (word !== REQ_PROD || !back) return;
        for (let r = back.takeRequest(); r; r = back.takeRequest()) back.putResponse({ id: r.id, operation: 0xef, status: -1 });
        back.pushResponses();
      },
    };
    const front = new FrontRing(page, blkifProtocol, sync);
    back = BackRing.attach(page, blkifProtocol);
    front.label = { host: 'h', domid: 7, device: 'vbd51712', ring: 'blk', side: 'front' };
    const seen: Array<{ operation: number; id: bigint }> = [];
    const off = subscribeTrace(['ring.push'], (e) => {
      if (e.kind === 'ring.push' && e.side === 'front') seen.push(...((typeof e.entries === 'function' ? e.entries() : e.entries) as Array<{ operation: number; id: bigint }>));
    });
    try {
      for (let i = 0; i < 3; i++) front.putRequest(req(i));
      front.pushRequests();
    } finally {
      off();
    }
    expect(front.takeResponse()?.operation).toBe(0xef); // the slots really were overwritten
    expect(seen.map((x) => [x.operation, x.id])).toEqual([[0, 0n], [0, 1n], [0, 2n]]);
  });

  it('serialises u64 entry fields as exact decimal strings, fit for JSON and for msgpack forwarding', () => {
    const { front } = pair();
    let ev: TraceEvent | undefined;
    const off = subscribeTrace(['ring.push'], (e) => (ev = e));
    try {
      front.putRequest({ ...req(1), id: 2n ** 64n - 1n, sectorNumber: 2n ** 53n + 1n });
      front.pushRequests();
    } finally {
      off();
    }
    const plain = serializeTrace(ev!, false);
    const entry = (plain.entries as Array<Record<string, unknown>>)[0];
    expect(entry).toMatchObject({ id: '18446744073709551615', sectorNumber: '9007199254740993', operation: 0 });
    expect(JSON.parse(JSON.stringify(plain))).toEqual(plain);
    // As the ws transport carries it: plain msgpack that its strict frame check accepts.
    const packr = new Packr({ useRecords: false });
    const bytes = packr.pack(plain);
    expect(msgpackProblem(bytes)).toBeNull();
    expect(packr.unpack(bytes)).toEqual(plain);
    // Forwarded (already serialised) events keep their strings.
    expect(serializeTrace(plain as unknown as TraceEvent, false)).toEqual(plain);
  });

  it('filters match on every given field', () => {
    const ev = { kind: 'ring.push', t: 1, host: 'h', domid: 3, device: 'vif0', ring: 'tx', side: 'back', half: 'rsp', before: 0, after: 1, notify: false } as TraceEvent;
    expect(matchesFilter(ev, {})).toBe(true);
    expect(matchesFilter(ev, { kinds: ['ring.push'], domid: 3, device: 'vif0', ring: 'tx', host: 'h' })).toBe(true);
    expect(matchesFilter(ev, { kinds: ['evtchn.send'] })).toBe(false);
    expect(matchesFilter(ev, { domid: 4 })).toBe(false);
    expect(matchesFilter(ev, { ring: 'rx' })).toBe(false);
    expect(matchesFilter({ kind: 'evtchn.send', t: 1, host: 'h', domid: 3, port: 1, outcome: 'delivered' }, { ring: 'tx' })).toBe(false);
  });

  it('serialises frames as base64 only when asked', () => {
    const ev: TraceEvent = { kind: 'frame', t: 1, host: 'h', domid: 1, iface: 'g/vif0', dir: 'tx', len: 3, frame: new Uint8Array([1, 2, 3]) };
    expect(serializeTrace(ev, false).frame).toBeUndefined();
    expect(serializeTrace(ev, true).frame).toBe('AQID');
  });

  it('a trace buffer never grows past its limit; what it refused is counted', () => {
    const b = new TraceBuffer(3);
    for (let i = 0; i < 10; i++) b.push({ i });
    expect(b.take()).toEqual({ events: [{ i: 0 }, { i: 1 }, { i: 2 }], dropped: 7 });
    expect(b.take()).toEqual({ events: [], dropped: 0 });
  });
});

describe('forwarded events', () => {
  it('are pinned to the host and domain the link proved', () => {
    const ev = acceptForwardedEvent({ kind: 'ring.push', t: 5, host: 'liar', domid: 1, device: 'vif0', ring: 'tx', side: 'front' }, 'host0', 4);
    expect(ev).toMatchObject({ host: 'host0', domid: 4 });
  });

  it('are refused when malformed, of an unknown kind, or a frame that is not a vif\'s', () => {
    for (const raw of [null, 5, 'x', { kind: 'nope', t: 1, domid: 1 }, { kind: 'dma', t: 'soon', domid: 1 }, { kind: 'frame', t: 1, domid: 1 }, { kind: 'dma', t: 1 }])
      expect(acceptForwardedEvent(raw, 'h')).toBeUndefined();
    const frame = { kind: 'frame', t: 1, domid: 1, device: 'vif0', iface: 'host0/peth0', dir: 'tx', len: 3, frame: 'AQID' };
    expect(acceptForwardedEvent({ ...frame, device: 'peth0' }, 'h', 4, 'g')).toBeUndefined();
    expect(acceptForwardedEvent({ ...frame, frame: Buffer.alloc(4096).toString('base64') }, 'h', 4, 'g')).toBeUndefined();
    expect(acceptForwardedEvent({ ...frame, dir: 'sideways' }, 'h', 4, 'g')).toBeUndefined();
  });

  it('a guest\'s frames (a direct NIC, which dom0 never sees) land on its own interface, bytes and all', () => {
    const ev = acceptForwardedEvent({ kind: 'frame', t: 1, host: 'liar', domid: 1, device: 'vif0', iface: 'host0/peth0', dir: 'rx', len: 3, frame: 'AQID' }, 'host0', 4, 'guest5');
    expect(ev).toMatchObject({ host: 'host0', domid: 4, iface: 'guest5/vif0', dir: 'rx', len: 3 });
    expect([...(ev as { frame: Uint8Array }).frame]).toEqual([1, 2, 3]);
  });
});

describe('control endpoint credentials', () => {
  const secret = new Uint8Array(randomBytes(32));

  it('the read token is derived one way from the secret', () => {
    expect(deriveReadToken(secret)).toBe(deriveReadToken(secret));
    expect(deriveReadToken(secret)).toMatch(/^[0-9a-f]{64}$/);
    expect(deriveReadToken(new Uint8Array(randomBytes(32)))).not.toBe(deriveReadToken(secret));
    expect(tokensEqual('abc', 'abc')).toBe(true);
    expect(tokensEqual('abc', 'abd')).toBe(false);
    expect(tokensEqual('abc', 'abcd')).toBe(false);
  });

  it('an admin signature covers method, path, body length and digest, nonce and time, from headers alone', () => {
    const now = 1_800_000_000_000;
    const body = '{"a":1}';
    const h = signAdminRequest(secret, 'POST', '/api/backend/pause', body, now);
    const sig = h[ADMIN_SIGNATURE_HEADER];
    const facts = { method: 'POST', path: '/api/backend/pause', contentLength: 7, contentSha256: adminContentDigest(body) };
    expect(h[ADMIN_CONTENT_DIGEST_HEADER]).toBe(facts.contentSha256);
    expect(verifyAdminRequest(secret, sig, facts, now + 1000)).toMatchObject({ ok: true, timestamp: now });
    expect(verifyAdminRequest(secret, sig, { ...facts, path: '/api/backend/resume' }, now)).toEqual({ ok: false, reason: 'forged' });
    expect(verifyAdminRequest(secret, sig, { ...facts, contentSha256: adminContentDigest('{"a":2}') }, now)).toEqual({ ok: false, reason: 'forged' });
    expect(verifyAdminRequest(secret, sig, { ...facts, contentLength: 8 }, now)).toEqual({ ok: false, reason: 'forged' });
    expect(verifyAdminRequest(secret, sig, { ...facts, method: 'GET' }, now)).toEqual({ ok: false, reason: 'forged' });
    expect(verifyAdminRequest(secret, sig, facts, now + 31_000)).toEqual({ ok: false, reason: 'stale' });
    expect(verifyAdminRequest(secret, sig, facts, now - 31_000)).toEqual({ ok: false, reason: 'stale' });
    expect(verifyAdminRequest(new Uint8Array(randomBytes(32)), sig, facts, now)).toEqual({ ok: false, reason: 'forged' });
    // Another nonce under the same MAC does not verify: the nonce is signed.
    const [ts, , mac] = sig.split('.');
    expect(verifyAdminRequest(secret, `${ts}.${'0'.repeat(32)}.${mac}`, facts, now)).toEqual({ ok: false, reason: 'forged' });
    expect(verifyAdminRequest(secret, undefined, facts, now)).toEqual({ ok: false, reason: 'unsigned' });
    for (const bad of ['', 'x', `${now}.zz`, `${now}.${'0'.repeat(64)}`])
      expect(verifyAdminRequest(secret, bad, facts, now)).toMatchObject({ ok: false });
    // Two signatures of the same request differ (fresh nonces).
    expect(signAdminRequest(secret, 'POST', '/api/backend/pause', body, now)[ADMIN_SIGNATURE_HEADER]).not.toBe(sig);
  });

  it('an admin nonce is accepted once while its signature is fresh, and the ledger stays bounded', () => {
    const now = 1_800_000_000_000;
    const ledger = new AdminNonceLedger(2, 30_000);
    expect(ledger.admit('a'.repeat(32), now, now)).toBe('fresh');
    expect(ledger.admit('a'.repeat(32), now, now + 29_000)).toBe('replayed');
    expect(ledger.admit('b'.repeat(32), now, now)).toBe('fresh');
    // Full of live nonces: a new one is refused, none is evicted (it could then be replayed).
    expect(ledger.admit('c'.repeat(32), now, now + 1)).toBe('full');
    expect(ledger.admit('a'.repeat(32), now, now + 1)).toBe('replayed');
    // Once the window has passed the old nonces make room (their signatures are stale anyway).
    expect(ledger.admit('c'.repeat(32), now + 31_000, now + 31_000)).toBe('fresh');
    expect(ledger.size).toBe(1);
  });
});
