/**
 * The disk through its real host-interface queue: this test plays dom0's driver (FrontRing on a
 * dom0 page, data pages in a guest's memory, real event channels for doorbell and IRQ).
 */
import { openSync, closeSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ClosedError,
  GuestMemory,
  HWBLK_OP_FLUSH,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_EIO,
  HW_STATUS_ENOTSUP,
  HW_STATUS_OK,
  REQ_PROD,
  RING_HEADER_SIZE,
  hwBlkProtocol,
  type DiskFaultRule,
  type HwBlkRequest,
  type HwStatusResponse,
} from '@ringvisor/shared';
import { HardwareSimulator } from '../../runtime.js';
import { Dom0Events, DriverQueue, quietLogger, tempDir, waitFor } from '../../test-support/harness.js';

const GUEST = 7;
const DISK_BYTES = 1 << 20; // 2048 sectors
const SLOT = 104;

interface Rig {
  sim: HardwareSimulator;
  events: Dom0Events;
  dom0: GuestMemory;
  guest: GuestMemory;
  driver: DriverQueue<HwBlkRequest, HwStatusResponse>;
  queuePfn: number;
}

function boot(path: string): Rig {
  const events = new Dom0Events();
  const sim = new HardwareSimulator({ eventMemory: events.eventMemory, host: 'test', logger: quietLogger(), disk: { path, sizeBytes: DISK_BYTES }, nic: { mac: '52:54:00:00:00:01' } }).start();
  const dom0 = GuestMemory.allocate(0, 8);
  const guest = GuestMemory.allocate(GUEST, 16);
  sim.attachMemory(0, dom0.buffer);
  sim.attachMemory(GUEST, guest.buffer);
  const ch = events.bindDevice();
  const queuePfn = 1;
  const driver = new DriverQueue(dom0.page(queuePfn), hwBlkProtocol, events.gate, ch.dom0Port, ch.irq);
  const info = sim.attachDisk({ queue: { domid: 0, pfn: queuePfn }, port: ch.hwPort });
  expect(info).toEqual({ sectors: 2048, sectorSize: 512 });
  return { sim, events, dom0, guest, driver, queuePfn };
}

function pattern(page: Uint8Array, seed: number): void {
  for (let i = 0; i < page.length; i++) page[i] = (i * 31 + seed) & 0xff;
}

function seg(pfn: number, firstSect: number, lastSect: number, domid = GUEST) {
  return { domid, pfn, firstSect, lastSect };
}

function readImage(path: string, offset: number, len: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(len);
    readSync(fd, b, 0, len, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

describe('disk queue (hwblk)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const rigs: Rig[] = [];
  const up = (): Rig => {
    const r = boot(path);
    rigs.push(r);
    return r;
  };

  beforeEach(() => {
    tmp = tempDir();
    path = join(tmp.dir, 'disk.img');
  });
  afterEach(() => {
    for (const r of rigs.splice(0)) {
      r.sim.shutdown();
      r.events.close();
    }
    tmp.remove();
  });

  it('writes, flushes and reads back multi-segment requests, raising the IRQ', async () => {
    const { sim, guest, driver } = up();
    pattern(guest.page(2), 1);
    pattern(guest.page(3), 2);
    expect(driver.submit([
      { op: HWBLK_OP_WRITE, id: 1, sector: 10n, segments: [seg(2, 0, 7), seg(3, 2, 5)] },
      { op: HWBLK_OP_FLUSH, id: 2, sector: 0n, segments: [] },
    ])).toBe(true);
    const r1 = await driver.collect(2);
    expect(r1).toEqual([
      { id: 1, status: HW_STATUS_OK },
      { id: 2, status: HW_STATUS_OK },
    ]);
    const irqsAfterWrite = driver.irq.count;
    expect(irqsAfterWrite).toBeGreaterThanOrEqual(1); // dom0's handler saw the interrupt

    // The bytes are in the image file where the request said.
    const onDisk = readImage(path, 10 * 512, 12 * 512);
    expect(onDisk.subarray(0, 4096)).toEqual(guest.page(2).slice());
    expect(onDisk.subarray(4096)).toEqual(guest.page(3).slice(1024, 3072));

    // Second batch must ring the doorbell again: the device re-armed req_event in its final check.
    expect(driver.submit([{ op: HWBLK_OP_READ, id: 3, sector: 10n, segments: [seg(8, 0, 7), seg(9, 4, 7)] }])).toBe(true);
    expect(await driver.collect(1)).toEqual([{ id: 3, status: HW_STATUS_OK }]);
    expect(driver.irq.count).toBeGreaterThan(irqsAfterWrite);
    expect(guest.page(8)).toEqual(guest.page(2));
    expect(guest.page(9).slice(2048)).toEqual(guest.page(3).slice(1024, 3072));
    expect(guest.page(9).slice(0, 2048).every((b) => b === 0)).toBe(true); // sectors 0..3 untouched

    const s = sim.stats().disk;
    expect(s.ops).toEqual({ read: 1, write: 1, flush: 1 });
    expect(s.sectorsWritten).toBe(12);
    expect(s.sectorsRead).toBe(12);
    expect(s.bytesWritten).toBe(12 * 512);
    expect(s.errors).toEqual({ eio: 0, enotsup: 0, io: 0 });
    expect(s.queue?.requests).toBe(3);
    expect(s.queue?.irqs).toBeGreaterThanOrEqual(2);
    expect(sim.stats().dma).toMatchObject({ bytesRead: 12 * 512, bytesWritten: 12 * 512, faults: 0 });
  });

  it('keeps data across a restart of the simulator (image reopened, not recreated)', async () => {
    const a = up();
    pattern(a.guest.page(4), 9);
    a.driver.submit([{ op: HWBLK_OP_WRITE, id: 1, sector: 2040n, segments: [seg(4, 0, 7)] }]);
    expect(await a.driver.collect(1)).toEqual([{ id: 1, status: HW_STATUS_OK }]);
    a.sim.shutdown();
    expect(a.sim.stats().disk.closed).toBe(true);
    expect(() => a.sim.attachMemory(3, new SharedArrayBuffer(4096))).toThrow(ClosedError);

    const b = up();
    expect(b.sim.disk.created).toBe(false);
    b.driver.submit([{ op: HWBLK_OP_READ, id: 5, sector: 2040n, segments: [seg(6, 0, 7)] }]);
    expect(await b.driver.collect(1)).toEqual([{ id: 5, status: HW_STATUS_OK }]);
    expect(b.guest.page(6)).toEqual(a.guest.page(4));
  });

  it('answers malformed requests with error statuses and keeps serving', async () => {
    const { sim, guest, driver } = up();
    pattern(guest.page(2), 3);
    const twelve = Array.from({ length: 11 }, () => seg(2, 0, 7));
    const reqs: HwBlkRequest[] = [
      { op: HWBLK_OP_READ, id: 10, sector: 2047n, segments: [seg(2, 0, 1)] }, // runs past the end
      { op: HWBLK_OP_WRITE, id: 11, sector: 100n, segments: twelve }, // nr_segments poked to 12 below
      { op: HWBLK_OP_READ, id: 12, sector: 0n, segments: [seg(2, 5, 3)] }, // first > last
      { op: HWBLK_OP_READ, id: 13, sector: 0n, segments: [seg(2, 0, 8)] }, // last_sect past the page
      { op: HWBLK_OP_WRITE, id: 14, sector: 0n, segments: [seg(999, 0, 0)] }, // pfn outside memory
      { op: HWBLK_OP_READ, id: 15, sector: 0n, segments: [seg(0, 0, 0, 42)] }, // domain not attached
      { op: 9, id: 16, sector: 0n, segments: [] }, // unknown op
      { op: HWBLK_OP_FLUSH, id: 17, sector: 0n, segments: [seg(2, 0, 0)] }, // flush with a segment
      { op: HWBLK_OP_READ, id: 18, sector: 0n, segments: [] }, // read with no segments
      { op: HWBLK_OP_WRITE, id: 19, sector: 200n, segments: [seg(2, 0, 7)] }, // valid
      { op: HWBLK_OP_WRITE, id: 20, sector: 2n ** 64n - 1n, segments: [seg(2, 0, 0)] }, // u64: wraps to 0 if summed in 64 bits
      { op: HWBLK_OP_WRITE, id: 21, sector: 2n ** 53n + 1n, segments: [seg(2, 0, 0)] }, // rounds as a JS number
    ];
    for (const r of reqs) driver.front.putRequest(r);
    // A hostile driver claims 12 segments: the device must refuse, not truncate to 11.
    const slot11 = RING_HEADER_SIZE + 1 * SLOT;
    driver.page[slot11 + 1] = 12;
    driver.submit([]);
    const rsps = await driver.collect(reqs.length);
    expect(rsps).toEqual([
      { id: 10, status: HW_STATUS_EIO },
      { id: 11, status: HW_STATUS_EIO },
      { id: 12, status: HW_STATUS_EIO },
      { id: 13, status: HW_STATUS_EIO },
      { id: 14, status: HW_STATUS_EIO },
      { id: 15, status: HW_STATUS_EIO },
      { id: 16, status: HW_STATUS_ENOTSUP },
      { id: 17, status: HW_STATUS_EIO },
      { id: 18, status: HW_STATUS_EIO },
      { id: 19, status: HW_STATUS_OK },
      { id: 20, status: HW_STATUS_EIO },
      { id: 21, status: HW_STATUS_EIO },
    ]);
    expect(readImage(path, 0, 512).every((b) => b === 0)).toBe(true); // the huge sectors wrote nothing at 0
    expect(readImage(path, 100 * 512, 88 * 512).every((b) => b === 0)).toBe(true); // the 12-segment write did nothing
    expect(readImage(path, 200 * 512, 4096)).toEqual(guest.page(2).slice());
    const s = sim.stats().disk;
    expect(s.errors).toEqual({ eio: 10, enotsup: 1, io: 0 });
    expect(s.ops.write).toBe(1);
    expect(s.ops.read).toBe(0);

    // And the queue still serves afterwards.
    driver.submit([{ op: HWBLK_OP_READ, id: 20, sector: 200n, segments: [seg(5, 0, 7)] }]);
    expect(await driver.collect(1)).toEqual([{ id: 20, status: HW_STATUS_OK }]);
    expect(guest.page(5)).toEqual(guest.page(2));
  });

  it('fails a request with EIO when its memory disappears, without stopping the queue', async () => {
    const { sim, driver, guest } = up();
    sim.detachMemory(GUEST);
    driver.submit([{ op: HWBLK_OP_WRITE, id: 1, sector: 0n, segments: [seg(2, 0, 0)] }]);
    expect(await driver.collect(1)).toEqual([{ id: 1, status: HW_STATUS_EIO }]);
    sim.attachMemory(GUEST, guest.buffer);
    driver.submit([{ op: HWBLK_OP_WRITE, id: 2, sector: 0n, segments: [seg(2, 0, 0)] }]);
    expect(await driver.collect(1)).toEqual([{ id: 2, status: HW_STATUS_OK }]);
  });

  it('stops a queue whose driver publishes an impossible req_prod, and survives it', async () => {
    const { sim, driver, dom0, events, guest } = up();
    driver.submit([{ op: HWBLK_OP_FLUSH, id: 1, sector: 0n, segments: [] }]);
    await driver.collect(1);
    // Rogue: req_prod a thousand requests ahead of anything the ring can hold.
    Atomics.store(driver.front.page.indices, REQ_PROD, driver.front.reqProdPvt + 1000);
    const ch = sim.stats().disk.queue;
    events.gate.send(driver.port);
    await waitFor(() => sim.stats().disk.queue?.stopped === true, 3000, 'rogue queue to stop');
    const stopped = sim.stats().disk.queue;
    expect(stopped?.rogue).toBe(1);
    expect(stopped?.stopReason).toMatch(/req_prod/);
    expect(stopped?.requests).toBe(ch?.requests);

    // Further doorbells are ignored, and nothing crashed: a fresh queue on a new page works.
    events.gate.send(driver.port);
    await waitFor(() => (sim.stats().disk.queue?.doorbells ?? 0) > (stopped?.doorbells ?? 0), 3000, 'doorbell');
    expect(sim.stats().disk.queue?.requests).toBe(stopped?.requests);

    const ch2 = events.bindDevice();
    const fresh = new DriverQueue(dom0.page(2), hwBlkProtocol, events.gate, ch2.dom0Port, ch2.irq);
    sim.attachDisk({ queue: { domid: 0, pfn: 2 }, port: ch2.hwPort });
    pattern(guest.page(1), 4);
    fresh.submit([{ op: HWBLK_OP_WRITE, id: 9, sector: 1n, segments: [seg(1, 0, 7)] }]);
    expect(await fresh.collect(1)).toEqual([{ id: 9, status: HW_STATUS_OK }]);
    expect(sim.stats().disk.queue).toMatchObject({ stopped: false, rogue: 0, port: ch2.hwPort });
  });
});

/** Bits that differ between two equal-length buffers. */
function bitsDiffering(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) for (let x = a[i] ^ b[i]; x !== 0; x &= x - 1) n++;
  return n;
}

/** Index of the one differing bit (byte * 8 + bit), or -1. */
function differingBit(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i * 8 + Math.log2(a[i] ^ b[i]);
  return -1;
}

describe('disk queue (hwblk) with fault rules', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const rigs: Rig[] = [];
  const up = (): Rig => {
    const r = boot(path);
    rigs.push(r);
    return r;
  };

  beforeEach(() => {
    tmp = tempDir();
    path = join(tmp.dir, 'disk.img');
  });
  afterEach(() => {
    for (const r of rigs.splice(0)) {
      r.sim.shutdown();
      r.events.close();
    }
    tmp.remove();
  });

  it('fails a write hit by eio with an error status and leaves the image bytes unchanged', async () => {
    const { sim, guest, driver } = up();
    pattern(guest.page(2), 1);
    driver.submit([{ op: HWBLK_OP_WRITE, id: 1, sector: 50n, segments: [seg(2, 0, 7)] }]);
    expect(await driver.collect(1)).toEqual([{ id: 1, status: HW_STATUS_OK }]);
    const before = readImage(path, 50 * 512, 4096);

    expect(sim.setDiskFaults({ rules: [{ id: 'bad-write', op: 'write', sectors: [50, 58], error: 'eio' }] })).toEqual([{ id: 'bad-write', hits: 0, spent: false }]);
    pattern(guest.page(3), 2);
    driver.submit([
      { op: HWBLK_OP_WRITE, id: 2, sector: 50n, segments: [seg(3, 0, 7)] },
      { op: HWBLK_OP_READ, id: 3, sector: 50n, segments: [seg(4, 0, 7)] }, // a read is not the rule's op
    ]);
    expect(await driver.collect(2)).toEqual([
      { id: 2, status: HW_STATUS_EIO },
      { id: 3, status: HW_STATUS_OK },
    ]);
    expect(readImage(path, 50 * 512, 4096)).toEqual(before);
    expect(guest.page(4)).toEqual(guest.page(2)); // the old data, read back intact
    const s = sim.stats().disk;
    expect(s.faults).toEqual([{ id: 'bad-write', hits: 1, spent: false }]);
    expect(s.errors).toEqual({ eio: 1, enotsup: 0, io: 0 });
    expect(s.injected).toEqual({ eio: 1, bitflip: 0 });
    expect(s.ops).toEqual({ read: 1, write: 1, flush: 0 }); // the failed write moved nothing
    expect(s.sectorsWritten).toBe(8);
  });

  it('fails a flush with a range-less eio rule', async () => {
    const { sim, driver } = up();
    sim.setDiskFaults({ rules: [{ id: 'no-fsync', op: 'flush', error: 'eio' }] });
    driver.submit([{ op: HWBLK_OP_FLUSH, id: 1, sector: 0n, segments: [] }]);
    expect(await driver.collect(1)).toEqual([{ id: 1, status: HW_STATUS_EIO }]);
    expect(sim.stats().disk.ops.flush).toBe(0);
  });

  it('delivers a read hit by bitflip differing from the image in exactly one bit, the same bit on replay', async () => {
    const { sim, guest, driver } = up();
    pattern(guest.page(2), 5);
    pattern(guest.page(3), 6);
    driver.submit([{ op: HWBLK_OP_WRITE, id: 1, sector: 300n, segments: [seg(2, 0, 7), seg(3, 0, 7)] }]);
    expect(await driver.collect(1)).toEqual([{ id: 1, status: HW_STATUS_OK }]);
    const image = readImage(path, 300 * 512, 8192);

    const rule: DiskFaultRule = { id: 'rot', op: 'read', sectors: [300, 316], error: 'bitflip', seed: 99 };
    const flipped: number[] = [];
    for (const id of [2, 3]) {
      sim.setDiskFaults({ rules: [rule] }); // re-installing restarts the rule's streams
      guest.page(8).fill(0);
      guest.page(9).fill(0);
      driver.submit([{ op: HWBLK_OP_READ, id, sector: 300n, segments: [seg(8, 0, 7), seg(9, 0, 7)] }]);
      expect(await driver.collect(1)).toEqual([{ id, status: HW_STATUS_OK }]); // silent: success
      const delivered = new Uint8Array(8192);
      delivered.set(guest.page(8), 0);
      delivered.set(guest.page(9), 4096);
      expect(bitsDiffering(delivered, image)).toBe(1);
      flipped.push(differingBit(delivered, image));
    }
    expect(flipped[1]).toBe(flipped[0]);
    expect(readImage(path, 300 * 512, 8192)).toEqual(image); // the medium is fine
    const s = sim.stats().disk;
    expect(s.injected).toEqual({ eio: 0, bitflip: 2 });
    expect(s.faults).toEqual([{ id: 'rot', hits: 1, spent: false }]);
    expect(s.errors.eio).toBe(0);
  });

  it('stores a write hit by bitflip differing in one bit, leaving the guest buffer intact', async () => {
    const { sim, guest, driver } = up();
    pattern(guest.page(2), 7);
    pattern(guest.page(3), 8);
    const sent = new Uint8Array(4096 + 2048);
    sent.set(guest.page(2), 0);
    sent.set(guest.page(3).subarray(0, 2048), 4096);
    sim.setDiskFaults({ rules: [{ id: 'tear', op: 'write', error: 'bitflip', seed: 3 }] });
    driver.submit([{ op: HWBLK_OP_WRITE, id: 1, sector: 600n, segments: [seg(2, 0, 7), seg(3, 0, 3)] }]);
    expect(await driver.collect(1)).toEqual([{ id: 1, status: HW_STATUS_OK }]);
    const stored = readImage(path, 600 * 512, sent.length);
    expect(bitsDiffering(stored, sent)).toBe(1);
    const memory = new Uint8Array(sent.length);
    memory.set(guest.page(2), 0);
    memory.set(guest.page(3).subarray(0, 2048), 4096);
    expect(memory).toEqual(sent);
    expect(sim.stats().disk).toMatchObject({ injected: { eio: 0, bitflip: 1 }, faults: [{ id: 'tear', hits: 1, spent: false }], sectorsWritten: 12 });
  });

  it('never fires a rule for requests outside its sector range', async () => {
    const { sim, guest, driver } = up();
    sim.setDiskFaults({ rules: [{ id: 'hole', op: 'any', sectors: [1000, 1008], error: 'eio' }] });
    pattern(guest.page(2), 9);
    const reqs: HwBlkRequest[] = [
      { op: HWBLK_OP_WRITE, id: 1, sector: 992n, segments: [seg(2, 0, 7)] }, // [992, 1000)
      { op: HWBLK_OP_WRITE, id: 2, sector: 1008n, segments: [seg(2, 0, 7)] }, // [1008, 1016)
      { op: HWBLK_OP_READ, id: 3, sector: 992n, segments: [seg(5, 0, 7)] },
      { op: HWBLK_OP_READ, id: 4, sector: 1008n, segments: [seg(6, 0, 7)] },
      { op: HWBLK_OP_READ, id: 5, sector: 0n, segments: [seg(7, 0, 7)] },
    ];
    driver.submit(reqs);
    expect((await driver.collect(reqs.length)).map((r) => r.status)).toEqual(reqs.map(() => HW_STATUS_OK));
    expect(guest.page(5)).toEqual(guest.page(2));
    expect(guest.page(6)).toEqual(guest.page(2));
    driver.submit([{ op: HWBLK_OP_READ, id: 6, sector: 999n, segments: [seg(5, 0, 1)] }]); // [999, 1001) overlaps
    expect(await driver.collect(1)).toEqual([{ id: 6, status: HW_STATUS_EIO }]);
    expect(sim.stats().disk.faults).toEqual([{ id: 'hole', hits: 1, spent: false }]);
  });

  it('stops a rule after `times` hits', async () => {
    const { sim, guest, driver } = up();
    sim.setDiskFaults({ rules: [{ id: 'twice', op: 'write', error: 'eio', times: 2 }] });
    pattern(guest.page(2), 10);
    const reqs: HwBlkRequest[] = [1, 2, 3, 4].map((id) => ({ op: HWBLK_OP_WRITE, id, sector: 40n, segments: [seg(2, 0, 7)] }));
    driver.submit(reqs);
    expect((await driver.collect(4)).map((r) => r.status)).toEqual([HW_STATUS_EIO, HW_STATUS_EIO, HW_STATUS_OK, HW_STATUS_OK]);
    expect(readImage(path, 40 * 512, 4096)).toEqual(guest.page(2).slice());
    const s = sim.stats().disk;
    expect(s.faults).toEqual([{ id: 'twice', hits: 2, spent: true }]);
    expect(s.injected.eio).toBe(2);

    // [] clears; stats follow the table.
    expect(sim.setDiskFaults({ rules: [] })).toEqual([]);
    expect(sim.stats().disk.faults).toEqual([]);
  });
});
