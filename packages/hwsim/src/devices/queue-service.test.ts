import { describe, expect, it } from 'vitest';
import { BackRing, FrontRing, REQ_PROD, hwNicTxProtocol, initSharedRing, type HwNicBuffer, type HwStatusResponse } from '@ringvisor/shared';
import { QueueService } from './queue-service.js';

function rings() {
  const page = new Uint8Array(new SharedArrayBuffer(4096));
  initSharedRing(page);
  const front = new FrontRing<HwNicBuffer, HwStatusResponse>(page, hwNicTxProtocol);
  const back = BackRing.attach(page, hwNicTxProtocol);
  return { front, back };
}

const req = (id: number): HwNicBuffer => ({ domid: 0, id, pfn: 1, offset: 0, len: 60 });
const tick = () => new Promise((r) => setImmediate(r));

describe('QueueService', () => {
  it('bounds each pass by the ring size and continues on a later turn when the driver keeps producing', async () => {
    const { front, back } = rings();
    const perPass = new Map<number, number>();
    const got: number[] = [];
    let next = 0;
    let rounds = 0;
    const svc: QueueService<HwNicBuffer, HwStatusResponse> = new QueueService({
      ring: back,
      handle: (r) => {
        perPass.set(svc.stats.passes, (perPass.get(svc.stats.passes) ?? 0) + 1);
        return { id: r.id, status: 0 };
      },
      irq: () => {
        // The driver's interrupt handler: reap (re-arming rsp_event), and refill the whole ring
        // for two more rounds.
        do for (let r = front.takeResponse(); r; r = front.takeResponse()) got.push(r.id);
        while (front.finalCheckForResponses());
        if (++rounds < 3) {
          while (!front.isFull()) front.putRequest(req(next++));
          if (front.pushRequests()) svc.kick();
        }
      },
    });
    while (!front.isFull()) front.putRequest(req(next++));
    expect(front.pushRequests()).toBe(true);
    svc.kick();
    expect(svc.stats.requests).toBe(256); // one pass, not the whole stream, ran synchronously
    for (let i = 0; i < 10 && got.length < 768; i++) await tick();
    expect(got).toEqual(Array.from({ length: 768 }, (_, i) => i));
    expect(Math.max(...perPass.values())).toBeLessThanOrEqual(back.size);
    expect(svc.stats.deferred).toBeGreaterThanOrEqual(1);
    expect(svc.stats.passes).toBe(3);

    // Idle now: req_event is armed, so the next request rings the doorbell.
    front.putRequest(req(next++));
    expect(front.pushRequests()).toBe(true);
  });

  it('a doorbell rung from inside a pass does not recurse and loses nothing', async () => {
    const { front, back } = rings();
    let served = 0;
    let depth = 0;
    let maxDepth = 0;
    const svc: QueueService<HwNicBuffer, HwStatusResponse> = new QueueService({
      ring: back,
      handle: (r) => {
        served++;
        maxDepth = Math.max(maxDepth, ++depth);
        if (r.id === 0) {
          // Work arriving mid-pass with a (spurious) doorbell from inside the handler.
          front.putRequest(req(1));
          front.pushRequests();
          svc.kick();
        }
        depth--;
        return { id: r.id, status: 0 };
      },
      irq: () => {},
    });
    front.putRequest(req(0));
    front.pushRequests();
    svc.kick();
    for (let i = 0; i < 5 && served < 2; i++) await tick();
    expect(served).toBe(2);
    expect(maxDepth).toBe(1);
    expect(svc.stats.doorbells).toBe(2);
  });

  it('raises the IRQ only when the driver asked (rsp_event)', () => {
    const { front, back } = rings();
    let irqs = 0;
    const svc = new QueueService({ ring: back, handle: (r: HwNicBuffer) => ({ id: r.id, status: 0 }), irq: () => irqs++ });
    front.putRequest(req(1));
    front.pushRequests();
    svc.kick(); // rsp_event = 1 initially: notify
    expect(irqs).toBe(1);
    front.putRequest(req(2));
    front.pushRequests();
    svc.kick(); // driver has not re-armed rsp_event (it did not sleep): suppressed
    expect(irqs).toBe(1);
    expect(svc.stats.irqsSuppressed).toBe(1);
    front.takeResponse();
    front.takeResponse();
    expect(front.finalCheckForResponses()).toBe(false); // driver sleeps: re-arms
    front.putRequest(req(3));
    front.pushRequests();
    svc.kick();
    expect(irqs).toBe(2);
  });

  it('stops on a rogue req_prod, still publishing answers already made, and ignores later doorbells', () => {
    const { front, back } = rings();
    const rogue: string[] = [];
    let handled = 0;
    const svc = new QueueService({
      ring: back,
      handle: (r: HwNicBuffer) => {
        handled++;
        return { id: r.id, status: 0 };
      },
      irq: () => {},
      onRogue: (e) => rogue.push(e.code),
    });
    Atomics.store(front.page.indices, REQ_PROD, 5000);
    svc.kick();
    expect(svc.stopped).toBe(true);
    expect(rogue).toEqual(['RV_ERR_RING_ROGUE']);
    expect(svc.stats.rogue).toBe(1);
    svc.kick();
    expect(handled).toBe(0);
    expect(svc.stats.doorbells).toBe(2);
    expect(svc.stats.passes).toBe(1);
  });
});
