/**
 * Save and restore of the direct NIC driver (VfNicDriver as a Device) in the middle of I/O:
 * transmits answered and not collected, on the ring and not taken, still queued in the driver;
 * frames received into posted buffers and not collected. Restored into a fresh driver on the same
 * options, every frame is sent once and received once. The function is a stand-in whose pace the
 * test sets (the hardware's own save/restore: hwsim/src/sriov/persist.test.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  BackRing,
  FrameAllocator,
  GuestMemory,
  HW_STATUS_OK,
  PAGE_SIZE,
  StateRecordError,
  VF_CTRL_ENABLE,
  VF_KIND_NIC,
  VF_REG,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  VfRegisters,
  hwNicRxProtocol,
  hwNicTxProtocol,
  type HwNicBuffer,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { DirectFunction } from '../../kernel/direct.js';
import { VfNicDriver } from './device.js';

type Ring = BackRing<HwNicBuffer, HwStatusResponse>;

function standInNic(memory: GuestMemory) {
  const regs = new VfRegisters(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)));
  regs.write(VF_REG.ID, VF_KIND_NIC);
  regs.mac = '02:00:00:00:00:07';
  regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER);
  const handlers: Array<() => void> = [];
  const st = { tx: undefined as Ring | undefined, rx: undefined as Ring | undefined, wire: [] as Uint8Array[], rxCache: [] as HwNicBuffer[], auto: true, interrupting: true };
  const irq = () => st.interrupting && handlers.forEach((h) => h());
  const serveTx = () => {
    const tx = st.tx!;
    for (let r = tx.takeRequest(); r; r = tx.takeRequest()) {
      st.wire.push(memory.page(r.pfn).slice(r.offset, r.offset + r.len));
      tx.putResponse({ id: r.id, status: HW_STATUS_OK });
    }
    if (tx.pushResponses()) irq();
    tx.finalCheckForRequests();
  };
  const prefetch = () => {
    const rx = st.rx!;
    for (let d = rx.takeRequest(); d; d = rx.takeRequest()) st.rxCache.push(d);
    rx.finalCheckForRequests();
  };
  const fn: DirectFunction = {
    kind: 'nic',
    devid: 2,
    rid: '00:03.1',
    regs,
    counters: { doorbells: 0, interrupts: 0 },
    doorbell: () => {
      if (!st.tx && regs.read(VF_REG.CTRL) & VF_CTRL_ENABLE) {
        st.tx = BackRing.attach(memory.page(regs.read(VF_REG.Q0)), hwNicTxProtocol);
        st.rx = BackRing.attach(memory.page(regs.read(VF_REG.Q1)), hwNicRxProtocol);
        regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER | VF_STATUS_ENABLED);
      }
      if (st.auto && st.tx) {
        serveTx();
        prefetch();
      }
    },
    onInterrupt: (h) => void handlers.push(h),
    toDevice: () => {},
    ringSync: () => undefined,
  };
  return {
    fn,
    st,
    serveTx,
    prefetch,
    /** A frame from the wire into the oldest cached rx buffer. */
    deliver(frame: Uint8Array) {
      const d = st.rxCache.shift()!;
      memory.page(d.pfn).set(frame, d.offset);
      st.rx!.putResponse({ id: d.id, status: frame.byteLength });
      if (st.rx!.pushResponses()) irq();
    },
  };
}

const frame = (n: number) => Uint8Array.from({ length: 60 + n }, (_, i) => (i < 12 ? 2 : n * 3 + i) & 0xff);

async function rig() {
  const memory = GuestMemory.allocate(4, 96);
  const frames = new FrameAllocator(memory);
  const dev = standInNic(memory);
  const options = { fn: dev.fn, memory, frames, buffers: 8, enableTimeoutMs: 2000 };
  const driver = new VfNicDriver(options);
  await driver.attach();
  return { dev, options, driver };
}

describe('the direct NIC driver saved in the middle of I/O', () => {
  it('restored into a fresh driver, sends every frame once and receives every frame once', async () => {
    const { dev, options, driver } = await rig();
    const heard: number[] = [];
    driver.onReceive((f) => heard.push(f.byteLength));
    expect(driver.transmit(frame(1))).toBe(true);
    expect(dev.st.wire).toHaveLength(1);
    dev.st.auto = false;
    dev.st.interrupting = false;
    // Answered, not collected.
    driver.transmit(frame(2));
    dev.serveTx();
    // Received, not collected.
    dev.deliver(frame(10));
    // On the ring, not taken.
    driver.transmit(frame(3));
    await driver.quiesce();
    // Queued while quiesced.
    driver.transmit(frame(4));
    const rec = structuredClone(driver.save());
    expect((rec.state as { txQueue: unknown[] }).txQueue).toHaveLength(1);
    const fresh = VfNicDriver.restore(options, rec);
    const heardAfter: number[] = [];
    fresh.onReceive((f) => heardAfter.push(f.byteLength));
    await fresh.attach();
    expect(fresh.identity).toEqual({ kind: 'net', mode: 'direct', side: 'guest', type: 'vf-nic-driver', devid: 2 });
    dev.st.auto = true;
    dev.st.interrupting = true;
    dev.serveTx();
    dev.prefetch();
    dev.deliver(frame(11));
    expect(dev.st.wire.map((f) => f.byteLength)).toEqual([61, 62, 63, 64]);
    expect(heard).toEqual([]);
    expect(heardAfter).toEqual([70, 71]);
    expect(fresh.metrics()).toMatchObject({ ops: 6, errors: 0 });
  });

  it('refuses corrupt records with RV_ERR_STATE_RECORD', async () => {
    const { options, driver } = await rig();
    await driver.quiesce();
    const rec = driver.save();
    const st = rec.state as { txFree: number[]; tx: { reqProdPvt: number; rspCons: number }; rxBufs: Array<{ pfn: number; offset: number }> };
    for (const r of [
      { ...rec, state: { ...st, txFree: [...st.txFree, st.txFree[0]] } },
      { ...rec, state: { ...st, txFree: st.txFree.slice(1) } },
      { ...rec, state: { ...st, tx: { reqProdPvt: st.tx.reqProdPvt + 1, rspCons: st.tx.rspCons + 1 } } },
      { ...rec, state: { ...st, rxBufs: [...st.rxBufs, st.rxBufs[0]] } },
      { ...rec, type: 'vf-blk-driver' },
    ])
      expect(() => VfNicDriver.restore(options, r)).toThrow(StateRecordError);
  });
});
