import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '@ringvisor/shared';
import { ethFrame } from '../test-support/harness.js';
import { connectLanPorts, type LanPort } from './lan-port.js';
import { frameDestination, frameSource, parseMac } from './mac.js';
import { LanSegment } from './segment.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';

function tap(port: LanPort): Uint8Array[] {
  const got: Uint8Array[] = [];
  port.onFrame((f) => got.push(f));
  return got;
}

function threePorts(seg = new LanSegment()) {
  const pa = seg.attach('a');
  const pb = seg.attach('b');
  const pc = seg.attach('c');
  return { seg, pa, pb, pc, ra: tap(pa), rb: tap(pb), rc: tap(pc) };
}

describe('LanSegment', () => {
  it('floods an unknown unicast to every port but the ingress one', () => {
    const { seg, pa, ra, rb, rc } = threePorts();
    pa.send(ethFrame(B, A, 10));
    expect(ra).toHaveLength(0);
    expect(rb).toHaveLength(1);
    expect(rc).toHaveLength(1);
    expect(seg.counters.flooded).toBe(1);
    expect(seg.macTable()).toEqual([{ mac: A, port: 'a' }]);
  });

  it('learns source MACs and forwards known unicast to the learned port only', () => {
    const { seg, pa, pb, ra, rb, rc } = threePorts();
    pa.send(ethFrame(B, A, 10)); // flood, learn A@a
    pb.send(ethFrame(A, B, 11)); // forward to a only, learn B@b
    expect(ra).toHaveLength(1);
    expect(frameSource(ra[0])).toBe(B);
    expect(rc).toHaveLength(1); // only the first flood reached c
    pa.send(ethFrame(B, A, 12));
    expect(rb).toHaveLength(2);
    expect(rb[1].byteLength).toBe(26);
    expect(rc).toHaveLength(1);
    expect(seg.counters.forwarded).toBe(2);
    expect(seg.counters.learned).toBe(2);
    const stats = seg.stats();
    expect(stats.ports.a).toMatchObject({ framesIn: 2, framesOut: 1 });
    expect(stats.ports.b).toMatchObject({ framesIn: 1, framesOut: 2, bytesOut: 24 + 26 });
    expect(stats.ports.c).toMatchObject({ framesIn: 0, framesOut: 1 });
  });

  it('always floods broadcast and multicast, and never learns a group source', () => {
    const { seg, pa, pb, ra, rb, rc } = threePorts();
    pb.send(ethFrame(A, B, 1)); // learn B
    pa.send(ethFrame(BCAST, A, 1));
    pa.send(ethFrame('01:00:5e:00:00:01', A, 1));
    expect(rb).toHaveLength(2);
    expect(rc).toHaveLength(3);
    expect(ra).toHaveLength(1);
    seg.attach('group-src').send(ethFrame(BCAST, '03:00:00:00:00:01', 1)); // group source: not learned
    expect(seg.macTable().map((e) => e.mac).sort()).toEqual([A, B]);
  });

  it('filters a frame whose destination was learned on the ingress port', () => {
    const { seg, pa, rb, rc } = threePorts();
    pa.send(ethFrame(BCAST, A, 1));
    pa.send(ethFrame(BCAST, C, 1)); // C also lives behind port a (e.g. a bridge)
    pa.send(ethFrame(C, A, 1));
    expect(rb).toHaveLength(2);
    expect(rc).toHaveLength(2);
    expect(seg.counters.filtered).toBe(1);
  });

  it('gives every port its own copy and keeps none of the sender’s buffer', () => {
    const { pa, rb, rc } = threePorts();
    const f = ethFrame(BCAST, A, 20);
    pa.send(f);
    f.fill(0xee);
    expect(rb[0]).not.toBe(rc[0]);
    expect(rb[0].buffer).not.toBe(rc[0].buffer);
    expect(frameSource(rb[0])).toBe(A);
    rb[0].fill(0);
    expect(frameSource(rc[0])).toBe(A);
  });

  it('follows a station that moves to another port', () => {
    const { seg, pa, pb, pc, ra, rb } = threePorts();
    pa.send(ethFrame(BCAST, A, 1));
    pb.send(ethFrame(BCAST, A, 1)); // A now behind b
    expect(seg.counters.moved).toBe(1);
    pc.send(ethFrame(A, C, 1));
    expect(rb.filter((f) => frameDestination(f) === A)).toHaveLength(1);
    expect(ra.filter((f) => frameDestination(f) === A)).toHaveLength(0);
  });

  it('bounds the MAC table, evicting the least recently seen station', () => {
    const seg = new LanSegment({ macTableSize: 2 });
    const { pa, pb, pc, rb, rc } = threePorts(seg);
    pa.send(ethFrame(BCAST, A, 1));
    pb.send(ethFrame(BCAST, B, 1));
    pa.send(ethFrame(BCAST, A, 1)); // refresh A: B is now the oldest
    pc.send(ethFrame(BCAST, C, 1)); // evicts B
    expect(seg.stats().macTableSize).toBe(2);
    expect(seg.counters.evicted).toBe(1);
    expect(seg.macTable().map((e) => e.mac)).toEqual([A, C]);
    const before = rc.length;
    pa.send(ethFrame(B, A, 1)); // B forgotten: flooded, c sees it too
    expect(rc.length).toBe(before + 1);
    expect(rb.at(-1)?.byteLength).toBe(15);
  });

  it('ages out stations not heard from', () => {
    let now = 1000;
    const seg = new LanSegment({ ageingMs: 100, clock: () => now });
    const { pa, pb, rc } = threePorts(seg);
    pb.send(ethFrame(BCAST, B, 1));
    pa.send(ethFrame(B, A, 1));
    expect(rc).toHaveLength(1); // the broadcast only
    now += 101;
    pa.send(ethFrame(B, A, 1));
    expect(rc).toHaveLength(2); // flooded again
    expect(seg.counters.aged).toBe(1);
  });

  it('drops runts and counts them', () => {
    const { seg, pa, rb } = threePorts();
    pa.send(new Uint8Array(13));
    expect(rb).toHaveLength(0);
    expect(seg.counters.runts).toBe(1);
    expect(seg.stats().ports.a.framesIn).toBe(1);
  });

  it('keeps delivering when one listener throws, and counts the failure', () => {
    const { seg, pa, pb, rc } = threePorts();
    pb.onFrame(() => {
      throw new Error('boom');
    });
    pa.send(ethFrame(BCAST, A, 1));
    expect(rc).toHaveLength(1);
    expect(seg.stats().ports.b.deliveryErrors).toBe(1);
  });

  it('detaching a port unplugs it and forgets its stations; names are unique', () => {
    const { seg, pa, pb, rb, rc } = threePorts();
    expect(() => seg.attach('a')).toThrow(InvalidArgumentError);
    pb.send(ethFrame(BCAST, B, 1));
    expect(seg.detach('b')).toBe(true);
    expect(seg.detach('b')).toBe(false);
    expect(seg.macTable().map((e) => e.mac)).toEqual([]);
    pa.send(ethFrame(B, A, 1));
    expect(rb).toHaveLength(0);
    expect(rc).toHaveLength(2);
    expect(seg.portNames()).toEqual(['a', 'c']);
  });

  it('connectLanPorts patches two segments together', () => {
    const s1 = new LanSegment({ name: 'one' });
    const s2 = new LanSegment({ name: 'two' });
    const h1 = s1.attach('h1');
    const h2 = s2.attach('h2');
    connectLanPorts(s1.attach('up'), s2.attach('up'));
    const r1 = tap(h1);
    const r2 = tap(h2);
    h1.send(ethFrame(B, A, 5));
    expect(r2).toHaveLength(1);
    h2.send(ethFrame(A, B, 5));
    expect(r1).toHaveLength(1);
    expect(s2.macTable()).toEqual([
      { mac: A, port: 'up' },
      { mac: B, port: 'h2' },
    ]);
  });

  it('parses and rejects MAC text', () => {
    expect([...parseMac('52:54:00:AB:cd:0F')]).toEqual([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]);
    expect(() => parseMac('52:54:00:ab:cd')).toThrow(/invalid MAC/);
    expect(() => parseMac('52-54-00-ab-cd-ef')).toThrow(/invalid MAC/);
  });
});

