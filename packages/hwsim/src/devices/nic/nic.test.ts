/**
 * Two hosts' NICs on one LAN segment, each driven through its real tx/rx queues by a test
 * playing that host's dom0 driver. Doorbells are direct `kick()` calls and the IRQ a counter,
 * so every step is synchronous and deterministic (the event-channel wiring is covered by the
 * runtime tests).
 */
import { describe, expect, it } from 'vitest';
import {
  FrontRing,
  GuestMemory,
  HW_STATUS_EIO,
  HW_STATUS_OK,
  REQ_PROD,
  hwNicRxProtocol,
  hwNicTxProtocol,
  initSharedRing,
  type HwNicBuffer,
  type HwStatusResponse,
} from '@ringvisor/shared';
import { DmaEngine } from '../../dma/dma-engine.js';
import { LanSegment } from '../../lan/segment.js';
import { frameSource } from '../../lan/mac.js';
import { ethFrame, quietLogger } from '../../test-support/harness.js';
import { PhysicalNic, type PhysicalNicOptions } from './device.js';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const TX_PFN = 1;
const RX_PFN = 2;
const TX_DATA = 16; // tx frames in pfns 16..
const RX_DATA = 300; // rx buffers in pfns 300..

class Host {
  readonly dma = new DmaEngine();
  readonly mem = GuestMemory.allocate(0, 600);
  readonly nic: PhysicalNic;
  readonly tx: FrontRing<HwNicBuffer, HwStatusResponse>;
  readonly rx: FrontRing<HwNicBuffer, HwStatusResponse>;
  irqs = 0;
  private txId = 0;
  private rxId = 0;

  constructor(mac: string, lan: LanSegment | undefined, opts: Partial<PhysicalNicOptions> = {}) {
    this.dma.attachMemory(0, this.mem);
    this.nic = new PhysicalNic({ mac, dma: this.dma, logger: quietLogger(), ...opts });
    if (lan) this.nic.connect(lan.attach(mac));
    initSharedRing(this.mem.page(TX_PFN));
    initSharedRing(this.mem.page(RX_PFN));
    this.tx = new FrontRing(this.mem.page(TX_PFN), hwNicTxProtocol);
    this.rx = new FrontRing(this.mem.page(RX_PFN), hwNicRxProtocol);
    this.nic.attachQueues({ tx: { domid: 0, pfn: TX_PFN }, rx: { domid: 0, pfn: RX_PFN } }, () => this.irqs++);
  }

  /** Queue frames for transmit (one page each) and ring the doorbell if asked. */
  send(frames: Uint8Array[], override: Partial<HwNicBuffer> = {}): number[] {
    const ids: number[] = [];
    frames.forEach((f, i) => {
      const pfn = TX_DATA + (i % 200);
      this.mem.page(pfn).set(f, 0);
      const id = this.txId++ & 0xffff;
      ids.push(id);
      this.tx.putRequest({ domid: 0, id, pfn, offset: 0, len: f.byteLength, ...override });
    });
    if (this.tx.pushRequests()) this.nic.kick();
    return ids;
  }

  /** Post empty rx buffers. */
  post(n: number, capacity = 2048, override: Partial<HwNicBuffer> = {}): void {
    for (let i = 0; i < n; i++) {
      const id = this.rxId++ & 0xffff;
      this.rx.putRequest({ domid: 0, id, pfn: RX_DATA + (id % 256), offset: 0, len: capacity, ...override });
    }
    if (this.rx.pushRequests()) this.nic.kick();
  }

  txDone(): HwStatusResponse[] {
    const out: HwStatusResponse[] = [];
    do for (let r = this.tx.takeResponse(); r; r = this.tx.takeResponse()) out.push(r);
    while (this.tx.finalCheckForResponses());
    return out;
  }

  /** Reap rx responses; returns [status, frame bytes] pairs. */
  received(): Array<{ id: number; status: number; frame: Uint8Array }> {
    const out: Array<{ id: number; status: number; frame: Uint8Array }> = [];
    do
      for (let r = this.rx.takeResponse(); r; r = this.rx.takeResponse())
        out.push({ ...r, frame: r.status > 0 ? this.mem.page(RX_DATA + (r.id % 256)).slice(0, r.status) : new Uint8Array() });
    while (this.rx.finalCheckForResponses());
    return out;
  }
}

describe('PhysicalNic', () => {
  it('two NICs on one segment exchange frames through their tx and rx queues', () => {
    const lan = new LanSegment();
    const a = new Host(MAC_A, lan);
    const b = new Host(MAC_B, lan);
    b.post(8);
    a.post(8);
    const f1 = ethFrame(MAC_B, MAC_A, 100);
    a.send([f1]);
    expect(a.txDone()).toEqual([{ id: 0, status: HW_STATUS_OK }]);
    const got = b.received();
    expect(got).toHaveLength(1);
    expect(got[0].status).toBe(114);
    expect(got[0].frame).toEqual(f1);
    expect(b.irqs).toBe(1);
    expect(a.irqs).toBe(1);

    const replies = [ethFrame(MAC_A, MAC_B, 46), ethFrame(MAC_A, MAC_B, 1500)];
    b.send(replies);
    expect(b.txDone().map((r) => r.status)).toEqual([HW_STATUS_OK, HW_STATUS_OK]);
    const back = a.received();
    expect(back.map((r) => r.status)).toEqual([60, 1514]);
    expect(back[1].frame).toEqual(replies[1]);
    expect(frameSource(back[0].frame)).toBe(MAC_B);

    expect(a.nic.stats()).toMatchObject({ txPackets: 1, txBytes: 114, rxPackets: 2, rxBytes: 1574, rxMissed: 0, link: 'up', promiscuous: true });
    expect(b.nic.stats()).toMatchObject({ txPackets: 2, txBytes: 1574, rxPackets: 1, rxBytes: 114 });
    expect(lan.stats().counters.forwarded).toBe(2); // the replies went to the learned port
    expect(a.dma.counters.bytesRead).toBe(114);
    expect(b.dma.counters.bytesWritten).toBe(114);
  });

  it('is promiscuous: frames for other MACs are received too (the dom0 bridge needs them)', () => {
    const lan = new LanSegment();
    const a = new Host(MAC_A, lan);
    const b = new Host(MAC_B, lan);
    b.post(2);
    a.send([ethFrame('52:54:00:99:99:99', MAC_A, 50), ethFrame('ff:ff:ff:ff:ff:ff', '02:11:22:33:44:55', 50)]);
    expect(b.received().map((r) => r.status)).toEqual([64, 64]);
  });

  it('holds at most a bounded backlog when no rx buffer is posted and counts the rest as rxMissed', () => {
    const lan = new LanSegment();
    const a = new Host(MAC_A, lan);
    const b = new Host(MAC_B, lan);
    const frames = Array.from({ length: 70 }, (_, i) => ethFrame(MAC_B, MAC_A, Uint8Array.of(i, 1, 2, 3, 4, 5, 6, 7, 8, 9)));
    a.send(frames);
    expect(a.txDone()).toHaveLength(70);
    expect(b.nic.stats()).toMatchObject({ rxMissed: 6, rxBacklog: 64, rxBacklogPeak: 64, rxPackets: 0 });
    expect(b.irqs).toBe(0);

    b.post(100); // the doorbell drains the backlog, oldest first
    const got = b.received();
    expect(got).toHaveLength(64);
    expect(got.map((r) => r.frame[14])).toEqual(Array.from({ length: 64 }, (_, i) => i));
    expect(b.nic.stats()).toMatchObject({ rxMissed: 6, rxBacklog: 0, rxPackets: 64 });
    expect(b.irqs).toBe(1);

    // Buffers left over are used by the next frames at once.
    a.send([ethFrame(MAC_B, MAC_A, 20)]);
    expect(b.received().map((r) => r.status)).toEqual([34]);
  });

  it('counts rxMissed at once with no backlog, and when no rx queue is attached', () => {
    const lan = new LanSegment();
    const probe = lan.attach('probe');
    const c = new Host('52:54:00:00:00:0c', lan, { rxBacklog: 0 });
    probe.send(ethFrame(MAC_B, MAC_A, 50));
    expect(c.nic.stats().rxMissed).toBe(1);
    c.post(1);
    probe.send(ethFrame(MAC_B, MAC_A, 50));
    expect(c.received()).toHaveLength(1);
    c.nic.detachQueues();
    probe.send(ethFrame(MAC_B, MAC_A, 50));
    expect(c.nic.stats()).toMatchObject({ rxMissed: 2, rxPackets: 1 });
  });

  it('rejects undersized, oversized and out-of-page tx frames and frames DMA cannot reach', () => {
    const lan = new LanSegment();
    const probe = lan.attach('probe');
    const seen: number[] = [];
    probe.onFrame((f) => seen.push(f.byteLength));
    const a = new Host(MAC_A, lan);
    const ids = a.send([
      new Uint8Array(13),
      ethFrame(MAC_B, MAC_A, 1501), // 1515 bytes
      ethFrame(MAC_B, MAC_A, 0), // 14 bytes: the smallest legal frame
      ethFrame(MAC_B, MAC_A, 1500), // 1514: the largest
    ]);
    const more = [
      ...a.send([ethFrame(MAC_B, MAC_A, 100)], { offset: 4000 }), // runs off its page
      ...a.send([ethFrame(MAC_B, MAC_A, 100)], { pfn: 10_000 }), // outside memory
      ...a.send([ethFrame(MAC_B, MAC_A, 100)], { domid: 9 }), // domain not attached
    ];
    const done = a.txDone();
    expect(done).toEqual([
      { id: ids[0], status: HW_STATUS_EIO },
      { id: ids[1], status: HW_STATUS_EIO },
      { id: ids[2], status: HW_STATUS_OK },
      { id: ids[3], status: HW_STATUS_OK },
      { id: more[0], status: HW_STATUS_EIO },
      { id: more[1], status: HW_STATUS_EIO },
      { id: more[2], status: HW_STATUS_EIO },
    ]);
    expect(seen).toEqual([14, 1514]);
    expect(a.nic.stats()).toMatchObject({ txPackets: 2, txErrors: 5, txDropped: 0 });
  });

  it('rejects oversized frames from the wire and returns bad rx buffers with an error, keeping the frame', () => {
    const lan = new LanSegment();
    const probe = lan.attach('probe');
    const b = new Host(MAC_B, lan);
    b.post(1, 20); // too small for the frame
    b.post(1, 2048, { pfn: 99_999 }); // unreachable
    b.post(1, 2048, { offset: 3000 }); // runs off its page
    b.post(1); // good
    probe.send(ethFrame(MAC_B, MAC_A, 1501)); // 1515: a giant
    expect(b.nic.stats().rxErrors).toBe(1);
    const f = ethFrame(MAC_B, MAC_A, 60);
    probe.send(f);
    const got = b.received();
    expect(got.map((r) => r.status)).toEqual([HW_STATUS_EIO, HW_STATUS_EIO, HW_STATUS_EIO, 74]);
    expect(got[3].frame).toEqual(f);
    expect(b.nic.stats()).toMatchObject({ rxErrors: 4, rxPackets: 1 });
  });

  it('link down: tx answered with an error, rx dropped; link up again works', () => {
    const lan = new LanSegment();
    const probe = lan.attach('probe');
    const seen: Uint8Array[] = [];
    probe.onFrame((f) => seen.push(f));
    const a = new Host(MAC_A, lan);
    a.post(4);
    a.nic.setLink(false);
    expect(a.nic.linkUp).toBe(false);
    a.send([ethFrame(MAC_B, MAC_A, 50)]);
    expect(a.txDone().map((r) => r.status)).toEqual([HW_STATUS_EIO]);
    probe.send(ethFrame(MAC_A, MAC_B, 50));
    expect(a.received()).toHaveLength(0);
    expect(seen).toHaveLength(0);
    expect(a.nic.stats()).toMatchObject({ txDropped: 1, rxDropped: 1, link: 'down' });

    a.nic.setLink(true);
    a.send([ethFrame(MAC_B, MAC_A, 50)]);
    probe.send(ethFrame(MAC_A, MAC_B, 50));
    expect(a.txDone().map((r) => r.status)).toEqual([HW_STATUS_OK]);
    expect(a.received().map((r) => r.status)).toEqual([64]);
    expect(seen).toHaveLength(1);
  });

  it('a NIC with no cable has no carrier', () => {
    const a = new Host(MAC_A, undefined);
    expect(a.nic.linkUp).toBe(false);
    a.send([ethFrame(MAC_B, MAC_A, 50)]);
    expect(a.txDone().map((r) => r.status)).toEqual([HW_STATUS_EIO]);
    expect(a.nic.stats()).toMatchObject({ txDropped: 1, lanPort: null });
  });

  it('stops a rogue rx or tx queue without crashing', () => {
    const lan = new LanSegment();
    const probe = lan.attach('probe');
    const a = new Host(MAC_A, lan);
    Atomics.store(a.rx.page.indices, REQ_PROD, 4000);
    probe.send(ethFrame(MAC_A, MAC_B, 50));
    expect(a.nic.stats().queues.rx.stopped).toBe(true);
    probe.send(ethFrame(MAC_A, MAC_B, 50));
    expect(a.nic.stats().rxMissed).toBe(1);

    Atomics.store(a.tx.page.indices, REQ_PROD, 4000);
    a.nic.kick();
    expect(a.nic.stats().queues.tx).toMatchObject({ stopped: true, rogue: 1 });
    expect(a.nic.stats().txPackets).toBe(0);
  });

  it('refuses a group MAC', () => {
    expect(() => new PhysicalNic({ mac: '01:00:5e:00:00:01', dma: new DmaEngine() })).toThrow(/group/);
  });
});
