import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ArpCache, ARP_OP_REPLY, ARP_OP_REQUEST, arpRequest, encodeArp, parseArp } from './arp.js';
import {
  broadcastMac,
  buildFrame,
  ETH_MIN_FRAME,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  formatMac,
  isBroadcastMac,
  isMulticastMac,
  parseFrame,
  parseMac,
  tryParseMac,
} from './ethernet.js';
import { buildIpv4, buildIpv4Header, formatIp, internetChecksum, parseIp, parseIpv4, tryParseIp } from './ipv4.js';
import { MAX_UDP_PAYLOAD, NetStack, type UdpSource } from './stack.js';
import { buildUdp, parseUdp } from './udp.js';
import { InvalidArgumentError } from '@ringvisor/shared';

const MAC_A = '00:16:3e:00:00:01';
const MAC_B = '00:16:3e:00:00:02';
const IP_A = '10.0.0.1';
const IP_B = '10.0.0.2';

const hex = (s: string): Uint8Array => Uint8Array.from(s.replace(/\s+/g, '').match(/../g) ?? [], (h) => parseInt(h, 16));
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

interface Clock {
  t: number;
}

/** Two stacks joined by a FIFO wire; `filter` may drop (return false) or rewrite frames. */
function backToBack(opts: { clock?: Clock; maxPendingPerDest?: number } = {}) {
  const clock = opts.clock ?? { t: 0 };
  const queue: Array<{ to: 'a' | 'b'; frame: Uint8Array }> = [];
  const wire = { a: [] as Uint8Array[], b: [] as Uint8Array[] }; // frames sent by a / by b
  const a = new NetStack({
    mac: parseMac(MAC_A),
    ip: IP_A,
    now: () => clock.t,
    maxPendingPerDest: opts.maxPendingPerDest,
    transmit: (frame) => {
      wire.a.push(frame);
      queue.push({ to: 'b', frame });
    },
  });
  const b = new NetStack({
    mac: parseMac(MAC_B),
    ip: IP_B,
    now: () => clock.t,
    maxPendingPerDest: opts.maxPendingPerDest,
    transmit: (frame) => {
      wire.b.push(frame);
      queue.push({ to: 'a', frame });
    },
  });
  const drain = (): number => {
    let n = 0;
    for (let item = queue.shift(); item; item = queue.shift(), n++) (item.to === 'a' ? a : b).receive(item.frame);
    return n;
  };
  return { a, b, wire, queue, drain, clock };
}

/** Independent UDP checksum: explicit pseudo-header bytes, end-around carry at every step. */
function referenceUdpChecksum(src: string, dst: string, segment: Uint8Array): number {
  const ip = (s: string) => s.split('.').map(Number);
  const pseudo = [...ip(src), ...ip(dst), 0, 17, segment.length >> 8, segment.length & 0xff];
  const all = [...pseudo, ...segment];
  if (all.length % 2) all.push(0);
  let sum = 0;
  for (let i = 0; i < all.length; i += 2) {
    sum += all[i] * 256 + all[i + 1];
    if (sum > 0xffff) sum -= 0xffff;
  }
  const c = 0xffff - sum;
  return c === 0 ? 0xffff : c;
}

describe('ethernet', () => {
  it('parses and formats MACs', () => {
    expect(Array.from(parseMac('00:16:3E:AB:cd:0f'))).toEqual([0x00, 0x16, 0x3e, 0xab, 0xcd, 0x0f]);
    expect(formatMac(parseMac('00:16:3E:AB:cd:0f'))).toBe('00:16:3e:ab:cd:0f');
    for (const bad of ['', '00:16:3e:00:00', '00:16:3e:00:00:00:00', '0:16:3e:00:00:01', '00-16-3e-00-00-01', '00:16:3e:00:00:zz']) {
      expect(tryParseMac(bad)).toBeNull();
      expect(() => parseMac(bad)).toThrow(InvalidArgumentError);
    }
  });

  it('broadcast and multicast helpers', () => {
    const bc = broadcastMac();
    expect(formatMac(bc)).toBe('ff:ff:ff:ff:ff:ff');
    expect(isBroadcastMac(bc)).toBe(true);
    bc[0] = 0; // a fresh copy each time, so mutation cannot leak
    expect(isBroadcastMac(broadcastMac())).toBe(true);
    expect(isBroadcastMac(parseMac(MAC_A))).toBe(false);
    expect(isMulticastMac(parseMac('01:00:5e:00:00:01'))).toBe(true);
    expect(isMulticastMac(parseMac(MAC_A))).toBe(false);
  });

  it('pads short frames to 60 bytes and parses unpadded ones', () => {
    const f = buildFrame({ dst: parseMac(MAC_B), src: parseMac(MAC_A), ethertype: 0x88b5, payload: bytes('hi') });
    expect(f.length).toBe(ETH_MIN_FRAME);
    expect(Array.from(f.subarray(0, 16))).toEqual([0, 0x16, 0x3e, 0, 0, 2, 0, 0x16, 0x3e, 0, 0, 1, 0x88, 0xb5, 0x68, 0x69]);
    expect(f.subarray(16).every((b) => b === 0)).toBe(true);
    const short = parseFrame(f.subarray(0, 16));
    expect(short.ok && formatMac(short.value.src)).toBe(MAC_A);
    expect(short.ok && short.value.ethertype).toBe(0x88b5);
    expect(short.ok && Array.from(short.value.payload)).toEqual([0x68, 0x69]);
  });

  it('enforces size limits and Ethernet II', () => {
    const mk = (n: number) => buildFrame({ dst: broadcastMac(), src: parseMac(MAC_A), ethertype: 0x0800, payload: new Uint8Array(n) });
    expect(mk(1500).length).toBe(1514);
    expect(() => mk(1501)).toThrow(InvalidArgumentError);
    expect(parseFrame(new Uint8Array(13))).toEqual({ ok: false, reason: 'eth-truncated' });
    expect(parseFrame(new Uint8Array(1515))).toEqual({ ok: false, reason: 'eth-oversize' });
    expect(parseFrame(new Uint8Array(1514)).ok).toBe(false); // type 0x0000 is an 802.3 length
    const f = mk(10);
    f[12] = 0x05;
    f[13] = 0xdc; // 1500: 802.3 length field
    expect(parseFrame(f)).toEqual({ ok: false, reason: 'eth-not-ethernet-ii' });
    expect(() => buildFrame({ dst: broadcastMac(), src: parseMac(MAC_A), ethertype: 0x05dc, payload: new Uint8Array(1) })).toThrow();
  });
});

describe('ipv4', () => {
  it('parses and formats addresses', () => {
    expect(parseIp('192.168.0.199')).toBe(0xc0a800c7);
    expect(formatIp(0xc0a800c7)).toBe('192.168.0.199');
    expect(formatIp(parseIp('255.255.255.255'))).toBe('255.255.255.255');
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-4', 'a.b.c.d', '1..3.4']) {
      expect(tryParseIp(bad)).toBeNull();
    }
  });

  it('computes the RFC 1071 example checksum', () => {
    // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (ones' complement), checksum is its complement.
    expect(internetChecksum(hex('0001f203f4f5f6f7'))).toBe(0x220d);
    // Odd length: trailing byte padded with zero.
    expect(internetChecksum(hex('01'))).toBe(0xfeff);
  });

  it('builds the classic example header with checksum b861', () => {
    const h = buildIpv4Header({ src: parseIp('192.168.0.1'), dst: parseIp('192.168.0.199'), protocol: 17, payloadLength: 0x73 - 20, id: 0, ttl: 64 });
    expect(Array.from(h)).toEqual(Array.from(hex('4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7')));
    const p = parseIpv4(hex('4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7'), 0x73);
    expect(p.ok).toBe(false); // header only: total length 0x73 exceeds the buffer
    expect(!p.ok && p.reason).toBe('ip-bad-length');
  });

  const valid = () => buildIpv4({ src: parseIp(IP_A), dst: parseIp(IP_B), protocol: 17, payload: bytes('abcdefgh'), id: 7 });
  /** Rewrites header fields and re-checksums, to reach checks that come after the checksum. */
  const patch = (edit: (v: DataView) => void): Uint8Array => {
    const p = valid();
    const v = new DataView(p.buffer);
    edit(v);
    v.setUint16(10, 0);
    v.setUint16(10, internetChecksum(p.subarray(0, (p[0] & 15) * 4)));
    return p;
  };

  it('parses a valid packet', () => {
    const r = parseIpv4(valid());
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.header).toMatchObject({ src: parseIp(IP_A), dst: parseIp(IP_B), protocol: 17, id: 7, ttl: 64, totalLength: 28, dontFragment: true });
    expect(new TextDecoder().decode(r.value.payload)).toBe('abcdefgh');
  });

  it('drops bad version, IHL, checksum, length and fragments', () => {
    const reason = (p: Uint8Array, trailing = 0) => {
      const r = parseIpv4(p, trailing);
      return r.ok ? 'ok' : r.reason;
    };
    expect(reason(valid().subarray(0, 19))).toBe('ip-truncated');
    expect(reason(patch((v) => v.setUint8(0, 0x65)))).toBe('ip-bad-version');
    expect(reason(patch((v) => v.setUint8(0, 0x44)))).toBe('ip-bad-ihl');
    const badSum = valid();
    badSum[11] ^= 1;
    expect(reason(badSum)).toBe('ip-bad-checksum');
    expect(reason(patch((v) => v.setUint16(2, 29)))).toBe('ip-bad-length'); // longer than buffer
    expect(reason(patch((v) => v.setUint16(2, 19)))).toBe('ip-bad-length'); // shorter than header
    expect(reason(patch((v) => v.setUint16(2, 27)))).toBe('ip-bad-length'); // 1 unexplained trailing byte
    expect(reason(patch((v) => v.setUint16(2, 27)), 1)).toBe('ok'); // ...unless it is padding
    expect(reason(patch((v) => v.setUint16(6, 0x2000)))).toBe('ip-fragment'); // MF
    expect(reason(patch((v) => v.setUint16(6, 0x0001)))).toBe('ip-fragment'); // offset 8
    expect(reason(patch((v) => v.setUint16(6, 0x0000)))).toBe('ok'); // DF clear, not a fragment
  });

  it('accepts header options (IHL 6) and skips them', () => {
    const base = valid();
    const p = new Uint8Array(base.length + 4);
    p.set(base.subarray(0, 20));
    p.set([1, 1, 1, 0], 20); // NOP NOP NOP EOL
    p.set(base.subarray(20), 24);
    const v = new DataView(p.buffer);
    v.setUint8(0, 0x46);
    v.setUint16(2, p.length);
    v.setUint16(10, 0);
    v.setUint16(10, internetChecksum(p.subarray(0, 24)));
    const r = parseIpv4(p);
    expect(r.ok && new TextDecoder().decode(r.value.payload)).toBe('abcdefgh');
  });
});

describe('udp', () => {
  it('checksum matches an independent computation', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.ipV4(),
        fc.ipV4(),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        (payload, src, dst, sp, dp) => {
          const seg = buildUdp({ srcIp: parseIp(src), dstIp: parseIp(dst), srcPort: sp, dstPort: dp, payload });
          const zeroed = seg.slice();
          zeroed[6] = zeroed[7] = 0;
          expect((seg[6] << 8) | seg[7]).toBe(referenceUdpChecksum(src, dst, zeroed));
          const r = parseUdp(seg, parseIp(src), parseIp(dst));
          expect(r.ok && r.value.srcPort === sp && r.value.dstPort === dp && Array.from(r.value.payload)).toEqual(Array.from(payload));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('transmits a computed zero checksum as 0xffff, and skips verification of 0', () => {
    const src = parseIp(IP_A);
    const dst = parseIp(IP_B);
    // Pick a payload word that makes the ones' complement sum exactly 0xffff.
    const probe = buildUdp({ srcIp: src, dstIp: dst, srcPort: 1, dstPort: 2, payload: new Uint8Array(2) });
    const sumWithZeroWord = 0xffff - ((probe[6] << 8) | probe[7]); // checksum = ~sum
    const w = 0xffff - sumWithZeroWord;
    const payload = Uint8Array.of(w >> 8, w & 0xff);
    const seg = buildUdp({ srcIp: src, dstIp: dst, srcPort: 1, dstPort: 2, payload });
    expect((seg[6] << 8) | seg[7]).toBe(0xffff);
    expect(parseUdp(seg, src, dst).ok).toBe(true);

    const noSum = buildUdp({ srcIp: src, dstIp: dst, srcPort: 1, dstPort: 2, payload: bytes('xyz') });
    noSum[6] = noSum[7] = 0;
    noSum[8] ^= 0xff;
    expect(parseUdp(noSum, src, dst).ok).toBe(true); // no checksum: nothing to verify
    noSum[6] = 0x12;
    expect(parseUdp(noSum, src, dst)).toEqual({ ok: false, reason: 'udp-bad-checksum' });
  });

  it('checksum covers the pseudo-header and length must match', () => {
    const seg = buildUdp({ srcIp: parseIp(IP_A), dstIp: parseIp(IP_B), srcPort: 9, dstPort: 9, payload: bytes('data') });
    expect(parseUdp(seg, parseIp(IP_A), parseIp('10.0.0.3'))).toEqual({ ok: false, reason: 'udp-bad-checksum' });
    expect(parseUdp(seg.subarray(0, 7), 0, 0)).toEqual({ ok: false, reason: 'udp-truncated' });
    expect(parseUdp(seg.subarray(0, 11), parseIp(IP_A), parseIp(IP_B))).toEqual({ ok: false, reason: 'udp-bad-length' });
  });
});

describe('arp', () => {
  it('encodes a request byte-exactly and round-trips', () => {
    const req = arpRequest(parseMac(MAC_A), parseIp(IP_A), parseIp(IP_B));
    expect(Array.from(encodeArp(req))).toEqual(
      Array.from(hex('0001 0800 06 04 0001 00163e000001 0a000001 000000000000 0a000002')),
    );
    const r = parseArp(encodeArp(req));
    expect(r.ok && r.value.op).toBe(ARP_OP_REQUEST);
    expect(r.ok && formatMac(r.value.senderMac)).toBe(MAC_A);
    expect(r.ok && r.value.targetIp).toBe(parseIp(IP_B));
    expect(parseArp(encodeArp(req).subarray(0, 27))).toEqual({ ok: false, reason: 'arp-truncated' });
    const bad = encodeArp(req);
    bad[7] = 3;
    expect(parseArp(bad)).toEqual({ ok: false, reason: 'arp-bad-op' });
    bad[7] = ARP_OP_REPLY;
    bad[3] = 0xdd; // ptype 0x08dd
    expect(parseArp(bad)).toEqual({ ok: false, reason: 'arp-unsupported' });
  });

  it('cache expires entries by injected time and evicts the oldest when full', () => {
    const clock = { t: 1000 };
    const cache = new ArpCache({ now: () => clock.t, maxEntries: 2, ttlMs: 100 });
    const mac = parseMac(MAC_A);
    cache.update(1, mac);
    mac[5] = 0x99; // the cache keeps its own copy
    expect(formatMac(cache.lookup(1)!)).toBe(MAC_A);
    clock.t = 1099;
    expect(cache.has(1)).toBe(true);
    clock.t = 1100;
    expect(cache.lookup(1)).toBeUndefined();
    expect(cache.size).toBe(0);

    cache.update(1, parseMac(MAC_A));
    clock.t += 10;
    cache.update(2, parseMac(MAC_B));
    cache.update(1, parseMac(MAC_A)); // refresh: 2 is now the oldest
    cache.update(3, parseMac(MAC_B));
    expect(cache.size).toBe(2);
    expect(cache.has(2)).toBe(false);
    expect(cache.has(1) && cache.has(3)).toBe(true);
  });
});

describe('NetStack', () => {
  it('resolves ARP, queues until the reply, then exchanges UDP both ways', () => {
    const { a, b, wire, drain } = backToBack();
    const gotB: Array<[UdpSource, string]> = [];
    const gotA: Array<[UdpSource, string]> = [];
    b.bindUdp(7, (src, p) => {
      gotB.push([src, new TextDecoder().decode(p)]);
      b.sendUdp(src.ip, src.port, 7, p.slice().reverse());
    });
    a.bindUdp(5000, (src, p) => gotA.push([src, new TextDecoder().decode(p)]));

    expect(a.sendUdp(IP_B, 7, 5000, bytes('one'))).toBe(true);
    expect(a.sendUdp(IP_B, 7, 5000, bytes('two'))).toBe(true);
    // Only one ARP request, broadcast, and no IP yet.
    expect(wire.a.length).toBe(1);
    expect(isBroadcastMac(wire.a[0].subarray(0, 6))).toBe(true);
    expect((wire.a[0][12] << 8) | wire.a[0][13]).toBe(ETHERTYPE_ARP);
    expect(a.counters.arpRequestsSent).toBe(1);
    expect(gotB).toEqual([]);

    drain();
    expect(gotB.map((g) => g[1])).toEqual(['one', 'two']);
    expect(gotB[0][0]).toEqual({ ip: IP_A, port: 5000, mac: MAC_A });
    expect(gotA.map((g) => g[1])).toEqual(['eno', 'owt']);
    expect(gotA[0][0]).toEqual({ ip: IP_B, port: 7, mac: MAC_B });
    expect(a.lookupArp(IP_B)).toBe(MAC_B);
    expect(b.lookupArp(IP_A)).toBe(MAC_A); // learned from the request
    expect(b.counters.arpRequestsSent).toBe(0); // so b answered without ARPing
    expect(b.counters.arpRepliesSent).toBe(1);

    // Resolved: sends immediately, no further ARP.
    expect(a.sendUdp(IP_B, 7, 5000, bytes('three'))).toBe(true);
    expect(wire.a.length).toBe(4);
    drain();
    expect(gotA.map((g) => g[1])).toEqual(['eno', 'owt', 'eerht']);
    const ca = a.counters;
    const cb = b.counters;
    expect(ca.arpRequestsSent).toBe(1);
    expect(cb.udpDelivered).toBe(3);
    expect(ca.udpDelivered).toBe(3);
    expect(ca.rxDropped + cb.rxDropped).toBe(0);
    expect(ca.txFrames).toBe(wire.a.length);
    expect(cb.rxFrames).toBe(wire.a.length);
    expect(ca.rxFrames).toBe(wire.b.length);
  });

  it('emits a byte-exact frame (checksums computed independently)', () => {
    const frames: Uint8Array[] = [];
    const a = new NetStack({ mac: parseMac(MAC_A), ip: IP_A, transmit: (f) => void frames.push(f), now: () => 0 });
    // Teach a the peer via an ARP request addressed to it.
    a.receive(
      buildFrame({
        dst: broadcastMac(),
        src: parseMac(MAC_B),
        ethertype: ETHERTYPE_ARP,
        payload: encodeArp(arpRequest(parseMac(MAC_B), parseIp(IP_B), parseIp(IP_A))),
      }),
    );
    expect(frames.length).toBe(1); // the ARP reply
    expect(Array.from(frames[0].subarray(0, 42))).toEqual(
      Array.from(hex('00163e000002 00163e000001 0806 0001 0800 06 04 0002 00163e000001 0a000001 00163e000002 0a000002')),
    );
    expect(a.sendUdp(IP_B, 7, 5000, bytes('hello'))).toBe(true);
    // IPv4 checksum 26ca and UDP checksum 9470 were computed with a separate Python script.
    const expected = hex(
      '00163e000002 00163e000001 0800' + // Ethernet
        '4500 0021 0000 4000 4011 26ca 0a000001 0a000002' + // IPv4: len 33, id 0, DF, ttl 64, UDP
        '1388 0007 000d 9470' + // UDP 5000 -> 7, len 13
        '68656c6c6f' + // "hello"
        '00'.repeat(60 - 47), // padding to the 60-byte minimum
    );
    expect(Array.from(frames[1])).toEqual(Array.from(expected));
  });

  it('drops any corrupted byte in the IP header, UDP header or payload', () => {
    const { a, b, wire, drain } = backToBack();
    const got: Uint8Array[] = [];
    b.bindUdp(9, (_s, p) => got.push(p.slice()));
    const payload = Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff);
    a.sendUdp(IP_B, 9, 1234, payload);
    drain();
    expect(got.length).toBe(1);
    const frame = wire.a[wire.a.length - 1];
    expect(frame.length).toBe(14 + 20 + 8 + 64);
    let cases = 0;
    for (let off = 14; off < frame.length; off++) {
      for (const mask of [0x01, 0x80, 0xff, 0x5a]) {
        const bad = frame.slice();
        bad[off] ^= mask;
        // A zero UDP checksum legitimately means "not computed"; the data is still intact then.
        if (off >= 40 && off <= 41 && bad[40] === 0 && bad[41] === 0) continue;
        const before = b.counters;
        b.receive(bad);
        const after = b.counters;
        expect(after.rxDropped, `offset ${off} mask ${mask}`).toBe(before.rxDropped + 1);
        expect(after.udpDelivered).toBe(before.udpDelivered);
        const reasons = Object.entries(after.rxDropReasons).filter(([k, n]) => n !== before.rxDropReasons[k as keyof typeof before.rxDropReasons]);
        expect(reasons.length).toBe(1);
        const reason = reasons[0][0];
        if (off < 34) expect(reason, `offset ${off}`).toMatch(/^ip-/);
        else if (off < 42) expect(reason, `offset ${off}`).toMatch(/^udp-/);
        else expect(reason).toBe('udp-bad-checksum');
        cases++;
      }
    }
    expect(cases).toBeGreaterThan(4 * 90);
    expect(got.length).toBe(1);
    // The pristine frame is still accepted: the drops above are due to the corruption.
    b.receive(frame);
    expect(got.length).toBe(2);
    expect(Array.from(got[1])).toEqual(Array.from(payload));
  });

  it('counts frames that are not for us and unbound ports', () => {
    const { a, b, wire, drain } = backToBack();
    b.bindUdp(9, () => {});
    a.sendUdp(IP_B, 9, 1, bytes('x'));
    drain();
    const ipFrame = wire.a[wire.a.length - 1];
    const before = b.counters;

    const otherMac = ipFrame.slice();
    otherMac.set(parseMac('00:16:3e:00:00:99'), 0);
    b.receive(otherMac);
    const mcast = ipFrame.slice();
    mcast.set(parseMac('01:00:5e:00:00:01'), 0);
    b.receive(mcast);
    const otherType = ipFrame.slice();
    otherType[13] = 0xdd; // 0x08dd
    b.receive(otherType);

    // Valid IP to another address (re-checksummed) and a non-UDP protocol.
    const retarget = (edit: (ip: Uint8Array) => void) => {
      const f = ipFrame.slice();
      const ip = f.subarray(14, 34);
      edit(ip);
      ip[10] = ip[11] = 0;
      const c = internetChecksum(ip);
      ip[10] = c >> 8;
      ip[11] = c & 0xff;
      return f;
    };
    b.receive(retarget((ip) => (ip[19] = 3)));
    b.receive(retarget((ip) => (ip[9] = 6)));

    b.unbindUdp(9);
    b.receive(ipFrame);
    const after = b.counters;
    expect(after.rxFrames - before.rxFrames).toBe(6);
    expect(after.rxDropped - before.rxDropped).toBe(5);
    expect(after.rxDropReasons['eth-not-for-us']).toBe(2);
    expect(after.rxDropReasons['eth-unknown-type']).toBe(1);
    expect(after.rxDropReasons['ip-not-for-us']).toBe(1);
    expect(after.rxDropReasons['ip-unknown-protocol']).toBe(1);
    expect(after.udpNoPort - before.udpNoPort).toBe(1);
    expect(after.udpDelivered).toBe(before.udpDelivered);
  });

  it('accepts minimum-frame padding but not other trailing bytes', () => {
    const { a, b, wire, drain } = backToBack();
    let n = 0;
    b.bindUdp(9, () => n++);
    a.sendUdp(IP_B, 9, 1, bytes('x'));
    drain();
    const padded = wire.a[wire.a.length - 1];
    expect(padded.length).toBe(60); // 14 + 29, padded
    expect(n).toBe(1);
    const extended = new Uint8Array(61);
    extended.set(padded);
    b.receive(extended);
    expect(n).toBe(1);
    expect(b.counters.rxDropReasons['ip-bad-length']).toBe(1);
    b.receive(padded.subarray(0, 43)); // unpadded is fine too
    expect(n).toBe(2);
  });

  it('ARP: ignores requests for other hosts, does not learn them, refreshes after TTL', () => {
    const clock = { t: 0 };
    const { a, b, drain } = backToBack({ clock });
    const other = buildFrame({
      dst: broadcastMac(),
      src: parseMac(MAC_A),
      ethertype: ETHERTYPE_ARP,
      payload: encodeArp(arpRequest(parseMac(MAC_A), parseIp(IP_A), parseIp('10.0.0.77'))),
    });
    b.receive(other);
    expect(b.counters.rxDropReasons['arp-not-for-us']).toBe(1);
    expect(b.counters.arpRepliesSent).toBe(0);
    expect(b.lookupArp(IP_A)).toBeUndefined();

    a.sendUdp(IP_B, 9, 1, bytes('x'));
    drain();
    expect(a.counters.arpRequestsSent).toBe(1);
    clock.t = 59_999;
    a.sendUdp(IP_B, 9, 1, bytes('x'));
    expect(a.counters.arpRequestsSent).toBe(1);
    clock.t = 60_000; // default TTL 60 s
    expect(a.lookupArp(IP_B)).toBeUndefined();
    a.sendUdp(IP_B, 9, 1, bytes('x'));
    expect(a.counters.arpRequestsSent).toBe(2);
    drain();
    expect(a.lookupArp(IP_B)).toBe(MAC_B);
    expect(b.counters.udpNoPort).toBe(3);
  });

  it('bounds the pending queue, rate-limits ARP retries and gives up', () => {
    const clock = { t: 0 };
    const sent: Uint8Array[] = [];
    const a = new NetStack({ mac: parseMac(MAC_A), ip: IP_A, transmit: (f) => void sent.push(f), now: () => clock.t, maxPendingPerDest: 3 });
    expect([1, 2, 3, 4].map(() => a.sendUdp(IP_B, 9, 1, bytes('q')))).toEqual([true, true, true, false]);
    expect(a.counters.txDropReasons['pending-full']).toBe(1);
    expect(a.counters.arpRequestsSent).toBe(1);
    clock.t = 999;
    a.poll();
    expect(a.counters.arpRequestsSent).toBe(1);
    clock.t = 1000;
    a.poll();
    clock.t = 2000;
    a.poll();
    expect(a.counters.arpRequestsSent).toBe(3);
    expect(sent.length).toBe(3); // ARP requests only
    clock.t = 3000;
    a.poll(); // 3 requests unanswered: give up on the queued datagrams
    expect(a.counters.txDropReasons['arp-unresolved']).toBe(3);
    expect(a.counters.txDropped).toBe(4);
    expect(a.counters.arpRequestsSent).toBe(3);
    // A later send starts a fresh resolution.
    expect(a.sendUdp(IP_B, 9, 1, bytes('q'))).toBe(true);
    expect(a.counters.arpRequestsSent).toBe(4);

    // A late reply still flushes what is queued now.
    a.receive(
      buildFrame({
        dst: parseMac(MAC_A),
        src: parseMac(MAC_B),
        ethertype: ETHERTYPE_ARP,
        payload: encodeArp({ op: ARP_OP_REPLY, senderMac: parseMac(MAC_B), senderIp: parseIp(IP_B), targetMac: parseMac(MAC_A), targetIp: parseIp(IP_A) }),
      }),
    );
    expect(sent.length).toBe(5);
    expect((sent[4][12] << 8) | sent[4][13]).toBe(ETHERTYPE_IPV4);
    expect(formatMac(sent[4].subarray(0, 6))).toBe(MAC_B);
  });

  it('sends to 255.255.255.255 via the broadcast MAC without ARP', () => {
    const { a, b, wire, drain } = backToBack();
    const got: UdpSource[] = [];
    b.bindUdp(67, (src) => got.push(src));
    expect(a.sendUdp('255.255.255.255', 67, 68, bytes('bcast'))).toBe(true);
    expect(wire.a.length).toBe(1);
    expect(isBroadcastMac(wire.a[0].subarray(0, 6))).toBe(true);
    expect(a.counters.arpRequestsSent).toBe(0);
    drain();
    expect(got).toEqual([{ ip: IP_A, port: 68, mac: MAC_A }]);
  });

  it('rejects invalid send arguments and refuses our own address', () => {
    const a = new NetStack({ mac: parseMac(MAC_A), ip: IP_A, transmit: () => {} });
    expect(() => a.sendUdp('nope', 1, 1, bytes('x'))).toThrow();
    expect(() => a.sendUdp(IP_B, 0, 1, bytes('x'))).toThrow(InvalidArgumentError);
    expect(() => a.sendUdp(IP_B, 1, 70000, bytes('x'))).toThrow(InvalidArgumentError);
    expect(() => a.sendUdp(IP_B, 1, 1, new Uint8Array(MAX_UDP_PAYLOAD + 1))).toThrow(InvalidArgumentError);
    expect(a.sendUdp(IP_A, 1, 1, bytes('x'))).toBe(false);
    expect(a.counters.txDropReasons.self).toBe(1);
    expect(() => a.bindUdp(0, () => {})).toThrow(InvalidArgumentError);
    a.bindUdp(5, () => {});
    expect(() => a.bindUdp(5, () => {})).toThrow();
    expect(() => new NetStack({ mac: broadcastMac(), ip: IP_A, transmit: () => {} })).toThrow(InvalidArgumentError);
  });

  it('passes a busy driver back to the sender: sendUdp is false while the NIC refuses, true again once it takes frames', () => {
    let busy = false;
    const taken: Uint8Array[] = [];
    const a = new NetStack({ mac: parseMac(MAC_A), ip: IP_A, transmit: (f) => (busy ? false : void taken.push(f)) });
    expect(a.sendUdp('255.255.255.255', 9, 1, bytes('x'))).toBe(true);
    busy = true;
    expect(a.sendUdp('255.255.255.255', 9, 1, bytes('y'))).toBe(false);
    expect(a.counters.txDropReasons['device-busy']).toBe(1);
    expect(a.counters.txFrames).toBe(1);
    busy = false;
    expect(a.sendUdp('255.255.255.255', 9, 1, bytes('z'))).toBe(true);
    expect(taken.length).toBe(2);
    expect(a.counters.txFrames).toBe(2);
  });

  it('a maximum-size datagram fits one 1514-byte frame', () => {
    const { a, b, wire, drain } = backToBack();
    let len = -1;
    b.bindUdp(9, (_s, p) => (len = p.length));
    a.sendUdp(IP_B, 9, 1, new Uint8Array(MAX_UDP_PAYLOAD).fill(7));
    drain();
    expect(wire.a[wire.a.length - 1].length).toBe(1514);
    expect(len).toBe(1472);
  });

  describe('never throws from receive on malformed input', () => {
    const mkPair = () => {
      const { a, b, wire, drain } = backToBack();
      b.bindUdp(9, () => {});
      a.sendUdp(IP_B, 9, 1, Uint8Array.from({ length: 100 }, (_, i) => i));
      drain();
      return { b, frame: wire.a[wire.a.length - 1] };
    };

    it('random bytes', () => {
      const { b } = mkPair();
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 1600 }), (f) => {
          expect(() => b.receive(f)).not.toThrow();
        }),
        { numRuns: 1000 },
      );
      expect(b.counters.udpDelivered).toBe(1);
    });

    it('every truncation of a valid frame is dropped', () => {
      const { b, frame } = mkPair();
      const before = b.counters;
      for (let n = 0; n < frame.length; n++) expect(() => b.receive(frame.subarray(0, n))).not.toThrow();
      const after = b.counters;
      expect(after.udpDelivered).toBe(before.udpDelivered);
      expect(after.rxDropped - before.rxDropped).toBe(frame.length);
    });

    it('random mutations of valid IP and ARP frames', () => {
      const { b, frame } = mkPair();
      const arp = buildFrame({
        dst: broadcastMac(),
        src: parseMac(MAC_A),
        ethertype: ETHERTYPE_ARP,
        payload: encodeArp(arpRequest(parseMac(MAC_A), parseIp(IP_A), parseIp(IP_B))),
      });
      fc.assert(
        fc.property(
          fc.constantFrom(frame, arp),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }),
          fc.nat(),
          (base, edits, cut) => {
            const f = base.slice(0, Math.max(0, base.length - (cut % 4)));
            for (const [pos, x] of edits) f[pos % f.length] ^= x;
            expect(() => b.receive(f)).not.toThrow();
          },
        ),
        { numRuns: 2000 },
      );
    });
  });
});
