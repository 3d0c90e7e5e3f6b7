import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../errors.js';
import { LINKTYPE_ETHERNET, PcapngWriter, openPcapngFile } from './pcapng.js';

/** A writer whose sink collects the blocks it is handed. */
function collecting(opts?: ConstructorParameters<typeof PcapngWriter>[1]): {
  writer: PcapngWriter;
  blocks: Uint8Array[];
} {
  const blocks: Uint8Array[] = [];
  const writer = new PcapngWriter((b) => blocks.push(b), opts);
  return { writer, blocks };
}

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

interface ParsedOption {
  code: number;
  value: Uint8Array;
}

/** Parses an option list from `off` up to the trailing total length, checking padding and endofopt. */
function parseOptions(block: Uint8Array, off: number): ParsedOption[] {
  const v = dv(block);
  const end = block.length - 4;
  const out: ParsedOption[] = [];
  if (off === end) return out;
  for (;;) {
    expect(off + 4).toBeLessThanOrEqual(end);
    const code = v.getUint16(off, true);
    const len = v.getUint16(off + 2, true);
    if (code === 0) {
      expect(len).toBe(0);
      expect(off + 4).toBe(end); // opt_endofopt is last
      return out;
    }
    const padded = (len + 3) & ~3;
    out.push({ code, value: block.slice(off + 4, off + 4 + len) });
    expect([...block.subarray(off + 4 + len, off + 4 + padded)].every((x) => x === 0)).toBe(true);
    off += 4 + padded;
  }
}

/** Checks the framing every block shares and returns its type. */
function checkFraming(block: Uint8Array): number {
  const v = dv(block);
  expect(block.length % 4).toBe(0);
  expect(v.getUint32(4, true)).toBe(block.length);
  expect(v.getUint32(block.length - 4, true)).toBe(block.length);
  return v.getUint32(0, true);
}

// ---- Ethernet / IPv4 / UDP frame building -----------------------------------------------------

function ipv4Checksum(header: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += (header[i] << 8) | header[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const parseIp = (s: string): number[] => s.split('.').map(Number);
const parseMac = (s: string): number[] => s.split(':').map((h) => parseInt(h, 16));

interface UdpFrame {
  srcMac: string;
  dstMac: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Uint8Array;
  ipId?: number;
}

/** Ethernet II + IPv4 (20-byte header, correct checksum, DF) + UDP (checksum 0 = none). */
function udpFrame(f: UdpFrame): Uint8Array {
  const udpLen = 8 + f.payload.length;
  const ipLen = 20 + udpLen;
  const frame = new Uint8Array(14 + ipLen);
  const v = dv(frame);
  frame.set(parseMac(f.dstMac), 0);
  frame.set(parseMac(f.srcMac), 6);
  v.setUint16(12, 0x0800);
  const ip = frame.subarray(14, 34);
  ip[0] = 0x45; // version 4, IHL 5
  v.setUint16(16, ipLen);
  v.setUint16(18, f.ipId ?? 0);
  v.setUint16(20, 0x4000); // DF, offset 0
  ip[8] = 64; // TTL
  ip[9] = 17; // UDP
  ip.set(parseIp(f.src), 12);
  ip.set(parseIp(f.dst), 16);
  v.setUint16(24, ipv4Checksum(ip));
  v.setUint16(34, f.sport);
  v.setUint16(36, f.dport);
  v.setUint16(38, udpLen);
  v.setUint16(40, 0);
  frame.set(f.payload, 42);
  return frame;
}

// ---- byte-level tests ------------------------------------------------------------------------

describe('PcapngWriter blocks', () => {
  it('emits a Section Header Block on construction with magic, version, section length and options', () => {
    const { blocks } = collecting({ application: 'ringvisor', hardware: 'x86_64', os: 'Linux 6.1' });
    expect(blocks).toHaveLength(1);
    const shb = blocks[0];
    expect(checkFraming(shb)).toBe(0x0a0d0d0a);
    const v = dv(shb);
    // Type is a palindrome; the magic's little-endian bytes say "little-endian section".
    expect([...shb.subarray(0, 4)]).toEqual([0x0a, 0x0d, 0x0d, 0x0a]);
    expect([...shb.subarray(8, 12)]).toEqual([0x4d, 0x3c, 0x2b, 0x1a]);
    expect(v.getUint32(8, true)).toBe(0x1a2b3c4d);
    expect(v.getUint16(12, true)).toBe(1);
    expect(v.getUint16(14, true)).toBe(0);
    expect(v.getBigInt64(16, true)).toBe(-1n);
    expect([...shb.subarray(16, 24)].every((x) => x === 0xff)).toBe(true);
    const opts = parseOptions(shb, 24);
    expect(opts.map((o) => [o.code, text(o.value)])).toEqual([
      [2, 'x86_64'],
      [3, 'Linux 6.1'],
      [4, 'ringvisor'],
    ]);
    // 28 fixed + (4+8) + (4+12) + (4+12) + 4 endofopt = 76
    expect(shb.length).toBe(76);
    expect(v.getUint32(4, true)).toBe(76);
    expect(v.getUint32(72, true)).toBe(76);
  });

  it('defaults shb_userappl to "ringvisor", shb_os to this host, and omits shb_hardware', () => {
    const { blocks } = collecting();
    const opts = parseOptions(blocks[0], 24);
    expect(opts.map((o) => o.code)).toEqual([3, 4]);
    expect(text(opts[0].value).length).toBeGreaterThan(0);
    expect(text(opts[1].value)).toBe('ringvisor');
  });

  it('writes an Interface Description Block with linktype, snaplen, if_name, if_description, if_tsresol', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    const id = writer.interfaceId('host0/guest1/vif0', 'netfront of guest1');
    expect(id).toBe(0);
    expect(blocks).toHaveLength(2);
    const idb = blocks[1];
    expect(checkFraming(idb)).toBe(0x00000001);
    const v = dv(idb);
    expect(v.getUint16(8, true)).toBe(LINKTYPE_ETHERNET);
    expect(v.getUint16(10, true)).toBe(0);
    expect(v.getUint32(12, true)).toBe(65535);
    const opts = parseOptions(idb, 16);
    expect(opts.map((o) => o.code)).toEqual([2, 3, 9]);
    expect(text(opts[0].value)).toBe('host0/guest1/vif0');
    expect(text(opts[1].value)).toBe('netfront of guest1');
    expect([...opts[2].value]).toEqual([6]); // 1-byte value, 10^-6 s
    // 16 fixed + (4+20: 17 chars padded) + (4+20: 18 chars padded) + (4+4) + 4 endofopt + 4 trailer
    expect(idb.length).toBe(16 + 24 + 24 + 8 + 4 + 4);
    // if_tsresol's value sits in a 4-byte slot: 1 byte + 3 zero padding bytes, then opt_endofopt.
    const tsresolAt = 16 + 24 + 24;
    expect([...idb.subarray(tsresolAt, tsresolAt + 12)]).toEqual([9, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('omits if_description when none is given', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    writer.interfaceId('eth0');
    expect(parseOptions(blocks[1], 16).map((o) => o.code)).toEqual([2, 9]);
  });

  it('returns the same id for the same interface name without a second IDB; a second name gets id 1', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    expect(writer.interfaceId('host0/guest1/vif0')).toBe(0);
    expect(writer.interfaceId('host0/guest1/vif0', 'other description')).toBe(0);
    expect(blocks).toHaveLength(2);
    expect(writer.interfaceId('host0/peth0')).toBe(1);
    expect(writer.interfaceId('host0/guest1/vif0')).toBe(0);
    expect(writer.interfaceId('host0/peth0')).toBe(1);
    expect(blocks).toHaveLength(3);
    expect(text(parseOptions(blocks[2], 16)[0].value)).toBe('host0/peth0');
  });

  it('writes an Enhanced Packet Block: µs timestamp split hi/lo, lengths, padded 61-byte frame, repeated length', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    const ifId = writer.interfaceId('a');
    writer.interfaceId('b');
    const frame = new Uint8Array(61).map((_, i) => i + 1); // no zero bytes, so padding is visible
    writer.packet(1, 1700000000123.456, frame);
    const epb = blocks[3];
    expect(ifId).toBe(0);
    expect(checkFraming(epb)).toBe(0x00000006);
    const v = dv(epb);
    expect(v.getUint32(8, true)).toBe(1);
    // 1700000000123456 µs = 0x00060A24_18202240: high word first, each word little-endian.
    const us = 1700000000123456n;
    expect(v.getUint32(12, true)).toBe(Number(us >> 32n));
    expect(v.getUint32(16, true)).toBe(Number(us & 0xffffffffn));
    expect(v.getUint32(12, true)).toBe(0x00060a24);
    expect(v.getUint32(16, true)).toBe(0x18202240);
    expect([...epb.subarray(12, 20)]).toEqual([0x24, 0x0a, 0x06, 0x00, 0x40, 0x22, 0x20, 0x18]);
    expect((BigInt(v.getUint32(12, true)) << 32n) | BigInt(v.getUint32(16, true))).toBe(us);
    expect(v.getUint32(20, true)).toBe(61); // captured
    expect(v.getUint32(24, true)).toBe(61); // original
    expect([...epb.subarray(28, 28 + 61)]).toEqual([...frame]);
    expect([...epb.subarray(28 + 61, 28 + 64)]).toEqual([0, 0, 0]); // padded to 64
    // 28 fixed + 64 data + 4 trailer, no options
    expect(epb.length).toBe(96);
    expect(v.getUint32(92, true)).toBe(96);
    expect(parseOptions(epb, 28 + 64)).toEqual([]);
  });

  it('does not pad a frame that is already a multiple of 4', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    writer.packet(writer.interfaceId('a'), 0, new Uint8Array(64));
    expect(blocks[2].length).toBe(28 + 64 + 4);
    checkFraming(blocks[2]);
  });

  it('rounds sub-microsecond timestamps and handles timestamps below 2^32 µs', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    const id = writer.interfaceId('a');
    writer.packet(id, 1.0006, new Uint8Array(1)); // 1000.6 µs → 1001
    const v = dv(blocks[2]);
    expect(v.getUint32(12, true)).toBe(0);
    expect(v.getUint32(16, true)).toBe(1001);
  });

  it('adds epb_flags with the direction when dir is given', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    const id = writer.interfaceId('a');
    writer.packet(id, 1, new Uint8Array(14), 'in');
    writer.packet(id, 2, new Uint8Array(14), 'out');
    for (const [block, flags] of [
      [blocks[2], 1],
      [blocks[3], 2],
    ] as const) {
      checkFraming(block);
      const opts = parseOptions(block, 28 + 16);
      expect(opts).toHaveLength(1);
      expect(opts[0].code).toBe(2);
      expect(opts[0].value.length).toBe(4);
      expect(dv(opts[0].value).getUint32(0, true)).toBe(flags);
      // 28 fixed + 16 data + (4+4) flags + 4 endofopt + 4 trailer
      expect(block.length).toBe(60);
    }
  });

  it('captures a frame longer than the snaplen truncated, keeping its original length', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    writer.packet(writer.interfaceId('a'), 0, new Uint8Array(65536 + 14));
    const v = dv(blocks[2]);
    expect(v.getUint32(20, true)).toBe(65535);
    expect(v.getUint32(24, true)).toBe(65550);
    expect(blocks[2].length).toBe(28 + 65536 + 4);
    checkFraming(blocks[2]);
  });

  it('rejects an unknown interface id and a negative or non-finite timestamp', () => {
    const { writer } = collecting({ os: 'x' });
    expect(() => writer.packet(0, 0, new Uint8Array(1))).toThrow(InvalidArgumentError);
    const id = writer.interfaceId('a');
    expect(() => writer.packet(id + 1, 0, new Uint8Array(1))).toThrow(InvalidArgumentError);
    expect(() => writer.packet(id, -1, new Uint8Array(1))).toThrow(InvalidArgumentError);
    expect(() => writer.packet(id, Number.NaN, new Uint8Array(1))).toThrow(InvalidArgumentError);
  });

  it('hands each block to the sink in its own buffer', () => {
    const { writer, blocks } = collecting({ os: 'x' });
    const id = writer.interfaceId('a');
    writer.packet(id, 0, new Uint8Array(8).fill(0xaa));
    writer.packet(id, 0, new Uint8Array(8).fill(0xbb));
    expect(blocks[2].buffer).not.toBe(blocks[3].buffer);
    expect(blocks[2][28]).toBe(0xaa);
  });
});

describe('openPcapngFile', () => {
  it('writes the blocks to the file synchronously and refuses writes after close()', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rv-pcapng-'));
    try {
      const path = join(dir, 'x.pcapng');
      const w = openPcapngFile(path, { os: 'x' });
      const id = w.interfaceId('a');
      w.packet(id, 5, new Uint8Array(61));
      const { writer, blocks } = collecting({ os: 'x' });
      writer.packet(writer.interfaceId('a'), 5, new Uint8Array(61));
      const expected = Buffer.concat(blocks);
      expect(readFileSync(path).equals(expected)).toBe(true); // on disk before close()
      w.close();
      w.close();
      expect(() => w.packet(id, 6, new Uint8Array(1))).toThrow(/closed/);
      expect(readFileSync(path).equals(expected)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- tshark ----------------------------------------------------------------------------------

const tsharkAvailable = ((): boolean => {
  const r = spawnSync('tshark', ['--version'], { encoding: 'utf8' });
  return r.error === undefined && r.status === 0;
})();
const underCi = process.env.CI === 'true';

/** Runs tshark; stderr is ignored unless it exits non-zero (as root it always warns on stderr). */
function tshark(args: string[]): string {
  const r = spawnSync('tshark', args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    throw new Error(`tshark ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  }
  return r.stdout;
}

/** Frames tshark marks malformed or with an error-severity expert item, one summary line each. */
const malformedOrErrors = (path: string): string =>
  tshark(['-r', path, '-o', 'ip.check_checksum:TRUE', '-Y', '_ws.malformed || _ws.expert.severity == error']).trim();

/**
 * `-z expert,error`: the count in its "Errors (N)" heading (tshark omits the heading when there
 * are none) and the report itself.
 */
function expertErrors(path: string): { count: number; report: string } {
  const report = tshark(['-r', path, '-o', 'ip.check_checksum:TRUE', '-q', '-z', 'expert,error']);
  const m = /^\s*Errors \((\d+)\)/m.exec(report);
  return { count: m ? Number(m[1]) : 0, report };
}

describe('pcapng read back by tshark', () => {
  it.skipIf(!tsharkAvailable && !underCi)(
    'tshark reads interfaces, IPv4/UDP addresses and ports, timestamps and directions, with nothing malformed',
    () => {
      if (!tsharkAvailable) throw new Error('tshark is required under CI; apt-get install tshark');
      const dir = mkdtempSync(join(tmpdir(), 'rv-pcapng-'));
      try {
        const path = join(dir, 'trace.pcapng');
        const w = openPcapngFile(path, { application: 'ringvisor', hardware: 'ringvisor test' });
        const vif = w.interfaceId('host0/guest1/vif0', 'guest1 netfront');
        const peth = w.interfaceId('host0/peth0');
        expect([vif, peth]).toEqual([0, 1]);

        const t0 = 1700000000123.456;
        const vifFrames: UdpFrame[] = [0, 1, 2].map((i) => ({
          srcMac: '00:16:3e:00:00:01',
          dstMac: '00:16:3e:00:00:02',
          src: '10.0.0.2',
          dst: '10.0.0.1',
          sport: 40000 + i,
          dport: 5001,
          payload: new TextEncoder().encode(`guest1 datagram ${i}`), // 17-18 bytes: odd frame lengths
          ipId: i,
        }));
        const pethFrames: UdpFrame[] = [0, 1].map((i) => ({
          srcMac: '02:00:00:00:00:0a',
          dstMac: '02:00:00:00:00:0b',
          src: '192.168.1.10',
          dst: '192.168.1.20',
          sport: 47100,
          dport: 38000 + i,
          payload: new Uint8Array(19 + i).fill(0x41), // 61- and 62-byte frames
          ipId: 100 + i,
        }));
        // Interleave the two interfaces, as a live capture would.
        w.packet(vif, t0, udpFrame(vifFrames[0]), 'out');
        w.packet(peth, t0 + 0.25, udpFrame(pethFrames[0]), 'in');
        w.packet(vif, t0 + 1, udpFrame(vifFrames[1]), 'out');
        w.packet(peth, t0 + 1.5, udpFrame(pethFrames[1]), 'out');
        w.packet(vif, t0 + 2.001, udpFrame(vifFrames[2]));
        w.close();

        const out = tshark([
          '-r',
          path,
          '-o',
          'ip.check_checksum:TRUE',
          '-T',
          'fields',
          '-E',
          'separator=|',
          '-e',
          'frame.interface_id',
          '-e',
          'frame.interface_name',
          '-e',
          'frame.interface_description',
          '-e',
          'frame.time_epoch',
          '-e',
          'frame.len',
          '-e',
          'frame.packet_flags_direction',
          '-e',
          'ip.src',
          '-e',
          'ip.dst',
          '-e',
          'ip.checksum.status',
          '-e',
          'udp.srcport',
          '-e',
          'udp.dstport',
        ]);
        const rows = out
          .trim()
          .split('\n')
          .map((l) => l.split('|'));
        // Columns: interface id, name, description, epoch time, length, epb_flags direction (tshark
        // prints this bitfield as hex; empty when the EPB has no epb_flags), IPv4 src/dst,
        // checksum status (1 = good; only verified because of ip.check_checksum:TRUE), UDP ports.
        expect(rows).toEqual([
          ['0', 'host0/guest1/vif0', 'guest1 netfront', '1700000000.123456000', '59', '0x00000002', '10.0.0.2', '10.0.0.1', '1', '40000', '5001'],
          ['1', 'host0/peth0', '', '1700000000.123706000', '61', '0x00000001', '192.168.1.10', '192.168.1.20', '1', '47100', '38000'],
          ['0', 'host0/guest1/vif0', 'guest1 netfront', '1700000000.124456000', '59', '0x00000002', '10.0.0.2', '10.0.0.1', '1', '40001', '5001'],
          ['1', 'host0/peth0', '', '1700000000.124956000', '62', '0x00000002', '192.168.1.10', '192.168.1.20', '1', '47100', '38001'],
          ['0', 'host0/guest1/vif0', 'guest1 netfront', '1700000000.125457000', '59', '', '10.0.0.2', '10.0.0.1', '1', '40002', '5001'],
        ]);

        // Nothing malformed and no expert errors (a bad IPv4 checksum would be one).
        expect(malformedOrErrors(path)).toBe('');
        expect(expertErrors(path).count).toBe(0);

        // Control: the same checks do catch a broken frame, so the two above are not vacuous.
        const badPath = join(dir, 'bad.pcapng');
        const bad = openPcapngFile(badPath);
        const frame = udpFrame(vifFrames[0]);
        frame[24] ^= 0xff; // corrupt the IPv4 header checksum
        bad.packet(bad.interfaceId('host0/guest1/vif0'), t0, frame);
        bad.packet(bad.interfaceId('host0/guest1/vif0'), t0, udpFrame(vifFrames[1]).subarray(0, 40)); // cut mid-UDP header
        bad.close();
        expect(malformedOrErrors(badPath).trim().split('\n')).toHaveLength(2);
        const { count, report } = expertErrors(badPath);
        expect(count).toBeGreaterThanOrEqual(2);
        expect(report).toMatch(/IPv4\s+Bad checksum/);
        expect(report).toMatch(/Malformed/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
