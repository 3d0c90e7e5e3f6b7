/**
 * blkfront save/restore: a real GuestKernel (its memory, grant table, event channels, store over
 * hypercalls), the ring in guest memory, and a scripted backend on a real BackRing serving a real
 * file. Saved with requests queued in the frontend, unconsumed on the ring, taken and unanswered
 * by the backend, and answered but not collected; restored into a fresh BlkFront, each request
 * completes exactly once, with the right data, through the handles `inFlight()` gives.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BLKIF_OP_READ, PAGE_SIZE, RingvisorError, SECTORS_PER_PAGE, StateRecordError, type DeviceStateRecord } from '@ringvisor/shared';
import { BlkFront } from './device.js';
import { BLKFRONT_RING_SIZE } from './state.js';
import { PvHost, ScriptedBlkBack } from '../test-support/pv-host.js';

const DEVID = 51712;
const BLOCKS = 96;

const initial = (sector: number) => (sector * 29 + 5) & 0xff;

function initialBlock(block: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  for (let s = 0; s < SECTORS_PER_PAGE; s++) p.fill(initial(block * SECTORS_PER_PAGE + s), s * 512, (s + 1) * 512);
  return p;
}

function pattern(block: number, tag: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) p[i] = (block * 11 + tag * 17 + i) & 0xff;
  return p;
}

interface Rig {
  host: PvHost;
  back: ScriptedBlkBack;
  front: BlkFront;
}
const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) await release(r);
});
async function release(r: Rig): Promise<void> {
  await r.front.abandon();
  r.host.stop();
  await r.back.close();
}

async function rig(): Promise<Rig> {
  const host = new PvHost();
  const { fdir, bdir } = await host.createDevice('vbd', DEVID);
  const { back, connected } = await ScriptedBlkBack.start(host, fdir, bdir, BLOCKS * SECTORS_PER_PAGE, initial);
  const front = new BlkFront(host.kernel, DEVID);
  await Promise.all([front.connect(), connected]);
  const r = { host, back, front };
  rigs.push(r);
  return r;
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await expect.poll(cond, { timeout: 20_000, message: what }).toBe(true);
}

/** Save the quiesced frontend, drop it, and restore a fresh one on the same kernel. */
async function restore(r: Rig): Promise<{ record: DeviceStateRecord; restored: BlkFront }> {
  const record = JSON.parse(JSON.stringify(r.front.save())) as DeviceStateRecord;
  await r.front.abandon();
  const restored = await BlkFront.restore([r.host.kernel, DEVID], record);
  r.front = restored;
  return { record, restored };
}

describe('blkfront save/restore', () => {
  it('completes queued, unconsumed, taken and answered-uncollected requests exactly once after a restore', async () => {
    const r = await rig();
    // Block 0 holds known data before anything is in flight.
    const w0 = r.front.write(0, pattern(0, 1));
    await until(async () => (await r.back.drain(), r.front.counters.responses === 1), 'the first write');
    await w0;

    // 41 requests: 32 fill the ring, 9 wait in the frontend.
    for (let b = 10; b < 30; b++) void r.front.write(b * 8, pattern(b, 2));
    for (let b = 40; b < 60; b++) void r.front.read(b * 8, new Uint8Array(PAGE_SIZE));
    void r.front.read(0, new Uint8Array(PAGE_SIZE));
    await r.front.quiesce();
    // Submitted while quiesced: queued privately.
    void r.front.write(60 * 8, pattern(60, 3));
    void r.front.read(61 * 8, new Uint8Array(PAGE_SIZE));
    expect(r.back.take(20)).toBe(20);
    expect(await r.back.complete(8)).toBe(8);
    r.back.push(); // answered, and the frontend (quiesced) does not collect
    expect(r.back.unconsumed).toBe(BLKFRONT_RING_SIZE - 20);

    const { record, restored } = await restore(r);
    const st = record.state as { inFlight: unknown[]; queued: unknown[]; ring: { reqProdPvt: number; rspCons: number } };
    expect(st.inFlight).toHaveLength(BLKFRONT_RING_SIZE);
    expect(st.queued).toHaveLength(11);

    const handles = restored.inFlight();
    expect(handles).toHaveLength(43);
    const completions = new Map<string, number>();
    const results = new Map<string, Uint8Array | undefined>();
    for (const h of handles)
      void h.done.then((data) => {
        completions.set(h.id, (completions.get(h.id) ?? 0) + 1);
        results.set(h.id, data);
      });
    restored.resume();
    await until(async () => {
      await r.back.drain();
      return completions.size === handles.length;
    }, 'every request to complete');

    for (const h of handles) {
      expect(completions.get(h.id), `completions of ${h.id}`).toBe(1);
      expect(r.back.executions.get(h.id), `executions of ${h.id}`).toBe(1);
      const block = h.sector / 8;
      if (h.operation === BLKIF_OP_READ) expect(results.get(h.id), `data of ${h.id}`).toEqual(block === 0 ? pattern(0, 1) : initialBlock(block));
      else expect(results.get(h.id)).toBeUndefined();
    }
    expect(restored.counters.unexpectedResponses).toBe(0);
    expect(restored.counters.responses).toBe(44);
    expect(restored.metrics().detail.inFlight).toBe(0);
    // What the restored frontend wrote is on the disk.
    const check = new Uint8Array(PAGE_SIZE);
    let readBack = false;
    void restored.read(60 * 8, check).then(() => (readBack = true));
    await until(async () => (await r.back.drain(), readBack), 'the read-back');
    expect(check).toEqual(pattern(60, 3));
  });

  it('refuses corrupted records with RV_ERR_STATE_RECORD and leaves the saved frontend untouched', async () => {
    const r = await rig();
    void r.front.write(0, pattern(0, 1));
    void r.front.write(8, pattern(1, 1));
    await r.front.quiesce();
    void r.front.write(16, pattern(2, 1));
    const good = r.front.save();
    type S = { ring: Record<string, number>; inFlight: Array<Record<string, unknown> & { segments: Array<Record<string, number>> }>; queued: Array<Record<string, unknown>>; freeFrames: number[] };
    const s = good.state as unknown as S & Record<string, unknown>;
    const inFlight0 = s.inFlight[0];
    const variants: Array<[string, unknown]> = [
      ['undefined', undefined],
      ['wrong type', { ...good, type: 'blkback' }],
      ['newer version', { ...good, version: 2 }],
      ['indices more than a ring apart', { ...good, state: { ...s, ring: { ...s.ring, reqProdPvt: s.ring.rspCons + BLKFRONT_RING_SIZE + 1 } } }],
      ['more in flight than outstanding', { ...good, state: { ...s, ring: { ...s.ring, reqProdPvt: s.ring.rspCons } } }],
      ['duplicate id', { ...good, state: { ...s, queued: [{ ...s.queued[0], id: inFlight0.id }] } }],
      ['id not below next id', { ...good, state: { ...s, nextId: '2' } }],
      ['id not a u64', { ...good, state: { ...s, inFlight: [{ ...inFlight0, id: '0x1' }, ...s.inFlight.slice(1)] } }],
      ['unknown operation', { ...good, state: { ...s, inFlight: [{ ...inFlight0, operation: 6 }, ...s.inFlight.slice(1)] } }],
      ['frame used twice', { ...good, state: { ...s, freeFrames: [inFlight0.segments[0].pfn] } }],
      ['grant used twice', { ...good, state: { ...s, inFlight: [{ ...inFlight0, segments: [{ ...inFlight0.segments[0], gref: s.ring.ref }] }, ...s.inFlight.slice(1)] } }],
      ['frame outside memory', { ...good, state: { ...s, freeFrames: [1 << 20] } }],
      ['past the end of the vbd', { ...good, state: { ...s, inFlight: [{ ...inFlight0, sector: BLOCKS * 8 }, ...s.inFlight.slice(1)] } }],
      ['other device', { ...good, state: { ...s, devid: 5 } }],
      ['missing field', { ...good, state: { ...s, ring: undefined } }],
    ];
    for (const [why, rec] of variants) {
      const e = await BlkFront.restore([r.host.kernel, DEVID], rec).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e, why).toBeInstanceOf(StateRecordError);
      expect((e as RingvisorError).code, why).toBe('RV_ERR_STATE_RECORD');
    }
    // The saved frontend resumes as if nothing happened: its three writes complete.
    r.front.resume();
    await until(async () => (await r.back.drain(), r.front.counters.responses === 3), 'the saved frontend to carry on');
    expect(r.front.counters.unexpectedResponses).toBe(0);
  });

  it('property: any interleaving of submit, back-end take / finish / push, with a save/restore anywhere, completes every request exactly once with the right data', async () => {
    type Step = { kind: 'submit'; write: boolean; block: number } | { kind: 'take'; n: number } | { kind: 'finish'; n: number } | { kind: 'push' } | { kind: 'quiesce' } | { kind: 'restore'; take: number; finish: number };
    const step = fc.oneof(
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('submit' as const), write: fc.boolean(), block: fc.integer({ min: 0, max: 11 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('take' as const), n: fc.integer({ min: 1, max: 8 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('finish' as const), n: fc.integer({ min: 1, max: 8 }) }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'push' as const }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), fc.nat(40), fc.nat(10), fc.nat(12), fc.nat(12), async (steps, at, gap, take, finish) => {
        const r = await rig();
        // Quiesced at one point, saved and restored some steps later: the back end may answer meanwhile (not collected).
        const plan: Step[] = [...steps];
        const q = Math.min(at, plan.length);
        plan.splice(q, 0, { kind: 'quiesce' });
        plan.splice(Math.min(q + 1 + gap, plan.length), 0, { kind: 'restore', take, finish });
        // Request k gets id k + 1 (one page each). A block with a request outstanding gets no other.
        const reqs: Array<{ id: string; block: number; write: boolean; expect?: Uint8Array; got?: Uint8Array; completions: number }> = [];
        const content = new Map<number, Uint8Array>();
        let tag = 0;
        const done = (q: (typeof reqs)[number], data?: Uint8Array) => {
          q.completions++;
          if (!q.write) q.got = data;
        };
        for (const s of plan) {
          if (s.kind === 'submit') {
            if (reqs.some((q) => q.block === s.block && q.completions === 0)) continue;
            const q: (typeof reqs)[number] = { id: String(reqs.length + 1), block: s.block, write: s.write, completions: 0 };
            reqs.push(q);
            if (s.write) {
              const data = pattern(s.block, ++tag);
              content.set(s.block, data);
              void r.front.write(s.block * 8, data).then(() => done(q), () => {});
            } else {
              q.expect = content.get(s.block) ?? initialBlock(s.block);
              const buf = new Uint8Array(PAGE_SIZE);
              void r.front.read(s.block * 8, buf).then(() => done(q, buf), () => {});
            }
          } else if (s.kind === 'take') r.back.take(s.n);
          else if (s.kind === 'finish') await r.back.complete(s.n);
          else if (s.kind === 'push') r.back.push();
          else if (s.kind === 'quiesce') await r.front.quiesce();
          else {
            // The back end moves on while the frontend is quiesced: its answers wait, uncollected.
            r.back.take(s.take);
            await r.back.complete(s.finish);
            r.back.push();
            const { restored } = await restore(r);
            for (const h of restored.inFlight()) {
              const q = reqs.find((x) => x.id === h.id)!;
              void h.done.then((data) => done(q, data));
            }
            restored.resume();
          }
          await new Promise((res) => setImmediate(res));
        }
        await until(async () => {
          await r.back.drain();
          return reqs.every((q) => q.completions > 0);
        }, 'every request to complete');
        for (const q of reqs) {
          expect(q.completions, `completions of ${q.id}`).toBe(1);
          expect(r.back.executions.get(q.id), `executions of ${q.id}`).toBe(1);
          if (!q.write) expect(q.got, `data of ${q.id}`).toEqual(q.expect);
        }
        expect(r.front.counters.unexpectedResponses).toBe(0);
        rigs.splice(rigs.indexOf(r), 1);
        await release(r);
      }),
      { numRuns: 20 },
    );
  });
});
