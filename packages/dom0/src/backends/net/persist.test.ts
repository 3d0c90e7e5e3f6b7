/**
 * netback save/restore: a real hypervisor core, the frontend's tx and rx rings in guest memory,
 * real grant copies and event channels, dom0's software bridge. Saved with tx frames unconsumed on
 * the ring, one held for credit, answers not collected, and frames queued for the guest with no
 * buffer posted; restored into a fresh NetBackend, every frame crosses exactly once, intact.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FrameAllocator, RingvisorError, StateRecordError, type DeviceStateRecord } from '@ringvisor/shared';
import { NetBackend } from './device.js';
import { SoftwareBridge, type BridgePort } from './bridge.js';
import { SkbPool, type Skb } from '../../physdev/skb.js';
import { PvTestbed, ScriptedNetFront, testLog } from '../test-support/pv-guest.js';

const MAC = '00:16:3e:00:00:01';

interface Rig {
  tb: PvTestbed;
  pool: SkbPool;
  bridge: SoftwareBridge;
  back: NetBackend;
  front: ScriptedNetFront;
  args: ConstructorParameters<typeof NetBackend>;
  /** Frames that left the vif towards the world, by tag. */
  uplinkTags: Map<number, number>;
  uplink: BridgePort;
  bdir: string;
}

const rigs: Rig[] = [];
afterEach(() => {
  for (const r of rigs.splice(0)) r.tb.stop();
});

async function rig(rate?: string): Promise<Rig> {
  const tb = new PvTestbed();
  const pool = new SkbPool(tb.hv.dom0.memory, new FrameAllocator(tb.hv.dom0.memory), 128);
  const bridge = new SoftwareBridge(pool);
  const uplinkTags = new Map<number, number>();
  const uplink: BridgePort = {
    name: 'uplink',
    deliver(skb: Skb) {
      const tag = pool.data(skb)[20];
      uplinkTags.set(tag, (uplinkTags.get(tag) ?? 0) + 1);
      pool.put(skb);
    },
  };
  bridge.add(uplink);
  const { fdir, bdir } = await tb.createDevice('vif', 0, { mac: MAC, ...(rate ? { rate } : {}) });
  const args: ConstructorParameters<typeof NetBackend> = [tb.hv, bridge, tb.domid, 0, testLog];
  const back = new NetBackend(...args);
  await back.start();
  const front = await ScriptedNetFront.connect(tb, fdir, bdir);
  const r = { tb, pool, bridge, back, front, args, uplinkTags, uplink, bdir };
  rigs.push(r);
  return r;
}

/** A 60-byte broadcast frame carrying `tag` at byte 20 and a body derived from it. */
function frame(tag: number, src: number): Uint8Array {
  const f = new Uint8Array(60);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0);
  f.set([0, 0x16, 0x3e, 0, 1, src], 6);
  for (let i = 21; i < 60; i++) f[i] = (tag * 31 + i) & 0xff;
  f[20] = tag;
  return f;
}

/** A frame from the world for the guest, entering the bridge on the uplink. */
function fromWorld(r: Rig, tag: number): void {
  const skb = r.pool.alloc()!;
  skb.len = 60;
  r.pool.data(skb).set(frame(tag, 9));
  r.bridge.input(r.uplink, skb);
}

async function until(cond: () => boolean, what: string): Promise<void> {
  await expect.poll(cond, { timeout: 20_000, message: what }).toBe(true);
}

async function saveAndRestore(r: Rig, beforeRestore?: () => Promise<void>): Promise<DeviceStateRecord> {
  await r.back.quiesce();
  const record = r.back.save();
  await r.back.abandon();
  await beforeRestore?.();
  r.back = await NetBackend.restore(r.args, record);
  return record;
}

function rxTags(r: Rig): number[] {
  return r.front.received.map((x) => x.frame[20]);
}

describe('netback save/restore', () => {
  it('carries tx unconsumed and held for credit, rx queued without buffers, and answers not collected across a restore', async () => {
    // 100 bytes a minute: the first 60-byte frame goes, the second waits for credit.
    const r = await rig('100,60000000');
    r.front.postRx(2);
    r.front.send(1, frame(1, 1));
    r.front.send(2, frame(2, 1));
    await until(() => r.back.counters.throttled > 0 && r.uplinkTags.get(1) === 1, 'one frame out and one held for credit');
    for (const t of [101, 102, 103, 104, 105]) fromWorld(r, t);
    await until(() => r.back.rxQueued === 3, 'two frames in buffers, three queued');
    r.back.pause();
    r.front.send(3, frame(3, 1));
    r.front.send(4, frame(4, 1));

    const record = await saveAndRestore(r, () => r.tb.hv.dom0Store.rm(`${r.bdir}/rate`));
    const st = record.state as { stalledTx: { id: number } | null; rxQueue: Uint8Array[] };
    expect(st.stalledTx?.id).toBe(2);
    expect(st.rxQueue.map((f) => f[20])).toEqual([103, 104, 105]);

    r.back.resume();
    r.front.postRx(3);
    await until(() => {
      r.front.collect();
      return r.front.txAnswers.size === 4 && r.front.received.length === 5;
    }, 'every frame to cross');
    for (const id of [1, 2, 3, 4]) {
      expect(r.front.txAnswers.get(id), `tx ${id} answered`).toBe(1);
      expect(r.uplinkTags.get(id), `tx ${id} on the wire`).toBe(1);
    }
    expect(rxTags(r)).toEqual([101, 102, 103, 104, 105]);
    for (const { frame: f } of r.front.received) expect(f).toEqual(frame(f[20], 9));
    expect(r.back.rings().map((x) => x.ring.rspProdPvt)).toEqual([4, 5]);
    expect(r.pool.allocated, 'no skb leaked').toBe(0);
  });

  it('refuses corrupted records with RV_ERR_STATE_RECORD and leaves the saved backend untouched', async () => {
    const r = await rig();
    r.front.postRx(1);
    await r.back.quiesce();
    const good = r.back.save();
    const s = good.state as Record<string, unknown> & { tx: Record<string, number>; rx: Record<string, number> };
    const variants: Array<[string, unknown]> = [
      ['null', null],
      ['wrong type', { ...good, type: 'blkback' }],
      ['newer version', { ...good, version: 9 }],
      ['tx taken without a held request', { ...good, state: { ...s, tx: { ...s.tx, reqCons: s.tx.reqCons + 1 } } }],
      ['rx unpushed', { ...good, state: { ...s, rx: { ...s.rx, rspProd: s.rx.rspProd + 1 } } }],
      ['held request with nothing taken', { ...good, state: { ...s, stalledTx: { gref: 1, offset: 0, flags: 0, id: 0, size: 60 } } }],
      ['frame too short', { ...good, state: { ...s, rxQueue: [new Uint8Array(3)] } }],
      ['too many frames', { ...good, state: { ...s, rxQueue: Array.from({ length: 300 }, () => new Uint8Array(60)) } }],
      ['frames as strings', { ...good, state: { ...s, rxQueue: ['abc'] } }],
      ['other vif', { ...good, state: { ...s, devid: 3 } }],
    ];
    const free = r.pool.available;
    for (const [why, rec] of variants) {
      const e = await NetBackend.restore(r.args, rec).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e, why).toBeInstanceOf(StateRecordError);
      expect((e as RingvisorError).code, why).toBe('RV_ERR_STATE_RECORD');
    }
    expect(r.pool.available, 'no refused restore took an skb').toBe(free);
    r.back.resume();
    fromWorld(r, 7);
    await until(() => {
      r.front.collect();
      return r.front.received.length === 1;
    }, 'the original backend to deliver');
    expect(rxTags(r)).toEqual([7]);
  });

  it('property: any interleaving of tx, rx, buffer posts, back-end passes and collects, with a save/restore anywhere, moves every frame exactly once', async () => {
    type Step = { kind: 'tx' | 'rx' | 'post' | 'back' | 'collect' | 'restore' };
    const step = fc.constantFrom<Step>({ kind: 'tx' }, { kind: 'rx' }, { kind: 'post' }, { kind: 'back' }, { kind: 'collect' });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), fc.nat(40), async (steps, at) => {
        const r = await rig();
        r.back.pause();
        const plan = [...steps];
        plan.splice(Math.min(at, plan.length), 0, { kind: 'restore' });
        let txId = 0;
        let rxTag = 100;
        let posted = 0;
        const sentRx: number[] = [];
        const pass = async () => {
          r.back.resume();
          const [tx, rx] = r.back.rings().map((x) => x.ring);
          await until(() => tx.page.load(0) === tx.reqCons && (r.back.rxQueued === 0 || rx.page.load(0) === rx.reqCons), 'a backend pass');
          r.back.pause();
        };
        for (const s of plan) {
          if (s.kind === 'tx' && r.front.tx.freeRequests() > 0 && txId < 60) r.front.send(txId++, frame(txId, 1));
          else if (s.kind === 'rx' && r.back.rxQueued < 200 && rxTag < 250) {
            sentRx.push(rxTag);
            fromWorld(r, rxTag++);
          } else if (s.kind === 'post' && r.front.rx.freeRequests() >= 2 && posted < 60) {
            r.front.postRx(2);
            posted += 2;
          } else if (s.kind === 'back') await pass();
          else if (s.kind === 'collect') r.front.collect();
          else if (s.kind === 'restore') {
            await saveAndRestore(r);
            r.back.resume();
            r.back.pause();
          }
        }
        r.back.resume();
        const needed = sentRx.length - posted;
        if (needed > 0) {
          await until(() => (r.front.collect(), r.front.rx.freeRequests() >= needed), 'room to post');
          r.front.postRx(needed);
        }
        await until(() => {
          r.front.collect();
          return r.front.txAnswers.size === txId && r.front.received.length === sentRx.length;
        }, 'every frame to cross');
        for (let id = 0; id < txId; id++) {
          expect(r.front.txAnswers.get(id)).toBe(1);
          expect(r.uplinkTags.get(id + 1), `tx ${id} on the wire`).toBe(1);
        }
        expect(rxTags(r)).toEqual(sentRx);
        for (const { frame: f } of r.front.received) expect(f).toEqual(frame(f[20], 9));
        rigs.splice(rigs.indexOf(r), 1);
        r.tb.stop();
      }),
      { numRuns: 25 },
    );
  });
});
