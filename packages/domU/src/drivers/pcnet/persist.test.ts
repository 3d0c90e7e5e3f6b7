/**
 * Save and restore of the guest's pcnet driver together with the Lance model it drives (the model
 * is shared code, so the driver is tested against the real chip, port access by port access):
 * frames handed to the card and not yet sent, frames waiting in the driver's queue, frames from
 * the wire queued in the quiesced chip. Both restored into fresh instances on the same guest
 * memory, every frame crosses the wire, and reaches the guest's stack, exactly once.
 */
import { describe, expect, it } from 'vitest';
import { FrameAllocator, GuestMemory, GuestMemoryDma, LanceDevice, PortIoInstructions, StateRecordError, IO_DIR_IN, type IoSize, type LanceOptions } from '@ringvisor/shared';
import { PcnetDriver, type PcnetDriverOptions } from './index.js';

const BASE = 0xc000;
const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
const PEER = Uint8Array.of(0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc);

function frame(dest: Uint8Array, len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dest, 0);
  f.set(dest === MAC ? PEER : MAC, 6);
  f[12] = 0x08;
  for (let i = 14; i < len; i++) f[i] = (i * 17 + seed * 31) & 0xff;
  return f;
}

/** One guest with one emulated NIC: its memory, a vCPU whose port accesses reach the current chip, the IRQ. */
class Machine {
  readonly memory = GuestMemory.allocate(1, 256);
  readonly frames = new FrameAllocator(this.memory);
  readonly wire: Uint8Array[] = [];
  readonly received: Uint8Array[] = [];
  handler: (() => void) | undefined;
  readonly chipOptions: LanceOptions;
  readonly driverOptions: PcnetDriverOptions;
  chip: LanceDevice;
  driver: PcnetDriver;
  constructor() {
    const machine = this;
    class Vcpu extends PortIoInstructions {
      protected access(port: number, size: IoSize, dir: number, value: number): number {
        const off = port - BASE;
        if (off < 0 || off >= 0x20) return 0xffffffff;
        if (dir === IO_DIR_IN) return machine.chip.ioRead(off, size);
        machine.chip.ioWrite(off, size, value);
        return 0;
      }
    }
    this.chipOptions = {
      mac: MAC,
      dma: new GuestMemoryDma(this.memory.bytes),
      // The interrupt is an event: delivered after the access that raised it, not inside it.
      irq: (level) => level && queueMicrotask(() => this.handler?.()),
      transmit: (f) => this.wire.push(f),
      kick: () => setImmediate(() => this.chip.transmitPoll()),
    };
    this.driverOptions = { io: new Vcpu(), base: BASE, memory: this.memory, frames: this.frames, onInterrupt: (h) => (this.handler = h), rxRingLog2: 3, txRingLog2: 3 };
    this.chip = new LanceDevice(this.chipOptions);
    this.driver = new PcnetDriver(this.driverOptions);
    this.driver.onReceive((f) => this.received.push(f));
  }
}

describe('pcnet driver save/restore in the middle of I/O (with the Lance model)', () => {
  it('frames owned by the card, frames in the driver queue and frames queued in the chip each cross exactly once after a restore', async () => {
    const m = new Machine();
    await m.driver.attach();
    await expect.poll(() => m.driver.counters.interrupts).toBeGreaterThan(0); // IDON's interrupt handled
    const out = Array.from({ length: 12 }, (_, i) => frame(PEER, 60 + i * 100, i));
    for (const f of out) expect(m.driver.transmit(f)).toBe(true); // 8 into the ring, 4 queued in the driver
    expect(m.wire).toHaveLength(0); // the chip's poll is scheduled, not run
    const source = { driver: m.driver, chip: m.chip };
    await m.driver.quiesce();
    await m.chip.quiesce();
    const inbound = [frame(MAC, 64, 50), frame(MAC, 1000, 51), frame(MAC, 1514, 52)];
    for (const f of inbound) expect(m.chip.receive(f)).toBe('queued');
    await new Promise((r) => setImmediate(r)); // the scheduled poll lands on the quiesced chip
    expect(m.wire).toHaveLength(0);
    const driverRecord = structuredClone(m.driver.save());
    const chipRecord = structuredClone(m.chip.save());
    expect(driverRecord.state).toMatchObject({ state: 'open', curTx: 8, dirtyTx: 0 });
    expect((driverRecord.state as { backlog: unknown[] }).backlog).toHaveLength(4);
    await source.driver.stop('moved');
    await source.chip.stop('moved');
    m.chip = LanceDevice.restore(m.chipOptions, chipRecord);
    m.driver = PcnetDriver.restore(m.driverOptions, driverRecord);
    m.driver.onReceive((f) => m.received.push(f));
    await expect.poll(() => m.wire.length).toBe(out.length);
    await expect.poll(() => m.received.length).toBe(inbound.length);
    expect(m.wire).toEqual(out);
    expect(m.received).toEqual(inbound);
    await expect.poll(() => m.driver.counters.txPackets).toBe(out.length);
    expect(source.driver.transmit(out[0])).toBe(false); // the source is gone
    // The restored pair keeps working.
    expect(m.driver.transmit(frame(PEER, 200, 99))).toBe(true);
    await expect.poll(() => m.wire.length).toBe(out.length + 1);
    expect(m.received).toHaveLength(inbound.length); // no frame twice
    expect(m.driver.metrics()).toMatchObject({ ops: out.length + 1 + inbound.length, errors: 0 });
  });

  it('refuses records that point outside guest memory or disagree with its ring sizes (RV_ERR_STATE_RECORD), the record untouched', async () => {
    const m = new Machine();
    await m.driver.attach();
    await m.driver.quiesce();
    const good = m.driver.save();
    type S = Record<string, unknown> & { rxBufs: number[]; pfns: number[] };
    const corruptions: Array<(s: S) => void> = [
      (s) => (s.rxRing = m.memory.bytes.byteLength - 8),
      (s) => (s.rxBufs[0] = m.memory.bytes.byteLength),
      (s) => s.pfns.push(1 << 20),
      (s) => (s.rxLog2 = 4),
      (s) => ((s.curTx = 3), (s.dirtyTx = 5)),
      (s) => (s.mac = new Uint8Array(5)),
      (s) => (s.backlog = [new Uint8Array(3)]),
      (s) => (s.state = 'half-open'),
    ];
    for (const corrupt of corruptions) {
      const bad = structuredClone(good) as unknown as { state: S };
      corrupt(bad.state);
      const seen = structuredClone(bad);
      const fresh = new Machine();
      expect(() => PcnetDriver.restore(fresh.driverOptions, bad)).toThrow(StateRecordError);
      expect(bad).toEqual(seen);
      expect(fresh.handler).toBeUndefined(); // nothing registered
    }
    await m.driver.stop('done');
  });
});
