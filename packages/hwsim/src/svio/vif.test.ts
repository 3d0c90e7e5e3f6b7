/**
 * SV-IO VIF processors against a guest-side driver made of the real queue ends: frames out and
 * in, blocks written and read back, every malformed or out-of-memory message answered with an
 * error (and the other guest's memory untouched), back-pressure when the guest stops taking
 * answers, and a rogue guest's VIF stopped.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import {
  GuestMemory,
  QUEUE_SLOTS,
  QueueConsumer,
  QueueProducer,
  RingPage,
  QUEUE_PROD,
  VIF_DONE,
  VIF_EIO,
  VIF_FLUSH,
  VIF_OK,
  VIF_READ,
  VIF_RX,
  VIF_RX_POST,
  VIF_TX,
  VIF_TX_DONE,
  VIF_WRITE,
  VIF_CAM_BUF,
  VIF_CAM_FRAME,
  VIF_CAM_STREAM,
  verifyCameraFrame,
  initMessageQueue,
  vifCodec,
  vifMessage,
  type VifMessage,
} from '@ringvisor/shared';
import { PhysicalDisk } from '../devices/disk/device.js';
import { tempDir } from '../test-support/harness.js';
import { DiskFaultTable } from '../devices/disk/faults.js';
import { BlkVif, CamVif, NetVif, type VifEnv } from './vif.js';

const turn = () => new Promise((r) => setImmediate(r));

/** The guest's side: its memory, its two queue ends, and the interrupts it got. */
function guest(frames = 32): { mem: GuestMemory; env: VifEnv; out: QueueProducer<VifMessage>; inq: QueueConsumer<VifMessage>; irqs: () => number } {
  const mem = GuestMemory.allocate(1, frames);
  initMessageQueue(mem.page(1));
  initMessageQueue(mem.page(2));
  let irqs = 0;
  return {
    mem,
    env: { memory: mem, outPfn: 1, inPfn: 2, notify: () => irqs++ },
    out: new QueueProducer(mem.page(1), vifCodec),
    inq: new QueueConsumer(mem.page(2), vifCodec),
    irqs: () => irqs,
  };
}

function send(g: ReturnType<typeof guest>, ms: VifMessage[]): void {
  for (const m of ms) expect(g.out.put(m)).toBe(true);
  g.out.push();
}

function answers(g: ReturnType<typeof guest>): VifMessage[] {
  const got: VifMessage[] = [];
  for (let m = g.inq.take(); m; m = g.inq.take()) got.push(m);
  g.inq.release();
  return got;
}

const frame = (n: number, len = 64) => {
  const f = new Uint8Array(len);
  f.fill(n);
  f.set([0x00, 0x16, 0x3e, 0, 0, 1, 0x00, 0x16, 0x3e, 0, 0, 2, 0x08, 0x00]);
  return f;
};

describe('NetVif', () => {
  it('sends frames from guest pages, fills posted buffers with received ones, and refuses what is not the guest\'s', () => {
    const g = guest();
    const wire: Uint8Array[] = [];
    const vif = new NetVif(1, g.env, (f) => wire.push(f));
    g.mem.page(10).set(frame(7), 100);
    send(g, [
      vifMessage({ type: VIF_TX, id: 1, gfn: 10, offset: 100, len: 64 }),
      vifMessage({ type: VIF_TX, id: 2, gfn: 999, offset: 0, len: 64 }), // not the guest's frame
      vifMessage({ type: VIF_TX, id: 3, gfn: 10, offset: 4090, len: 64 }), // runs off the page
      vifMessage({ type: VIF_RX_POST, id: 4, gfn: 11, offset: 0, len: 2048 }),
      vifMessage({ type: VIF_RX_POST, id: 5, gfn: 4096, offset: 0, len: 2048 }),
    ]);
    vif.kick();
    expect(wire).toEqual([frame(7)]);
    expect(answers(g).map((m) => [m.type, m.id, m.status])).toEqual([
      [VIF_TX_DONE, 1, VIF_OK],
      [VIF_TX_DONE, 2, VIF_EIO],
      [VIF_TX_DONE, 3, VIF_EIO],
      [VIF_RX, 5, VIF_EIO],
    ]);
    expect(g.irqs()).toBeGreaterThan(0);
    vif.receive(frame(9, 80));
    expect(answers(g).map((m) => [m.type, m.id, m.status])).toEqual([[VIF_RX, 4, 80]]);
    expect(g.mem.page(11).subarray(0, 80)).toEqual(frame(9, 80));
    // No buffer left: the next frame is missed, not queued without end.
    vif.receive(frame(10));
    expect(vif.net).toEqual({ txFrames: 1, rxFrames: 1, rxMissed: 1 });
    expect(vif.counters.refused).toBe(3);
  });

  it('back-pressure: when the guest stops taking answers the device stops taking requests, and goes on once room is freed', async () => {
    const g = guest();
    const vif = new NetVif(1, g.env, () => {});
    g.mem.page(10).set(frame(1));
    const tx = (id: number) => vifMessage({ type: VIF_TX, id, gfn: 10, offset: 0, len: 64 });
    // Fill the incoming queue with answers nobody takes, then send one more queue's worth.
    send(g, Array.from({ length: QUEUE_SLOTS }, (_, i) => tx(i)));
    vif.kick();
    send(g, Array.from({ length: QUEUE_SLOTS }, (_, i) => tx(100 + i)));
    vif.kick();
    expect(vif.counters.backpressured).toBeGreaterThan(0);
    // One answer is held (the one that did not fit); the rest of the requests wait in the queue.
    expect(vif.counters.messagesIn).toBe(QUEUE_SLOTS + 1);
    const first: VifMessage[] = [];
    for (let m = g.inq.take(); m; m = g.inq.take()) first.push(m);
    // The device asked to hear when room is freed: the guest's release says to ring the doorbell.
    expect(g.inq.release()).toBe(true);
    expect(first.map((m) => m.id)).toEqual(Array.from({ length: QUEUE_SLOTS }, (_, i) => i));
    // The guest freed slots: the device was asked to be told, so kick (the interrupt path) and drain.
    for (let i = 0; i < 4 && vif.counters.messagesIn < 2 * QUEUE_SLOTS; i++) {
      vif.kick();
      await turn();
      answers(g).forEach((m) => first.push(m));
    }
    await turn();
    for (let m = g.inq.take(); m; m = g.inq.take()) first.push(m);
    expect(first.map((m) => m.id)).toEqual([...Array.from({ length: QUEUE_SLOTS }, (_, i) => i), ...Array.from({ length: QUEUE_SLOTS }, (_, i) => 100 + i)]);
  });

  it('a guest publishing impossible indices has its VIF stopped', () => {
    const g = guest();
    const vif = new NetVif(1, g.env, () => {});
    new RingPage(g.mem.page(1)).store(QUEUE_PROD, 1000);
    vif.kick();
    expect(vif.stopReason).toMatch(/outstanding/);
    vif.kick(); // ignored
    expect(vif.counters.passes).toBe(1);
  });
});

describe('BlkVif', () => {
  let dir: { dir: string; remove: () => void };
  let disk: PhysicalDisk;
  beforeEach(() => {
    dir = tempDir();
    disk = PhysicalDisk.open({ path: join(dir.dir, 'disk.img'), sizeBytes: 1 << 20 });
  });
  afterEach(() => {
    disk.close();
    dir.remove();
  });

  it('writes and reads a partition straight from guest pages; refuses what is outside the partition or the guest', () => {
    const g = guest();
    const vif = new BlkVif(2, g.env, disk, { start: 64, sectors: 128 });
    g.mem.page(20).fill(0xab);
    send(g, [
      vifMessage({ type: VIF_WRITE, id: 1, sector: 8n, segments: [{ gfn: 20, first: 0, last: 7 }] }),
      vifMessage({ type: VIF_FLUSH, id: 2 }),
      vifMessage({ type: VIF_READ, id: 3, sector: 8n, segments: [{ gfn: 21, first: 0, last: 3 }, { gfn: 22, first: 4, last: 7 }] }),
      vifMessage({ type: VIF_READ, id: 4, sector: 126n, segments: [{ gfn: 23, first: 0, last: 7 }] }), // past the partition
      vifMessage({ type: VIF_WRITE, id: 5, sector: 0n, segments: [{ gfn: 500, first: 0, last: 7 }] }), // not the guest's
      vifMessage({ type: VIF_READ, id: 6, sector: 0n, segments: [{ gfn: 23, first: 5, last: 2 }] }),
      vifMessage({ type: 99, id: 7 }),
    ]);
    vif.kick();
    expect(answers(g).map((m) => [m.type, m.id, m.status])).toEqual([
      [VIF_DONE, 1, VIF_OK],
      [VIF_DONE, 2, VIF_OK],
      [VIF_DONE, 3, VIF_OK],
      [VIF_DONE, 4, VIF_EIO],
      [VIF_DONE, 5, VIF_EIO],
      [VIF_DONE, 6, VIF_EIO],
      [VIF_DONE, 7, -2],
    ]);
    expect(g.mem.page(21).subarray(0, 2048).every((b) => b === 0xab)).toBe(true);
    expect(g.mem.page(22).subarray(2048).every((b) => b === 0xab)).toBe(true);
    expect(g.mem.page(23).every((b) => b === 0)).toBe(true);
    // On the disk: at the partition's offset, nowhere else.
    const raw = new Uint8Array(512);
    disk.readSectors(64 + 8, raw);
    expect(raw.every((b) => b === 0xab)).toBe(true);
    disk.readSectors(8, raw);
    expect(raw.every((b) => b === 0)).toBe(true);
    expect(vif.blk).toEqual({ reads: 1, writes: 1, flushes: 1, injected: 0 });
  });

  it("takes the drive's fault rules on the image's sectors: EIO before a byte moves (writes, flushes), a bit flipped as delivered on a read", () => {
    const g = guest();
    const faults = new DiskFaultTable();
    const vif = new BlkVif(2, { ...g.env, diskFaults: faults }, disk, { start: 64, sectors: 128 });
    g.mem.page(20).fill(0xab);
    send(g, [vifMessage({ type: VIF_WRITE, id: 1, sector: 8n, segments: [{ gfn: 20, first: 0, last: 7 }] })]);
    vif.kick();
    answers(g);
    faults.set([
      { id: 'w', op: 'write', error: 'eio', sectors: [72, 80] },
      { id: 'f', op: 'flush', error: 'eio', times: 1 },
      { id: 'r', op: 'read', error: 'bitflip', sectors: [72, 80], times: 1 },
    ]);
    g.mem.page(24).fill(0xcd);
    send(g, [
      vifMessage({ type: VIF_WRITE, id: 2, sector: 8n, segments: [{ gfn: 24, first: 0, last: 7 }] }),
      vifMessage({ type: VIF_FLUSH, id: 3 }),
      vifMessage({ type: VIF_READ, id: 4, sector: 8n, segments: [{ gfn: 21, first: 0, last: 7 }] }),
      vifMessage({ type: VIF_WRITE, id: 5, sector: 40n, segments: [{ gfn: 24, first: 0, last: 7 }] }), // outside the rules' range
    ]);
    vif.kick();
    expect(answers(g).map((m) => [m.id, m.status])).toEqual([
      [2, VIF_EIO],
      [3, VIF_EIO],
      [4, VIF_OK],
      [5, VIF_OK],
    ]);
    const raw = new Uint8Array(4096);
    disk.readSectors(72, raw);
    expect(raw.every((b) => b === 0xab)).toBe(true); // the failed write moved nothing
    let flipped = 0;
    for (const b of g.mem.page(21)) for (let x = b ^ 0xab; x; x &= x - 1) flipped++;
    expect(flipped).toBe(1);
    expect(vif.blk.injected).toBe(3);
  });
});

describe('CamVif', () => {
  it('renders frames into the buffers the guest queued and announces them; without a buffer a frame is dropped and the sequence shows the gap', () => {
    const g = guest(64);
    const vif = new CamVif(3, g.env, { width: 64, height: 48, fps: 30 });
    const pages = Math.ceil(vif.camera.frameSize / 4096); // 32 + 3072 bytes: one page
    send(g, [
      vifMessage({ type: VIF_CAM_BUF, id: 0, gfn: 10, len: pages }),
      vifMessage({ type: VIF_CAM_BUF, id: 1, gfn: 12, len: pages }),
      vifMessage({ type: VIF_CAM_BUF, id: 2, gfn: 1, len: 2 }), // would cover the outgoing queue
      vifMessage({ type: VIF_CAM_BUF, id: 3, gfn: 63, len: 2 }), // runs past the guest's memory
    ]);
    vif.kick();
    expect(answers(g).map((m) => [m.type, m.id, m.status])).toEqual([
      [VIF_CAM_FRAME, 2, VIF_EIO],
      [VIF_CAM_FRAME, 3, VIF_EIO],
    ]);
    for (let i = 0; i < 4; i++) vif.capture();
    const frames = answers(g);
    expect(frames.map((m) => [m.id, m.seq, m.used])).toEqual([
      [0, 1, vif.camera.frameSize],
      [1, 2, vif.camera.frameSize],
    ]);
    for (const f of frames) {
      const buf = g.mem.bytes.subarray((f.id === 0 ? 10 : 12) * 4096, (f.id === 0 ? 10 : 12) * 4096 + f.used);
      expect(verifyCameraFrame(buf, f.used, { width: 64, height: 48 })).toMatchObject({ ok: true, seq: f.seq });
    }
    expect(vif.camera.metrics).toMatchObject({ captured: 4, delivered: 2, dropped: 2 });
    // The guest queues buffer 0 again: the next frame is seq 5 — 3 and 4 were dropped.
    send(g, [vifMessage({ type: VIF_CAM_BUF, id: 0, gfn: 10, len: pages })]);
    vif.kick();
    vif.capture();
    expect(answers(g).map((m) => [m.id, m.seq])).toEqual([[0, 5]]);
  });

  it('streams on the camera\'s clock between STREAM_START and STREAM_STOP', async () => {
    const g = guest(64);
    const vif = new CamVif(3, g.env, { width: 16, height: 16, fps: 100 });
    send(g, [
      ...Array.from({ length: 8 }, (_, i) => vifMessage({ type: VIF_CAM_BUF, id: i, gfn: 10 + i, len: 1 })),
      vifMessage({ type: VIF_CAM_STREAM, id: 99, len: 1 }),
    ]);
    vif.kick();
    await new Promise((r) => setTimeout(r, 120));
    send(g, [vifMessage({ type: VIF_CAM_STREAM, id: 99, len: 0 })]);
    vif.kick();
    const got = answers(g);
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((m) => m.type === VIF_CAM_FRAME && m.status === 0)).toBe(true);
    // In order; buffers used oldest first.
    expect(got.map((m) => m.seq)).toEqual([...got.map((m) => m.seq)].sort((a, b) => a - b));
    expect(got.map((m) => m.id)).toEqual(got.map((_, i) => i));
    expect(vif.camera.streaming).toBe(false);
  });
});
