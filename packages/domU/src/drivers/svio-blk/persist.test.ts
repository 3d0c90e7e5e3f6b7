/**
 * Save and restore of the SV-IO block driver (SvioBlkDriver as a Device) in the middle of I/O:
 * answers on the incoming queue not taken, requests taken by the device and not answered, on the
 * outgoing queue and not taken, and one still in the driver's backlog. The driver is restored
 * into a fresh instance on the same arguments (the open VIF, the guest's memory, its allocator);
 * every request completes exactly once with the right data. The VIF's device side is a stand-in
 * whose pace the test sets (the hardware's own save/restore: hwsim/src/svio/persist.test.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  FrameAllocator,
  GuestMemory,
  PAGE_SIZE,
  QueueConsumer,
  QueueProducer,
  SECTOR_SIZE,
  SVIO_REG,
  StateRecordError,
  SvioRegisters,
  VIF_DONE,
  VIF_OK,
  VIF_READ,
  VIF_WRITE,
  initMessageQueue,
  vifCodec,
  vifMessage,
  type VifMessage,
} from '@ringvisor/shared';
import type { OpenVif } from '../../kernel/svio.js';
import { SvioBlkDriver } from './device.js';

interface StandIn {
  vif: OpenVif;
  image: Uint8Array;
  taken: VifMessage[];
  executed: Map<number, number>;
  interrupting: boolean;
  take(): void;
  answer(): void;
}

/** An open block VIF whose device side the test runs: take, answer, interrupt when allowed. */
function standInVif(memory: GuestMemory, frames: FrameAllocator): StandIn {
  const regs = new SvioRegisters(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)));
  regs.write(SVIO_REG.SECTORS_LO, 2048);
  const outPfn = frames.alloc();
  const inPfn = frames.alloc();
  initMessageQueue(memory.page(outPfn));
  initMessageQueue(memory.page(inPfn));
  const devOut = new QueueConsumer(memory.page(outPfn), vifCodec);
  const devIn = new QueueProducer(memory.page(inPfn), vifCodec);
  const handlers: Array<() => void> = [];
  const image = new Uint8Array(2048 * SECTOR_SIZE);
  const s: StandIn = {
    image,
    taken: [],
    executed: new Map(),
    interrupting: true,
    vif: {
      spec: { kind: 'blk', devid: 7, vif: 12, port: 3 },
      regs,
      out: new QueueProducer(memory.page(outPfn), vifCodec),
      inq: new QueueConsumer(memory.page(inPfn), vifCodec),
      counters: { doorbells: 0, interrupts: 0 },
      doorbell: () => {},
      onInterrupt: (h) => void handlers.push(h),
      toDevice: () => {},
    },
    take() {
      for (let m = devOut.take(); m; m = devOut.take()) s.taken.push(m);
      devOut.release();
    },
    answer() {
      for (const m of s.taken.splice(0)) {
        s.executed.set(m.id, (s.executed.get(m.id) ?? 0) + 1);
        if (m.type === VIF_WRITE || m.type === VIF_READ) {
          let at = Number(m.sector) * SECTOR_SIZE;
          for (const g of m.segments) {
            const len = (g.last - g.first + 1) * SECTOR_SIZE;
            const buf = memory.page(g.gfn).subarray(g.first * SECTOR_SIZE, g.first * SECTOR_SIZE + len);
            if (m.type === VIF_WRITE) image.set(buf, at);
            else buf.set(image.subarray(at, at + len));
            at += len;
          }
        }
        expect(devIn.put(vifMessage({ type: VIF_DONE, id: m.id, status: VIF_OK }))).toBe(true);
      }
      if (devIn.push() && s.interrupting) for (const h of handlers) h();
    },
  };
  return s;
}

const pattern = (seed: number) => Uint8Array.from({ length: PAGE_SIZE }, (_, i) => (i * 5 + seed * 37) & 0xff);
const imageAt = (s: StandIn, sector: number) => s.image.subarray(sector * SECTOR_SIZE, sector * SECTOR_SIZE + PAGE_SIZE);

function rig() {
  const memory = GuestMemory.allocate(4, 128);
  const frames = new FrameAllocator(memory);
  const dev = standInVif(memory, frames);
  const args: ConstructorParameters<typeof SvioBlkDriver> = [dev.vif, memory, frames];
  return { dev, args, driver: new SvioBlkDriver(...args) };
}

describe('the SV-IO block driver saved in the middle of I/O', () => {
  it('restored into a fresh driver, completes every request exactly once with the right data', async () => {
    const { dev, args, driver } = rig();
    const w0 = driver.write(0, pattern(1));
    dev.take();
    dev.answer();
    await w0;
    // Answered, not taken by the driver.
    dev.interrupting = false;
    void driver.write(8, pattern(2));
    dev.take();
    dev.answer();
    // Taken by the device, not answered.
    void driver.write(16, pattern(3));
    dev.take();
    // On the queue, not taken.
    void driver.read(0, new Uint8Array(PAGE_SIZE));
    await driver.quiesce();
    // Submitted while quiesced: waits in the backlog.
    void driver.write(24, pattern(4));
    const rec = structuredClone(driver.save());
    expect((rec.state as { inflight: unknown[] }).inflight).toHaveLength(3);
    expect((rec.state as { backlog: unknown[] }).backlog).toHaveLength(1);

    const fresh = SvioBlkDriver.restore(args, rec);
    expect(fresh.identity).toEqual({ kind: 'blk', mode: 'svio', side: 'guest', type: 'svio-blk-driver', devid: 7 });
    await fresh.attach();
    dev.interrupting = true;
    for (let i = 0; i < 3; i++) {
      dev.take();
      dev.answer();
    }
    const done = await Promise.all(fresh.restoredRequests().map((r) => r.completion));
    expect(fresh.restoredRequests().map((r) => [r.type, Number(r.sector)])).toEqual([
      [VIF_WRITE, 8],
      [VIF_WRITE, 16],
      [VIF_READ, 0],
      [VIF_WRITE, 24],
    ]);
    expect(done[2]).toEqual(pattern(1));
    expect(dev.executed.size).toBe(5);
    expect([...dev.executed.values()].every((n) => n === 1)).toBe(true);
    expect(imageAt(dev, 8)).toEqual(pattern(2));
    expect(imageAt(dev, 16)).toEqual(pattern(3));
    expect(imageAt(dev, 24)).toEqual(pattern(4));
    expect(fresh.metrics()).toMatchObject({ ops: 5, errors: 0 });
    expect(fresh.counters.unexpected).toBe(0);
  });

  it('refuses corrupt records with RV_ERR_STATE_RECORD; the saved driver carries on', async () => {
    const { dev, args, driver } = rig();
    const w = driver.write(8, pattern(2));
    await driver.quiesce();
    const rec = driver.save();
    const st = rec.state as { inflight: Array<{ frames: number[]; message: Uint8Array }>; outProd: number };
    const bad: Array<[string, unknown]> = [
      ['another type', { ...rec, type: 'svio-net-driver' }],
      ['queue indices not the queues\'', { ...rec, state: { ...st, outProd: st.outProd + 1 } }],
      ['a frame owned twice', { ...rec, state: { ...st, inflight: [st.inflight[0], { ...st.inflight[0], message: st.inflight[0].message.map((b, i) => (i === 4 ? b + 1 : b)) }] } }],
      ['a frame outside memory', { ...rec, state: { ...st, inflight: [{ ...st.inflight[0], frames: [100_000] }] } }],
      ['a message of the wrong size', { ...rec, state: { ...st, inflight: [{ ...st.inflight[0], message: new Uint8Array(8) }] } }],
    ];
    for (const [what, r] of bad) {
      let err: unknown;
      try {
        SvioBlkDriver.restore(args, r);
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(StateRecordError);
      expect((err as StateRecordError).code, what).toBe('RV_ERR_STATE_RECORD');
    }
    driver.resume();
    dev.take();
    dev.answer();
    await w;
    expect(imageAt(dev, 8)).toEqual(pattern(2));
  });
});
