/**
 * Save and restore of SR-IOV virtual functions (Device: quiesce, save, static restore) in the
 * middle of I/O: requests posted and not fetched, fetched and not executed, answered and not yet
 * collected by the driver. The function is restored into a fresh instance built with the same
 * constructor arguments (the IOMMU, the owner's memory, the disk image and the LAN are the
 * environment), and every request completes exactly once, with the right data on a real image
 * file. A fast-check property puts the save/restore points anywhere in a random run. Corrupt
 * records are refused with RV_ERR_STATE_RECORD and the saved function is left as it was.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  GuestMemory,
  HWBLK_OP_WRITE,
  HW_STATUS_OK,
  PAGE_SIZE,
  SECTOR_SIZE,
  StateRecordError,
  VF_REG,
  VF_REG_COUNT,
  VfRegisters,
  type DeviceStateRecord,
  type HwStatusResponse,
} from '@ringvisor/shared';
import { DmaEngine } from '../dma/dma-engine.js';
import { IoPageTable, Iommu, requesterId } from '../iommu/iommu.js';
import { PhysicalDisk } from '../devices/disk/device.js';
import { LanSegment } from '../lan/segment.js';
import { ethFrame, quietLogger, tempDir } from '../test-support/harness.js';
import { VfDriver } from '../test-support/vf-driver.js';
import { DiskVf } from './disk-vf.js';
import { NicVf } from './nic-vf.js';
import type { FunctionEnv, VirtualFunction } from './function.js';

const DOMID = 5;
const FRAMES = 256;
const PART = { start: 256, sectors: 512 };
const VF_MAC = '02:00:00:00:0a:01';
const PEER = '02:00:00:00:99:99';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function pattern(seed: number): Uint8Array {
  return Uint8Array.from({ length: PAGE_SIZE }, (_, i) => (i * 31 + seed * 17 + (i >> 9)) & 0xff);
}

/** The environment of one function: the owner's memory behind an IOMMU context, a disk image, a LAN. */
function environment(kind: 'disk' | 'nic') {
  const tmp = tempDir('hwsim-vf-persist-');
  const disk = PhysicalDisk.open({ path: join(tmp.dir, 'disk.img'), sizeBytes: 1 << 20 });
  cleanups.push(() => {
    disk.close();
    tmp.remove();
  });
  const mem = GuestMemory.allocate(DOMID, FRAMES);
  const dma = new DmaEngine();
  dma.attachMemory(DOMID, mem);
  const iommu = new Iommu();
  const rid = requesterId(0, kind === 'disk' ? 4 : 3, 1);
  const table = new IoPageTable(DOMID, FRAMES);
  for (let pfn = 0; pfn < FRAMES; pfn++) table.map(pfn, { frame: { domid: DOMID, pfn }, read: true, write: true });
  iommu.setContext(rid, { domid: DOMID, table });
  iommu.setInterruptEntry(rid, { sourceRid: rid, domid: DOMID, port: 9 });
  const irqs = { count: 0 };
  const env: FunctionEnv = { dma, iommu, deliverMsi: () => irqs.count++, logger: quietLogger(), host: 'h1' };
  const bar = new SharedArrayBuffer(PAGE_SIZE);
  const lan = new LanSegment();
  return { disk, mem, env, rid, bar, irqs, lan, path: disk.path };
}

/** A disk function assigned to DOMID with its driver's queue enabled; `current` follows restores. */
function diskRig() {
  const e = environment('disk');
  const args: ConstructorParameters<typeof DiskVf> = [1, e.rid, e.env, e.disk, undefined, e.bar];
  const first = new DiskVf(...args);
  first.setPartition(PART.start, PART.sectors);
  first.assign(DOMID, e.rid);
  const rig = { ...e, args, current: first as DiskVf };
  const driver = new VfDriver({ mem: e.mem, bar: e.bar, doorbell: () => rig.current.doorbell(), idBase: 100 });
  driver.enable();
  return { ...rig, driver, rig };
}

/** Put a write on the ring and publish it without ringing (posted, not fetched). */
function postWrite(driver: VfDriver, sector: number, data: Uint8Array): number {
  const pfn = driver.allocPage();
  driver.mem.page(pfn).set(data);
  const id = driver.id();
  driver.blk!.putRequest({ op: HWBLK_OP_WRITE, id, sector: BigInt(sector), segments: [{ domid: 0, pfn, firstSect: 0, lastSect: 7 }] });
  driver.blk!.pushRequests();
  return id;
}

function imageAt(path: string, sector: number): Uint8Array {
  return new Uint8Array(readFileSync(path).subarray((PART.start + sector) * SECTOR_SIZE, (PART.start + sector) * SECTOR_SIZE + PAGE_SIZE));
}

async function saveAndRestore<F extends VirtualFunction>(fn: F, restore: (rec: DeviceStateRecord) => F): Promise<F> {
  await fn.quiesce();
  // A record is plain data: it crosses a structured clone (a worker, msgpack) unchanged.
  const rec = structuredClone(fn.save());
  const fresh = restore(rec);
  await fresh.attach();
  return fresh;
}

describe('a disk virtual function saved in the middle of I/O', () => {
  it('restored into a fresh function, completes every request exactly once with the right data', async () => {
    const { driver, rig, path } = diskRig();
    // (1) answered, not collected: W1 runs to completion, the driver does not look.
    const w1 = driver.write(0, pattern(1)).id;
    for (let i = 0; i < 3 && rig.current.io.writes < 1; i++) await turn();
    expect(rig.current.io.writes).toBe(1);
    // (2) fetched, not executed: W2 then W3 on the same sector (a W2 run again after W3 would show).
    let w2 = 0;
    let w3 = 0;
    driver.batch(() => {
      w2 = driver.write(8, pattern(2)).id;
      w3 = driver.write(8, pattern(3)).id;
    });
    expect(rig.current.io.queued).toBe(2);
    // (3) posted, not fetched: on the ring with no doorbell.
    const w4 = postWrite(driver, 16, pattern(4));
    const old = rig.current;
    await old.quiesce();
    // A doorbell while quiesced is remembered, not served.
    const w5 = driver.write(24, pattern(5)).id;
    const rec = structuredClone(old.save());
    expect(rec).toMatchObject({ format: 'ringvisor/device-state', type: 'disk-vf', version: 1, instance: 'hw/00:04.1' });
    expect((rec.state as { commands: unknown[] }).commands).toHaveLength(2);
    expect(old.io.writes).toBe(1);

    rig.current = DiskVf.restore(rig.args, rec);
    expect(rig.current.identity).toEqual({ kind: 'blk', mode: 'direct', side: 'hardware', type: 'disk-vf', devid: 1 });
    await rig.current.attach();
    const got: HwStatusResponse[] = [];
    for (let i = 0; i < 50 && got.length < 5; i++) {
      got.push(...driver.blkResponses());
      await turn();
    }
    got.push(...driver.blkResponses());
    expect(got.map((r) => r.id).sort((a, b) => a - b)).toEqual([w1, w2, w3, w4, w5].sort((a, b) => a - b));
    expect(got.every((r) => r.status === HW_STATUS_OK)).toBe(true);
    expect(rig.current.io.writes).toBe(5);
    expect(old.io.writes).toBe(1); // the saved function never moved again
    expect(imageAt(path, 0)).toEqual(pattern(1));
    expect(imageAt(path, 8)).toEqual(pattern(3));
    expect(imageAt(path, 16)).toEqual(pattern(4));
    expect(imageAt(path, 24)).toEqual(pattern(5));
    // And reads through the restored function see the same bytes.
    const r = driver.read(8);
    for (let i = 0; i < 10 && rig.current.io.reads < 1; i++) await turn();
    expect(driver.blkResponses()).toEqual([{ id: r.id, status: HW_STATUS_OK }]);
    expect(driver.pageBytes(r.pfns)).toEqual(pattern(3));
    expect(rig.current.metrics()).toMatchObject({ ops: 6, bytes: 6 * PAGE_SIZE, errors: 0 });
  });

  it('property: save/restore at random points of a random run — every write completes once, the image is the last write of each sector', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant('write' as const), sector: fc.integer({ min: 0, max: 3 }) }),
            fc.record({ op: fc.constant('post' as const), sector: fc.integer({ min: 0, max: 3 }) }),
            fc.constant({ op: 'turn' as const }),
            fc.constant({ op: 'collect' as const }),
            fc.constant({ op: 'save' as const }),
          ),
          { minLength: 1, maxLength: 40 },
        ),
        async (steps) => {
          const { driver, rig, path } = diskRig();
          const submitted: number[] = [];
          const lastBySector = new Map<number, number>();
          const answered = new Map<number, number>();
          const collect = () => {
            for (const r of driver.blkResponses()) {
              expect(r.status).toBe(HW_STATUS_OK);
              answered.set(r.id, (answered.get(r.id) ?? 0) + 1);
            }
          };
          let seed = 10;
          for (const s of steps) {
            if ((s.op === 'write' || s.op === 'post') && driver.blk!.freeRequests() > 0 && driver.framesLeft > 1) {
              seed++;
              const id = s.op === 'write' ? driver.write(s.sector * 8, pattern(seed)).id : postWrite(driver, s.sector * 8, pattern(seed));
              submitted.push(id);
              lastBySector.set(s.sector, seed);
            } else if (s.op === 'turn') await turn();
            else if (s.op === 'collect') collect();
            else if (s.op === 'save') rig.current = await saveAndRestore(rig.current, (rec) => DiskVf.restore(rig.args, rec));
          }
          // Whatever was posted without a doorbell is picked up by the next one.
          rig.current.doorbell();
          for (let i = 0; i < 100 && answered.size < submitted.length; i++) {
            collect();
            await turn();
          }
          collect();
          expect([...answered.keys()].sort((a, b) => a - b)).toEqual([...submitted].sort((a, b) => a - b));
          expect([...answered.values()].every((n) => n === 1)).toBe(true);
          expect(rig.current.io.writes).toBe(submitted.length);
          for (const [sector, s] of lastBySector) expect(imageAt(path, sector * 8)).toEqual(pattern(s));
          for (const c of cleanups.splice(0)) c();
        },
      ),
      { numRuns: 40 },
    );
  });

  it('refuses corrupt or foreign records with RV_ERR_STATE_RECORD and leaves the saved function and its page as they were', async () => {
    const { driver, rig } = diskRig();
    driver.write(0, pattern(1));
    driver.write(8, pattern(2));
    const old = rig.current;
    await old.quiesce();
    const rec = old.save();
    const page = new VfRegisters(new Uint8Array(rig.bar));
    const regsBefore = Array.from({ length: VF_REG_COUNT }, (_, r) => page.read(r));
    const st = rec.state as Record<string, unknown> & { queue: Record<string, number>; commands: Uint8Array[]; registers: number[] };
    const bad: Array<[string, unknown]> = [
      ['not a record', { ...rec, format: 'x' }],
      ['another type', { ...rec, type: 'nic-vf' }],
      ['a newer version', { ...rec, version: 2 }],
      ['a command dropped', { ...rec, state: { ...st, commands: st.commands.slice(1) } }],
      ['a command of the wrong size', { ...rec, state: { ...st, commands: [new Uint8Array(3), st.commands[1]] } }],
      ['indices that hold more than the ring', { ...rec, state: { ...st, queue: { ...st.queue, reqCons: st.queue.rspProdPvt + 500 } } }],
      ['GEN that is not the generation', { ...rec, state: { ...st, registers: st.registers.map((v, r) => (r === VF_REG.GEN ? v + 1 : v)) } }],
      ['enabled with no owner', { ...rec, state: { ...st, owner: null, vector: -1 } }],
      ['a queue elsewhere than Q0', { ...rec, state: { ...st, queue: { ...st.queue, iovaPfn: st.queue.iovaPfn + 1 } } }],
      // Environment checks: the ring's shared indices are not what the record published.
      ['responses the ring never saw', { ...rec, state: { ...st, queue: { ...st.queue, rspProdPvt: st.queue.rspProdPvt + 1, reqCons: st.queue.reqCons + 1 } } }],
      ['a queue outside the owner\'s I/O space', { ...rec, state: { ...st, queue: { ...st.queue, iovaPfn: FRAMES + 10 }, registers: st.registers.map((v, r) => (r === VF_REG.Q0 ? FRAMES + 10 : v)) } }],
      ['a partition off the disk', { ...rec, state: { ...st, partition: { start: 4000, sectors: PART.sectors } } }],
      ['SECTORS that are not the partition\'s', { ...rec, state: { ...st, registers: st.registers.map((v, r) => (r === VF_REG.SECTORS_LO ? v + 1 : v)) } }],
      ['another function', { ...rec, state: { ...st, registers: st.registers.map((v, r) => (r === VF_REG.ID ? (v & 0xffff) | (requesterId(0, 4, 2) << 16) : v)) } }],
    ];
    for (const [what, r] of bad) {
      let err: unknown;
      try {
        DiskVf.restore(rig.args, r);
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(StateRecordError);
      expect((err as StateRecordError).code, what).toBe('RV_ERR_STATE_RECORD');
    }
    expect(Array.from({ length: VF_REG_COUNT }, (_, r) => page.read(r))).toEqual(regsBefore);
    // The saved function carries on as if nothing happened.
    old.resume();
    for (let i = 0; i < 10 && old.io.writes < 2; i++) await turn();
    expect(driver.blkResponses().map((r) => r.status)).toEqual([HW_STATUS_OK, HW_STATUS_OK]);
  });
});

describe('a NIC virtual function saved in the middle of I/O', () => {
  it('restored into a fresh function: frames posted for transmit go out once, prefetched rx buffers take frames once', async () => {
    const e = environment('nic');
    const port = e.lan.attach('h1:nic0vf1');
    const probe = e.lan.attach('probe');
    const heard: Uint8Array[] = [];
    probe.onFrame((f) => heard.push(f));
    const args: ConstructorParameters<typeof NicVf> = [1, e.rid, e.env, port, () => true, e.bar];
    const first = new NicVf(...args);
    first.setMac(VF_MAC);
    first.assign(DOMID, e.rid);
    let current = first;
    const driver = new VfDriver({ mem: e.mem, bar: e.bar, doorbell: () => current.doorbell(), idBase: 1 });
    driver.enable();
    // rx buffers prefetched by the device (the doorbell of the post takes them).
    const bufs = driver.postRx(4);
    expect(current.io.rxCached).toBe(4);
    // One frame received before the save and not collected by the driver.
    probe.send(ethFrame(VF_MAC, PEER, 100));
    expect(current.io.rxPackets).toBe(1);
    // A transmit answered and not collected; one posted without a doorbell.
    const t1 = driver.transmit(ethFrame(PEER, VF_MAC, 60));
    const pfn = driver.allocPage();
    const f2 = ethFrame(PEER, VF_MAC, 61);
    e.mem.page(pfn).set(f2);
    const t2 = driver.id();
    driver.tx!.putRequest({ domid: 0, id: t2, pfn, offset: 0, len: f2.byteLength });
    driver.tx!.pushRequests();
    expect(heard).toHaveLength(1);

    await current.quiesce();
    // The wire goes on while the function is paused: that frame is missed, not held.
    probe.send(ethFrame(VF_MAC, PEER, 101));
    const rec = structuredClone(current.save());
    expect((rec.state as { rxCache: unknown[] }).rxCache).toHaveLength(3);
    const old = current;
    current = NicVf.restore(args, rec);
    await current.attach();
    old.io.rxPackets = -1000; // anything the old function still did would show
    current.doorbell();
    for (let i = 0; i < 10 && heard.length < 2; i++) await turn();
    expect(heard.map((f) => f.byteLength)).toEqual([74, 75]);
    for (let n = 0; n < 3; n++) probe.send(ethFrame(VF_MAC, PEER, 110 + n));
    expect(current.io.rxPackets).toBe(4);
    expect(old.io.rxPackets).toBe(-1000);
    const rx = driver.rxResponses();
    expect(rx.map((r) => r.id)).toEqual(bufs.map((b) => b.id));
    expect(rx.map((r) => driver.received(r).byteLength)).toEqual([114, 124, 125, 126]);
    expect(driver.txResponses().map((r) => [r.id, r.status])).toEqual([
      [t1, HW_STATUS_OK],
      [t2, HW_STATUS_OK],
    ]);
    expect(current.metrics()).toMatchObject({ ops: 6, errors: 0 });
    // Corrupt records: refused before anything is built.
    const st = rec.state as { mac: string; rxCache: Uint8Array[]; tx: Record<string, number> };
    for (const r of [
      { ...rec, state: { ...st, mac: '02:00:00:00:0a:02' } },
      { ...rec, state: { ...st, rxCache: st.rxCache.slice(1) } },
      { ...rec, state: { ...st, tx: { ...st.tx, reqCons: st.tx.reqCons + 1 } } },
    ])
      expect(() => NicVf.restore(args, r)).toThrow(StateRecordError);
  });
});
