import { describe, expect, it } from 'vitest';
import { ETHERTYPE_IPV4, parseMac } from '../net/ethernet.js';
import { NetStack } from '../net/stack.js';
import { decodeFlowDatagram, encodeFlowDatagram, FLOW_HEADER_SIZE, UdpEchoServer, UdpFlowClient } from './udp-flows.js';
import { InvalidArgumentError } from '@ringvisor/shared';

const IP_A = '10.1.0.1';
const IP_B = '10.1.0.2';
const UDP_PAYLOAD_OFFSET = 14 + 20 + 8;

type Dir = 'ab' | 'ba';
/** Decides what the link does with a frame: deliver it (possibly rewritten), several times, or not at all. */
type Impair = (dir: Dir, frame: Uint8Array) => Uint8Array[];

function makeLink(impair?: Impair) {
  const queue: Array<{ dir: Dir; frame: Uint8Array }> = [];
  const a = new NetStack({ mac: parseMac('00:16:3e:01:00:01'), ip: IP_A, transmit: (f) => void queue.push({ dir: 'ab', frame: f }), now: () => 0 });
  const b = new NetStack({ mac: parseMac('00:16:3e:01:00:02'), ip: IP_B, transmit: (f) => void queue.push({ dir: 'ba', frame: f }), now: () => 0 });
  const drain = () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const out = impair ? impair(item.dir, item.frame) : [item.frame];
      for (const f of out) (item.dir === 'ab' ? b : a).receive(f);
    }
  };
  return { a, b, drain };
}

const isUdp = (f: Uint8Array) => ((f[12] << 8) | f[13]) === ETHERTYPE_IPV4 && f[23] === 17;
const seqOf = (f: Uint8Array) => decodeFlowDatagram(f.subarray(UDP_PAYLOAD_OFFSET))?.seq ?? -1;

function run(client: UdpFlowClient, drain: () => void, stepMs = 5, maxSteps = 100_000) {
  let t = 0;
  for (let i = 0; i < maxSteps && !client.done; i++) {
    client.tick((t += stepMs));
    drain();
  }
  expect(client.done).toBe(true);
}

describe('flow datagrams', () => {
  it('round-trip and reject corruption anywhere', () => {
    const buf = new Uint8Array(64);
    encodeFlowDatagram(buf, 0xabcdef01, 77);
    expect(decodeFlowDatagram(buf)).toEqual({ flowId: 0xabcdef01, seq: 77 });
    expect(new TextDecoder().decode(buf.subarray(0, 4))).toBe('RVUF');
    for (let i = 0; i < buf.length; i++) {
      const bad = buf.slice();
      bad[i] ^= 0x20;
      expect(decodeFlowDatagram(bad), `byte ${i}`).toBeNull();
    }
    const other = new Uint8Array(64);
    encodeFlowDatagram(other, 0xabcdef01, 78);
    expect(Buffer.compare(other.subarray(FLOW_HEADER_SIZE), buf.subarray(FLOW_HEADER_SIZE))).not.toBe(0);
    expect(decodeFlowDatagram(buf.subarray(0, 15))).toBeNull();
  });
});

describe('UDP echo flows', () => {
  it('a clean link echoes everything in order', () => {
    const { a, b, drain } = makeLink();
    const server = new UdpEchoServer({ stack: b, port: 7 });
    const client = new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 40000, flowId: 42, payloadSize: 200, window: 16, count: 500 });
    const seen: number[] = [];
    const origReceive = a.receive.bind(a);
    a.receive = (f) => {
      if (isUdp(f)) seen.push(seqOf(f));
      origReceive(f);
    };
    run(client, drain);
    // Round trips are timed for every echo; the percentiles come from those samples.
    const { rttP50Us, rttP99Us, rttP999Us, ...counts } = client.stats;
    expect(rttP50Us).toBeGreaterThanOrEqual(0);
    expect(rttP99Us).toBeGreaterThanOrEqual(rttP50Us!);
    expect(rttP999Us).toBeGreaterThanOrEqual(rttP99Us!);
    expect(counts).toEqual({
      sent: 500,
      echoed: 500,
      lost: 0,
      duplicated: 0,
      reordered: 0,
      corrupted: 0,
      late: 0,
      refused: 1, // the 9th initial send, while ARP resolves: the stack queues only 8 per destination
      outstanding: 0,
      bytesSent: 500 * 200,
      bytesEchoed: 500 * 200,
    });
    expect(seen).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(server.stats).toEqual({ received: 500, echoed: 500, refused: 0, bytes: 500 * 200 });
    expect(a.counters.arpRequestsSent).toBe(1);
  });

  it('keeps at most `window` datagrams outstanding', () => {
    const { a, b, drain } = makeLink();
    new UdpEchoServer({ stack: b, port: 7 });
    const client = new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 40000, flowId: 1, payloadSize: 64, window: 4, count: 20 });
    drain(); // nothing sent before the first tick
    expect(client.stats.sent).toBe(0);
    client.tick(0);
    expect(client.stats.sent).toBe(4);
    expect(client.stats.outstanding).toBe(4);
    client.tick(1);
    expect(client.stats.sent).toBe(4); // window full until echoes arrive
    drain();
    // Echoes refill the window by themselves (self-clocking) until `count` is reached.
    expect(client.stats).toMatchObject({ sent: 20, echoed: 20, outstanding: 0 });
    expect(client.done).toBe(true);
  });

  it('a lossy, duplicating, reordering, corrupting link yields matching counters', () => {
    const COUNT = 600;
    const forwardDrop = (s: number) => s % 17 === 0;
    let held: Uint8Array | undefined;
    // Oracle for reordering: intact first copies delivered after a higher seq was delivered.
    let maxDelivered = -1;
    let expectedReordered = 0;
    const deliveredIntact = (f: Uint8Array) => {
      const seq = seqOf(f);
      if (seq < maxDelivered) expectedReordered++;
      maxDelivered = Math.max(maxDelivered, seq);
      return f;
    };
    const impair: Impair = (dir, f) => {
      if (!isUdp(f)) return [f]; // ARP untouched
      const seq = seqOf(f);
      if (dir === 'ab') return forwardDrop(seq) ? [] : [f];
      const release = (out: Uint8Array[]) => {
        if (held && out.length) {
          out.push(deliveredIntact(held));
          held = undefined;
        }
        return out;
      };
      switch (seq % 10) {
        case 3:
          return []; // dropped
        case 5:
          return release([deliveredIntact(f), f.slice()]);
        case 7: {
          // Corrupt the flow data and zero the UDP checksum so the stack lets it through.
          const bad = f.slice();
          bad[UDP_PAYLOAD_OFFSET + 40] ^= 0x01;
          bad[40] = bad[41] = 0;
          return release([bad]);
        }
        case 8:
          held = f; // delivered after the next frame that gets through
          return [];
        default:
          return release([deliveredIntact(f)]);
      }
    };
    const link = makeLink(impair);
    const { a, b } = link;
    // Anything still held when the wire goes idle is released then (same tick, so never late).
    const drain = () => {
      link.drain();
      if (held) {
        const f = deliveredIntact(held);
        held = undefined;
        a.receive(f);
        link.drain();
      }
    };
    const server = new UdpEchoServer({ stack: b, port: 7 });
    const client = new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 40000, flowId: 9, payloadSize: 300, window: 8, count: COUNT, timeoutMs: 50 });
    run(client, drain);

    const seqs = Array.from({ length: COUNT }, (_, s) => s).filter((s) => !forwardDrop(s));
    const mod = (r: number) => seqs.filter((s) => s % 10 === r).length;
    const fwdLost = COUNT - seqs.length;
    const expectedLost = fwdLost + mod(3) + mod(7);
    const { rttP50Us: _p50, rttP99Us: _p99, rttP999Us: _p999, ...s } = client.stats;
    expect(server.stats.received).toBe(seqs.length);
    expect(s).toEqual({
      sent: COUNT,
      echoed: COUNT - expectedLost,
      lost: expectedLost,
      duplicated: mod(5),
      reordered: expectedReordered,
      corrupted: mod(7),
      late: 0,
      refused: 0,
      outstanding: 0,
      bytesSent: COUNT * 300,
      bytesEchoed: (COUNT - expectedLost) * 300,
    });
    expect(fwdLost).toBeGreaterThan(30);
    expect(expectedReordered).toBeGreaterThan(30);
    expect(expectedReordered).toBeLessThanOrEqual(mod(8));
  });

  it('counts late echoes, wrong flows and never-sent seqs', () => {
    let holdNext = false;
    const held: Uint8Array[] = [];
    const { a, b, drain } = makeLink((dir, f) => {
      if (dir === 'ba' && isUdp(f) && holdNext) {
        holdNext = false;
        held.push(f);
        return [];
      }
      return [f];
    });
    new UdpEchoServer({ stack: b, port: 7 });
    const client = new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 40000, flowId: 5, payloadSize: 32, window: 1, count: 2, timeoutMs: 100 });
    holdNext = true;
    client.tick(0);
    drain();
    expect(client.stats).toMatchObject({ sent: 1, echoed: 0, outstanding: 1 });
    client.tick(99);
    expect(client.stats.lost).toBe(0);
    client.tick(100); // seq 0 declared lost, seq 1 sent
    drain();
    expect(client.stats).toMatchObject({ sent: 2, echoed: 1, lost: 1 });
    a.receive(held[0]); // seq 0 finally arrives: late, no longer lost
    expect(client.stats).toMatchObject({ echoed: 1, late: 1, lost: 0, duplicated: 0, corrupted: 0 });
    a.receive(held[0]); // and once more: a duplicate
    expect(client.stats).toMatchObject({ echoed: 1, late: 1, lost: 0, duplicated: 1, corrupted: 0 });

    // Forged datagrams sent from the server's address and port.
    const forge = (flowId: number, seq: number, size = 32) => {
      const p = new Uint8Array(size);
      encodeFlowDatagram(p, flowId, seq);
      b.sendUdp(IP_A, 40000, 7, p);
      drain();
    };
    forge(6, 1); // another flow
    forge(5, 1000); // never sent
    forge(5, 0, 48); // wrong size
    expect(client.stats.corrupted).toBe(3);
    forge(5, 1); // seq 1 echoed already (and valid)
    expect(client.stats.duplicated).toBe(2);
    // Valid datagram from an unexpected peer port.
    const p = new Uint8Array(32);
    encodeFlowDatagram(p, 5, 1);
    b.sendUdp(IP_A, 40000, 8, p);
    drain();
    expect(client.stats.corrupted).toBe(4);
    expect(client.stats.echoed).toBe(1);
  });

  it('refuses sends the stack drops and resumes later', () => {
    // No peer: ARP never resolves, and the stack queues at most 3 per destination.
    const a = new NetStack({ mac: parseMac('00:16:3e:01:00:01'), ip: IP_A, transmit: () => {}, now: () => 0, maxPendingPerDest: 3 });
    const client = new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 1, flowId: 1, payloadSize: 16, window: 10, timeoutMs: 10 });
    client.tick(0);
    expect(client.stats).toMatchObject({ sent: 3, refused: 1, outstanding: 3 });
    client.tick(10);
    expect(client.stats.lost).toBe(3);
    expect(client.stats.refused).toBe(2); // queue still full: refused again, no seq consumed
    expect(() => new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 2, flowId: 1, payloadSize: 15, window: 1 })).toThrow(InvalidArgumentError);
    expect(() => new UdpFlowClient({ stack: a, dstIp: IP_B, dstPort: 7, srcPort: 2, flowId: 1, payloadSize: 1473, window: 1 })).toThrow(InvalidArgumentError);
  });
});
