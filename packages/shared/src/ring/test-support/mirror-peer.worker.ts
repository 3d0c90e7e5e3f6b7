/**
 * Test peer: a blkif backend on its OWN copy of the ring page (no shared memory with the
 * frontend), kept in step by PageMirror updates over a MessagePort. It answers each request with
 * a response whose status is derived from the request, so the frontend can verify every one.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { BackRing, blkifProtocol, PAGE_SIZE } from '../../index.js';
import { PageMirror, applyPageUpdates, type PageUpdate } from '../mirror.js';

const port = workerData.port as MessagePort;
const page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
const mirror = new PageMirror((updates: PageUpdate[]) => port.postMessage({ t: 'page', updates }));
const ring = new BackRing(page, blkifProtocol, mirror.syncFor('ring', page));
let events = 0;
let lateWakes = 0;

function sendEvent(): void {
  mirror.flush();
  port.postMessage({ t: 'evt' });
}

function process(): void {
  for (;;) {
    let n = 0;
    for (;;) {
      const req = ring.takeRequest();
      if (!req) break;
      ring.putResponse({ id: req.id, operation: req.operation, status: Number(req.sectorNumber % 3n) - 1 });
      n++;
    }
    if (n > 0 && ring.pushResponses()) sendEvent();
    if (!ring.finalCheckForRequests()) break;
  }
}

port.on('message', (m: { t: string; updates?: unknown }) => {
  if (m.t === 'page') {
    if (applyPageUpdates(m.updates, (id) => (id === 'ring' ? page : undefined)).lateWakes.length > 0) {
      lateWakes++;
      sendEvent();
    }
  } else if (m.t === 'evt') {
    events++;
    process();
  } else if (m.t === 'stats') port.postMessage({ t: 'stats', events, lateWakes, ring: ring.stats, mirror: mirror.counters });
  else if (m.t === 'close') port.close();
});
