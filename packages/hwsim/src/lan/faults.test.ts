import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, PortLink, RpcPeer } from '@ringvisor/shared';
import { FrameFaulter, REORDER_HOLD_MS, type FrameFaultCounters, type FrameFaults } from './faults.js';
import { LAN_HEARTBEAT, remoteLanPort, type RemoteLanPort } from './remote.js';

const PAYLOAD = 50;

/** An Ethernet frame whose source MAC carries `seq` (the header is never corrupted). */
function frame(seq: number): Uint8Array {
  const f = new Uint8Array(14 + PAYLOAD);
  f.set([0x02, 0, 0, 0, 0, 0x01], 0);
  f.set([0x02, 0, 0, 0, (seq >>> 8) & 0xff, seq & 0xff], 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 0; i < PAYLOAD; i++) f[14 + i] = (seq * 31 + i * 7) & 0xff;
  return f;
}

function seqOf(f: Uint8Array): number {
  return (f[10] << 8) | f[11];
}

/** What a receiver can tell about faults, from the frames it got for frames 0..n-1 sent in order. */
function observe(got: Uint8Array[], n: number): FrameFaultCounters {
  const seen = new Set<number>();
  const late = new Set<number>();
  const corrupt = new Set<number>();
  const odd: string[] = [];
  let highest = -1;
  for (const f of got) {
    const s = seqOf(f);
    if (s >= n) odd.push(`unknown frame ${s}`);
    if (s < highest) late.add(s);
    highest = Math.max(highest, s);
    seen.add(s);
    const want = frame(s);
    let diff = 0;
    for (let i = 0; i < f.byteLength; i++) if (f[i] !== want[i]) diff++;
    if (f.byteLength !== want.byteLength) odd.push(`frame ${s}: length ${f.byteLength}`);
    if (diff > 1) odd.push(`frame ${s}: ${diff} bytes changed`); // one byte at most
    for (let i = 0; i < 14; i++) if (f[i] !== want[i]) odd.push(`frame ${s}: header byte ${i} changed`);
    if (diff === 1) corrupt.add(s);
  }
  expect(odd).toEqual([]);
  return { dropped: n - seen.size, duplicated: got.length - seen.size, reordered: late.size, corrupted: corrupt.size };
}

function runFaulter(faults: FrameFaults, n: number): { got: Uint8Array[]; counters: FrameFaultCounters } {
  const got: Uint8Array[] = [];
  const faulter = new FrameFaulter(faults, (f) => got.push(f));
  for (let i = 0; i < n; i++) faulter.apply(frame(i));
  faulter.flush();
  return { got, counters: faulter.counters };
}

/** RFC 1071 one's-complement sum, folded and inverted. */
function inetChecksum(data: Uint8Array, acc = 0): number {
  let sum = acc;
  for (let i = 0; i + 1 < data.byteLength; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.byteLength & 1) sum += data[data.byteLength - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An Ethernet/IPv4/UDP frame with valid IP header and UDP checksums. */
function udpFrame(seq: number): Uint8Array {
  const data = Uint8Array.from({ length: 40 }, (_, i) => (seq + i * 13) & 0xff);
  const f = new Uint8Array(14 + 20 + 8 + data.byteLength);
  const v = new DataView(f.buffer);
  f.set([0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02], 0);
  v.setUint16(12, 0x0800);
  const ip = f.subarray(14, 34);
  ip.set([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
  v.setUint16(16, 20 + 8 + data.byteLength);
  v.setUint16(18, seq);
  v.setUint16(24, inetChecksum(ip));
  const udp = f.subarray(34);
  v.setUint16(34, 5000);
  v.setUint16(36, 6000);
  v.setUint16(38, 8 + data.byteLength);
  udp.set(data, 8);
  const pseudo = Uint8Array.from([10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 8 + data.byteLength]);
  const sum = inetChecksum(udp, (~inetChecksum(pseudo) & 0xffff)) || 0xffff;
  v.setUint16(40, sum);
  return f;
}

/** Whether the receiver's IPv4 header check or UDP checksum passes. */
function udpFrameValid(f: Uint8Array): boolean {
  const ip = f.subarray(14, 34);
  if (inetChecksum(ip) !== 0) return false;
  const udp = f.subarray(34);
  const sent = (udp[6] << 8) | udp[7];
  if (sent === 0) return true; // "no checksum": nothing to catch with
  const pseudo = Uint8Array.from([ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19], 0, ip[9], udp[4], udp[5]]);
  return inetChecksum(udp, ~inetChecksum(pseudo) & 0xffff) === 0;
}

describe('FrameFaulter', () => {
  const ALL: FrameFaults = { drop: 0.1, duplicate: 0.1, reorder: 0.1, corrupt: 0.1, seed: 1234 };

  it('with a seed, produces the same pattern twice (and another with another seed)', () => {
    const a = runFaulter(ALL, 1000);
    const b = runFaulter(ALL, 1000);
    expect(b.got).toEqual(a.got);
    expect(b.counters).toEqual(a.counters);
    const c = runFaulter({ ...ALL, seed: 4321 }, 1000);
    expect(c.got).not.toEqual(a.got);
  });

  it('counts exactly the drops, duplicates, reorders and corruptions the receiver observes', () => {
    const n = 3000;
    const { got, counters } = runFaulter(ALL, n);
    expect(observe(got, n)).toEqual(counters);
    for (const k of ['dropped', 'duplicated', 'corrupted'] as const) {
      expect(counters[k]).toBeGreaterThan(n * 0.07);
      expect(counters[k]).toBeLessThan(n * 0.13);
    }
    expect(counters.reordered).toBeGreaterThan(n * 0.05); // a frame held while another is held goes out in order
    expect(counters.reordered).toBeLessThan(n * 0.13);
  });

  it('counts each fault alone', () => {
    for (const k of ['drop', 'duplicate', 'reorder', 'corrupt'] as const) {
      const { got, counters } = runFaulter({ [k]: 0.3, seed: 9 }, 500);
      const seen = observe(got, 500);
      expect(seen).toEqual(counters);
      const nonzero = Object.entries(seen).filter(([, v]) => v > 0).map(([name]) => name);
      expect(nonzero).toEqual([{ drop: 'dropped', duplicate: 'duplicated', reorder: 'reordered', corrupt: 'corrupted' }[k]]);
    }
  });

  it('with probability 0 changes nothing', () => {
    const { got, counters } = runFaulter({ drop: 0, duplicate: 0, reorder: 0, corrupt: 0, seed: 5 }, 200);
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => frame(i)));
    expect(counters).toEqual({ dropped: 0, duplicated: 0, reordered: 0, corrupted: 0 });
    expect(new FrameFaulter({ drop: 0 }, () => {}).active).toBe(false);
  });

  it('corrupts one payload byte, which the IPv4 header or UDP checksum catches', () => {
    const got: Uint8Array[] = [];
    const faulter = new FrameFaulter({ corrupt: 1, seed: 77 }, (f) => got.push(f));
    for (let i = 0; i < 500; i++) {
      expect(udpFrameValid(udpFrame(i))).toBe(true);
      faulter.apply(udpFrame(i));
    }
    expect(faulter.counters.corrupted).toBe(500);
    for (const [i, f] of got.entries()) {
      expect(f.subarray(0, 14)).toEqual(udpFrame(i).subarray(0, 14));
      expect(udpFrameValid(f)).toBe(false);
    }
  });

  it('sends a held-back frame alone after REORDER_HOLD_MS if nothing overtakes it', async () => {
    const got: Uint8Array[] = [];
    const faulter = new FrameFaulter({ reorder: 1 }, (f) => got.push(f));
    faulter.apply(frame(0));
    expect(got).toEqual([]);
    await new Promise((r) => setTimeout(r, REORDER_HOLD_MS + 20));
    expect(got).toEqual([frame(0)]);
    expect(faulter.counters.reordered).toBe(0);
  });

  it('refuses probabilities outside [0, 1]', () => {
    expect(() => new FrameFaulter({ drop: 1.5 }, () => {})).toThrow(InvalidArgumentError);
    expect(() => new FrameFaulter({ corrupt: -0.1 }, () => {})).toThrow(InvalidArgumentError);
    expect(() => new FrameFaulter({ reorder: Number.NaN }, () => {})).toThrow(InvalidArgumentError);
  });
});

describe('remoteLanPort frame faults', () => {
  const open: Array<{ close(): void }> = [];
  afterEach(() => {
    for (const o of open.splice(0)) o.close();
  });

  /** A host uplink and the switch's end of the same cable, over a worker MessageChannel. */
  function cable(): { host: RemoteLanPort; sw: RemoteLanPort; got: Uint8Array[]; swPeer: RpcPeer; links: PortLink[] } {
    const ch = new MessageChannel();
    const links = [new PortLink(ch.port1), new PortLink(ch.port2)];
    const hostPeer = new RpcPeer(links[0], 'host');
    const swPeer = new RpcPeer(links[1], 'switch');
    const host = remoteLanPort(hostPeer, 'host');
    const sw = remoteLanPort(swPeer, 'sw');
    const got: Uint8Array[] = [];
    sw.onFrame((f) => got.push(f));
    open.push(host, sw, { close: () => links[0].close('test over') });
    return { host, sw, got, swPeer, links };
  }

  async function settle(got: Uint8Array[]): Promise<void> {
    let last = -1;
    while (got.length !== last) {
      last = got.length;
      await new Promise((r) => setTimeout(r, REORDER_HOLD_MS + 30));
    }
  }

  it('applies seeded faults to outgoing frames; the far end observes what the counters say, the same twice', async () => {
    const n = 400;
    const runs: Array<{ got: Uint8Array[]; counters: FrameFaultCounters }> = [];
    for (let run = 0; run < 2; run++) {
      const { host, got } = cable();
      host.setFrameFaults({ drop: 0.1, duplicate: 0.1, reorder: 0.1, corrupt: 0.1, seed: 99 });
      for (let i = 0; i < n; i++) host.send(frame(i));
      await settle(got);
      expect(observe(got, n)).toEqual(host.frameFaults);
      expect(host.frameFaults.dropped).toBeGreaterThan(0);
      runs.push({ got, counters: host.frameFaults });
    }
    expect(runs[1]).toEqual(runs[0]);
  });

  it('with probability 0 or after clearFrameFaults, frames pass unchanged; counters are kept', async () => {
    const { host, got } = cable();
    host.setFrameFaults({ drop: 0, duplicate: 0, reorder: 0, corrupt: 0, seed: 3 });
    for (let i = 0; i < 50; i++) host.send(frame(i));
    host.setFrameFaults({ reorder: 1, seed: 3 });
    host.send(frame(50)); // held back …
    host.clearFrameFaults(); // … and sent now, in order
    for (let i = 51; i < 100; i++) host.send(frame(i));
    await settle(got);
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => frame(i)));
    expect(host.frameFaults).toEqual({ dropped: 0, duplicated: 0, reordered: 0, corrupted: 0 });
    host.setFrameFaults({ drop: 1 });
    host.send(frame(100));
    host.setFrameFaults(undefined);
    expect(host.frameFaults.dropped).toBe(1);
    expect(() => host.setFrameFaults({ drop: 2 })).toThrow(InvalidArgumentError);
  });

  it('never touches heartbeats: with every frame dropped, the carrier stays up', async () => {
    const { host, sw, got, swPeer } = cable();
    let beats = 0;
    swPeer.on(LAN_HEARTBEAT, () => beats++);
    host.setFrameFaults({ drop: 1 });
    for (let i = 0; i < 10; i++) host.send(frame(i));
    await new Promise((r) => setTimeout(r, 600));
    expect(got).toEqual([]);
    expect(host.frameFaults.dropped).toBe(10);
    expect(beats).toBeGreaterThanOrEqual(1);
    expect(sw.state.carrier).toBe(true);
  });

  it('keeps the old behaviour without faults: frames are copied across, sends after close are counted dropped', async () => {
    const { host, got, links } = cable();
    const f = frame(7);
    host.send(f);
    f.fill(0); // the port did not keep the caller's buffer
    await settle(got);
    expect(got).toEqual([frame(7)]);
    links[0].close('unplugged');
    host.send(frame(8));
    expect(host.dropped).toBe(1);
  });
});
