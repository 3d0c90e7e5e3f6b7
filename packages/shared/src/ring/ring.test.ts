import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, RingFullError, RogueRingError } from '../errors.js';
import {
  BackRing,
  FrontRing,
  REQ_EVENT,
  REQ_PROD,
  RING_HEADER_SIZE,
  RSP_EVENT,
  RSP_PROD,
  RingPage,
  initSharedRing,
  needsNotify,
  ringSize,
  slotSize,
  type EntryCodec,
} from './ring.js';
import {
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_REQUEST_SIZE,
  BLKIF_RESPONSE_SIZE,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_OKAY,
  blkifProtocol,
  blkifRequestCodec,
  blkifResponseCodec,
  type BlkifRequest,
} from './blkif.js';
import {
  NETIF_RSP_DROPPED,
  NETTXF_CSUM_BLANK,
  NETTXF_MORE_DATA,
  netifRxProtocol,
  netifRxRequestCodec,
  netifRxResponseCodec,
  netifTxProtocol,
  netifTxRequestCodec,
  netifTxResponseCodec,
} from './netif.js';

const U32 = 2 ** 32;

function newPage(): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(4096));
}

function initPage(): Uint8Array {
  const p = newPage();
  initSharedRing(p);
  return p;
}

/** Put the shared index words of a fresh page at `start`, as if the ring had run for a long time. */
function pageAt(start: number): Uint8Array {
  const p = newPage();
  const v = new DataView(p.buffer);
  v.setUint32(0, start >>> 0, true); // req_prod
  v.setUint32(4, (start + 1) >>> 0, true); // req_event
  v.setUint32(8, start >>> 0, true); // rsp_prod
  v.setUint32(12, (start + 1) >>> 0, true); // rsp_event
  return p;
}

function u32(page: Uint8Array, off: number): number {
  return new DataView(page.buffer, page.byteOffset).getUint32(off, true);
}

function req(n: number | bigint, extra: Partial<BlkifRequest> = {}): BlkifRequest {
  const id = BigInt(n);
  return {
    operation: BLKIF_OP_READ,
    nrSegments: 1,
    handle: 0x51,
    id,
    sectorNumber: id * 8n,
    segments: [{ gref: 100 + Number(id % 1000n), firstSect: 0, lastSect: 7 }],
    ...extra,
  };
}

function blkRings(page = initPage()) {
  return { page, front: new FrontRing(page, blkifProtocol), back: new BackRing(page, blkifProtocol) };
}

/** A DataView that records which bytes are read, to check the copy-once rule. */
function countingView(v: DataView): { view: DataView; reads: number[] } {
  const reads = new Array<number>(v.byteLength).fill(0);
  const sizes: Record<string, number> = { getUint8: 1, getInt8: 1, getUint16: 2, getInt16: 2, getUint32: 4, getInt32: 4, getFloat64: 8, getBigUint64: 8 };
  const view = new Proxy(v, {
    get(target, prop) {
      const f = Reflect.get(target, prop, target);
      if (typeof prop === 'string' && prop in sizes)
        return (off: number, le?: boolean) => {
          for (let i = 0; i < sizes[prop]; i++) reads[off + i]++;
          return (f as (o: number, l?: boolean) => number).call(target, off, le);
        };
      return typeof f === 'function' ? f.bind(target) : f;
    },
  });
  return { view, reads };
}

describe('shared ring page layout', () => {
  it('has a 64-byte header with the four index words at 0, 4, 8, 12', () => {
    expect(RING_HEADER_SIZE).toBe(64);
    expect([REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT].map((w) => w * 4)).toEqual([0, 4, 8, 12]);
  });

  it('initSharedRing sets both producers to 0, both events to 1 and clears the pad only', () => {
    const p = newPage();
    p.fill(0xee);
    initSharedRing(p);
    expect([u32(p, 0), u32(p, 4), u32(p, 8), u32(p, 12)]).toEqual([0, 1, 0, 1]);
    expect([...p.subarray(16, 64)].every((b) => b === 0)).toBe(true);
    expect([...p.subarray(64)].every((b) => b === 0xee)).toBe(true); // entries untouched
  });

  it('reports index stores to its PageSync only when they change the word (initialisation always)', () => {
    const p = newPage();
    const stores: Array<[number, number]> = [];
    const sync = { wroteBytes: () => {}, storedIndex: (w: number, v: number) => void stores.push([w, v]) };
    initSharedRing(p, sync);
    initSharedRing(p, sync); // a re-init overwrites the peer's copy, whatever ours holds
    expect(stores).toEqual([[0, 0], [2, 0], [1, 1], [3, 1], [0, 0], [2, 0], [1, 1], [3, 1]]);
    stores.length = 0;
    const back = new BackRing(p, blkifProtocol, sync);
    // An empty ring's final check arms req_event = cons + 1 — once; the re-arms ship nothing.
    expect(back.finalCheckForRequests()).toBe(false);
    expect(back.finalCheckForRequests()).toBe(false);
    expect(back.finalCheckForRequests()).toBe(false);
    expect(back.pushResponses()).toBe(false);
    expect(stores).toEqual([]); // req_event was already 1 (SHARED_RING_INIT), rsp_prod already 0
    back.page.store(REQ_EVENT, 7);
    back.page.store(REQ_EVENT, 7);
    expect(stores).toEqual([[1, 7]]);
    expect(u32(p, 4)).toBe(7);
  });

  it('rejects pages that are not one shared, aligned 4 KiB page', () => {
    expect(() => new RingPage(new Uint8Array(new SharedArrayBuffer(2048)))).toThrow(InvalidArgumentError);
    expect(() => new RingPage(new Uint8Array(4096))).toThrow(InvalidArgumentError);
    expect(() => new RingPage(new Uint8Array(new SharedArrayBuffer(8192), 2, 4096))).toThrow(InvalidArgumentError);
    expect(() => new RingPage(new Uint8Array(new SharedArrayBuffer(8192), 4096, 4096))).not.toThrow();
  });

  it('sizes rings as the largest power of two of slots that fits after the header', () => {
    expect(ringSize(112)).toBe(32); // 36 would fit, 32 is the power of two
    expect(ringSize(12)).toBe(256); // 336 fit
    expect(ringSize(8)).toBe(256); // 504 fit
    expect(ringSize(4032)).toBe(1);
    expect(ringSize(2016)).toBe(2);
    expect(ringSize(2017)).toBe(1);
    expect(() => ringSize(4033)).toThrow(InvalidArgumentError);
  });

  it('gives blkif 112-byte slots (request 112, response 16), 32 per page', () => {
    expect(blkifRequestCodec.size).toBe(BLKIF_REQUEST_SIZE);
    expect(BLKIF_REQUEST_SIZE).toBe(112);
    expect(blkifResponseCodec.size).toBe(BLKIF_RESPONSE_SIZE);
    expect(BLKIF_RESPONSE_SIZE).toBe(16);
    expect(slotSize(blkifProtocol)).toBe(112);
    const { front, back } = blkRings();
    expect(front.size).toBe(32);
    expect(back.size).toBe(32);
    expect(front.slot).toBe(112);
  });

  it('gives netif tx 12-byte and rx 8-byte slots, 256 per page', () => {
    expect(netifTxRequestCodec.size).toBe(12);
    expect(netifTxResponseCodec.size).toBe(4);
    expect(netifRxRequestCodec.size).toBe(8);
    expect(netifRxResponseCodec.size).toBe(8);
    const tx = new FrontRing(initPage(), netifTxProtocol);
    const rx = new FrontRing(initPage(), netifRxProtocol);
    expect([tx.slot, tx.size]).toEqual([12, 256]);
    expect([rx.slot, rx.size]).toEqual([8, 256]);
  });

  it('places entry i at 64 + (i mod size) * slot', () => {
    const { page, front } = blkRings();
    for (let i = 0; i < 3; i++) front.putRequest(req(0x1000 + i, { operation: 0x10 + i }));
    for (let i = 0; i < 3; i++) {
      expect(page[64 + i * 112]).toBe(0x10 + i);
      expect(u32(page, 64 + i * 112 + 8)).toBe(0x1000 + i);
    }
    // Nothing written yet beyond the third slot, and the header still untouched (not published).
    expect([...page.subarray(64 + 3 * 112)].every((b) => b === 0)).toBe(true);
    expect(u32(page, 0)).toBe(0);
  });
});

describe('blkif codec', () => {
  it('encodes a request at the documented x86_64 offsets', () => {
    const buf = new DataView(new ArrayBuffer(200));
    new Uint8Array(buf.buffer).fill(0xaa);
    blkifRequestCodec.encode(buf, 40, {
      operation: BLKIF_OP_WRITE,
      nrSegments: 11,
      handle: 0x1234,
      id: 0x1_2345_6789n,
      sectorNumber: 0xab_cdef_0123n,
      segments: Array.from({ length: 11 }, (_, i) => ({ gref: 0x0a0b0c00 + i, firstSect: i % 8, lastSect: 7 })),
    });
    const b = (o: number) => buf.getUint8(40 + o);
    expect(b(0)).toBe(1); // operation
    expect(b(1)).toBe(11); // nr_segments
    expect(buf.getUint16(42, true)).toBe(0x1234); // handle
    expect([b(2), b(3)]).toEqual([0x34, 0x12]); // little-endian
    expect(buf.getUint32(44, true)).toBe(0); // pad
    expect(buf.getUint32(48, true)).toBe(0x23456789); // id low
    expect(buf.getUint32(52, true)).toBe(0x1); // id high
    expect(buf.getUint32(56, true)).toBe(0xcdef0123); // sector low
    expect(buf.getUint32(60, true)).toBe(0xab); // sector high
    expect(buf.getUint32(40 + 24, true)).toBe(0x0a0b0c00); // seg[0].gref
    expect(b(28)).toBe(0); // seg[0].first_sect
    expect(b(29)).toBe(7); // seg[0].last_sect
    expect(buf.getUint16(40 + 30, true)).toBe(0); // seg pad
    expect(buf.getUint32(40 + 32, true)).toBe(0x0a0b0c01); // seg[1].gref
    expect(b(36)).toBe(1);
    expect(buf.getUint32(40 + 24 + 10 * 8, true)).toBe(0x0a0b0c0a); // seg[10] at 104
    expect(b(108)).toBe(10 % 8);
    expect(b(109)).toBe(7);
    // Exactly 112 bytes written: neighbours untouched.
    expect(buf.getUint8(39)).toBe(0xaa);
    expect(buf.getUint8(40 + 112)).toBe(0xaa);
  });

  it('decodes what it encodes (u64 id and sector beyond 2^32)', () => {
    const v = new DataView(new ArrayBuffer(112));
    const r = req(2n ** 40n + 5n, { sectorNumber: 2n ** 45n + 3n, nrSegments: 2, segments: [{ gref: 1, firstSect: 2, lastSect: 3 }, { gref: 0xffffffff, firstSect: 0, lastSect: 7 }] });
    blkifRequestCodec.encode(v, 0, r);
    expect(blkifRequestCodec.decode(v, 0)).toEqual(r);
  });

  it('decodes a hostile nr_segments without reading past the 11 segments', () => {
    const v = new DataView(new ArrayBuffer(112));
    blkifRequestCodec.encode(v, 0, req(1));
    v.setUint8(1, 200);
    const d = blkifRequestCodec.decode(v, 0);
    expect(d.nrSegments).toBe(200); // reported as written, for validation to reject
    expect(d.segments).toHaveLength(11);
  });

  it('reads each request byte at most once while decoding (copy-once)', () => {
    const v = new DataView(new ArrayBuffer(112));
    blkifRequestCodec.encode(v, 0, req(7, { nrSegments: 11, segments: Array.from({ length: 11 }, (_, i) => ({ gref: i, firstSect: 0, lastSect: 7 })) }));
    const { view, reads } = countingView(v);
    blkifRequestCodec.decode(view, 0);
    expect(Math.max(...reads)).toBe(1);
  });

  it('encodes a response as u64 id @0, u8 operation @8, i16 status @10 in 16 bytes', () => {
    const buf = new DataView(new ArrayBuffer(48));
    new Uint8Array(buf.buffer).fill(0xaa);
    blkifResponseCodec.encode(buf, 16, { id: 0x2_0000_0001n, operation: BLKIF_OP_WRITE, status: BLKIF_RSP_EOPNOTSUPP });
    expect(buf.getUint32(16, true)).toBe(1);
    expect(buf.getUint32(20, true)).toBe(2);
    expect(buf.getUint8(24)).toBe(1);
    expect(buf.getUint8(25)).toBe(0);
    expect([buf.getUint8(26), buf.getUint8(27)]).toEqual([0xfe, 0xff]); // -2 as little-endian i16
    expect(buf.getInt16(26, true)).toBe(-2);
    expect(buf.getUint32(28, true)).toBe(0);
    expect(buf.getUint8(15)).toBe(0xaa);
    expect(buf.getUint8(32)).toBe(0xaa);
    expect(blkifResponseCodec.decode(buf, 16)).toEqual({ id: 0x2_0000_0001n, operation: 1, status: -2 });
  });
});

describe('netif codecs', () => {
  it('encodes a tx request as gref@0 offset@4 flags@6 id@8 size@10', () => {
    const v = new DataView(new ArrayBuffer(14));
    new Uint8Array(v.buffer).fill(0xaa);
    netifTxRequestCodec.encode(v, 1, { gref: 0x01020304, offset: 0x0506, flags: NETTXF_CSUM_BLANK | NETTXF_MORE_DATA, id: 0x0708, size: 0x090a });
    expect([...new Uint8Array(v.buffer)]).toEqual([0xaa, 4, 3, 2, 1, 6, 5, 5, 0, 8, 7, 0x0a, 9, 0xaa]);
    expect(netifTxRequestCodec.decode(v, 1)).toEqual({ gref: 0x01020304, offset: 0x0506, flags: 5, id: 0x0708, size: 0x090a });
  });

  it('encodes a tx response as u16 id@0, i16 status@2', () => {
    const v = new DataView(new ArrayBuffer(4));
    netifTxResponseCodec.encode(v, 0, { id: 0xbeef, status: NETIF_RSP_DROPPED });
    expect([...new Uint8Array(v.buffer)]).toEqual([0xef, 0xbe, 0xfe, 0xff]);
    expect(netifTxResponseCodec.decode(v, 0)).toEqual({ id: 0xbeef, status: -2 });
  });

  it('encodes an rx request as u16 id@0, pad@2, u32 gref@4', () => {
    const v = new DataView(new ArrayBuffer(8));
    new Uint8Array(v.buffer).fill(0xaa);
    netifRxRequestCodec.encode(v, 0, { id: 0x0102, gref: 0x03040506 });
    expect([...new Uint8Array(v.buffer)]).toEqual([2, 1, 0, 0, 6, 5, 4, 3]);
    expect(netifRxRequestCodec.decode(v, 0)).toEqual({ id: 0x0102, gref: 0x03040506 });
  });

  it('encodes an rx response as id@0 offset@2 flags@4 status@6 (status > 0 = bytes)', () => {
    const v = new DataView(new ArrayBuffer(8));
    netifRxResponseCodec.encode(v, 0, { id: 1, offset: 0x0203, flags: 4, status: 1514 });
    expect([...new Uint8Array(v.buffer)]).toEqual([1, 0, 3, 2, 4, 0, 0xea, 0x05]);
    netifRxResponseCodec.encode(v, 0, { id: 1, offset: 0, flags: 0, status: -1 });
    expect(v.getInt16(6, true)).toBe(-1);
    expect(netifRxResponseCodec.decode(v, 0).status).toBe(-1);
  });
});

describe('needsNotify', () => {
  it('notifies iff the event index lies in (old, new]', () => {
    expect(needsNotify(1, 0, 1)).toBe(true); // the initial event index 1: the first push notifies
    expect(needsNotify(5, 0, 1)).toBe(true);
    expect(needsNotify(5, 4, 5)).toBe(true); // event == new
    expect(needsNotify(5, 4, 4)).toBe(false); // event == old: already passed by an earlier push
    expect(needsNotify(5, 4, 1)).toBe(false);
    expect(needsNotify(5, 4, 6)).toBe(false); // not reached yet
    expect(needsNotify(5, 5, 5)).toBe(false); // nothing pushed
    expect(needsNotify(5, 5, 6)).toBe(false);
  });

  it('uses u32 arithmetic across the 2^32 wrap', () => {
    const old = U32 - 2;
    expect(needsNotify(2, old, U32 - 1)).toBe(true);
    expect(needsNotify(2, old, 0)).toBe(true);
    expect(needsNotify(2, old, 2)).toBe(true);
    expect(needsNotify(2, old, 3)).toBe(false);
    expect(needsNotify(2, old, old)).toBe(false);
    expect(needsNotify(2, old, U32 - 3)).toBe(false);
    expect(needsNotify(0, U32 - 1, 0)).toBe(true);
    expect(needsNotify(0, U32 - 1, 1)).toBe(false);
    // Int32-typed values (as Atomics hands them out) behave like their u32 equivalents.
    expect(needsNotify(2, -2, -1)).toBe(true);
    expect(needsNotify(2, -2, 3)).toBe(false);
  });
});

describe('push and notify', () => {
  it('publishes req_prod at offset 0 and notifies only when req_event is passed', () => {
    const { page, front, back } = blkRings();
    front.putRequest(req(0));
    expect(u32(page, 0)).toBe(0); // private until pushed
    expect(front.pushRequests()).toBe(true); // req_event starts at 1
    expect(u32(page, 0)).toBe(1);
    front.putRequest(req(1));
    front.putRequest(req(2));
    expect(front.pushRequests()).toBe(false); // backend has not re-armed: suppressed
    expect(u32(page, 0)).toBe(3);
    expect(front.pushRequests()).toBe(false); // nothing new: neither notify nor suppressed
    expect(front.stats).toEqual({ produced: 3, consumed: 0, notifies: 1, suppressed: 1 });

    expect(back.takeRequest()?.id).toBe(0n);
    expect(back.finalCheckForRequests()).toBe(true); // work remains: event not re-armed
    expect(u32(page, 4)).toBe(1);
    expect(back.takeRequest()?.id).toBe(1n);
    expect(back.takeRequest()?.id).toBe(2n);
    expect(back.takeRequest()).toBeUndefined();
    expect(back.finalCheckForRequests()).toBe(false);
    expect(u32(page, 4)).toBe(4); // req_event = req_cons + 1 at offset 4

    front.putRequest(req(3));
    expect(front.pushRequests()).toBe(true);
    expect(front.stats.notifies).toBe(2);
  });

  it('publishes rsp_prod at offset 8, rsp_event at offset 12, with the mirror rules', () => {
    const { page, front, back } = blkRings();
    for (let i = 0; i < 3; i++) front.putRequest(req(i));
    front.pushRequests();
    for (let i = 0; i < 3; i++) back.takeRequest();
    back.putResponse({ id: 0n, operation: 0, status: BLKIF_RSP_OKAY });
    expect(u32(page, 8)).toBe(0);
    expect(back.pushResponses()).toBe(true); // rsp_event starts at 1
    expect(u32(page, 8)).toBe(1);
    back.putResponse({ id: 1n, operation: 0, status: BLKIF_RSP_OKAY });
    expect(back.pushResponses()).toBe(false);
    expect(back.stats).toMatchObject({ produced: 2, consumed: 3, notifies: 1, suppressed: 1 });

    expect(front.takeResponse()?.id).toBe(0n);
    expect(front.takeResponse()?.id).toBe(1n);
    expect(front.takeResponse()).toBeUndefined();
    expect(front.finalCheckForResponses()).toBe(false);
    expect(u32(page, 12)).toBe(3); // rsp_cons + 1

    back.putResponse({ id: 2n, operation: 0, status: -1 });
    expect(back.pushResponses()).toBe(true);
    expect(front.finalCheckForResponses()).toBe(true);
    expect(front.takeResponse()).toEqual({ id: 2n, operation: 0, status: -1 });
  });

  it('the backend can ask to be woken only after a whole batch by setting req_event ahead', () => {
    const { page, front, back } = blkRings();
    new RingPage(page).store(REQ_EVENT, 4);
    const notes: boolean[] = [];
    for (let i = 0; i < 5; i++) {
      front.putRequest(req(i));
      notes.push(front.pushRequests());
    }
    expect(notes).toEqual([false, false, false, true, false]);
    expect(back.unconsumedRequests()).toBe(5);
  });

  it('final check re-reads the producer index after arming the event (closes the lost wake-up race)', () => {
    const { page, front, back } = blkRings();
    front.putRequest(req(0));
    front.pushRequests();
    back.takeRequest();
    // Make the frontend push exactly between "ring is empty" and "arm req_event".
    const real = back.unconsumedRequests.bind(back);
    let raced: boolean | undefined;
    back.unconsumedRequests = () => {
      const n = real();
      if (raced === undefined) {
        front.putRequest(req(1));
        raced = front.pushRequests();
      }
      return n;
    };
    expect(back.finalCheckForRequests()).toBe(true);
    expect(raced).toBe(false); // the push did not notify: only the re-check finds the request
    expect(u32(page, 4)).toBe(2);
  });

  it('the same race on the response side is closed by finalCheckForResponses', () => {
    const { front, back } = blkRings();
    front.putRequest(req(0));
    front.putRequest(req(1));
    front.pushRequests();
    back.takeRequest();
    back.takeRequest();
    back.putResponse({ id: 0n, operation: 0, status: 0 });
    back.pushResponses();
    front.takeResponse();
    const real = front.unconsumedResponses.bind(front);
    let raced: boolean | undefined;
    front.unconsumedResponses = () => {
      const n = real();
      if (raced === undefined) {
        back.putResponse({ id: 1n, operation: 0, status: 0 });
        raced = back.pushResponses();
      }
      return n;
    };
    expect(front.finalCheckForResponses()).toBe(true);
    expect(raced).toBe(false);
    expect(front.takeResponse()?.id).toBe(1n);
  });
});

describe('flow control and untrusted peers', () => {
  it('FrontRing refuses a request when all slots hold requests or unconsumed responses', () => {
    const { front, back } = blkRings();
    for (let i = 0; i < 32; i++) front.putRequest(req(i));
    expect(front.isFull()).toBe(true);
    expect(front.freeRequests()).toBe(0);
    expect(() => front.putRequest(req(32))).toThrow(RingFullError);
    front.pushRequests();
    for (let i = 0; i < 32; i++) back.takeRequest();
    back.putResponse({ id: 0n, operation: 0, status: 0 });
    back.pushResponses();
    // Published but not consumed: the slot is still occupied.
    expect(front.freeRequests()).toBe(0);
    expect(() => front.putRequest(req(32))).toThrow(RingFullError);
    front.takeResponse();
    expect(front.freeRequests()).toBe(1);
    front.putRequest(req(32));
    expect(front.isFull()).toBe(true);
  });

  it('BackRing refuses a response without a consumed request', () => {
    const { front, back } = blkRings();
    expect(() => back.putResponse({ id: 0n, operation: 0, status: 0 })).toThrow(RingFullError);
    front.putRequest(req(0));
    front.pushRequests();
    back.takeRequest();
    back.putResponse({ id: 0n, operation: 0, status: 0 });
    expect(() => back.putResponse({ id: 0n, operation: 0, status: 0 })).toThrow(RingFullError);
  });

  it('treats req_prod - rsp_prod_pvt > size as a rogue frontend and stops the ring', () => {
    const { page, back } = blkRings();
    const shared = new RingPage(page);
    shared.store(REQ_PROD, 32); // exactly a full ring: honest
    expect(back.unconsumedRequests()).toBe(32);
    shared.store(REQ_PROD, 33);
    expect(() => back.unconsumedRequests()).toThrow(RogueRingError);
    expect(back.rogue).toBe(true);
    // A stopped ring yields nothing, even once the index looks sane again.
    shared.store(REQ_PROD, 1);
    expect(back.unconsumedRequests()).toBe(0);
    expect(back.takeRequest()).toBeUndefined();
    expect(back.finalCheckForRequests()).toBe(false);
  });

  it('detects a rogue req_prod that moved backwards or jumped across the wrap', () => {
    for (const [start, bad] of [
      [100, 99], // behind rsp_prod_pvt
      [U32 - 10, (U32 - 10 + 33) % U32], // 33 ahead across the wrap
      [5, U32 - 1], // "negative"
    ]) {
      const page = pageAt(start);
      const back = BackRing.attach(page, blkifProtocol);
      new RingPage(page).store(REQ_PROD, bad);
      expect(() => back.takeRequest(), `start ${start} req_prod ${bad}`).toThrow(RogueRingError);
      expect(back.rogue).toBe(true);
    }
    const page = pageAt(U32 - 10);
    const back = BackRing.attach(page, blkifProtocol);
    new RingPage(page).store(REQ_PROD, (U32 - 10 + 32) % U32); // full, across the wrap: honest
    expect(back.unconsumedRequests()).toBe(32);
  });

  it('never consumes more than the ring size, even when the frontend lies within bounds', () => {
    const { front, back } = blkRings();
    for (let i = 0; i < 32; i++) front.putRequest(req(i));
    front.pushRequests();
    let n = 0;
    while (back.takeRequest()) n++;
    expect(n).toBe(32); // every slot now holds a request awaiting its response
    // A frontend rewinding req_prod to 16 (still within size of rsp_prod_pvt): req_prod - req_cons
    // wraps to ~2^32, but the loop stays bounded by the free room.
    const b2 = BackRing.attach(initPage(), blkifProtocol);
    const p2 = new RingPage(b2.page.bytes);
    p2.store(REQ_PROD, 16);
    for (let i = 0; i < 16; i++) b2.takeRequest();
    p2.store(REQ_PROD, 8);
    let m = 0;
    while (b2.takeRequest() && m < 1000) m++;
    expect(m).toBe(16);
    expect(b2.unconsumedRequests()).toBe(0);
  });

  it('takeResponse detects a backend publishing more responses than requests outstanding', () => {
    const { page, front, back } = blkRings();
    front.putRequest(req(0));
    front.putRequest(req(1));
    front.pushRequests();
    back.takeRequest();
    back.putResponse({ id: 0n, operation: 0, status: 0 });
    back.pushResponses();
    new RingPage(page).store(RSP_PROD, 3); // only two requests exist
    expect(() => front.takeResponse()).toThrow(RogueRingError);
    new RingPage(page).store(RSP_PROD, 2); // two is plausible
    expect(front.takeResponse()?.id).toBe(0n);
  });

  it('the backend decodes a private copy: later writes to the slot do not change it', () => {
    const { page, front, back } = blkRings();
    front.putRequest(req(9));
    front.pushRequests();
    const r = back.takeRequest()!;
    page.fill(0xff, 64, 64 + 112);
    expect(r).toEqual(req(9));
  });
});

describe('index wraparound', () => {
  it('attach resumes from the indices on the page', () => {
    const page = pageAt(U32 - 3);
    const front = FrontRing.attach(page, blkifProtocol);
    const back = BackRing.attach(page, blkifProtocol);
    expect([front.reqProdPvt, front.rspCons]).toEqual([U32 - 3, U32 - 3]);
    expect([back.rspProdPvt, back.reqCons]).toEqual([U32 - 3, U32 - 3]);
    expect(front.freeRequests()).toBe(32);
    expect(back.unconsumedRequests()).toBe(0);
  });

  it('a re-attached backend resumes from rsp_prod, so unanswered requests are processed again', () => {
    const page = pageAt(U32 - 2);
    const front = FrontRing.attach(page, blkifProtocol);
    for (let i = 0; i < 3; i++) front.putRequest(req(i));
    front.pushRequests();
    const old = BackRing.attach(page, blkifProtocol);
    old.takeRequest();
    old.takeRequest();
    old.putResponse({ id: 0n, operation: 0, status: 0 });
    old.pushResponses(); // answered request 0, consumed 1, then "crashed"
    const fresh = BackRing.attach(page, blkifProtocol);
    expect([fresh.rspProdPvt, fresh.reqCons]).toEqual([U32 - 1, U32 - 1]);
    expect(fresh.unconsumedRequests()).toBe(2);
    expect(fresh.takeRequest()?.id).toBe(1n);
    expect(fresh.takeRequest()?.id).toBe(2n);
  });

  it('moves requests and responses in order across 2^32 with correct slots and notifications', () => {
    const start = U32 - 40;
    const page = pageAt(start);
    const front = FrontRing.attach(page, blkifProtocol);
    const back = BackRing.attach(page, blkifProtocol);
    let nextReq = 0;
    let nextRsp = 0;
    let backNotified = 0;
    let frontNotified = 0;
    for (let round = 0; round < 12; round++) {
      const k = 1 + ((round * 7) % 32);
      for (let i = 0; i < k; i++) {
        const idx = front.reqProdPvt;
        front.putRequest(req(nextReq, { operation: nextReq & 0xff }));
        // The slot used is idx mod 32.
        expect(page[64 + (idx % 32) * 112]).toBe(nextReq & 0xff);
        nextReq++;
      }
      if (front.pushRequests()) backNotified++;
      const got: bigint[] = [];
      for (let r = back.takeRequest(); r; r = back.takeRequest()) {
        got.push(r.id);
        back.putResponse({ id: r.id, operation: r.operation, status: r.id % 2n ? -1 : 0 });
      }
      expect(got).toHaveLength(k);
      expect(back.finalCheckForRequests()).toBe(false);
      if (back.pushResponses()) frontNotified++;
      for (let s = front.takeResponse(); s; s = front.takeResponse()) {
        expect(s.id).toBe(BigInt(nextRsp));
        expect(s.status).toBe(nextRsp % 2 ? -1 : 0);
        nextRsp++;
      }
      expect(front.finalCheckForResponses()).toBe(false);
    }
    expect(nextRsp).toBe(nextReq);
    expect(nextReq).toBeGreaterThan(40); // really crossed 2^32
    expect(front.reqProdPvt).toBe((start + nextReq) % U32);
    expect(front.reqProdPvt).toBeLessThan(start);
    expect(u32(page, 0)).toBe(front.reqProdPvt);
    expect(u32(page, 8)).toBe(front.reqProdPvt);
    // Every round re-armed the events, so every push must have notified.
    expect(backNotified).toBe(12);
    expect(frontNotified).toBe(12);
  });

  it('places index 2^32-1 in the last slot and 2^32 in slot 0', () => {
    const page = pageAt(U32 - 1);
    const front = FrontRing.attach(page, blkifProtocol);
    front.putRequest(req(0xaa, { operation: 0xaa }));
    front.putRequest(req(0xbb, { operation: 0xbb }));
    expect(page[64 + 31 * 112]).toBe(0xaa);
    expect(page[64]).toBe(0xbb);
    expect(front.reqProdPvt).toBe(1);
    expect(front.pushRequests()).toBe(true); // req_event = start + 1 = 0 lies in (2^32-1, 1]
    expect(u32(page, 0)).toBe(1);
    const back = BackRing.attach(page, blkifProtocol);
    back.reqCons = U32 - 1; // attach assumes no requests outstanding; resume as if none consumed yet
    expect(back.takeRequest()?.id).toBe(0xaan);
    expect(back.takeRequest()?.id).toBe(0xbbn);
    expect(back.reqCons).toBe(1);
  });

  it('notifies correctly when a push crosses 2^32 and the event lies just after the wrap', () => {
    const page = pageAt(U32 - 2);
    new RingPage(page).store(REQ_EVENT, 1); // backend wants a kick when req_prod reaches 1
    const front = FrontRing.attach(page, blkifProtocol);
    front.putRequest(req(0));
    front.putRequest(req(1));
    expect(front.pushRequests()).toBe(false); // req_prod: 2^32-2 → 0
    front.putRequest(req(2));
    expect(front.pushRequests()).toBe(true); // 0 → 1
  });
});

describe('custom codecs', () => {
  it('uses a generic codec through the same ring code', () => {
    const codec: EntryCodec<number> = {
      size: 1000,
      encode: (v, o, x) => v.setUint32(o, x, true),
      decode: (v, o) => v.getUint32(o, true),
    };
    const page = initPage();
    const front = new FrontRing(page, { name: 't', request: codec, response: codec });
    expect(front.size).toBe(4);
    for (let i = 0; i < 4; i++) front.putRequest(i * 11);
    expect(u32(page, 64 + 3 * 1000)).toBe(33);
    expect(() => front.putRequest(0)).toThrow(RingFullError);
  });
});
