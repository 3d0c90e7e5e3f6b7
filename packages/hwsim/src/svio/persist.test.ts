/**
 * Save and restore of SV-IO VIFs (Device: quiesce, save, static restore) in the middle of I/O:
 * messages on the outgoing queue not taken, one taken and held for its QoS turn, answers waiting
 * for room on the incoming queue, answers on it the guest has not taken. Each VIF is restored
 * into a fresh processor built with the same constructor arguments (the guest's memory, the
 * image, the wire), and every request is answered exactly once with the right data on a real
 * image file, every frame sent once, every camera frame numbered on. A fast-check property puts
 * save/restore points anywhere in a random run; corrupt records are refused with
 * RV_ERR_STATE_RECORD and the saved VIF carries on untouched.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  GuestMemory,
  PAGE_SIZE,
  QUEUE_SLOTS,
  QueueConsumer,
  QueueProducer,
  SECTOR_SIZE,
  StateRecordError,
  VIF_CAM_BUF,
  VIF_CAM_FRAME,
  VIF_CAM_STREAM,
  VIF_DONE,
  VIF_OK,
  VIF_RX,
  VIF_RX_POST,
  VIF_TX,
  VIF_TX_DONE,
  VIF_WRITE,
  initMessageQueue,
  verifyCameraFrame,
  vifCodec,
  vifMessage,
  type DeviceStateRecord,
  type VifMessage,
} from '@ringvisor/shared';
import { PhysicalDisk } from '../devices/disk/device.js';
import { tempDir } from '../test-support/harness.js';
import { VifScheduler } from './scheduler.js';
import { BlkVif, CamVif, NetVif, type VifEnv, type VifProcessor } from './vif.js';

const PART = { start: 128, sectors: 256 };
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** The guest's side: its memory, its two queue ends, the interrupts it got. */
function guest(frames = 96) {
  const mem = GuestMemory.allocate(1, frames);
  initMessageQueue(mem.page(1));
  initMessageQueue(mem.page(2));
  const irqs = { count: 0 };
  const env: VifEnv = { memory: mem, outPfn: 1, inPfn: 2, notify: () => irqs.count++ };
  return { mem, env, out: new QueueProducer(mem.page(1), vifCodec), inq: new QueueConsumer(mem.page(2), vifCodec), irqs };
}
type Guest = ReturnType<typeof guest>;

function send(g: Guest, ms: VifMessage[]): void {
  for (const m of ms) expect(g.out.put(m)).toBe(true);
  g.out.push();
}

function answers(g: Guest): VifMessage[] {
  const got: VifMessage[] = [];
  for (let m = g.inq.take(); m; m = g.inq.take()) got.push(m);
  g.inq.release();
  return got;
}

function pattern(seed: number): Uint8Array {
  return Uint8Array.from({ length: PAGE_SIZE }, (_, i) => (i * 13 + seed * 29 + (i >> 8)) & 0xff);
}

function image() {
  const tmp = tempDir('hwsim-vif-persist-');
  const disk = PhysicalDisk.open({ path: join(tmp.dir, 'disk.img'), sizeBytes: 1 << 20 });
  cleanups.push(() => {
    disk.close();
    tmp.remove();
  });
  return { disk, at: (sector: number) => new Uint8Array(readFileSync(disk.path).subarray((PART.start + sector) * SECTOR_SIZE, (PART.start + sector) * SECTOR_SIZE + PAGE_SIZE)) };
}

/** A write of one page of `pattern(seed)` from guest frame `gfn` to `sector`. */
function write(g: Guest, id: number, gfn: number, sector: number, seed: number): VifMessage {
  g.mem.page(gfn).set(pattern(seed));
  return vifMessage({ type: VIF_WRITE, id, sector: BigInt(sector), segments: [{ gfn, first: 0, last: 7 }] });
}

async function saveAndRestore<V extends VifProcessor>(vif: V, restore: (rec: DeviceStateRecord) => V): Promise<V> {
  await vif.quiesce();
  const rec = structuredClone(vif.save()); // plain data: crosses a worker or msgpack unchanged
  const fresh = restore(rec);
  await fresh.attach();
  return fresh;
}

/** Admit `n` messages, then refuse (the QoS turn's budget). */
const budget = (n: number) => () => n-- > 0;

describe('a block VIF saved in the middle of I/O', () => {
  it('restored into a fresh processor: a held message, answers waiting for room and uncollected answers are each delivered once', async () => {
    const g = guest();
    const img = image();
    const args: ConstructorParameters<typeof BlkVif> = [4, g.env, img.disk, PART];
    let vif = new BlkVif(...args);
    // Fill the incoming queue with answers the guest does not take (32 flush-free writes of one sector).
    const ids: number[] = [];
    let id = 1;
    const batch = (n: number, sector: (i: number) => number) => {
      const ms: VifMessage[] = [];
      for (let i = 0; i < n; i++, id++) {
        ms.push(write(g, id, 10 + (id % 60), sector(i), id));
        ids.push(id);
      }
      send(g, ms);
    };
    batch(QUEUE_SLOTS, (i) => (i % 4) * 8);
    expect(vif.turn(() => true)).toBe('idle');
    // The next 8: 1 answered into the backlog (no room), then the pass stops taking; 7 wait in the queue.
    batch(8, (i) => 32 + i * 8);
    expect(vif.turn(() => true)).toBe('blocked');
    expect(vif.counters.messagesIn).toBe(QUEUE_SLOTS + 1);
    const old = vif;
    vif = await saveAndRestore(vif, (rec) => {
      expect((rec.state as { backlog: unknown[] }).backlog).toHaveLength(1);
      return BlkVif.restore(args, rec);
    });
    expect(vif.identity).toEqual({ kind: 'blk', mode: 'svio', side: 'hardware', type: 'blk-vif', devid: 4 });
    // The guest takes its answers; the restored VIF, kicked, answers the rest.
    const got: VifMessage[] = [];
    for (let i = 0; i < 10 && got.length < ids.length; i++) {
      got.push(...answers(g));
      vif.kick();
    }
    expect(got.map((m) => m.id)).toEqual(ids);
    expect(got.every((m) => m.type === VIF_DONE && m.status === VIF_OK)).toBe(true);
    expect(vif.blk.writes).toBe(ids.length);
    expect(old.blk.writes).toBe(QUEUE_SLOTS + 1);
    // The last write of each sector is on the image.
    for (let s = 0; s < 4; s++) expect(img.at(s * 8)).toEqual(pattern(QUEUE_SLOTS - 3 + s));
    for (let i = 0; i < 8; i++) expect(img.at(32 + i * 8)).toEqual(pattern(QUEUE_SLOTS + 1 + i));
    expect(vif.metrics()).toMatchObject({ ops: ids.length, bytes: ids.length * PAGE_SIZE, errors: 0 });
  });

  it('a message held for its QoS turn is saved as its private copy: the guest rewriting the slot changes nothing', async () => {
    const g = guest();
    const img = image();
    const args: ConstructorParameters<typeof BlkVif> = [4, g.env, img.disk, PART];
    const vif = new BlkVif(...args);
    send(g, [write(g, 1, 10, 0, 1), write(g, 2, 11, 8, 2)]);
    expect(vif.turn(budget(1))).toBe('budget');
    await vif.quiesce();
    const rec = vif.save();
    // The held message's slot went back to the guest: overwrite it with garbage.
    g.mem.page(1).fill(0xee, 64, 64 + 2 * 64);
    const fresh = BlkVif.restore(args, rec);
    await fresh.attach();
    expect(answers(g).map((m) => [m.id, m.status])).toEqual([
      [1, VIF_OK],
      [2, VIF_OK],
    ]);
    expect(img.at(8)).toEqual(pattern(2));
  });

  it('property: save/restore at random points — every message answered once, the image is the last write of each sector', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            { arbitrary: fc.record({ op: fc.constant('send' as const), n: fc.integer({ min: 1, max: 20 }), sector: fc.integer({ min: 0, max: 3 }) }), weight: 3 },
            { arbitrary: fc.record({ op: fc.constant('turn' as const), admit: fc.integer({ min: 0, max: 40 }) }), weight: 3 },
            { arbitrary: fc.constant({ op: 'collect' as const }), weight: 1 },
            { arbitrary: fc.constant({ op: 'save' as const }), weight: 2 },
          ),
          { minLength: 1, maxLength: 40 },
        ),
        async (steps) => {
          const g = guest();
          const img = image();
          const sched = new VifScheduler();
          const args: ConstructorParameters<typeof BlkVif> = [4, g.env, img.disk, PART];
          let vif = new BlkVif(...args);
          let id = 1;
          const sent: number[] = [];
          const last = new Map<number, number>();
          const answered = new Map<number, number>();
          const collect = () => {
            for (const m of answers(g)) {
              expect(m.status).toBe(VIF_OK);
              answered.set(m.id, (answered.get(m.id) ?? 0) + 1);
            }
          };
          for (const s of steps) {
            if (s.op === 'send') {
              const ms: VifMessage[] = [];
              for (let i = 0; i < s.n && g.out.free() > ms.length; i++, id++) {
                ms.push(write(g, id, 10 + (id % 80), s.sector * 8, id));
                sent.push(id);
                last.set(s.sector, id);
              }
              send(g, ms);
            } else if (s.op === 'turn') vif.turn(budget(s.admit));
            else if (s.op === 'collect') collect();
            else vif = await saveAndRestore(vif, (rec) => BlkVif.restore(args, rec));
          }
          for (let i = 0; i < 20 && answered.size < sent.length; i++) {
            collect();
            vif.turn(() => true);
          }
          collect();
          sched.stop();
          expect([...answered.keys()]).toEqual(sent);
          expect([...answered.values()].every((n) => n === 1)).toBe(true);
          expect(vif.blk.writes).toBe(sent.length);
          for (const [sector, seed] of last) expect(img.at(sector * 8)).toEqual(pattern(seed));
          for (const c of cleanups.splice(0)) c();
        },
      ),
      { numRuns: 40 },
    );
  });

  it('refuses corrupt or foreign records with RV_ERR_STATE_RECORD, and the saved VIF carries on', async () => {
    const g = guest();
    const img = image();
    const args: ConstructorParameters<typeof BlkVif> = [4, g.env, img.disk, PART];
    const vif = new BlkVif(...args);
    send(g, [write(g, 1, 10, 0, 1), write(g, 2, 11, 8, 2)]);
    vif.turn(budget(1));
    await vif.quiesce();
    const rec = vif.save();
    const st = rec.state as Record<string, unknown> & { outCons: number; inProd: number; held: Uint8Array };
    const outgoing = new Uint8Array(64);
    vifCodec.encode(new DataView(outgoing.buffer), 0, vifMessage({ type: VIF_WRITE, id: 9, sector: 0n, segments: [{ gfn: 10, first: 0, last: 0 }] }));
    const bad: Array<[string, unknown]> = [
      ['another type', { ...rec, type: 'net-vif' }],
      ['a newer version', { ...rec, version: 9 }],
      ['a short message', { ...rec, state: { ...st, held: new Uint8Array(10) } }],
      ['a held message beside a backlog', { ...rec, state: { ...st, backlog: [outgoing] } }],
      ['an outgoing message as an answer', { ...rec, state: { ...st, held: null, backlog: [outgoing] } }],
      ['a negative counter', { ...rec, state: { ...st, counters: { ...(st.counters as object), bytes: -1 } } }],
      ['a consumer index the queue never saw', { ...rec, state: { ...st, outCons: st.outCons + 3 } }],
      ['a producer index the queue never saw', { ...rec, state: { ...st, inProd: st.inProd + 1 } }],
    ];
    for (const [what, r] of bad) {
      let err: unknown;
      try {
        BlkVif.restore(args, r);
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(StateRecordError);
      expect((err as StateRecordError).code, what).toBe('RV_ERR_STATE_RECORD');
    }
    vif.resume();
    expect(answers(g).map((m) => [m.id, m.status])).toEqual([
      [1, VIF_OK],
      [2, VIF_OK],
    ]);
  });

  it('carries its QoS state on its core: the deficit and the credit left in the window', async () => {
    const g = guest();
    const img = image();
    const sched = new VifScheduler();
    cleanups.push(() => sched.stop());
    const env: VifEnv = { ...g.env, scheduler: sched };
    const args: ConstructorParameters<typeof BlkVif> = [4, env, img.disk, PART];
    const vif = new BlkVif(...args);
    sched.add(vif, { weight: 100, rate: { bytes: 3 * PAGE_SIZE, usec: 60_000_000 } });
    send(g, [write(g, 1, 10, 0, 1)]);
    vif.kick();
    expect(answers(g).map((m) => m.id)).toEqual([1]);
    await vif.quiesce();
    const rec = vif.save();
    expect((rec.state as { qos: unknown }).qos).toEqual({ deficit: 0, credit: 2 * PAGE_SIZE });
    sched.remove(vif.id);
    const fresh = BlkVif.restore(args, rec);
    sched.add(fresh, { weight: 100, rate: { bytes: 3 * PAGE_SIZE, usec: 60_000_000 } });
    // restore() ran before add(): the state is put on the entry once it exists.
    sched.restoreQos(fresh.id, (rec.state as { qos: { deficit: number; credit: number } }).qos);
    await fresh.attach();
    // Two more pages fit the credit left; the third waits for the next window (a minute away).
    send(g, [write(g, 2, 11, 8, 2), write(g, 3, 12, 16, 3), write(g, 4, 13, 24, 4)]);
    fresh.kick();
    await new Promise((r) => setImmediate(r));
    expect(answers(g).map((m) => m.id)).toEqual([2, 3]);
  });
});

describe('a network VIF saved in the middle of I/O', () => {
  it('restored: transmits go out once, posted buffers take frames once, a frame arriving while quiesced is missed', async () => {
    const g = guest();
    const wire: Uint8Array[] = [];
    const args: ConstructorParameters<typeof NetVif> = [2, g.env, (f) => wire.push(f)];
    const vif = new NetVif(...args);
    const frame = (n: number, len = 64) => Uint8Array.from({ length: len }, (_, i) => (i < 6 ? 0x02 : n + i) & 0xff);
    g.mem.page(20).set(frame(1));
    g.mem.page(21).set(frame(2));
    send(g, [
      vifMessage({ type: VIF_TX, id: 1, gfn: 20, offset: 0, len: 64 }),
      vifMessage({ type: VIF_RX_POST, id: 2, gfn: 30, offset: 0, len: 2048 }),
      vifMessage({ type: VIF_RX_POST, id: 3, gfn: 31, offset: 0, len: 2048 }),
      vifMessage({ type: VIF_RX_POST, id: 4, gfn: 32, offset: 0, len: 2048 }),
      vifMessage({ type: VIF_TX, id: 5, gfn: 21, offset: 0, len: 64 }),
    ]);
    vif.turn(budget(4)); // the second transmit is held for the next turn
    vif.receive(frame(7, 100));
    expect(wire).toHaveLength(1);
    await vif.quiesce();
    vif.receive(frame(8, 100));
    const rec = structuredClone(vif.save());
    expect((rec.state as { posted: unknown[] }).posted).toHaveLength(2);
    const fresh = NetVif.restore(args, rec);
    await fresh.attach();
    fresh.receive(frame(9, 90));
    fresh.receive(frame(10, 80));
    fresh.receive(frame(11, 70)); // no buffer left: missed
    expect(wire.map((f) => f[6])).toEqual([frame(1)[6], frame(2)[6]]);
    const got = answers(g);
    expect(got.map((m) => [m.type, m.id, m.status])).toEqual([
      [VIF_TX_DONE, 1, VIF_OK],
      [VIF_RX, 2, 100],
      [VIF_TX_DONE, 5, VIF_OK],
      [VIF_RX, 3, 90],
      [VIF_RX, 4, 80],
    ]);
    expect(g.mem.page(31).subarray(0, 90)).toEqual(frame(9, 90));
    expect(fresh.net).toEqual({ txFrames: 2, rxFrames: 3, rxMissed: 2 });
    expect(fresh.metrics()).toMatchObject({ ops: 5, errors: 0 });
  });

  it('refuses a posted buffer outside the guest\'s memory', async () => {
    const g = guest();
    const args: ConstructorParameters<typeof NetVif> = [2, g.env, () => {}];
    const vif = new NetVif(...args);
    send(g, [vifMessage({ type: VIF_RX_POST, id: 2, gfn: 30, offset: 0, len: 2048 })]);
    vif.kick();
    await vif.quiesce();
    const rec = vif.save();
    const st = rec.state as { posted: Uint8Array[] };
    const forged = st.posted[0].slice();
    new DataView(forged.buffer).setUint32(8, 100_000, true); // gfn
    expect(() => NetVif.restore(args, { ...rec, state: { ...st, posted: [forged] } })).toThrow(StateRecordError);
  });
});

describe('a camera VIF saved while streaming', () => {
  it('restored: the queued buffers are filled once each and the sequence goes on without a false gap', async () => {
    const g = guest();
    let clock = 1_000_000;
    const cam = { width: 64, height: 48, fps: 30, clockUs: () => (clock += 33_000) };
    const args: ConstructorParameters<typeof CamVif> = [3, g.env, cam];
    const vif = new CamVif(...args);
    send(g, [0, 1, 2, 3].map((i) => vifMessage({ type: VIF_CAM_BUF, id: i, gfn: 40 + i, len: 1 })));
    send(g, [vifMessage({ type: VIF_CAM_STREAM, len: 1 })]);
    vif.kick();
    expect(vif.camera.streaming).toBe(true);
    vif.capture();
    vif.capture();
    await vif.quiesce();
    expect(vif.camera.streaming).toBe(false); // a paused camera takes no frame times
    const rec = structuredClone(vif.save());
    expect((rec.state as { camera: { seq: number; streaming: boolean } }).camera).toMatchObject({ seq: 2, streaming: true });
    const fresh = CamVif.restore(args, rec);
    await fresh.attach();
    expect(fresh.camera.streaming).toBe(true);
    fresh.capture();
    fresh.capture();
    fresh.capture(); // no buffer left: dropped, seq 5 never announced
    await fresh.stop('test over');
    const frames = answers(g).filter((m) => m.type === VIF_CAM_FRAME);
    expect(frames.map((m) => [m.id, m.seq])).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
    for (const f of frames) expect(verifyCameraFrame(g.mem.page(40 + f.id).subarray(0, f.used), f.used, { width: 64, height: 48 })).toMatchObject({ ok: true, seq: f.seq });
    expect(fresh.camera.metrics).toMatchObject({ captured: 5, delivered: 4, dropped: 1 });
  });

  it('refuses a record whose camera counts do not add up, or a buffer over the queues', async () => {
    const g = guest();
    const args: ConstructorParameters<typeof CamVif> = [3, g.env, { width: 64, height: 48, fps: 30 }];
    const vif = new CamVif(...args);
    send(g, [vifMessage({ type: VIF_CAM_BUF, id: 0, gfn: 40, len: 1 })]);
    vif.kick();
    vif.capture();
    await vif.quiesce();
    const rec = vif.save();
    const st = rec.state as { camera: { metrics: object }; queued: Array<{ id: number; gfn: number; pages: number }> };
    expect(() => CamVif.restore(args, { ...rec, state: { ...st, camera: { ...st.camera, metrics: { ...st.camera.metrics, dropped: 5 } } } })).toThrow(StateRecordError);
    expect(() => CamVif.restore(args, { ...rec, state: { ...st, queued: [{ id: 1, gfn: 1, pages: 2 }] } })).toThrow(StateRecordError);
  });
});
