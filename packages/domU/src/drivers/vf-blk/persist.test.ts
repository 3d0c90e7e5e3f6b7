/**
 * Save and restore of the direct disk driver (VfBlkDriver as a Device) in the middle of I/O:
 * requests answered and not collected, fetched and not answered, posted and not fetched, and
 * one still in the driver's backlog. The driver is restored into a fresh instance on the same
 * options (the function, the guest's memory, its frame allocator); every request completes
 * exactly once with the right data. The function here is a stand-in whose pace the test sets
 * (the hardware's own save/restore is tested in hwsim/src/sriov/persist.test.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  BackRing,
  FrameAllocator,
  GuestMemory,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_OK,
  PAGE_SIZE,
  SECTOR_SIZE,
  StateRecordError,
  VF_CTRL_ENABLE,
  VF_KIND_DISK,
  VF_REG,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  VfRegisters,
  hwBlkProtocol,
  type HwBlkRequest,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { DirectFunction } from '../../kernel/direct.js';
import { VfBlkDriver } from './device.js';

/** A disk function the test drives: it fetches on a doorbell, answers when told, interrupts when allowed. */
function standInDisk(memory: GuestMemory) {
  const regs = new VfRegisters(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)));
  regs.write(VF_REG.ID, VF_KIND_DISK);
  regs.sectors = 2048n;
  regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER);
  const image = new Uint8Array(2048 * SECTOR_SIZE);
  const handlers: Array<() => void> = [];
  let ring: BackRing<HwBlkRequest, HwStatusResponse> | undefined;
  const dev: {
    taken: HwBlkRequest[];
    executed: Map<number, number>;
    fetching: boolean;
    auto: boolean;
    interrupting: boolean;
    image: Uint8Array;
    fn: DirectFunction;
    fetch(): void;
    answer(n?: number): void;
    interrupt(): void;
  } = {
    taken: [] as HwBlkRequest[],
    executed: new Map<number, number>(),
    fetching: true,
    /** Answer at once what a doorbell fetched (a device at full speed). */
    auto: true,
    interrupting: true,
    image,
    fn: undefined as unknown as DirectFunction,
    fetch() {
      if (!ring) return;
      for (let r = ring.takeRequest(); r; r = ring.takeRequest()) dev.taken.push(r);
    },
    /** Execute and answer the first `n` requests taken. */
    answer(n = dev.taken.length) {
      for (const r of dev.taken.splice(0, n)) {
        dev.executed.set(r.id, (dev.executed.get(r.id) ?? 0) + 1);
        let at = Number(r.sector) * SECTOR_SIZE;
        for (const g of r.segments) {
          const len = (g.lastSect - g.firstSect + 1) * SECTOR_SIZE;
          const buf = memory.page(g.pfn).subarray(g.firstSect * SECTOR_SIZE, g.firstSect * SECTOR_SIZE + len);
          if (r.op === HWBLK_OP_WRITE) image.set(buf, at);
          else if (r.op === HWBLK_OP_READ) buf.set(image.subarray(at, at + len));
          at += len;
        }
        ring!.putResponse({ id: r.id, status: HW_STATUS_OK });
      }
      if (ring!.pushResponses() && dev.interrupting) dev.interrupt();
      ring!.finalCheckForRequests();
    },
    interrupt() {
      for (const h of handlers) h();
    },
  };
  dev.fn = {
    kind: 'disk',
    devid: 3,
    rid: '00:04.1',
    regs,
    counters: { doorbells: 0, interrupts: 0 },
    doorbell: () => {
      if (!ring && regs.read(VF_REG.CTRL) & VF_CTRL_ENABLE) {
        ring = BackRing.attach(memory.page(regs.read(VF_REG.Q0)), hwBlkProtocol);
        regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER | VF_STATUS_ENABLED);
        ring.finalCheckForRequests();
      }
      if (dev.fetching) dev.fetch();
      if (dev.auto && ring && dev.taken.length > 0) dev.answer();
    },
    onInterrupt: (h) => void handlers.push(h),
    toDevice: () => {},
    ringSync: () => undefined,
  };
  return dev;
}

const pattern = (seed: number, len = PAGE_SIZE) => Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed * 31) & 0xff);
const settle = () => new Promise((r) => setImmediate(r));

async function rig() {
  const memory = GuestMemory.allocate(4, 128);
  const frames = new FrameAllocator(memory);
  const dev = standInDisk(memory);
  const options = { fn: dev.fn, memory, frames, enableTimeoutMs: 2000 };
  const driver = new VfBlkDriver(options);
  await driver.attach();
  return { memory, frames, dev, options, driver };
}

describe('the direct disk driver saved in the middle of I/O', () => {
  it('restored into a fresh driver, completes every request exactly once with the right data', async () => {
    const { dev, options, driver } = await rig();
    await driver.write(0, pattern(1));
    dev.auto = false;
    // Answered, not collected: the interrupt is held back.
    dev.interrupting = false;
    const w1 = driver.write(8, pattern(2));
    dev.answer();
    // Fetched, not answered.
    const w2 = driver.write(16, pattern(3));
    // Posted, not fetched.
    dev.fetching = false;
    const r1 = driver.read(0, new Uint8Array(PAGE_SIZE));
    expect(dev.taken).toHaveLength(1);
    await driver.quiesce();
    // Submitted while quiesced: it waits in the backlog, and is saved there.
    const w3 = driver.write(24, pattern(4));
    const rec = structuredClone(driver.save());
    expect(rec).toMatchObject({ type: 'vf-blk-driver', version: 1 });
    expect((rec.state as { inflight: unknown[]; backlog: unknown[] }).inflight).toHaveLength(3);
    expect((rec.state as { backlog: unknown[] }).backlog).toHaveLength(1);

    const fresh = VfBlkDriver.restore(options, rec);
    expect(fresh.identity).toEqual({ kind: 'blk', mode: 'direct', side: 'guest', type: 'vf-blk-driver', devid: 3 });
    await fresh.attach();
    dev.interrupting = true;
    dev.fetching = true;
    dev.fetch();
    dev.answer();
    await settle();
    dev.fetch();
    dev.answer();
    const done = await Promise.all(fresh.restoredRequests().map((r) => r.completion));
    expect(fresh.restoredRequests().map((r) => [r.op, Number(r.sector)])).toEqual([
      [HWBLK_OP_WRITE, 8],
      [HWBLK_OP_WRITE, 16],
      [HWBLK_OP_READ, 0],
      [HWBLK_OP_WRITE, 24],
    ]);
    expect(done[2]).toEqual(pattern(1));
    expect([...dev.executed.values()].every((n) => n === 1)).toBe(true);
    expect(dev.executed.size).toBe(5);
    expect(dev.image.subarray(8 * SECTOR_SIZE, 8 * SECTOR_SIZE + PAGE_SIZE)).toEqual(pattern(2));
    expect(dev.image.subarray(16 * SECTOR_SIZE, 16 * SECTOR_SIZE + PAGE_SIZE)).toEqual(pattern(3));
    expect(dev.image.subarray(24 * SECTOR_SIZE, 24 * SECTOR_SIZE + PAGE_SIZE)).toEqual(pattern(4));
    // The saved driver never completed anything after the save (its callers belong to the old world).
    let settled = false;
    void Promise.race([w1, w2, r1, w3]).finally(() => (settled = true));
    await settle();
    expect(settled).toBe(false);
    // The restored driver goes on with new I/O, and counts the restored requests once.
    const back = new Uint8Array(PAGE_SIZE);
    const rd = fresh.read(24, back);
    dev.fetch();
    dev.answer();
    await rd;
    expect(back).toEqual(pattern(4));
    expect(fresh.metrics()).toMatchObject({ ops: 6, errors: 0 });
  });

  it('refuses corrupt records with RV_ERR_STATE_RECORD; the saved driver carries on', async () => {
    const { dev, options, driver } = await rig();
    dev.auto = false;
    dev.fetching = false;
    const w = driver.write(8, pattern(2));
    await driver.quiesce();
    const rec = driver.save();
    const st = rec.state as { inflight: Array<{ frames: number[] }>; ring: { reqProdPvt: number; rspCons: number }; ringPfn: number };
    const bad: Array<[string, unknown]> = [
      ['another type', { ...rec, type: 'vf-nic-driver' }],
      ['a request dropped', { ...rec, state: { ...st, inflight: [] } }],
      ['a frame owned twice', { ...rec, state: { ...st, inflight: [{ ...st.inflight[0], frames: [st.ringPfn] }] } }],
      ['a frame outside memory', { ...rec, state: { ...st, inflight: [{ ...st.inflight[0], frames: [100_000] }] } }],
      ['requests the ring never saw', { ...rec, state: { ...st, ring: { reqProdPvt: st.ring.reqProdPvt + 1, rspCons: st.ring.rspCons + 1 } } }],
    ];
    for (const [what, r] of bad) {
      let err: unknown;
      try {
        VfBlkDriver.restore(options, r);
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(StateRecordError);
      expect((err as StateRecordError).code, what).toBe('RV_ERR_STATE_RECORD');
    }
    driver.resume();
    dev.fetching = true;
    dev.fetch();
    dev.answer();
    await w;
    expect(dev.image.subarray(8 * SECTOR_SIZE, 8 * SECTOR_SIZE + PAGE_SIZE)).toEqual(pattern(2));
  });
});
