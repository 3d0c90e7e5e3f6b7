/**
 * Save and restore of the emulated Lance NIC in the middle of I/O: transmit descriptors the card
 * owns but has not sent, frames from the wire that arrived while it was quiesced, an interrupt
 * pending. Restored into a fresh chip on the same guest memory, every frame goes on the wire and
 * into the guest exactly once; corrupt records are refused.
 */
import { describe, expect, it } from 'vitest';
import { StateRecordError } from '../../errors.js';
import { GuestMemoryDma } from '../../trap/index.js';
import type { DeviceStateRecord } from '../../device/index.js';
import { CSR0_IDON, CSR0_IENA, CSR0_INIT, CSR0_INTR, CSR0_RINT, CSR0_STRT, CSR0_TDMD, CSR0_TINT, DESC_ENP, DESC_OWN, DESC_STP, LanceDevice, type LanceOptions } from './index.js';

const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
const PEER = Uint8Array.of(0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc);
const IB = 0x100;
const RX_RING = 0x1000;
const TX_RING = 0x2000;
const RX_BUF = 0x10000;
const TX_BUF = 0x20000;
const RDP = 0x10;
const RAP = 0x12;
const BDP = 0x16;
const RESET = 0x14;

function frame(dest: Uint8Array, len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dest, 0);
  f.set(dest === MAC ? PEER : MAC, 6);
  f[12] = 0x08;
  for (let i = 14; i < len; i++) f[i] = (i * 11 + seed * 29) & 0xff;
  return f;
}

/**
 * The guest's memory and the wiring (the wire, the IRQ line, the kick that schedules a transmit
 * poll) stay; the chip behind them can be replaced by a restored one, as after a move.
 */
class Rig {
  readonly mem = new Uint8Array(new SharedArrayBuffer(256 * 1024));
  readonly view = new DataView(this.mem.buffer);
  /** Which chip the wiring is talking to: 0 the source, 1 the restored one. */
  gen = 0;
  readonly wire: Array<{ gen: number; frame: Uint8Array }> = [];
  readonly edges: Array<{ gen: number; level: boolean }> = [];
  readonly kicks: number[] = [];
  readonly options: LanceOptions = {
    mac: MAC,
    dma: new GuestMemoryDma(this.mem),
    irq: (level) => this.edges.push({ gen: this.gen, level }),
    transmit: (f) => this.wire.push({ gen: this.gen, frame: f }),
    kick: () => this.kicks.push(this.gen),
  };
  dev = new LanceDevice(this.options);
  wcsr(n: number, v: number): void {
    this.dev.ioWrite(RAP, 2, n);
    this.dev.ioWrite(RDP, 2, v);
  }
  rcsr(n: number): number {
    this.dev.ioWrite(RAP, 2, n);
    return this.dev.ioRead(RDP, 2);
  }
  /** pcnet32's open: SWSTYLE 2, an init block with 4-entry rings, INIT, IENA|STRT. */
  up(): void {
    this.dev.ioRead(RESET, 2);
    this.dev.ioWrite(RAP, 2, 20);
    this.dev.ioWrite(BDP, 2, 2);
    this.view.setUint8(IB + 2, 2 << 4);
    this.view.setUint8(IB + 3, 2 << 4);
    this.mem.set(MAC, IB + 4);
    this.view.setUint32(IB + 20, RX_RING, true);
    this.view.setUint32(IB + 24, TX_RING, true);
    this.wcsr(1, IB);
    this.wcsr(2, 0);
    this.wcsr(0, CSR0_INIT);
    this.wcsr(0, CSR0_IDON);
    this.wcsr(0, CSR0_IENA | CSR0_STRT);
    for (let i = 0; i < 4; i++) this.rmd(i);
  }
  rmd(i: number): void {
    const at = RX_RING + i * 16;
    this.view.setUint32(at, RX_BUF + i * 0x800, true);
    this.view.setUint32(at + 8, 0, true);
    this.view.setUint32(at + 4, (DESC_OWN | (0xf << 12) | (-1544 & 0xfff)) >>> 0, true);
  }
  /** A frame in tx buffer i and its descriptor handed to the card (OWN last). */
  post(i: number, f: Uint8Array): void {
    const at = TX_RING + i * 16;
    this.mem.set(f, TX_BUF + i * 0x800);
    this.view.setUint32(at, TX_BUF + i * 0x800, true);
    this.view.setUint32(at + 8, 0, true);
    this.view.setUint32(at + 4, (DESC_OWN | DESC_STP | DESC_ENP | (0xf << 12) | (-f.length & 0xfff)) >>> 0, true);
  }
  rxOwned(i: number): boolean {
    return (this.view.getUint32(RX_RING + i * 16 + 4, true) & DESC_OWN) !== 0;
  }
  rxFrame(i: number, len: number): Uint8Array {
    return this.mem.slice(RX_BUF + i * 0x800, RX_BUF + i * 0x800 + len);
  }
  /** Save the quiesced chip, stop it, and restore the record (cloned, as off a wire) into a fresh chip. */
  async move(): Promise<{ old: LanceDevice; record: DeviceStateRecord }> {
    const old = this.dev;
    await old.quiesce();
    const record = old.save();
    await old.stop('moved');
    this.gen = 1; // the restored chip may call the wiring during restore
    this.dev = LanceDevice.restore(this.options, structuredClone(record));
    return { old, record };
  }
}

describe('Lance save/restore in the middle of I/O', () => {
  it('tx descriptors the card owns but has not sent, rx frames queued while quiesced, an interrupt pending: each frame crosses once', async () => {
    const r = new Rig();
    r.up();
    // One frame sent before: TINT raises the line, and the guest has not acknowledged it.
    const first = frame(PEER, 100, 1);
    r.post(0, first);
    r.wcsr(0, CSR0_IENA | CSR0_TDMD);
    expect(r.dev.transmitPoll()).toBe(1);
    expect(r.edges.map((e) => e.level)).toEqual([true]);
    // Three more handed to the card; the demand is made, the wiring's poll has not run yet.
    const pending = [frame(PEER, 60, 2), frame(PEER, 300, 3), frame(PEER, 1514, 4)];
    pending.forEach((f, i) => r.post(i + 1, f));
    const kicksBefore = r.kicks.length;
    r.wcsr(0, CSR0_IENA | CSR0_TDMD);
    expect(r.kicks.length).toBe(kicksBefore + 1);
    const source = r.dev;
    await source.quiesce();
    // The wiring's scheduled poll lands while quiesced, and frames arrive from the wire.
    expect(source.transmitPoll()).toBe(0);
    const arriving = [frame(MAC, 64, 5), frame(MAC, 900, 6)];
    for (const f of arriving) expect(source.receive(f)).toBe('queued');
    expect(r.rxOwned(0)).toBe(true); // nothing written into the guest while quiesced
    const { record } = await r.move();
    expect(record.state).toMatchObject({ txIndex: 1, rxIndex: 0, irqLevel: true, transmitDemand: true });
    expect((record.state as { rxQueue: unknown[] }).rxQueue).toHaveLength(2);
    // The restored chip delivered the queued frames and asked for the owed poll.
    expect(r.rxOwned(0)).toBe(false);
    expect(r.rxOwned(1)).toBe(false);
    expect(r.rxFrame(0, 64)).toEqual(arriving[0]);
    expect(r.rxFrame(1, 900)).toEqual(arriving[1]);
    expect(r.kicks.at(-1)).toBe(1);
    expect(r.dev.transmitPoll()).toBe(3);
    expect(r.dev.transmitPoll()).toBe(0); // nothing twice
    expect(r.wire.map((w) => w.frame)).toEqual([first, ...pending]);
    expect(r.wire.filter((w) => w.gen === 0)).toHaveLength(1);
    // The line was already high when saved: no second edge for the same interrupt.
    expect(r.edges.map((e) => e.level)).toEqual([true]);
    expect(r.rcsr(0) & (CSR0_INTR | CSR0_TINT | CSR0_RINT | CSR0_TDMD)).toBe(CSR0_INTR | CSR0_TINT | CSR0_RINT);
    expect(r.rcsr(74)).toBe(0); // CSR74: the tx ring index wrapped to 0 after 4 descriptors
    // The source is gone from the bus.
    expect(source.ioRead(RDP, 2)).toBe(0xffff);
    expect(source.receive(frame(MAC, 64, 7))).toBe('missed');
  });

  it('an interrupt that arises while quiesced is raised once, by the restored chip', async () => {
    const r = new Rig();
    r.up();
    expect(r.edges).toEqual([]);
    await r.dev.quiesce();
    expect(r.dev.receive(frame(MAC, 80, 8))).toBe('queued');
    await r.move();
    expect(r.edges).toEqual([{ gen: 1, level: true }]);
  });

  it('resume() after quiesce carries on in place: queued frames delivered, the owed poll asked for', async () => {
    const r = new Rig();
    r.up();
    r.post(0, frame(PEER, 70, 9));
    r.wcsr(0, CSR0_IENA | CSR0_TDMD);
    await r.dev.quiesce();
    expect(r.dev.transmitPoll()).toBe(0);
    expect(r.dev.receive(frame(MAC, 70, 10))).toBe('queued');
    r.dev.save();
    const kicks = r.kicks.length;
    r.dev.resume();
    expect(r.rxOwned(0)).toBe(false);
    expect(r.kicks.length).toBe(kicks + 1);
    expect(r.dev.transmitPoll()).toBe(1);
    expect(r.wire).toHaveLength(1);
  });
});

describe('Lance state records are untrusted input', () => {
  async function saved(): Promise<DeviceStateRecord> {
    const r = new Rig();
    r.up();
    await r.dev.quiesce();
    r.dev.receive(frame(MAC, 64, 11));
    return r.dev.save();
  }
  type Mutable = { state: Record<string, unknown> & { csr: number[]; rxQueue: Uint8Array[] } } & Record<string, unknown>;
  const corruptions: Array<[string, (r: Mutable) => void]> = [
    ['an rx index past its ring', (r) => (r.state.rxIndex = 4)],
    ['a tx index without a ring', (r) => ((r.state.txLen = 0), (r.state.txIndex = 1))],
    ['a RAP wider than 7 bits', (r) => (r.state.rap = 0x80)],
    ['a CSR file of the wrong length', (r) => r.state.csr.pop()],
    ['a CSR value over 16 bits', (r) => (r.state.csr[3] = 0x10000)],
    ['a queued runt', (r) => (r.state.rxQueue[0] = new Uint8Array(4))],
    ['a queue over its bound', (r) => (r.state.rxQueue = Array.from({ length: 257 }, () => new Uint8Array(64)))],
    ['a flag that is not a boolean', (r) => (r.state.transmitDemand = 'yes')],
    ['a newer version', (r) => (r.version = 2)],
    ['another device type', (r) => (r.type = 'ata')],
    ['a stray object', (r) => delete r.format],
  ];
  for (const [what, corrupt] of corruptions)
    it(`refuses ${what} with RV_ERR_STATE_RECORD, leaving the record alone`, async () => {
      const good = await saved();
      const bad = structuredClone(good) as unknown as Mutable;
      corrupt(bad);
      const seen = structuredClone(bad);
      const r = new Rig();
      let thrown: unknown;
      try {
        LanceDevice.restore(r.options, bad);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(StateRecordError);
      expect((thrown as StateRecordError).code).toBe('RV_ERR_STATE_RECORD');
      expect(bad).toEqual(seen);
      expect(r.edges).toEqual([]); // nothing reached the wiring
      expect(() => LanceDevice.restore(r.options, structuredClone(good))).not.toThrow();
    });
});
