/**
 * Save and restore of the SV-IO network and camera drivers (Devices) in the middle of I/O: answers
 * on the incoming queue not taken, messages on the outgoing queue not taken, frames queued in the
 * driver. Restored into a fresh driver on the same arguments (the open VIF, the guest's memory,
 * its allocator — none allocated again), every frame is sent once and received once, and the
 * camera's frames are checked on in sequence. The VIF's device side is a stand-in the test runs
 * (the hardware's own save/restore: hwsim/src/svio/persist.test.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  FrameAllocator,
  GuestMemory,
  PAGE_SIZE,
  QueueConsumer,
  QueueProducer,
  SVIO_REG,
  StateRecordError,
  SvioRegisters,
  VIF_CAM_BUF,
  VIF_CAM_FRAME,
  VIF_CAM_STREAM,
  VIF_OK,
  VIF_RX,
  VIF_RX_POST,
  VIF_TX,
  VIF_TX_DONE,
  cameraFrameSize,
  initMessageQueue,
  renderCameraFrame,
  vifCodec,
  vifMessage,
  type VifMessage,
} from '@ringvisor/shared';
import type { OpenVif } from '../../kernel/svio.js';
import { SvioNetDriver } from './device.js';
import { SvioCamDriver } from '../svio-cam/device.js';

/** An open VIF whose device side the test runs. */
function standInVif(kind: 'net' | 'cam', memory: GuestMemory, frames: FrameAllocator) {
  const regs = new SvioRegisters(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)));
  regs.write(SVIO_REG.MAC_LO, 0x00003e16);
  regs.write(SVIO_REG.WIDTH, 64);
  regs.write(SVIO_REG.HEIGHT, 48);
  regs.write(SVIO_REG.FPS, 30);
  const outPfn = frames.alloc();
  const inPfn = frames.alloc();
  initMessageQueue(memory.page(outPfn));
  initMessageQueue(memory.page(inPfn));
  const devOut = new QueueConsumer(memory.page(outPfn), vifCodec);
  const devIn = new QueueProducer(memory.page(inPfn), vifCodec);
  const handlers: Array<() => void> = [];
  const st = { taken: [] as VifMessage[], interrupting: true };
  const irq = () => st.interrupting && handlers.forEach((h) => h());
  const vif: OpenVif = {
    spec: { kind, devid: 1, vif: 20, port: 4 },
    regs,
    out: new QueueProducer(memory.page(outPfn), vifCodec),
    inq: new QueueConsumer(memory.page(inPfn), vifCodec),
    counters: { doorbells: 0, interrupts: 0 },
    doorbell: () => {},
    onInterrupt: (h) => void handlers.push(h),
    toDevice: () => {},
  };
  return {
    vif,
    st,
    take() {
      for (let m = devOut.take(); m; m = devOut.take()) st.taken.push(m);
      if (devOut.release()) irq();
    },
    answer(m: VifMessage) {
      expect(devIn.put(m)).toBe(true);
      if (devIn.push()) irq();
    },
  };
}

const frame = (n: number) => Uint8Array.from({ length: 60 + n }, (_, i) => (i < 12 ? 2 : n * 5 + i) & 0xff);

describe('the SV-IO network driver saved in the middle of I/O', () => {
  it('restored into a fresh driver, sends every frame once and receives every frame once', async () => {
    const memory = GuestMemory.allocate(4, 96);
    const frames = new FrameAllocator(memory);
    const dev = standInVif('net', memory, frames);
    const args: ConstructorParameters<typeof SvioNetDriver> = [dev.vif, memory, frames];
    const driver = new SvioNetDriver(...args);
    const wire: number[] = [];
    const posted: VifMessage[] = [];
    /** The device's work: send what was taken, keep the receive buffers posted. */
    const serve = () => {
      dev.take();
      for (const m of dev.st.taken.splice(0)) {
        if (m.type === VIF_TX) {
          wire.push(m.len);
          dev.answer(vifMessage({ type: VIF_TX_DONE, id: m.id, status: VIF_OK }));
        } else if (m.type === VIF_RX_POST) posted.push(m);
      }
    };
    const receive = (f: Uint8Array) => {
      const b = posted.shift()!;
      memory.page(b.gfn).set(f, b.offset);
      dev.answer(vifMessage({ type: VIF_RX, id: b.id, status: f.byteLength }));
    };
    serve();
    serve(); // the rest of the 64 receive buffers, posted once the first 32 slots were freed
    expect(posted).toHaveLength(64);
    const heard: number[] = [];
    driver.onReceive((f) => heard.push(f.byteLength));
    driver.transmit(frame(1));
    serve();
    expect(wire).toEqual([61]);
    dev.st.interrupting = false;
    driver.transmit(frame(2));
    serve(); // answered, not taken by the driver
    receive(frame(10)); // received, not taken
    driver.transmit(frame(3)); // on the queue, not taken
    await driver.quiesce();
    driver.transmit(frame(4)); // queued in the driver
    const allocated = frames.available;
    const rec = structuredClone(driver.save());
    const fresh = SvioNetDriver.restore(args, rec);
    expect(frames.available).toBe(allocated); // the record's buffers, none new
    const heardAfter: number[] = [];
    fresh.onReceive((f) => heardAfter.push(f.byteLength));
    dev.st.interrupting = true;
    await fresh.attach();
    serve();
    receive(frame(11));
    serve();
    expect(wire).toEqual([61, 62, 63, 64]);
    expect(heard).toEqual([]);
    expect(heardAfter).toEqual([70, 71]);
    expect(fresh.identity).toEqual({ kind: 'net', mode: 'svio', side: 'guest', type: 'svio-net-driver', devid: 1 });
    expect(fresh.metrics()).toMatchObject({ ops: 6, errors: 0 });
    // A corrupt record: refused.
    const st = rec.state as { txFree: number[]; outProd: number };
    expect(() => SvioNetDriver.restore(args, { ...rec, state: { ...st, txFree: [...st.txFree, st.txFree[0]] } })).toThrow(StateRecordError);
    expect(() => SvioNetDriver.restore(args, { ...rec, state: { ...st, outProd: st.outProd + 1 } })).toThrow(StateRecordError);
  });
});

describe('the SV-IO camera driver saved while streaming', () => {
  it('restored into a fresh driver, checks every frame once and in sequence', async () => {
    const memory = GuestMemory.allocate(4, 96);
    const frames = new FrameAllocator(memory);
    const dev = standInVif('cam', memory, frames);
    const args: ConstructorParameters<typeof SvioCamDriver> = [dev.vif, memory, frames];
    const driver = new SvioCamDriver(...args);
    driver.start();
    dev.take();
    const bufs = dev.st.taken.filter((m) => m.type === VIF_CAM_BUF);
    expect(bufs).toHaveLength(4);
    expect(dev.st.taken.some((m) => m.type === VIF_CAM_STREAM)).toBe(true);
    dev.st.taken.length = 0;
    let seq = 0;
    const size = cameraFrameSize({ width: 64, height: 48 });
    const capture = () => {
      const b = bufs.shift()!;
      seq++;
      renderCameraFrame(new Uint8Array(memory.buffer, b.gfn * PAGE_SIZE, b.len * PAGE_SIZE), { width: 64, height: 48 }, seq, BigInt(seq * 1000));
      dev.answer(vifMessage({ type: VIF_CAM_FRAME, id: b.id, seq, used: size, timestampUs: BigInt(seq * 1000) }));
    };
    capture();
    dev.take();
    bufs.push(...dev.st.taken.splice(0).filter((m) => m.type === VIF_CAM_BUF));
    dev.st.interrupting = false;
    capture(); // announced, not taken by the driver
    await driver.quiesce();
    const rec = structuredClone(driver.save());
    const fresh = SvioCamDriver.restore(args, rec);
    dev.st.interrupting = true;
    await fresh.attach();
    dev.take();
    bufs.push(...dev.st.taken.splice(0).filter((m) => m.type === VIF_CAM_BUF));
    capture();
    expect(driver.consumer.stats.frames).toBe(1);
    expect(fresh.consumer.stats).toMatchObject({ frames: 3, corrupted: 0, gaps: 0, reordered: 0, lastSeq: 3 });
    expect(fresh.metrics()).toMatchObject({ ops: 3, errors: 0 });
    const st = rec.state as { toQueue: number[]; buffers: Array<{ pfn: number; pages: number }> };
    expect(() => SvioCamDriver.restore(args, { ...rec, state: { ...st, toQueue: [9] } })).toThrow(StateRecordError);
    expect(() => SvioCamDriver.restore(args, { ...rec, state: { ...st, buffers: [{ pfn: st.buffers[0].pfn, pages: 2 }, { pfn: st.buffers[0].pfn + 1, pages: 1 }] } })).toThrow(StateRecordError);
  });
});
