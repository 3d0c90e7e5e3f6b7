/**
 * netfront save/restore: a real GuestKernel, tx and rx rings in guest memory, and a scripted
 * backend on real BackRings. Saved with frames queued in the frontend, unconsumed on the tx ring,
 * answered and not collected, and received into posted buffers but not collected; restored into a
 * fresh NetFront, every frame crosses exactly once, intact, and every rx buffer stays posted.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RingvisorError, StateRecordError } from '@ringvisor/shared';
import { NetFront } from './device.js';
import { NETFRONT_TX_RING_SIZE } from './state.js';
import { PvHost, ScriptedNetBack } from '../test-support/pv-host.js';

const MAC = '00:16:3e:00:00:01';

interface Rig {
  host: PvHost;
  back: ScriptedNetBack;
  front: NetFront;
  /** Frames the guest received, by tag. */
  received: Uint8Array[];
}
const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) await release(r);
});
async function release(r: Rig): Promise<void> {
  await r.front.abandon();
  r.host.stop();
}

async function rig(opts: { txBuffers?: number; rxBuffers?: number } = {}): Promise<Rig> {
  const host = new PvHost();
  const { fdir, bdir } = await host.createDevice('vif', 0, { mac: MAC });
  const { back, connected } = ScriptedNetBack.start(host, fdir, bdir);
  const front = new NetFront(host.kernel, 0, { txBuffers: 8, rxBuffers: 4, ...opts });
  const received: Uint8Array[] = [];
  front.onReceive((f) => received.push(f));
  await Promise.all([front.connect(), connected]);
  const r = { host, back, front, received };
  rigs.push(r);
  return r;
}

function frame(tag: number): Uint8Array {
  const f = new Uint8Array(64);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x16, 0x3e, 0, 0, 1], 0);
  for (let i = 12; i < 64; i++) f[i] = (tag * 7 + i) & 0xff;
  f[20] = tag;
  return f;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  await expect.poll(cond, { timeout: 20_000, message: what }).toBe(true);
}

async function restore(r: Rig): Promise<NetFront> {
  const record = r.front.save();
  await r.front.abandon();
  const restored = await NetFront.restore([r.host.kernel, 0], record);
  restored.onReceive((f) => r.received.push(f));
  r.front = restored;
  return restored;
}

describe('netfront save/restore', () => {
  it('sends queued, unconsumed and answered frames and delivers received ones exactly once after a restore', async () => {
    const r = await rig();
    // 8 tx buffers: 8 frames on the ring, 4 more queued in the frontend.
    for (let t = 1; t <= 12; t++) expect(r.front.transmit(frame(t))).toBe(true);
    await r.front.quiesce();
    expect(r.front.transmit(frame(13))).toBe(true); // quiesced: queued privately
    expect(r.back.takeTx(5)).toBe(5); // answered (pushed below), 3 still on the ring
    expect(r.back.deliver(frame(101))).toBe(true);
    expect(r.back.deliver(frame(102))).toBe(true);
    r.back.push(); // the quiesced frontend collects nothing
    expect(r.received).toHaveLength(0);

    const restored = await restore(r);
    restored.resume();
    await until(() => r.received.length === 2, 'the received frames');
    await until(() => {
      r.back.takeTx();
      r.back.push();
      return r.back.sent.length === 13 && restored.txAvailable === 8;
    }, 'every frame to be sent and answered');
    expect(r.back.sent.map((f) => f[20])).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    for (const f of r.back.sent) expect(f).toEqual(frame(f[20]));
    expect(r.received.map((f) => f[20])).toEqual([101, 102]);
    for (const f of r.received) expect(f).toEqual(frame(f[20]));
    // Receive buffers were re-posted: four more frames fit.
    for (const t of [103, 104, 105, 106]) expect(r.back.deliver(frame(t))).toBe(true);
    r.back.push();
    await until(() => r.received.length === 6, 'more received frames');
    expect(restored.counters.unexpectedResponses).toBe(0);
    expect(restored.metrics().ops).toBe(13 + 6);
  });

  it('refuses corrupted records with RV_ERR_STATE_RECORD and leaves the saved frontend untouched', async () => {
    const r = await rig();
    r.front.transmit(frame(1));
    await r.front.quiesce();
    r.front.transmit(frame(2));
    const good = r.front.save();
    type S = Record<string, unknown> & { tx: Record<string, number>; txFree: number[]; txInFlight: Array<{ id: number; gref: number }>; rxBufs: Array<{ pfn: number; gref: number }>; txQueue: Uint8Array[] };
    const s = good.state as S;
    const variants: Array<[string, unknown]> = [
      ['a string', 'netfront'],
      ['wrong type', { ...good, type: 'netback' }],
      ['newer version', { ...good, version: 2 }],
      ['tx indices more than a ring apart', { ...good, state: { ...s, tx: { ...s.tx, reqProdPvt: s.tx.rspCons + NETFRONT_TX_RING_SIZE + 1 } } }],
      ['id both free and in flight', { ...good, state: { ...s, txFree: [...s.txFree, s.txInFlight[0].id] } }],
      ['id out of range', { ...good, state: { ...s, txFree: [...s.txFree.slice(1), 200] } }],
      ['an id missing', { ...good, state: { ...s, txFree: s.txFree.slice(1) } }],
      ['rx frame used twice', { ...good, state: { ...s, rxBufs: [s.rxBufs[0], s.rxBufs[0]] } }],
      ['queued frame too long', { ...good, state: { ...s, txQueue: [new Uint8Array(2000)] } }],
      ['bad mac', { ...good, state: { ...s, mac: 'zz' } }],
      ['frame outside memory', { ...good, state: { ...s, rxBufs: [{ pfn: 1 << 24, gref: 999 }, ...s.rxBufs.slice(1)] } }],
      ['other vif', { ...good, state: { ...s, devid: 4 } }],
    ];
    for (const [why, rec] of variants) {
      const e = await NetFront.restore([r.host.kernel, 0], rec).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e, why).toBeInstanceOf(StateRecordError);
      expect((e as RingvisorError).code, why).toBe('RV_ERR_STATE_RECORD');
    }
    r.front.resume();
    await until(() => {
      r.back.takeTx();
      r.back.push();
      return r.back.sent.length === 2;
    }, 'the saved frontend to carry on');
    expect(r.back.sent.map((f) => f[20])).toEqual([1, 2]);
  });

  it('property: any interleaving of transmit, back-end take / deliver / push, with a save/restore anywhere, moves every frame exactly once', async () => {
    type Step = { kind: 'tx' | 'take' | 'deliver' | 'push' | 'quiesce' | 'restore' };
    const step = fc.constantFrom<Step>({ kind: 'tx' }, { kind: 'tx' }, { kind: 'take' }, { kind: 'deliver' }, { kind: 'push' });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), fc.nat(40), fc.nat(8), async (steps, at, gap) => {
        const r = await rig();
        const plan: Step[] = [...steps];
        const q = Math.min(at, plan.length);
        plan.splice(q, 0, { kind: 'quiesce' });
        plan.splice(Math.min(q + 1 + gap, plan.length), 0, { kind: 'restore' });
        let txTag = 0;
        let rxTag = 100;
        const delivered: number[] = [];
        let quiesced = false;
        for (const s of plan) {
          if (s.kind === 'tx' && txTag < 90) {
            if (r.front.transmit(frame(txTag + 1))) txTag++;
          } else if (s.kind === 'take') r.back.takeTx(3);
          else if (s.kind === 'deliver' && rxTag < 250) {
            if (r.back.deliver(frame(rxTag))) delivered.push(rxTag++);
          } else if (s.kind === 'push') r.back.push();
          else if (s.kind === 'quiesce') {
            await r.front.quiesce();
            quiesced = true;
          } else if (s.kind === 'restore' && quiesced) {
            r.back.takeTx(2);
            r.back.push();
            const restored = await restore(r);
            restored.resume();
          }
          await new Promise((res) => setImmediate(res));
        }
        await until(() => {
          r.back.takeTx();
          r.back.push();
          return r.back.sent.length === txTag && r.received.length === delivered.length;
        }, 'every frame to cross');
        expect(r.back.sent.map((f) => f[20])).toEqual(Array.from({ length: txTag }, (_, i) => i + 1));
        for (const f of r.back.sent) expect(f).toEqual(frame(f[20]));
        expect(r.received.map((f) => f[20])).toEqual(delivered);
        expect(r.front.counters.unexpectedResponses).toBe(0);
        rigs.splice(rigs.indexOf(r), 1);
        await release(r);
      }),
      { numRuns: 20 },
    );
  });
});
