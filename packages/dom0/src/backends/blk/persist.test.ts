/**
 * blkback save/restore: a real hypervisor core, the frontend's ring in guest memory, real grants
 * and event channels, and a real disk file. Saved in the middle of I/O — requests on the ring
 * unconsumed, requests taken and held by the disk, responses published and not collected — and
 * restored into a fresh BlkBackend, every request completes exactly once with the right data.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_OKAY, PAGE_SIZE, RingvisorError, SECTORS_PER_PAGE, StateRecordError, type DeviceStateRecord } from '@ringvisor/shared';
import { BlkBackend } from './device.js';
import { BLKBACK_RING_SIZE } from './state.js';
import { FileDisk, PvTestbed, ScriptedBlkFront, initialByte, testLog, type ScriptedBlkRequest } from '../test-support/pv-guest.js';

const BLOCKS = 64;
const REGION = { start: 0, sectors: BLOCKS * SECTORS_PER_PAGE };

interface Rig {
  tb: PvTestbed;
  disk: FileDisk;
  back: BlkBackend;
  front: ScriptedBlkFront;
  args: ConstructorParameters<typeof BlkBackend>;
}

const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) {
    r.disk.autoRelease = true;
    await r.disk.releaseAll();
    r.tb.stop();
    await r.disk.close();
  }
});

async function rig(): Promise<Rig> {
  const tb = new PvTestbed();
  const disk = await FileDisk.create(tb.hv, REGION.sectors);
  const { fdir, bdir } = await tb.createDevice('vbd', 51712);
  const args: ConstructorParameters<typeof BlkBackend> = [tb.hv, disk, tb.domid, 51712, REGION, testLog];
  const back = new BlkBackend(...args);
  await back.start();
  const front = await ScriptedBlkFront.connect(tb, fdir, bdir);
  const r = { tb, disk, back, front, args };
  rigs.push(r);
  return r;
}

/** A page whose bytes say which block and which write they are. */
function pattern(block: number, tag: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) p[i] = (block * 7 + tag * 13 + i) & 0xff;
  return p;
}

function initialBlock(block: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  for (let s = 0; s < SECTORS_PER_PAGE; s++) p.fill(initialByte(block * SECTORS_PER_PAGE + s), s * 512, (s + 1) * 512);
  return p;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  await expect.poll(cond, { timeout: 20_000, message: what }).toBe(true);
}

/** Quiesce (letting the disk finish what it holds), save, drop the old instance, restore a fresh one. */
async function saveAndRestore(r: Rig): Promise<{ record: DeviceStateRecord }> {
  const quiesced = r.back.quiesce();
  await r.disk.releaseAll();
  await quiesced;
  const record = JSON.parse(JSON.stringify(r.back.save())) as DeviceStateRecord; // plain data: it survives JSON
  await r.back.abandon();
  r.back = await BlkBackend.restore(r.args, record);
  return { record };
}

describe('blkback save/restore', () => {
  it('carries requests unconsumed, taken-and-held and answered-uncollected across a restore, each executed and answered once', async () => {
    const r = await rig();
    // C: answered by the backend, not collected by the frontend.
    r.disk.autoRelease = true;
    const answered = [0, 1, 2].map((b) => r.front.submit(BLKIF_OP_WRITE, b * 8, pattern(b, 1)));
    await until(() => r.front.published === 3, 'the first writes to be answered');
    r.disk.autoRelease = false;
    // A: taken by the backend, held by the disk (reads of fresh blocks and writes).
    const held = [...[10, 11].map((b) => r.front.submit(BLKIF_OP_WRITE, b * 8, pattern(b, 2))), ...[20, 21].map((b) => r.front.submit(BLKIF_OP_READ, b * 8))];
    await until(() => r.disk.held.length === 4, 'the disk to hold four requests');
    // B: on the ring, not consumed (the backend is paused, as a wedged one would be).
    r.back.pause();
    const unconsumed = [...[30, 31].map((b) => r.front.submit(BLKIF_OP_WRITE, b * 8, pattern(b, 3))), ...[0, 40].map((b) => r.front.submit(BLKIF_OP_READ, b * 8))];
    const ring = r.back.rings()[0].ring;
    expect(ring.page.load(0) - ring.reqCons).toBe(4);

    const { record } = await saveAndRestore(r);
    expect(record.type).toBe('blkback');
    expect(record.version).toBe(1);
    const st = record.state as { ring: { reqCons: number; rspProdPvt: number; rspProd: number }; unpushed: unknown[] };
    expect(st.unpushed).toHaveLength(4); // the held requests' responses, written while quiesced
    expect((st.ring.rspProdPvt - st.ring.rspProd) >>> 0).toBe(4);

    r.disk.autoRelease = true;
    r.back.resume();
    const all = [...answered, ...held, ...unconsumed];
    await until(() => {
      r.front.collect();
      return all.every((q) => q.responses > 0);
    }, 'every request to be answered');
    // Every response the backend ever wrote is counted by its ring index: one per request, no more.
    expect(r.back.rings()[0].ring.rspProdPvt).toBe(all.length);
    expect(r.front.ring.rspCons).toBe(all.length);
    for (const q of all) {
      expect(q.responses, `request ${q.id}`).toBe(1);
      expect(q.status).toBe(BLKIF_RSP_OKAY);
    }
    expect(r.front.unexpected).toBe(0);
    // Executed once each at the disk.
    for (const b of [0, 1, 2, 10, 11, 30, 31]) expect(r.disk.writesAt.get(b * 8), `write of block ${b}`).toBe(1);
    for (const b of [20, 21, 0, 40]) expect(r.disk.readsAt.get(b * 8), `read of block ${b}`).toBe(1);
    expect(r.disk.executed).toBe(all.length);
    // Right data: fresh blocks read their initial bytes, block 0 what was written before.
    expect(held[2].data).toEqual(initialBlock(20));
    expect(held[3].data).toEqual(initialBlock(21));
    expect(unconsumed[2].data).toEqual(pattern(0, 1));
    expect(unconsumed[3].data).toEqual(initialBlock(40));
    expect(r.back.metrics().ops).toBe(all.length); // counters carried over
  });

  it('refuses corrupted records with RV_ERR_STATE_RECORD and leaves the saved backend untouched', async () => {
    const r = await rig();
    r.disk.autoRelease = true;
    r.front.submit(BLKIF_OP_WRITE, 0, pattern(0, 1));
    await until(() => r.front.published === 1, 'an answer');
    await r.back.quiesce();
    const good = r.back.save();
    const s = good.state as Record<string, unknown> & { ring: Record<string, number> };
    const variants: Array<[string, unknown]> = [
      ['not an object', 'blkback'],
      ['wrong type', { ...good, type: 'blkfront' }],
      ['newer version', { ...good, version: 2 }],
      ['wrong format', { ...good, format: 'qemu' }],
      ['req_cons ahead of rsp_prod_pvt', { ...good, state: { ...s, ring: { ...s.ring, reqCons: s.ring.reqCons + 1 } } }],
      ['rsp_prod_pvt a ring ahead', { ...good, state: { ...s, ring: { ...s.ring, reqCons: s.ring.rspProd + BLKBACK_RING_SIZE + 1, rspProdPvt: s.ring.rspProd + BLKBACK_RING_SIZE + 1 } } }],
      ['unpushed count mismatch', { ...good, state: { ...s, unpushed: [{ id: '1', operation: 1, status: 0 }] } }],
      ['negative port', { ...good, state: { ...s, port: -1 } }],
      ['extra field', { ...good, state: { ...s, extra: 1 } }],
      ['id not a u64', { ...good, state: { ...s, ring: { ...s.ring, rspProdPvt: s.ring.rspProd + 1, reqCons: s.ring.rspProd + 1 }, unpushed: [{ id: '-1', operation: 1, status: 0 }] } }],
      ['other vbd', { ...good, state: { ...s, devid: 1 } }],
      ['other size', { ...good, state: { ...s, sectors: 8 } }],
    ];
    const mapsBefore = r.tb.hv.grants.mappingsHeldBy(0);
    for (const [why, rec] of variants) {
      const e = await BlkBackend.restore(r.args, rec).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e, why).toBeInstanceOf(StateRecordError);
      expect((e as RingvisorError).code, why).toBe('RV_ERR_STATE_RECORD');
    }
    expect(r.tb.hv.grants.mappingsHeldBy(0), 'no refused restore left a mapping').toBe(mapsBefore);
    // The saved backend carries on as if nothing happened.
    r.back.resume();
    const q = r.front.submit(BLKIF_OP_READ, 0);
    await until(() => {
      r.front.collect();
      return q.responses === 1;
    }, 'the original backend to answer');
    expect(q.data).toEqual(pattern(0, 1));
  });

  it('property: any interleaving of submit, back-end pass, disk completion and front-end collect, with a save/restore anywhere, completes every request exactly once with the right data', async () => {
    type Step = { kind: 'submit'; write: boolean; block: number } | { kind: 'back' } | { kind: 'disk' } | { kind: 'collect' } | { kind: 'restore' };
    const step = fc.oneof(
      fc.record({ kind: fc.constant('submit' as const), write: fc.boolean(), block: fc.integer({ min: 0, max: 15 }) }),
      fc.constant({ kind: 'back' as const }),
      fc.constant({ kind: 'disk' as const }),
      fc.constant({ kind: 'collect' as const }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), fc.nat(30), async (steps, at) => {
        const r = await rig();
        r.back.pause();
        const plan: Step[] = [...steps];
        plan.splice(Math.min(at, plan.length), 0, { kind: 'restore' });
        // Model: a block's content once its write was submitted; a block with a request outstanding gets no other.
        const content = new Map<number, Uint8Array>();
        const outstanding = new Map<bigint, number>();
        const reads: Array<{ q: ScriptedBlkRequest; expect: Uint8Array }> = [];
        const writesPerBlock = new Map<number, number>();
        const all: ScriptedBlkRequest[] = [];
        let tag = 0;
        const settle = () => {
          r.front.collect();
          for (const q of all) if (q.responses > 0) outstanding.delete(q.id);
        };
        const backPass = async () => {
          const ring = r.back.rings()[0].ring;
          r.back.resume();
          await until(() => ring.page.load(0) === ring.reqCons, 'the backend to take what is on the ring');
          r.back.pause();
        };
        for (const s of plan) {
          if (s.kind === 'submit') {
            if (r.front.room === 0 || [...outstanding.values()].includes(s.block)) continue;
            let q: ScriptedBlkRequest;
            if (s.write) {
              const data = pattern(s.block, ++tag);
              q = r.front.submit(BLKIF_OP_WRITE, s.block * 8, data);
              content.set(s.block, data);
              writesPerBlock.set(s.block, (writesPerBlock.get(s.block) ?? 0) + 1);
            } else {
              q = r.front.submit(BLKIF_OP_READ, s.block * 8);
              reads.push({ q, expect: content.get(s.block) ?? initialBlock(s.block) });
            }
            outstanding.set(q.id, s.block);
            all.push(q);
          } else if (s.kind === 'back') await backPass();
          else if (s.kind === 'disk') await r.disk.releaseOne();
          else if (s.kind === 'collect') settle();
          else {
            await saveAndRestore(r);
            r.back.resume();
            r.back.pause();
          }
        }
        // Drain: let everything run.
        r.disk.autoRelease = true;
        await r.disk.releaseAll();
        r.back.resume();
        await until(() => {
          settle();
          return all.every((q) => q.responses > 0);
        }, 'every request to be answered');
        settle();
        expect(r.back.rings()[0].ring.rspProdPvt, 'responses written').toBe(all.length);
        for (const q of all) expect(q.responses, `request ${q.id}`).toBe(1);
        expect(r.front.unexpected).toBe(0);
        expect(r.disk.executed).toBe(all.length);
        for (const { q, expect: want } of reads) expect(q.data).toEqual(want);
        for (const [b, n] of writesPerBlock) expect(r.disk.writesAt.get(b * 8), `writes of block ${b}`).toBe(n);
        // Done with this run: release it now (afterEach handles failures).
        rigs.splice(rigs.indexOf(r), 1);
        r.tb.stop();
        await r.disk.close();
      }),
      { numRuns: 25 },
    );
  });
});
