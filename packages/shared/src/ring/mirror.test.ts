/**
 * The ring protocol with NO shared memory between the two ends: each keeps its own page copy and
 * PageMirror ships writes across a message link — the way ws mode runs a ring between processes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MessageChannel, type Worker } from 'node:worker_threads';
import { FrontRing, blkifProtocol, initSharedRing, type BlkifRequest, type BlkifResponse } from './index.js';
import { PAGE_SIZE } from '../memory/index.js';
import { startRuntimeWorker } from '../runtime/index.js';
import { PageMirror, applyPageUpdates, type PageUpdate } from './mirror.js';

let worker: Worker | undefined;
afterEach(async () => {
  await worker?.terminate();
  worker = undefined;
});

describe('a mirrored ring between two threads without shared memory', () => {
  it('moves 100,000 requests and responses in order, with notification suppression intact', async () => {
    const { port1, port2 } = new MessageChannel();
    worker = startRuntimeWorker(new URL('./test-support/mirror-peer.worker.ts', import.meta.url), { workerData: { port: port2 }, transferList: [port2] });
    const page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
    const mirror = new PageMirror((updates: PageUpdate[]) => port1.postMessage({ t: 'page', updates }));
    const sync = mirror.syncFor('ring', page);
    initSharedRing(page, sync);
    const ring = new FrontRing<BlkifRequest, BlkifResponse>(page, blkifProtocol, sync);

    const TOTAL = 100_000;
    let sent = 0;
    let received = 0;
    let bad = 0;
    let events = 0;
    let lateWakes = 0;
    const done = new Promise<void>((resolve) => {
      const fill = (): void => {
        let n = 0;
        while (sent < TOTAL && !ring.isFull()) {
          ring.putRequest({ operation: 1, nrSegments: 1, handle: 0, id: BigInt(sent), sectorNumber: BigInt(sent) * 7n, segments: [{ gref: 8, firstSect: 0, lastSect: 7 }] });
          sent++;
          n++;
        }
        if (n > 0 && ring.pushRequests()) {
          mirror.flush();
          port1.postMessage({ t: 'evt' });
        }
      };
      const drain = (): void => {
        do {
          for (;;) {
            const rsp = ring.takeResponse();
            if (!rsp) break;
            if (rsp.id !== BigInt(received) || rsp.status !== ((received * 7) % 3) - 1) bad++;
            received++;
          }
        } while (ring.finalCheckForResponses());
        if (received === TOTAL) resolve();
        else fill();
      };
      port1.on('message', (m: { t: string; updates?: unknown }) => {
        if (m.t === 'page') {
          if (applyPageUpdates(m.updates, (id) => (id === 'ring' ? page : undefined)).lateWakes.length > 0) {
            lateWakes++;
            mirror.flush();
            port1.postMessage({ t: 'evt' });
          }
        } else if (m.t === 'evt') {
          events++;
          drain();
        }
      });
      fill();
    });
    await done;
    expect(received).toBe(TOTAL);
    expect(bad).toBe(0);
    const peer = await new Promise<{ events: number; lateWakes: number; ring: { consumed: number; notifies: number; suppressed: number } }>((r) => {
      port1.on('message', (m: { t: string }) => m.t === 'stats' && r(m as never));
      port1.postMessage({ t: 'stats' });
    });
    expect(peer.ring.consumed).toBe(TOTAL);
    // Suppression works across the mirror: far fewer kicks than pushes in both directions.
    expect(ring.stats.notifies).toBeLessThan(TOTAL / 4);
    expect(peer.events).toBe(ring.stats.notifies + lateWakes);
    expect(events).toBe(peer.ring.notifies + peer.lateWakes);
    // Batching: one mirror message carries many entries.
    expect(mirror.counters.flushes).toBeLessThan(TOTAL / 4);
    port1.postMessage({ t: 'close' });
    port1.close();
  }, 60_000);

  it('rejects malformed updates without touching the page', () => {
    const page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
    const resolve = (id: string) => (id === 'ring' ? page : undefined);
    expect(applyPageUpdates('nonsense', resolve)).toMatchObject({ applied: 0, rejected: 1 });
    expect(applyPageUpdates([{ page: 'other', bytes: [], indices: [] }], resolve)).toMatchObject({ applied: 0, rejected: 1 });
    expect(applyPageUpdates([{ page: 'ring', bytes: [[4090, new Uint8Array(10)]], indices: [] }], resolve).rejected).toBe(1);
    expect(applyPageUpdates([{ page: 'ring', bytes: [], indices: [[9, 1]] }], resolve).rejected).toBe(1);
    expect(page.every((b) => b === 0)).toBe(true);
    expect(applyPageUpdates([{ page: 'ring', bytes: [[64, Uint8Array.of(1, 2)]], indices: [[0, 5]] }], resolve)).toMatchObject({ applied: 1, rejected: 0 });
    expect(page[64]).toBe(1);
    expect(new Int32Array(page.buffer, 0, 1)[0]).toBe(5);
    // The peer arms req_event = 3 while our req_prod (5) is already past it: it must be woken.
    expect(applyPageUpdates([{ page: 'ring', bytes: [], indices: [[1, 3]] }], resolve).lateWakes).toEqual(['ring']);
    // Armed beyond what we produced: nothing to do.
    expect(applyPageUpdates([{ page: 'ring', bytes: [], indices: [[1, 6]] }], resolve).lateWakes).toEqual([]);
  });

  it('wakes the peer late only for a new arm, and once per page per message', () => {
    const page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
    const words = new Int32Array(page.buffer, 0, 4);
    const resolve = (id: string) => (id === 'ring' ? page : undefined);
    words[0] = 5; // our req_prod
    // The peer arms req_event = 5 (we are already there), in three updates of one message.
    const arm = { page: 'ring', bytes: [], indices: [[1, 5]] };
    expect(applyPageUpdates([arm, arm, arm], resolve).lateWakes).toEqual(['ring']);
    // Its next empty final checks re-store 5: nothing new was armed, no doorbell is owed.
    expect(applyPageUpdates([arm], resolve).lateWakes).toEqual([]);
    // rsp_event works the same way: a fresh arm behind our rsp_prod wakes, its re-store does not.
    words[2] = 9;
    expect(applyPageUpdates([{ page: 'ring', bytes: [], indices: [[3, 8]] }], resolve).lateWakes).toEqual(['ring']);
    expect(applyPageUpdates([{ page: 'ring', bytes: [], indices: [[3, 8]] }], resolve).lateWakes).toEqual([]);
    expect([...words]).toEqual([5, 5, 9, 8]);
  });
});
