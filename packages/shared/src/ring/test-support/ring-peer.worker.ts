/**
 * Test peer for ring.threads.test.ts: a blkif *backend* running in its own worker thread on a
 * shared ring page. It answers every request with a response carrying the request's id and a
 * status derived from the request's contents, following the ring's notify / final-check
 * protocol with one doorbell word per direction (Atomics.wait / Atomics.notify).
 *
 * The deterministic request generator and status function are exported so the frontend (the test
 * thread) can check every response. Importing this module has no side effects unless it is the
 * entry of a worker started with `workerData.role === 'ring-peer-backend'`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BackRing } from '../ring.js';
import { blkifProtocol, BLKIF_MAX_SEGMENTS_PER_REQUEST, type BlkifRequest } from '../blkif.js';

/** Int32 indices in the control buffer; each doorbell on its own 64-byte line. */
export const CTRL_REQ_BELL = 0; // frontend → backend ("requests published")
export const CTRL_RSP_BELL = 16; // backend → frontend ("responses published")
export const CTRL_STATE = 32; // backend: 1 running, 2 done, -1 failed
export const CTRL_ABORT = 48; // frontend: 1 = stop now
export const CTRL_WORDS = 64;

/** A doorbell wait that times out with work pending means a missed notification. */
export const WAIT_TIMEOUT_MS = 2000;

/** Status a valid response never carries: the backend saw a request that was not what was sent. */
export const STATUS_CORRUPT = 0x7fff;

const TWO48 = 2 ** 48;

export function sectorOf(id: number): number {
  return (id * 2654435761) % TWO48;
}

/** The request the frontend sends as number `id`. */
export function makeRequest(id: number): BlkifRequest {
  const n = 1 + (id % BLKIF_MAX_SEGMENTS_PER_REQUEST);
  const segments = [];
  for (let i = 0; i < n; i++) segments.push({ gref: (id * 31 + i) >>> 0, firstSect: (id + i) & 7, lastSect: 7 });
  return { operation: id & 1, nrSegments: n, handle: id & 0xffff, id: BigInt(id), sectorNumber: BigInt(sectorOf(id)), segments };
}

/** Status derived from a request's contents: any change to sector, segments or op changes it. */
export function statusOf(r: BlkifRequest): number {
  const last = r.segments[r.segments.length - 1];
  const mix = Number(r.sectorNumber % 30011n) + r.nrSegments * 7 + (last ? last.gref + last.firstSect : 0) + r.operation * 4099;
  return (mix % 32768) - 16384; // i16, never STATUS_CORRUPT
}

/** Full comparison against what `makeRequest(r.id)` would have produced. */
export function requestIsIntact(r: BlkifRequest): boolean {
  const e = makeRequest(Number(r.id));
  if (r.operation !== e.operation || r.nrSegments !== e.nrSegments || r.handle !== e.handle || r.sectorNumber !== e.sectorNumber) return false;
  for (let i = 0; i < e.nrSegments; i++) {
    const a = r.segments[i];
    const b = e.segments[i];
    if (!a || a.gref !== b.gref || a.firstSect !== b.firstSect || a.lastSect !== b.lastSect) return false;
  }
  return true;
}

export function ring(ctrl: Int32Array, bell: number): void {
  Atomics.add(ctrl, bell, 1);
  Atomics.notify(ctrl, bell, 1);
}

export interface PeerResult {
  answered: number;
  corrupt: number;
  outOfOrder: number;
  waits: number;
  notifies: number;
  suppressed: number;
}

function runBackend(page: Uint8Array, ctrl: Int32Array, count: number): PeerResult {
  const back = new BackRing(page, blkifProtocol);
  const res: PeerResult = { answered: 0, corrupt: 0, outOfOrder: 0, waits: 0, notifies: 0, suppressed: 0 };
  let spin = 256;
  Atomics.store(ctrl, CTRL_STATE, 1);
  while (res.answered < count) {
    let n = 0;
    for (let r = back.takeRequest(); r !== undefined; r = back.takeRequest()) {
      const ok = requestIsIntact(r);
      if (!ok) res.corrupt++;
      if (r.id !== BigInt(res.answered + n)) res.outOfOrder++;
      back.putResponse({ id: r.id, operation: r.operation, status: ok ? statusOf(r) : STATUS_CORRUPT });
      n++;
    }
    if (n > 0) {
      res.answered += n;
      if (back.pushResponses()) ring(ctrl, CTRL_RSP_BELL);
      continue;
    }
    // Idle: spin briefly (adaptively), then arm req_event and sleep on the doorbell.
    let found = false;
    for (let i = 0; i < spin; i++)
      if (back.unconsumedRequests() > 0) {
        found = true;
        break;
      }
    if (found) {
      spin = Math.min(spin * 2, 1 << 14);
      continue;
    }
    spin = Math.max(spin >> 1, 64);
    const seq = Atomics.load(ctrl, CTRL_REQ_BELL);
    if (back.finalCheckForRequests()) continue;
    res.waits++;
    const w = Atomics.wait(ctrl, CTRL_REQ_BELL, seq, WAIT_TIMEOUT_MS);
    if (Atomics.load(ctrl, CTRL_ABORT) !== 0) break;
    // Slept through the whole timeout although requests were published: nobody rang the bell.
    if (w === 'timed-out' && back.unconsumedRequests() > 0) throw new Error(`lost wake-up: ${back.unconsumedRequests()} requests waited ${WAIT_TIMEOUT_MS} ms`);
  }
  res.notifies = back.stats.notifies;
  res.suppressed = back.stats.suppressed;
  return res;
}

const data = workerData as { role?: string; page?: SharedArrayBuffer; ctrl?: SharedArrayBuffer; count?: number } | null;
if (data?.role === 'ring-peer-backend' && parentPort) {
  const port = parentPort;
  const ctrl = new Int32Array(data.ctrl!);
  try {
    port.postMessage({ t: 'ready' });
    const result = runBackend(new Uint8Array(data.page!), ctrl, data.count!);
    Atomics.store(ctrl, CTRL_STATE, 2);
    port.postMessage({ t: 'done', result });
  } catch (e) {
    Atomics.store(ctrl, CTRL_STATE, -1);
    ring(ctrl, CTRL_RSP_BELL);
    port.postMessage({ t: 'error', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  }
}
