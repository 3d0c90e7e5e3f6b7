/**
 * The ring between two real threads: this (test) thread is the blkif frontend, a worker thread is
 * the backend. A million requests go through one shared 4 KiB page with the notify/final-check
 * protocol and a doorbell word per direction; every response is checked, in order.
 */
import { describe, expect, it } from 'vitest';
import type { Worker } from 'node:worker_threads';
import { startRuntimeWorker } from '../runtime/index.js';
import { FrontRing, initSharedRing } from './ring.js';
import { blkifProtocol } from './blkif.js';
import { bigintAsDecimal } from '../util/u64.js';
import {
  CTRL_ABORT,
  CTRL_REQ_BELL,
  CTRL_RSP_BELL,
  CTRL_STATE,
  CTRL_WORDS,
  STATUS_CORRUPT,
  WAIT_TIMEOUT_MS,
  makeRequest,
  ring,
  statusOf,
  type PeerResult,
} from './test-support/ring-peer.worker.js';

const COUNT = 1_000_000;
const DEADLINE_MS = 45_000;

type PeerMessage = { t: 'ready' } | { t: 'done'; result: PeerResult } | { t: 'error'; message: string };

function startBackend(page: SharedArrayBuffer, ctrl: SharedArrayBuffer, count: number) {
  const worker: Worker = startRuntimeWorker(new URL('./test-support/ring-peer.worker.ts', import.meta.url), {
    workerData: { role: 'ring-peer-backend', page, ctrl, count },
  });
  const messages: PeerMessage[] = [];
  const waiters: Array<() => void> = [];
  let failure: Error | undefined;
  worker.on('message', (m: PeerMessage) => {
    messages.push(m);
    waiters.splice(0).forEach((w) => w());
  });
  worker.on('error', (e) => {
    failure = e;
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (t: PeerMessage['t'], timeoutMs = 30_000): Promise<PeerMessage> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      if (failure) throw failure;
      const err = messages.find((m) => m.t === 'error');
      if (err && err.t === 'error') throw new Error(`backend failed: ${err.message}`);
      const m = messages.find((x) => x.t === t);
      if (m) return m;
      if (Date.now() > until) throw new Error(`timed out waiting for backend '${t}'`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  };
  return { worker, next };
}

describe('ring between two threads', () => {
  it(`moves ${COUNT.toLocaleString('en')} blkif requests and responses, all verified in order`, async () => {
    const pageBuf = new SharedArrayBuffer(4096);
    const ctrlBuf = new SharedArrayBuffer(CTRL_WORDS * 4);
    const page = new Uint8Array(pageBuf);
    const ctrl = new Int32Array(ctrlBuf);
    initSharedRing(page);
    const front = new FrontRing(page, blkifProtocol);

    const backend = startBackend(pageBuf, ctrlBuf, COUNT);
    try {
      await backend.next('ready');
      const t0 = performance.now();

      let sent = 0;
      let received = 0;
      let badId = 0;
      let badStatus = 0;
      let badOp = 0;
      let corrupt = 0;
      let firstBad = '';
      let waits = 0;
      let spin = 256;
      const expected = new Int16Array(front.size); // expected status of each in-flight request, by slot
      while (received < COUNT) {
        // Keep the ring full: write as many requests as fit, publish them in one push.
        let put = 0;
        while (sent < COUNT && !front.isFull()) {
          const r = makeRequest(sent);
          expected[sent & (front.size - 1)] = statusOf(r);
          front.putRequest(r);
          sent++;
          put++;
        }
        if (put > 0 && front.pushRequests()) ring(ctrl, CTRL_REQ_BELL);

        let got = 0;
        for (let rsp = front.takeResponse(); rsp !== undefined; rsp = front.takeResponse()) {
          const want = expected[received & (front.size - 1)];
          if (rsp.id !== BigInt(received)) badId++;
          if (rsp.status === STATUS_CORRUPT) corrupt++;
          else if (rsp.status !== want) badStatus++;
          if (rsp.operation !== (received & 1)) badOp++;
          if (!firstBad && (rsp.id !== BigInt(received) || rsp.status !== want || rsp.operation !== (received & 1)))
            firstBad = `response #${received}: ${JSON.stringify(rsp, bigintAsDecimal)}, wanted status ${want}`;
          received++;
          got++;
        }
        if (got > 0 || put > 0) continue;

        // Nothing to do: spin briefly, then arm rsp_event (final check) and sleep on the doorbell.
        let found = false;
        for (let i = 0; i < spin; i++)
          if (front.unconsumedResponses() > 0) {
            found = true;
            break;
          }
        if (found) {
          spin = Math.min(spin * 2, 1 << 14);
          continue;
        }
        spin = Math.max(spin >> 1, 64);
        const seq = Atomics.load(ctrl, CTRL_RSP_BELL);
        if (front.finalCheckForResponses()) continue;
        waits++;
        const w = Atomics.wait(ctrl, CTRL_RSP_BELL, seq, WAIT_TIMEOUT_MS);
        if (Atomics.load(ctrl, CTRL_STATE) < 0) break;
        if (w === 'timed-out' && front.unconsumedResponses() > 0)
          throw new Error(`lost wake-up: ${front.unconsumedResponses()} responses waited ${WAIT_TIMEOUT_MS} ms (sent ${sent}, received ${received})`);
        if (performance.now() - t0 > DEADLINE_MS) throw new Error(`stalled: sent ${sent}, received ${received} (lost wake-up?)`);
      }
      const elapsed = performance.now() - t0;

      const done = await backend.next('done'); // rethrows a backend failure
      const peer = (done as { t: 'done'; result: PeerResult }).result;
      console.info(
        `ring threads: ${COUNT} round trips in ${elapsed.toFixed(0)} ms (${((COUNT / elapsed) * 1000).toFixed(0)}/s); ` +
          `front notifies ${front.stats.notifies}, suppressed ${front.stats.suppressed}, waits ${waits}; ` +
          `back notifies ${peer.notifies}, suppressed ${peer.suppressed}, waits ${peer.waits}`,
      );

      expect(firstBad).toBe('');
      expect({ received, badId, badStatus, badOp, corrupt }).toEqual({ received: COUNT, badId: 0, badStatus: 0, badOp: 0, corrupt: 0 });
      expect(peer).toMatchObject({ answered: COUNT, corrupt: 0, outOfOrder: 0 });
      expect(front.stats.produced).toBe(COUNT);
      expect(front.stats.consumed).toBe(COUNT);
      expect(front.unconsumedResponses()).toBe(0);
      expect(front.freeRequests()).toBe(front.size);
      expect(elapsed).toBeLessThan(DEADLINE_MS);
    } finally {
      Atomics.store(ctrl, CTRL_ABORT, 1);
      ring(ctrl, CTRL_REQ_BELL);
      await backend.worker.terminate();
    }
  });
});
