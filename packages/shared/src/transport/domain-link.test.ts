/**
 * Two link ends (MachineLinkEnd, as a direct-I/O guest and the hardware simulator use them) over
 * an in-memory FIFO link that the test delivers by hand, so message interleavings are exact.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../memory/index.js';
import { BackRing, FrontRing, initSharedRing } from '../ring/ring.js';
import { hwNicRxProtocol, hwNicTxProtocol, type HwNicBuffer, type HwStatusResponse } from '../hw/index.js';
import { MachineLinkEnd } from './domain-link.js';
import { RpcPeer } from './rpc.js';
import { HeldLink } from './test-support/held-link.js';


const page = (): Uint8Array => new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
const GUEST = 1;
const TX_PFN = 10;
const RX_PFN = 11;
const GUEST_PORT = 5;

/**
 * A guest driving a NIC function's tx and rx queues, and the device serving both at every
 * doorbell (as NicVf does: a tx pass, then an rx prefetch, each ending in a final check that
 * re-arms req_event). Each round the guest pushes one transmit and reposts one receive buffer in
 * one turn — as it does per echoed datagram — while the device's answer to the previous round is
 * still on its way, so its pushes are suppressed and the device's re-arm wakes it late.
 */
function nicOverLink() {
  const gl = new HeldLink();
  const dl = new HeldLink();
  gl.peer = dl;
  dl.peer = gl;
  const gPages = new Map([
    [TX_PFN, page()],
    [RX_PFN, page()],
  ]);
  const dPages = new Map([
    [TX_PFN, page()],
    [RX_PFN, page()],
  ]);
  let doorbells = 0;
  let interrupts = 0;
  let txDone = 0;
  const device: { kick?: () => void } = {};
  const guest = new MachineLinkEnd(
    new RpcPeer(gl, 'guest'),
    (d, pfn) => (d === GUEST ? gPages.get(pfn) : undefined),
    () => {
      interrupts++;
      onInterrupt();
    },
  );
  const hw = new MachineLinkEnd(
    new RpcPeer(dl, 'hw'),
    (d, pfn) => (d === GUEST ? dPages.get(pfn) : undefined),
    () => device.kick?.(),
  );
  const doorbell = (): void => {
    doorbells++;
    guest.sendEvent(GUEST_PORT);
  };
  const gTx = guest.ringSync(TX_PFN, gPages.get(TX_PFN)!, GUEST);
  const gRx = guest.ringSync(RX_PFN, gPages.get(RX_PFN)!, GUEST);
  gTx.lateWake = doorbell;
  gRx.lateWake = doorbell;
  initSharedRing(gPages.get(TX_PFN)!, gTx);
  initSharedRing(gPages.get(RX_PFN)!, gRx);
  const tx = new FrontRing<HwNicBuffer, HwStatusResponse>(gPages.get(TX_PFN)!, hwNicTxProtocol, gTx);
  const rx = new FrontRing<HwNicBuffer, HwStatusResponse>(gPages.get(RX_PFN)!, hwNicRxProtocol, gRx);
  function onInterrupt(): void {
    do while (tx.takeResponse()) txDone++;
    while (tx.finalCheckForResponses());
  }
  // The device attaches once the ring pages' initial contents arrived.
  guest.mirror.flush();
  dl.deliver();
  const irq = (): void => void hw.sendEvent(GUEST_PORT);
  const dTx = hw.ringSync(TX_PFN, dPages.get(TX_PFN)!, GUEST);
  const dRx = hw.ringSync(RX_PFN, dPages.get(RX_PFN)!, GUEST);
  dTx.lateWake = irq;
  dRx.lateWake = irq;
  const btx = BackRing.attach<HwNicBuffer, HwStatusResponse>(dPages.get(TX_PFN)!, hwNicTxProtocol, dTx);
  const brx = BackRing.attach<HwNicBuffer, HwStatusResponse>(dPages.get(RX_PFN)!, hwNicRxProtocol, dRx);
  const rxCache: HwNicBuffer[] = [];
  device.kick = () => {
    do {
      for (let req = btx.takeRequest(); req; req = btx.takeRequest()) btx.putResponse({ id: req.id, status: 0 });
      if (btx.pushResponses()) irq();
    } while (btx.finalCheckForRequests());
    do for (let d = brx.takeRequest(); d; d = brx.takeRequest()) rxCache.push(d);
    while (brx.finalCheckForRequests());
  };

  /** One round; returns the doorbells the guest rang in it. */
  const round = (n: number): number => {
    const before = doorbells;
    // The guest's turn: one frame out, one buffer posted again.
    tx.putRequest({ domid: 0, id: n % 128, pfn: 100, offset: 0, len: 64 });
    if (tx.pushRequests()) doorbell();
    rx.putRequest({ domid: 0, id: n % 128, pfn: 101, offset: 0, len: 2048 });
    if (rx.pushRequests()) doorbell();
    guest.mirror.flush();
    // What the device sent in its last turn reaches the guest only now.
    gl.deliver();
    guest.mirror.flush();
    // The device serves every doorbell it was sent, in order.
    dl.deliver();
    hw.mirror.flush();
    return doorbells - before;
  };
  return { round, state: () => ({ doorbells, interrupts, txDone, txSeen: btx.reqCons, rxSeen: brx.reqCons, rxCached: rxCache.length }), finish: () => gl.deliver() };
}

describe('late wakes across a link (ring/mirror.ts)', () => {
  it('a device re-arming both queues at every doorbell does not turn doorbells into a storm', () => {
    const nic = nicOverLink();
    const ROUNDS = 16;
    const perRound: number[] = [];
    for (let r = 0; r < ROUNDS; r++) perRound.push(nic.round(r));
    nic.finish();
    const s = nic.state();
    // Every transmit was seen, served and answered; every buffer was taken.
    expect(s.txSeen).toBe(ROUNDS);
    expect(s.txDone).toBe(ROUNDS);
    expect(s.rxSeen).toBe(ROUNDS);
    // At most one doorbell per queue per round: the first round's two kicks, then the two late
    // wakes the device's fresh re-arms owe the guest's suppressed pushes. Counting every re-store
    // of an unchanged event index, and each of a message's updates, doubled them every round
    // (2, 4, 8, … 65,536).
    expect(Math.max(...perRound)).toBeLessThanOrEqual(2);
    expect(s.doorbells).toBeLessThanOrEqual(2 * ROUNDS);
  });
});
