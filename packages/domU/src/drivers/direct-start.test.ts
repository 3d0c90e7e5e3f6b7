/**
 * Direct drivers (VfNicDriver, VfBlkDriver) starting on a function that comes up late.
 *
 * The enable sequence is: queue addresses, CTRL.ENABLE, doorbell, then wait for STATUS.ENABLED.
 * Across a link (ws) or on a busy machine the device's answer takes a while, and the interrupt
 * handler is already bound — and runs anyway: the guest kernel's missed-event poll runs every
 * handler every 500 ms, pending or not. The drivers used to take "STATUS without ENABLED" in that
 * window for a reset and detach for good, so the guest never sent a frame (the flaky ws e2e runs:
 * a direct guest with 1 doorbell, 1 interrupt and 0 packets). Here the device is a stand-in whose
 * coming-up the test controls, and the poll is the handler called at the worst moment.
 */
import { describe, expect, it, vi } from 'vitest';
import {
  BackRing,
  FrameAllocator,
  GuestMemory,
  HW_STATUS_OK,
  HWBLK_OP_READ,
  PAGE_SIZE,
  VF_CTRL_ENABLE,
  VF_KIND_DISK,
  VF_KIND_NIC,
  VF_REG,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  VfRegisters,
  hwBlkProtocol,
  hwNicTxProtocol,
  type VfKind,
} from '@ringvisor/shared';
import type { DirectFunction } from '../kernel/direct.js';
import { VfNicDriver } from './vf-nic/device.js';
import { VfBlkDriver } from './vf-blk/device.js';

/** A function assigned to us (BUS_MASTER, identity) whose queues come up when the test says so. */
function lateFunction(kind: VfKind) {
  const regs = new VfRegisters(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)));
  regs.write(VF_REG.ID, kind === 'nic' ? VF_KIND_NIC : VF_KIND_DISK);
  if (kind === 'nic') regs.mac = '02:00:00:00:00:07';
  else regs.sectors = 2048n;
  regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER);
  let handler: (() => void) | undefined;
  const doorbells: number[] = [];
  const fn: DirectFunction = {
    kind,
    devid: 0,
    rid: '00:01.0',
    regs,
    counters: { doorbells: 0, interrupts: 0 },
    doorbell: () => void doorbells.push(regs.read(VF_REG.CTRL)),
    onInterrupt: (h) => void (handler = h),
    toDevice: () => {},
    ringSync: () => undefined,
  };
  return {
    fn,
    regs,
    doorbells,
    /** The handler, run as a delivered interrupt or the missed-event poll would run it. */
    interrupt: () => handler?.(),
    comeUp: () => regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER | VF_STATUS_ENABLED),
    reset: () => {
      regs.write(VF_REG.GEN, regs.read(VF_REG.GEN) + 1);
      regs.write(VF_REG.STATUS, 0);
    },
  };
}

function guestMemory() {
  const memory = GuestMemory.allocate(3, 64);
  return { memory, frames: new FrameAllocator(memory) };
}

const FRAME = Uint8Array.from({ length: 60 }, (_, i) => (i * 7 + 1) & 0xff);

describe('a direct NIC driver whose function comes up late', () => {
  async function started(pollWhileEnabling: boolean) {
    const f = lateFunction('nic');
    const { memory, frames } = guestMemory();
    const driver = new VfNicDriver({ fn: f.fn, memory, frames, buffers: 8 });
    const open = driver.open();
    // The enable doorbell has been rung; the device has not answered yet.
    await vi.waitFor(() => expect(f.doorbells).toEqual([VF_CTRL_ENABLE]));
    if (pollWhileEnabling) f.interrupt();
    f.comeUp();
    await open;
    const tx = BackRing.attach(memory.page(f.regs.read(VF_REG.Q0)), hwNicTxProtocol);
    return { f, driver, memory, tx };
  }

  for (const poll of [false, true]) {
    it(`sends its first frame ${poll ? 'after the missed-event poll ran its handler while it waited for the device' : 'when nothing interrupts the wait'}`, async () => {
      const { f, driver, memory, tx } = await started(poll);
      driver.transmit(FRAME);
      expect(driver.counters.txPackets).toBe(1);
      expect(driver.counters.txDropped).toBe(0);
      // The request is on the device's ring and the device was rung for it.
      expect(f.doorbells.length).toBe(2);
      const req = tx.takeRequest()!;
      expect(req).toBeDefined();
      expect(memory.page(req.pfn).slice(req.offset, req.offset + req.len)).toEqual(FRAME);
      // The device answers; the driver takes the answer and goes on sending.
      tx.putResponse({ id: req.id, status: HW_STATUS_OK });
      tx.pushResponses();
      f.interrupt();
      driver.transmit(FRAME);
      expect(driver.counters.txPackets).toBe(2);
      expect(tx.takeRequest()).toBeDefined();
    });
  }

  it('still stops using a function reset under it once it was up (GEN moved on, or the queues gone)', async () => {
    for (const how of ['gen', 'status'] as const) {
      const { f, driver, tx } = await started(true);
      if (how === 'gen') f.reset();
      else f.regs.write(VF_REG.STATUS, VF_STATUS_BUS_MASTER);
      f.interrupt();
      driver.transmit(FRAME);
      expect(driver.counters.txPackets, how).toBe(0);
      expect(tx.takeRequest(), how).toBeUndefined();
    }
  });
});

describe('a direct disk driver whose function comes up late', () => {
  it('serves its first request after the missed-event poll ran its handler while it waited for the device', async () => {
    const f = lateFunction('disk');
    const { memory, frames } = guestMemory();
    const driver = new VfBlkDriver({ fn: f.fn, memory, frames });
    const open = driver.open();
    await vi.waitFor(() => expect(f.doorbells).toEqual([VF_CTRL_ENABLE]));
    f.interrupt();
    f.comeUp();
    await open;
    const ring = BackRing.attach(memory.page(f.regs.read(VF_REG.Q0)), hwBlkProtocol);
    const buf = new Uint8Array(512);
    const read = driver.read(0, buf);
    const req = ring.takeRequest()!;
    expect(req).toBeDefined();
    expect(req.op).toBe(HWBLK_OP_READ);
    memory.page(req.segments[0].pfn).fill(0x5a, req.segments[0].firstSect * 512, (req.segments[0].lastSect + 1) * 512);
    ring.putResponse({ id: req.id, status: HW_STATUS_OK });
    ring.pushResponses();
    f.interrupt();
    await read;
    expect(buf.every((b) => b === 0x5a)).toBe(true);
    expect(driver.counters.errors).toBe(0);
  });

  it('still fails what is outstanding when the function is reset under it once it was up', async () => {
    const f = lateFunction('disk');
    const { memory, frames } = guestMemory();
    const driver = new VfBlkDriver({ fn: f.fn, memory, frames });
    const open = driver.open();
    await vi.waitFor(() => expect(f.doorbells).toEqual([VF_CTRL_ENABLE]));
    f.comeUp();
    await open;
    const read = driver.read(0, new Uint8Array(512));
    f.reset();
    f.interrupt();
    await expect(read).rejects.toThrow(/was reset/);
  });
});
