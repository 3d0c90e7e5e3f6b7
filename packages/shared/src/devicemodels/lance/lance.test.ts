/**
 * Register-level conformance of the Am79C970A model, written from the documented behaviour
 * (registers.ts, the data sheet, what pcnet32 relies on): every test drives the model only
 * through its I/O window and guest memory, as a driver would, and checks registers, descriptors
 * and frames byte by byte.
 */
import { crc32 as zlibCrc32 } from 'node:zlib';
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { GuestMemoryDma, type DmaWindow } from '../../trap/index.js';
import { LanceDevice } from './device.js';
import {
  BCR18_DWIO,
  CHIP_VERSION_79C970A,
  CSR0_BABL,
  CSR0_ERR,
  CSR0_IDON,
  CSR0_IENA,
  CSR0_INIT,
  CSR0_INTR,
  CSR0_MERR,
  CSR0_MISS,
  CSR0_RINT,
  CSR0_RXON,
  CSR0_STOP,
  CSR0_STRT,
  CSR0_TDMD,
  CSR0_TINT,
  CSR0_TXON,
  CSR3_IDONM,
  CSR3_RINTM,
  CSR4_APAD_XMT,
  CSR4_MFCO,
  DESC_ENP,
  DESC_ERR,
  DESC_OWN,
  DESC_STP,
  MODE_DRCVBC,
  MODE_DRX,
  MODE_LOOP,
  MODE_PROM,
  RMD1_BAM,
  RMD1_BUFF,
  RMD1_LAFM,
  RMD1_OFLO,
  RMD1_PAM,
  TMD2_BUFF,
  decodeBcnt,
  encodeBcnt,
} from './registers.js';
import { crc32, ladrfIndex, parseInitBlock } from './request.js';

const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
const PEER = Uint8Array.of(0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc);
const BCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
const MEM_SIZE = 256 * 1024;
const IB = 0x100; // init block
const RX_RING = 0x1000;
const TX_RING = 0x2000;
const RX_BUF = 0x10000; // rx buffer i at RX_BUF + i*0x800
const TX_BUF = 0x20000;

// Port offsets (WIO).
const RDP = 0x10;
const RAP = 0x12;
const RESET = 0x14;
const BDP = 0x16;

function frameTo(dest: Uint8Array, len: number, seed = 1): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dest, 0);
  f.set(PEER, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  for (let i = 14; i < len; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

class Harness {
  readonly view: DataView;
  readonly dma: DmaWindow;
  readonly dev: LanceDevice;
  readonly edges: boolean[] = [];
  readonly sent: Uint8Array[] = [];
  kicks = 0;

  constructor(readonly mem = new Uint8Array(new SharedArrayBuffer(MEM_SIZE))) {
    this.view = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    this.dma = new GuestMemoryDma(mem);
    this.dev = new LanceDevice({
      mac: MAC,
      dma: this.dma,
      irq: (level) => this.edges.push(level),
      transmit: (f) => this.sent.push(f),
      kick: () => this.kicks++,
    });
  }

  wcsr(n: number, v: number): void {
    this.dev.ioWrite(RAP, 2, n);
    this.dev.ioWrite(RDP, 2, v);
  }
  rcsr(n: number): number {
    this.dev.ioWrite(RAP, 2, n);
    return this.dev.ioRead(RDP, 2);
  }
  wbcr(n: number, v: number): void {
    this.dev.ioWrite(RAP, 2, n);
    this.dev.ioWrite(BDP, 2, v);
  }
  rbcr(n: number): number {
    this.dev.ioWrite(RAP, 2, n);
    return this.dev.ioRead(BDP, 2);
  }
  reset(): number {
    return this.dev.ioRead(RESET, 2);
  }

  initBlock(o: { mode?: number; rlog?: number; tlog?: number; padr?: Uint8Array; ladrf?: Uint8Array; rdra?: number; tdra?: number } = {}, at = IB): void {
    const v = this.view;
    v.setUint16(at, o.mode ?? 0, true);
    v.setUint8(at + 2, (o.rlog ?? 2) << 4);
    v.setUint8(at + 3, (o.tlog ?? 2) << 4);
    this.mem.set(o.padr ?? MAC, at + 4);
    this.mem.set(o.ladrf ?? new Uint8Array(8), at + 12);
    v.setUint32(at + 20, o.rdra ?? RX_RING, true);
    v.setUint32(at + 24, o.tdra ?? TX_RING, true);
  }

  /** pcnet32's open(): reset, SWSTYLE 2, CSR1/2, INIT, poll IDON, ack it, then IENA|STRT. */
  up(o: Parameters<Harness['initBlock']>[0] = {}, opts: { csr4?: number; start?: boolean } = {}): void {
    this.reset();
    this.wbcr(20, 2);
    this.initBlock(o);
    this.wcsr(1, IB & 0xffff);
    this.wcsr(2, IB >>> 16);
    if (opts.csr4 !== undefined) this.wcsr(4, opts.csr4);
    this.wcsr(0, CSR0_INIT);
    expect(this.rcsr(0) & CSR0_IDON).toBe(CSR0_IDON);
    this.wcsr(0, CSR0_IDON);
    if (opts.start ?? true) this.wcsr(0, CSR0_IENA | CSR0_STRT);
  }

  tmd(i: number, o: { addr: number; len: number; own?: boolean; stp?: boolean; enp?: boolean; ones?: number }, ring = TX_RING): void {
    const at = ring + i * 16;
    let w1 = (o.ones ?? 0xf) << 12 | (-o.len & 0xfff);
    if (o.stp ?? true) w1 |= DESC_STP;
    if (o.enp ?? true) w1 |= DESC_ENP;
    this.view.setUint32(at, o.addr, true);
    this.view.setUint32(at + 8, 0, true);
    this.view.setUint32(at + 12, 0xdeadbeef, true); // driver's word: the chip must not touch it
    this.view.setUint32(at + 4, (w1 | (o.own ?? true ? DESC_OWN : 0)) >>> 0, true);
  }
  rmd(i: number, o: { addr?: number; len?: number; own?: boolean; ones?: number } = {}): void {
    const at = RX_RING + i * 16;
    this.view.setUint32(at, o.addr ?? RX_BUF + i * 0x800, true);
    this.view.setUint32(at + 8, 0, true);
    this.view.setUint32(at + 12, 0xdeadbeef, true);
    const w1 = ((o.ones ?? 0xf) << 12) | (-(o.len ?? 1544) & 0xfff) | (o.own ?? true ? DESC_OWN : 0);
    this.view.setUint32(at + 4, w1 >>> 0, true);
  }
  word(ring: number, i: number, w: number): number {
    return this.view.getUint32(ring + i * 16 + 4 * w, true);
  }
  sendTx(i: number, frame: Uint8Array): void {
    this.mem.set(frame, TX_BUF + i * 0x800);
    this.tmd(i, { addr: TX_BUF + i * 0x800, len: frame.length });
  }
  demand(): number {
    this.wcsr(0, CSR0_IENA | CSR0_TDMD);
    return this.dev.transmitPoll();
  }
}

let h: Harness;
beforeEach(() => {
  h = new Harness();
});

describe('reset values and identification', () => {
  it('CSR0 reads 0x0004 after a RESET read, with the data sheet reset values elsewhere', () => {
    h.up();
    h.wcsr(3, 0x5f00);
    expect(h.rcsr(0)).not.toBe(0x0004);
    expect(h.reset()).toBe(0);
    expect(h.dev.ioRead(RAP, 2)).toBe(0); // RAP cleared
    expect(h.rcsr(0)).toBe(0x0004);
    expect(h.rcsr(3)).toBe(0);
    expect(h.rcsr(4)).toBe(0x0115);
    expect(h.rcsr(5)).toBe(0);
    expect(h.rcsr(15)).toBe(0);
    expect(h.rcsr(76)).toBe(0);
    expect(h.rcsr(78)).toBe(0);
    expect(h.rcsr(112)).toBe(0);
    expect([h.rcsr(1), h.rcsr(2)]).toEqual([IB, 0]); // the init block address survives S_RESET
    // PADR is reloaded from the APROM on reset (pcnet32 reads the MAC from CSR12-14 first).
    expect([h.rcsr(12), h.rcsr(13), h.rcsr(14)]).toEqual([0x5452, 0x1200, 0x5634]);
  });

  it('identifies as an Am79C970A through CSR88/89', () => {
    expect(h.rcsr(88)).toBe(0x1003);
    expect(h.rcsr(89)).toBe(0x0262);
    const id = (h.rcsr(89) << 16) | h.rcsr(88);
    expect(id & 0xfff).toBe(0x003); // AMD
    expect((id >>> 12) & 0xffff).toBe(CHIP_VERSION_79C970A);
    h.wcsr(88, 0);
    h.wcsr(89, 0);
    expect(h.rcsr(88)).toBe(0x1003); // read-only
  });

  it('BCR defaults after power-on; S_RESET leaves BCRs alone, H_RESET restores them', () => {
    expect(h.rbcr(20)).toBe(0x0200);
    expect(h.rbcr(2)).toBe(0x0002);
    expect(h.rbcr(18)).toBe(0x9001);
    expect(h.rbcr(9)).toBe(0);
    expect(h.rbcr(4)).toBe(0x80c0); // link status LED lit: the link is up (pcnet32: BCR4 != 0xc0)
    h.wbcr(20, 2);
    h.wbcr(2, 0x1002);
    h.reset();
    expect(h.rbcr(20)).toBe(0x0302);
    expect(h.rbcr(2)).toBe(0x1002);
    h.dev.hardReset();
    expect(h.rbcr(20)).toBe(0x0200);
    expect(h.rbcr(2)).toBe(0x0002);
  });
});

describe('port window: RAP, RDP, BDP, APROM', () => {
  it('RAP holds 7 bits and reads back (pcnet32 wio_check writes 88)', () => {
    h.dev.ioWrite(RAP, 2, 88);
    expect(h.dev.ioRead(RAP, 2)).toBe(88);
    h.dev.ioWrite(RAP, 2, 0xffff);
    expect(h.dev.ioRead(RAP, 2)).toBe(0x7f);
  });

  it('RDP reaches CSR[RAP] and BDP reaches BCR[RAP]', () => {
    h.wcsr(8, 0x1234); // stopped: LADRF writable
    h.wbcr(9, 0x0001);
    expect(h.rcsr(8)).toBe(0x1234);
    expect(h.rbcr(9)).toBe(0x0001);
    h.dev.ioWrite(RAP, 2, 8);
    expect(h.dev.ioRead(BDP, 2)).toBe(0); // BCR8 is not implemented
    expect(h.dev.ioRead(RDP, 2)).toBe(0x1234);
  });

  it('CSR16/17 alias CSR1/2 and CSR58 aliases BCR20', () => {
    h.wcsr(16, 0xbeef);
    h.wcsr(17, 0x0001);
    expect([h.rcsr(1), h.rcsr(2)]).toEqual([0xbeef, 0x0001]);
    h.wcsr(58, 2);
    expect(h.rbcr(20)).toBe(0x0302); // SSIZE32 and CSRPCNET follow SWSTYLE 2
    expect(h.rcsr(58)).toBe(0x0302);
    h.wbcr(20, 0);
    expect(h.rcsr(58)).toBe(0x0200);
  });

  it('unknown CSRs and BCRs read 0 and ignore writes', () => {
    for (const n of [7 + 100, 50, 127]) {
      h.wcsr(n, 0xffff);
      expect(h.rcsr(n)).toBe(0);
    }
    h.wbcr(40, 0xffff);
    expect(h.rbcr(40)).toBe(0);
    h.wbcr(0, 0xffff); // BCR0 is read-only
    expect(h.rbcr(0)).toBe(0x0005);
  });

  it('APROM: MAC in 0x00-0x05, 0x57 0x57 at 0x0e-0x0f, readable by byte, word and dword', () => {
    for (let i = 0; i < 6; i++) expect(h.dev.ioRead(i, 1)).toBe(MAC[i]);
    expect(h.dev.ioRead(0x0e, 1)).toBe(0x57);
    expect(h.dev.ioRead(0x0f, 1)).toBe(0x57);
    expect(h.dev.ioRead(0x09, 1)).toBe(0x11);
    expect(h.dev.ioRead(0x00, 2)).toBe(0x5452);
    expect(h.dev.ioRead(0x0e, 2)).toBe(0x5757);
    expect(h.dev.ioRead(0x00, 4)).toBe(0x12005452);
    // Checksum: bytes 0-11 and 14-15, little-endian at 12.
    const sum = [...MAC].reduce((a, b) => a + b, 0) + 0x11 + 0x57 + 0x57;
    expect(h.dev.ioRead(0x0c, 2)).toBe(sum & 0xffff);
    h.dev.ioWrite(0x00, 1, 0xff);
    expect(h.dev.ioRead(0x00, 1)).toBe(MAC[0]);
    expect([...h.dev.mac]).toEqual([...MAC]);
  });

  it('wrong widths and offsets read all ones and drop writes', () => {
    expect(h.dev.ioRead(RDP, 1)).toBe(0xff);
    expect(h.dev.ioRead(0x11, 2)).toBe(0xffff);
    expect(h.dev.ioRead(0x0e, 4)).toBe(0xffffffff); // straddles APROM and RDP
    expect(h.dev.ioRead(0x18, 2)).toBe(0xffff); // reserved in WIO
    expect(h.dev.ioRead(RAP, 4)).toBe(0xffffffff); // 32-bit in WIO
    expect(h.dev.ioRead(0x20, 2)).toBe(0xffff);
    expect(h.dev.ioRead(-1, 2)).toBe(0xffff);
    h.dev.ioWrite(RAP, 1, 88);
    expect(h.dev.ioRead(RAP, 2)).toBe(0);
    h.dev.ioWrite(RAP, 4, 88);
    expect(h.dev.ioRead(RAP, 2)).toBe(0);
    expect(h.rcsr(0)).toBe(0x0004);
  });

  it('a 32-bit write to RDP switches to DWIO; H_RESET switches back', () => {
    h.dev.ioWrite(RDP, 4, 0);
    expect(h.dev.ioRead(RAP, 2)).toBe(0xffff); // 16-bit accesses no longer decode
    h.dev.ioWrite(0x14, 4, 88); // DWIO RAP
    expect(h.dev.ioRead(0x14, 4)).toBe(88);
    expect(h.dev.ioRead(0x10, 4)).toBe(0x02621003); // CSR88 reads the whole chip id in DWIO
    h.dev.ioWrite(0x14, 4, 18);
    expect(h.dev.ioRead(0x1c, 4) & BCR18_DWIO).toBe(BCR18_DWIO);
    h.dev.ioWrite(0x14, 4, 0);
    expect(h.dev.ioRead(0x10, 4)).toBe(0x0004);
    h.dev.ioRead(0x18, 4); // DWIO RESET: S_RESET keeps the mode
    expect(h.dev.ioRead(0x10, 4)).toBe(0x0004);
    h.dev.hardReset();
    expect(h.rcsr(0)).toBe(0x0004);
    expect(h.rbcr(18) & BCR18_DWIO).toBe(0);
  });
});

describe('CSR0 write-1-to-clear and read-only bits', () => {
  const sources = [CSR0_IDON, CSR0_TINT, CSR0_RINT, CSR0_MERR, CSR0_MISS, CSR0_BABL];

  /** Every source set: MERR (a bad INIT), IDON, BABL and TINT (a babble then a good frame), RINT, MISS. */
  function allSources(): void {
    h.reset();
    h.wbcr(20, 2);
    h.wcsr(1, 0xfff0);
    h.wcsr(2, 0x7fff);
    h.wcsr(0, CSR0_INIT); // out of memory: MERR
    h.initBlock({ rlog: 1, tlog: 1 });
    h.wcsr(1, IB);
    h.wcsr(2, 0);
    h.wcsr(0, CSR0_INIT | CSR0_STRT | CSR0_IENA);
    h.rmd(0);
    h.rmd(1, { own: false });
    h.tmd(0, { addr: TX_BUF, len: 1600 });
    h.sendTx(1, frameTo(PEER, 64));
    h.demand();
    expect(h.dev.receive(frameTo(MAC, 64))).toBe('delivered');
    expect(h.dev.receive(frameTo(MAC, 64))).toBe('missed');
  }

  it('with every source set, ERR and INTR summarise them', () => {
    allSources();
    const v = h.rcsr(0);
    for (const s of sources) expect(v & s).toBe(s);
    expect(v & (CSR0_ERR | CSR0_INTR)).toBe(CSR0_ERR | CSR0_INTR);
  });

  it('writing 1 clears each status bit alone; writing 0 leaves them', () => {
    allSources();
    const before = h.rcsr(0);
    h.wcsr(0, CSR0_IENA); // nothing to clear
    expect(h.rcsr(0)).toBe(before);
    for (const s of sources) {
      const v = h.rcsr(0);
      expect(v & s).toBe(s);
      h.wcsr(0, s | CSR0_IENA);
      // Only that bit changed (INTR and ERR are summaries, checked below).
      expect(h.rcsr(0) & ~(CSR0_INTR | CSR0_ERR)).toBe(v & ~s & ~(CSR0_INTR | CSR0_ERR));
    }
    expect(h.rcsr(0) & (CSR0_ERR | CSR0_INTR)).toBe(0);
    expect(h.rcsr(0) & 0x00ff).toBe(CSR0_TXON | CSR0_RXON | CSR0_STRT | CSR0_INIT | CSR0_IENA);
    expect(h.edges).toEqual([true, false]);
  });

  it('MERR is write-1-to-clear too, and ERR follows it', () => {
    h.wcsr(1, 0xfff0);
    h.wcsr(2, 0x7fff);
    h.wcsr(0, CSR0_INIT);
    expect(h.rcsr(0) & (CSR0_MERR | CSR0_ERR)).toBe(CSR0_MERR | CSR0_ERR);
    h.wcsr(0, 0);
    expect(h.rcsr(0) & CSR0_MERR).toBe(CSR0_MERR);
    h.wcsr(0, CSR0_MERR);
    expect(h.rcsr(0) & (CSR0_MERR | CSR0_ERR)).toBe(0);
  });

  it('INTR, ERR, TXON and RXON cannot be written', () => {
    h.wcsr(0, CSR0_INTR | CSR0_ERR | CSR0_TXON | CSR0_RXON);
    expect(h.rcsr(0)).toBe(0x0004);
  });
});

describe('INIT and the SWSTYLE 2 init block', () => {
  it('loads ring bases, 2^n ring sizes, PADR, LADRF and MODE; sets IDON and INIT, clears STOP', () => {
    const ladrf = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
    const padr = Uint8Array.of(0x02, 0, 0, 0, 0, 0x99);
    h.reset();
    h.wbcr(20, 2);
    h.initBlock({ mode: 0x8000, rlog: 4, tlog: 3, padr, ladrf, rdra: 0x12340, tdra: 0x23450 });
    h.wcsr(1, IB);
    h.wcsr(2, 0);
    h.wcsr(0, CSR0_INIT);
    expect(h.rcsr(0)).toBe(CSR0_INIT | CSR0_IDON | CSR0_INTR);
    expect(h.rcsr(15)).toBe(0x8000);
    expect([h.rcsr(12), h.rcsr(13), h.rcsr(14)]).toEqual([0x0002, 0x0000, 0x9900]);
    expect([h.rcsr(8), h.rcsr(9), h.rcsr(10), h.rcsr(11)]).toEqual([0x0201, 0x0403, 0x0605, 0x0807]);
    expect((h.rcsr(25) << 16) | h.rcsr(24)).toBe(0x12340);
    expect((h.rcsr(31) << 16) | h.rcsr(30)).toBe(0x23450);
    expect(h.rcsr(76)).toBe(-16 & 0xffff); // two's complement ring lengths
    expect(h.rcsr(78)).toBe(-8 & 0xffff);
    expect(h.rcsr(72)).toBe(0);
    expect(h.rcsr(74)).toBe(0);
  });

  it('RLEN/TLEN of 9 or more mean 512 entries; 0 means one', () => {
    const ib = new Uint8Array(28);
    ib[2] = 0xf0;
    ib[3] = 0x00;
    const p = parseInitBlock(ib);
    expect(p?.rxRingLength).toBe(512);
    expect(p?.txRingLength).toBe(1);
    expect(parseInitBlock(new Uint8Array(27))).toBeUndefined();
  });

  it('an init block outside guest memory sets MERR, not IDON, and leaves the chip stopped', () => {
    h.reset();
    h.wbcr(20, 2);
    h.wcsr(1, (MEM_SIZE - 20) & 0xffff); // straddles the end
    h.wcsr(2, (MEM_SIZE - 20) >>> 16);
    h.wcsr(0, CSR0_INIT | CSR0_STRT);
    const v = h.rcsr(0);
    expect(v & CSR0_MERR).toBe(CSR0_MERR);
    expect(v & (CSR0_IDON | CSR0_INIT | CSR0_STRT | CSR0_TXON)).toBe(0);
    expect(v & CSR0_STOP).toBe(CSR0_STOP);
    expect(h.dev.counters.initErrors).toBe(1);
    // Fix the address while still stopped and retry.
    h.initBlock();
    h.wcsr(1, IB);
    h.wcsr(2, 0);
    h.wcsr(0, CSR0_MERR | CSR0_INIT);
    expect(h.rcsr(0) & (CSR0_IDON | CSR0_MERR)).toBe(CSR0_IDON);
  });

  it('SWSTYLE 0 (16-bit LANCE layout) is not emulated: INIT answers MERR', () => {
    h.reset();
    h.wbcr(20, 0);
    h.initBlock();
    h.wcsr(1, IB);
    h.wcsr(2, 0);
    h.wcsr(0, CSR0_INIT);
    expect(h.rcsr(0) & (CSR0_MERR | CSR0_IDON)).toBe(CSR0_MERR);
  });

  it('CSR1/2, MODE and the ring registers are writable only while stopped', () => {
    h.up();
    h.wcsr(1, 0x5555);
    h.wcsr(15, MODE_PROM);
    h.wcsr(76, -4 & 0xffff);
    expect(h.rcsr(1)).toBe(IB);
    expect(h.rcsr(15)).toBe(0);
    expect(h.rcsr(76)).toBe(-4 & 0xffff);
    expect(h.dev.counters.csrWritesDropped).toBeGreaterThanOrEqual(2);
    h.wcsr(0, CSR0_STOP);
    h.wcsr(1, 0x5555);
    h.wcsr(76, -8 & 0xffff);
    expect(h.rcsr(1)).toBe(0x5555);
    expect(h.rcsr(76)).toBe(-8 & 0xffff);
  });

  it('INIT|STRT in one write initialises then starts; STOP wins over both', () => {
    h.reset();
    h.wbcr(20, 2);
    h.initBlock();
    h.wcsr(1, IB);
    h.wcsr(0, CSR0_INIT | CSR0_STRT | CSR0_IENA);
    expect(h.rcsr(0) & 0x01ff).toBe(CSR0_INIT | CSR0_STRT | CSR0_TXON | CSR0_RXON | CSR0_IENA | CSR0_INTR | CSR0_IDON);
    expect(h.dev.running).toBe(true);
    expect(h.kicks).toBe(1); // STRT asks for a tx poll
    h.wcsr(0, CSR0_STOP | CSR0_INIT | CSR0_STRT);
    expect(h.rcsr(0)).toBe(0x0004);
    expect(h.dev.running).toBe(false);
  });

  it('suspend (CSR5 SPND) pauses rx and tx and opens the stopped-only registers; resuming kicks', () => {
    h.up({ rlog: 1, tlog: 1 });
    h.rmd(0);
    h.wcsr(5, 1);
    expect(h.rcsr(5) & 1).toBe(1);
    h.wcsr(15, MODE_PROM); // pcnet32 changes MODE while suspended
    expect(h.rcsr(15)).toBe(MODE_PROM);
    expect(h.dev.receive(frameTo(PEER, 60))).toBe('stopped');
    h.sendTx(0, frameTo(PEER, 60));
    expect(h.dev.transmitPoll()).toBe(0);
    const kicks = h.kicks;
    h.wcsr(5, 0);
    expect(h.kicks).toBe(kicks + 1);
    expect(h.dev.transmitPoll()).toBe(1);
    expect(h.dev.receive(frameTo(PEER, 60))).toBe('delivered');
  });

  it('MODE DRX/DTX keep the receiver/transmitter off at STRT', () => {
    h.up({ mode: MODE_DRX });
    expect(h.rcsr(0) & (CSR0_TXON | CSR0_RXON)).toBe(CSR0_TXON);
    h.rmd(0);
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('stopped');
  });
});

describe('transmit: descriptor ownership and frame contents', () => {
  it('sends the exact frame, clears OWN, sets TINT, advances the ring; TDMD kicks the wiring', () => {
    h.up({ tlog: 2 });
    const f = frameTo(PEER, 100);
    h.sendTx(0, f);
    const kicks = h.kicks;
    h.wcsr(0, CSR0_IENA | CSR0_TDMD);
    expect(h.kicks).toBe(kicks + 1);
    expect(h.rcsr(0) & CSR0_TDMD).toBe(CSR0_TDMD);
    expect(h.sent).toHaveLength(0); // nothing happens inside the trap
    expect(h.dev.transmitPoll()).toBe(1);
    expect(h.sent).toEqual([f]);
    const w1 = h.word(TX_RING, 0, 1);
    expect(w1 & DESC_OWN).toBe(0);
    expect(w1 & DESC_ERR).toBe(0);
    expect(w1 & (DESC_STP | DESC_ENP)).toBe(DESC_STP | DESC_ENP); // the driver's bits stay
    expect(w1 & 0xffff).toBe(encodeBcnt(100)); // BCNT untouched
    expect(h.word(TX_RING, 0, 3)).toBe(0xdeadbeef);
    expect(h.rcsr(0) & (CSR0_TINT | CSR0_TDMD)).toBe(CSR0_TINT);
    expect(h.rcsr(74)).toBe(1);
    expect(h.dev.counters.txFrames).toBe(1);
    expect(h.dev.counters.txBytes).toBe(100);
  });

  it('joins an STP..ENP chain and hands back every descriptor', () => {
    h.up({ tlog: 3 });
    const f = frameTo(PEER, 300);
    const parts = [f.subarray(0, 14), f.subarray(14, 14), f.subarray(14, 200), f.subarray(200)];
    parts.forEach((p, i) => {
      h.mem.set(p, TX_BUF + i * 0x800);
      h.tmd(i, { addr: TX_BUF + i * 0x800, len: p.length, stp: i === 0, enp: i === parts.length - 1 });
    });
    expect(h.demand()).toBe(1);
    expect(h.sent).toEqual([f]);
    for (let i = 0; i < 4; i++) expect(h.word(TX_RING, i, 1) & (DESC_OWN | DESC_ERR)).toBe(0);
    expect(h.rcsr(74)).toBe(4);
  });

  it('waits for a chain the guest has not finished handing over', () => {
    h.up({ tlog: 2 });
    const f = frameTo(PEER, 200);
    h.mem.set(f, TX_BUF);
    h.tmd(0, { addr: TX_BUF, len: 100, enp: false });
    h.tmd(1, { addr: TX_BUF + 100, len: 100, stp: false, own: false });
    expect(h.demand()).toBe(0);
    expect(h.word(TX_RING, 0, 1) & DESC_OWN).toBe(DESC_OWN);
    h.tmd(1, { addr: TX_BUF + 100, len: 100, stp: false });
    expect(h.demand()).toBe(1);
    expect(h.sent).toEqual([f]);
  });

  it('sends every owned frame in one walk, bounded by the ring, wrapping around', () => {
    h.up({ tlog: 2 });
    for (let i = 0; i < 4; i++) h.sendTx(i, frameTo(PEER, 60 + i, i));
    expect(h.demand()).toBe(4);
    for (let i = 0; i < 4; i++) h.sendTx(i, frameTo(PEER, 70 + i, i));
    h.sendTx(0, frameTo(PEER, 80));
    expect(h.demand()).toBe(4);
    expect(h.dev.counters.txDescriptorsRead).toBeLessThanOrEqual(10);
    expect(h.sent.map((f) => f.length)).toEqual([60, 61, 62, 63, 80, 71, 72, 73]);
  });

  it('a frame longer than 1518 bytes on the wire is babble: BABL, ERR, dropped', () => {
    h.up({ tlog: 2 });
    h.mem.set(frameTo(PEER, 1515), TX_BUF);
    h.tmd(0, { addr: TX_BUF, len: 1515 }); // + 4 bytes of FCS = 1519
    h.sendTx(1, frameTo(PEER, 1514, 3));
    expect(h.demand()).toBe(1);
    expect(h.sent[0].length).toBe(1514);
    expect(h.rcsr(0) & (CSR0_BABL | CSR0_ERR)).toBe(CSR0_BABL | CSR0_ERR);
    expect(h.word(TX_RING, 0, 1) & (DESC_OWN | DESC_ERR)).toBe(DESC_ERR);
  });

  it('a chain with no ENP in the whole ring is babble and cannot hang the walk', () => {
    h.up({ tlog: 2 });
    for (let i = 0; i < 4; i++) h.tmd(i, { addr: TX_BUF, len: 100, stp: i === 0, enp: false });
    expect(h.demand()).toBe(0);
    expect(h.rcsr(0) & CSR0_BABL).toBe(CSR0_BABL);
    for (let i = 0; i < 4; i++) expect(h.word(TX_RING, i, 1) & (DESC_OWN | DESC_ERR)).toBe(DESC_ERR);
    expect(h.dev.counters.txDescriptorsRead).toBeLessThanOrEqual(5);
  });

  it('a buffer outside guest memory: MERR, ERR on the descriptor, handed back, nothing sent', () => {
    h.up({ tlog: 2 });
    h.tmd(0, { addr: MEM_SIZE - 10, len: 60 });
    h.sendTx(1, frameTo(PEER, 60));
    expect(h.demand()).toBe(1);
    expect(h.sent).toHaveLength(1);
    expect(h.word(TX_RING, 0, 1) & (DESC_OWN | DESC_ERR)).toBe(DESC_ERR);
    expect(h.rcsr(0) & (CSR0_MERR | CSR0_TINT)).toBe(CSR0_MERR | CSR0_TINT);
  });

  it('a descriptor without STP, a runt and a zero-length chain come back with ERR|BUFF', () => {
    h.up({ tlog: 3 });
    h.tmd(0, { addr: TX_BUF, len: 60, stp: false });
    h.tmd(1, { addr: TX_BUF, len: 13 });
    h.tmd(2, { addr: TX_BUF, len: 0, enp: false });
    h.tmd(3, { addr: TX_BUF, len: 0, stp: false });
    h.sendTx(4, frameTo(PEER, 64));
    expect(h.demand()).toBe(1);
    for (let i = 0; i < 4; i++) {
      expect(h.word(TX_RING, i, 1) & (DESC_OWN | DESC_ERR)).toBe(DESC_ERR);
      expect(h.word(TX_RING, i, 2) & TMD2_BUFF).toBe(TMD2_BUFF);
    }
    expect(h.dev.counters.txErrors).toBe(3);
  });

  it('a new STP inside a chain returns the broken chain and starts over', () => {
    h.up({ tlog: 2 });
    h.tmd(0, { addr: TX_BUF, len: 50, enp: false });
    h.sendTx(1, frameTo(PEER, 60));
    expect(h.demand()).toBe(1);
    expect(h.word(TX_RING, 0, 1) & DESC_ERR).toBe(DESC_ERR);
    expect(h.word(TX_RING, 1, 1) & (DESC_ERR | DESC_OWN)).toBe(0);
  });

  it('BCNT is two\'s complement with ONES = 1111; other ONES values are malformed', () => {
    expect(encodeBcnt(60)).toBe(0xffc4);
    expect(encodeBcnt(1544)).toBe(0xf9f8);
    expect(decodeBcnt(0xffc4)).toBe(60);
    expect(decodeBcnt(-1542 & 0xffff)).toBe(1542);
    expect(decodeBcnt(0xf000)).toBe(0);
    h.up({ tlog: 2 });
    h.mem.set(frameTo(PEER, 60), TX_BUF);
    h.tmd(0, { addr: TX_BUF, len: 60, ones: 0x7 });
    expect(h.demand()).toBe(0);
    expect(h.word(TX_RING, 0, 1) & (DESC_OWN | DESC_ERR)).toBe(DESC_ERR);
    expect(h.dev.counters.malformedDescriptors).toBe(1);
  });

  it('APAD_XMT (pcnet32 writes CSR4 = 0x0915) pads short frames to 60 bytes', () => {
    h.up({ tlog: 2 }, { csr4: 0x0915 });
    expect(h.rcsr(4) & CSR4_APAD_XMT).toBe(CSR4_APAD_XMT);
    h.sendTx(0, frameTo(PEER, 42));
    h.demand();
    expect(h.sent[0].length).toBe(60);
    expect([...h.sent[0].subarray(42)].every((b) => b === 0)).toBe(true);
  });

  it('SWSTYLE 3 swaps descriptor words 0 and 2', () => {
    h.reset();
    h.wbcr(20, 3);
    h.initBlock({ tlog: 1 });
    h.wcsr(1, IB);
    h.wcsr(0, CSR0_INIT | CSR0_STRT);
    const f = frameTo(PEER, 80);
    h.mem.set(f, TX_BUF);
    h.tmd(0, { addr: 0, len: 80 });
    h.view.setUint32(TX_RING + 8, TX_BUF, true); // address in word 2
    h.view.setUint32(TX_RING + 0, 0, true);
    expect(h.demand()).toBe(1);
    expect(h.sent).toEqual([f]);
  });

  it('nothing is sent while the transmitter is off', () => {
    h.up({ tlog: 2 }, { start: false });
    h.sendTx(0, frameTo(PEER, 60));
    h.wcsr(0, CSR0_TDMD);
    expect(h.rcsr(0) & CSR0_TDMD).toBe(0);
    expect(h.dev.transmitPoll()).toBe(0);
    expect(h.sent).toHaveLength(0);
  });

  it('MODE LOOP sends the frame to our own receiver instead of the wire', () => {
    h.up({ mode: MODE_LOOP, tlog: 1, rlog: 1 });
    h.rmd(0);
    h.rmd(1);
    const f = frameTo(MAC, 64);
    h.sendTx(0, f);
    expect(h.demand()).toBe(1);
    expect(h.sent).toHaveLength(0);
    expect(h.word(RX_RING, 0, 1) & DESC_OWN).toBe(0);
    expect([...h.mem.subarray(RX_BUF, RX_BUF + 64)]).toEqual([...f]);
  });
});

describe('receive: descriptors, MCNT, FCS, filtering', () => {
  it('writes the frame, pads it to 60, appends the FCS, MCNT = length + 4, clears OWN, sets RINT', () => {
    h.up({ rlog: 2 });
    for (let i = 0; i < 4; i++) h.rmd(i);
    const f = frameTo(MAC, 42);
    expect(h.dev.receive(f)).toBe('delivered');
    const w1 = h.word(RX_RING, 0, 1);
    expect(w1 & (DESC_OWN | DESC_ERR)).toBe(0);
    expect(w1 & (DESC_STP | DESC_ENP | RMD1_PAM)).toBe(DESC_STP | DESC_ENP | RMD1_PAM);
    expect((w1 >>> 24) & 0xff).toBe(0x03); // what pcnet32_rx_entry checks
    expect(w1 & 0xffff).toBe(encodeBcnt(1544)); // BCNT untouched
    expect(h.word(RX_RING, 0, 2) & 0xfff).toBe(64);
    expect(h.word(RX_RING, 0, 3)).toBe(0xdeadbeef);
    const got = h.mem.slice(RX_BUF, RX_BUF + 64);
    expect([...got.subarray(0, 42)]).toEqual([...f]);
    expect([...got.subarray(42, 60)].every((b) => b === 0)).toBe(true);
    const fcs = new DataView(got.buffer).getUint32(60, true);
    expect(fcs).toBe(zlibCrc32(got.subarray(0, 60)) >>> 0);
    expect(crc32(got)).toBe(0x2144df1c); // the CRC-32 residue of a frame with its FCS
    expect(h.rcsr(0) & CSR0_RINT).toBe(CSR0_RINT);
    expect(h.rcsr(72)).toBe(1);
  });

  it('full-size frame: MCNT 1518, exact bytes', () => {
    h.up({ rlog: 1 });
    h.rmd(0);
    h.rmd(1);
    const f = frameTo(MAC, 1514);
    expect(h.dev.receive(f)).toBe('delivered');
    expect(h.word(RX_RING, 0, 2) & 0xfff).toBe(1518);
    expect([...h.mem.subarray(RX_BUF, RX_BUF + 1514)]).toEqual([...f]);
    expect(h.dev.receive(frameTo(MAC, 1515))).toBe('error');
  });

  it('chains a frame over several owned descriptors: STP first, ENP and MCNT last', () => {
    h.up({ rlog: 3 });
    for (let i = 0; i < 8; i++) h.rmd(i, { len: 256 });
    const f = frameTo(MAC, 600);
    expect(h.dev.receive(f)).toBe('delivered');
    const w = [0, 1, 2].map((i) => h.word(RX_RING, i, 1));
    expect(w.map((x) => x & (DESC_OWN | DESC_STP | DESC_ENP | DESC_ERR))).toEqual([DESC_STP, 0, DESC_ENP]);
    expect(h.word(RX_RING, 2, 2) & 0xfff).toBe(604);
    expect(h.word(RX_RING, 3, 1) & DESC_OWN).toBe(DESC_OWN);
    const joined = new Uint8Array(604);
    for (let i = 0; i < 3; i++) joined.set(h.mem.subarray(RX_BUF + i * 0x800, RX_BUF + i * 0x800 + Math.min(256, 604 - 256 * i)), 256 * i);
    expect([...joined.subarray(0, 600)]).toEqual([...f]);
    expect(crc32(joined)).toBe(0x2144df1c);
    expect(h.rcsr(72)).toBe(3);
  });

  it('runs out of owned buffers mid-frame: ERR|BUFF|OFLO on the last one used, no ENP', () => {
    h.up({ rlog: 2 });
    h.rmd(0, { len: 100 });
    h.rmd(1, { len: 100 });
    h.rmd(2, { own: false });
    expect(h.dev.receive(frameTo(MAC, 300))).toBe('error');
    expect(h.word(RX_RING, 0, 1) & (DESC_OWN | DESC_STP | DESC_ENP | DESC_ERR)).toBe(DESC_STP);
    expect(h.word(RX_RING, 1, 1) & (DESC_OWN | DESC_ENP | DESC_ERR | RMD1_BUFF | RMD1_OFLO)).toBe((DESC_ERR | RMD1_BUFF | RMD1_OFLO) >>> 0);
    expect(h.rcsr(72)).toBe(2);
  });

  it('no owned descriptor: MISS, CSR112 counts, the frame is missed', () => {
    h.up({ rlog: 1 });
    h.rmd(0, { own: false });
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('missed');
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('missed');
    expect(h.rcsr(0) & (CSR0_MISS | CSR0_ERR | CSR0_RINT)).toBe(CSR0_MISS | CSR0_ERR);
    expect(h.rcsr(112)).toBe(2);
    expect(h.dev.counters.rxMissed).toBe(2);
    // The counter wraps with MFCO.
    h.wcsr(0, CSR0_STOP);
    h.wcsr(112, 0xffff);
    h.wcsr(0, CSR0_STRT);
    h.dev.receive(frameTo(MAC, 60));
    expect(h.rcsr(112)).toBe(0);
    expect(h.rcsr(4) & CSR4_MFCO).toBe(CSR4_MFCO);
  });

  it('a malformed rx descriptor (ONES) is returned with ERR|BUFF and the frame dropped', () => {
    h.up({ rlog: 1 });
    h.rmd(0, { ones: 0 });
    h.rmd(1);
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('error');
    expect(h.word(RX_RING, 0, 1) & (DESC_OWN | DESC_ERR | RMD1_BUFF)).toBe((DESC_ERR | RMD1_BUFF) >>> 0);
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('delivered');
  });

  it('a buffer outside guest memory: MERR, the descriptor comes back with ERR', () => {
    h.up({ rlog: 1 });
    h.rmd(0, { addr: MEM_SIZE - 8 });
    h.rmd(1);
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('error');
    expect(h.rcsr(0) & CSR0_MERR).toBe(CSR0_MERR);
    expect(h.word(RX_RING, 0, 1) & (DESC_OWN | DESC_ERR)).toBe(DESC_ERR);
  });

  it('filters on PADR, broadcast and the LADRF hash unless PROM', () => {
    const group = Uint8Array.of(0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb);
    const other = Uint8Array.of(0x01, 0x00, 0x5e, 0x00, 0x00, 0x01);
    expect(ladrfIndex(group)).not.toBe(ladrfIndex(other));
    const ladrf = new Uint8Array(8);
    const k = ladrfIndex(group);
    ladrf[k >> 3] |= 1 << (k & 7);
    h.up({ rlog: 3, ladrf });
    for (let i = 0; i < 8; i++) h.rmd(i);
    expect(h.dev.receive(frameTo(PEER, 60))).toBe('filtered');
    expect(h.dev.receive(frameTo(other, 60))).toBe('filtered');
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('delivered');
    expect(h.dev.receive(frameTo(BCAST, 60))).toBe('delivered');
    expect(h.dev.receive(frameTo(group, 60))).toBe('delivered');
    const bits = [0, 1, 2].map((i) => h.word(RX_RING, i, 1) & (RMD1_PAM | RMD1_BAM | RMD1_LAFM));
    expect(bits).toEqual([RMD1_PAM, RMD1_BAM, RMD1_LAFM]);
    expect(h.dev.counters.rxFiltered).toBe(2);

    const p = new Harness();
    p.up({ rlog: 1, mode: MODE_PROM | MODE_DRCVBC });
    p.rmd(0);
    p.rmd(1);
    expect(p.dev.receive(frameTo(PEER, 60))).toBe('delivered');
    expect(p.word(RX_RING, 0, 1) & (RMD1_PAM | RMD1_BAM | RMD1_LAFM)).toBe(0);

    const q = new Harness();
    q.up({ rlog: 1, mode: MODE_DRCVBC });
    q.rmd(0);
    expect(q.dev.receive(frameTo(BCAST, 60))).toBe('filtered');
  });

  it('the multicast hash matches Linux ether_crc_le(6, addr) >> 26', () => {
    // ether_crc_le: reflected CRC-32 from ~0 without the final inversion.
    const addr = Uint8Array.of(0x33, 0x33, 0x00, 0x00, 0x00, 0x01);
    let crc = 0xffffffff;
    for (const byte of addr) {
      let b = byte;
      for (let bit = 0; bit < 8; bit++, b >>= 1) crc = ((crc >>> 1) ^ ((crc ^ b) & 1 ? 0xedb88320 : 0)) >>> 0;
    }
    expect(ladrfIndex(addr)).toBe(crc >>> 26);
  });

  it('nothing is received while stopped or before STRT', () => {
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('stopped');
    h.up({}, { start: false });
    h.rmd(0);
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('stopped');
    expect(h.dev.counters.rxStopped).toBe(2);
  });
});

describe('interrupts: CSR3 masks, IENA, and line edges', () => {
  it('raises on the rising edge of INTR && IENA only, and lowers when it falls', () => {
    h.up({ rlog: 2 }, { start: false });
    expect(h.edges).toEqual([]);
    h.wcsr(0, CSR0_INIT); // already initialised: ignored
    h.wcsr(0, CSR0_STRT); // IENA off: no interrupt
    for (let i = 0; i < 4; i++) h.rmd(i);
    h.dev.receive(frameTo(MAC, 60));
    expect(h.rcsr(0) & CSR0_INTR).toBe(CSR0_INTR);
    expect(h.edges).toEqual([]);
    h.wcsr(0, CSR0_IENA);
    expect(h.edges).toEqual([true]);
    h.dev.receive(frameTo(MAC, 60)); // already high: no new edge
    h.wcsr(3, CSR3_IDONM); // unrelated mask
    expect(h.edges).toEqual([true]);
    h.wcsr(0, CSR0_RINT | CSR0_IENA);
    expect(h.edges).toEqual([true, false]);
    h.dev.receive(frameTo(MAC, 60));
    expect(h.edges).toEqual([true, false, true]);
    expect(h.dev.counters.interrupts).toBe(2);
  });

  it('a masked source sets its CSR0 bit but not INTR; unmasking raises', () => {
    h.up({ rlog: 1 });
    h.rmd(0);
    h.wcsr(3, CSR3_RINTM);
    h.dev.receive(frameTo(MAC, 60));
    expect(h.rcsr(0) & (CSR0_RINT | CSR0_INTR)).toBe(CSR0_RINT);
    expect(h.edges).toEqual([]);
    h.wcsr(3, 0);
    expect(h.edges).toEqual([true]);
    expect(h.rcsr(0) & CSR0_INTR).toBe(CSR0_INTR);
  });

  it('IDON interrupts once IENA is set (pcnet32 leaves IDON set and writes IENA|STRT)', () => {
    h.reset();
    h.wbcr(20, 2);
    h.initBlock();
    h.wcsr(1, IB);
    h.wcsr(0, CSR0_INIT);
    expect(h.edges).toEqual([]);
    h.wcsr(0, CSR0_IENA | CSR0_STRT);
    expect(h.edges).toEqual([true]);
    h.wcsr(3, CSR3_IDONM);
    expect(h.edges).toEqual([true, false]);
  });

  it('pcnet32\'s acknowledge (CSR0 & ~0x004f) clears the sources and IENA; the line falls', () => {
    h.up({ rlog: 1 });
    h.rmd(0);
    h.dev.receive(frameTo(MAC, 60));
    const csr0 = h.rcsr(0);
    h.wcsr(0, csr0 & ~0x004f);
    expect(h.rcsr(0) & (CSR0_RINT | CSR0_IENA | CSR0_INTR)).toBe(0);
    expect(h.rcsr(0) & (CSR0_TXON | CSR0_RXON)).toBe(CSR0_TXON | CSR0_RXON);
    expect(h.edges).toEqual([true, false]);
  });

  it('STOP: CSR0 = 0x0004, transmitter and receiver off, the line falls', () => {
    h.up({ rlog: 1, tlog: 1 });
    h.rmd(0);
    h.dev.receive(frameTo(MAC, 60));
    expect(h.edges).toEqual([true]);
    h.wcsr(0, CSR0_STOP);
    expect(h.rcsr(0)).toBe(0x0004);
    expect(h.edges).toEqual([true, false]);
    h.rmd(1);
    expect(h.dev.receive(frameTo(MAC, 60))).toBe('stopped');
    h.sendTx(0, frameTo(PEER, 60));
    expect(h.dev.transmitPoll()).toBe(0);
    expect(h.dev.running).toBe(false);
  });

  it('a RESET read lowers the line', () => {
    h.up({ rlog: 1 });
    h.rmd(0);
    h.dev.receive(frameTo(MAC, 60));
    h.reset();
    expect(h.edges).toEqual([true, false]);
  });
});

describe('properties', () => {
  /** INTR and ERR from the documented definitions, computed from what the guest can read. */
  function expected(dev: LanceDevice): { intr: boolean; err: boolean; line: boolean } {
    const c0 = dev.peekCsr(0);
    const c3 = dev.peekCsr(3);
    const c4 = dev.peekCsr(4);
    const pairs: Array<[number, number]> = [
      [1 << 1, 1 << 0],
      [1 << 3, 1 << 2],
      [1 << 5, 1 << 4],
      [1 << 9, 1 << 8],
    ];
    const intr = (c0 & ~c3 & 0x5f00) !== 0 || pairs.some(([s, m]) => (c4 & s) !== 0 && (c4 & m) === 0) || (c4 & (1 << 6)) !== 0;
    return { intr, err: (c0 & 0x7800) !== 0, line: intr && (c0 & CSR0_IENA) !== 0 };
  }

  const op = fc.oneof(
    fc.record({ k: fc.constant('csr0' as const), v: fc.integer({ min: 0, max: 0xffff }) }),
    fc.record({ k: fc.constant('csr3' as const), v: fc.integer({ min: 0, max: 0xffff }) }),
    fc.record({ k: fc.constant('csr4' as const), v: fc.integer({ min: 0, max: 0xffff }) }),
    fc.record({ k: fc.constant('rx' as const), v: fc.integer({ min: 0, max: 3 }) }),
    fc.record({ k: fc.constant('tx' as const), v: fc.integer({ min: 0, max: 3 }) }),
    fc.record({ k: fc.constant('own' as const), v: fc.integer({ min: 0, max: 3 }) }),
    fc.record({ k: fc.constant('reset' as const), v: fc.constant(0) }),
  );

  it('INTR is the OR of unmasked sources, ERR the OR of bits 11-14, and the irq line follows INTR && IENA with alternating edges', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const t = new Harness();
        t.up({ rlog: 2, tlog: 2 });
        for (const o of ops) {
          switch (o.k) {
            case 'csr0':
              t.wcsr(0, o.v);
              break;
            case 'csr3':
              t.wcsr(3, o.v);
              break;
            case 'csr4':
              t.wcsr(4, o.v);
              break;
            case 'rx':
              t.dev.receive(frameTo([MAC, BCAST, PEER, MAC][o.v], 60 + o.v * 500));
              break;
            case 'tx':
              t.sendTx(o.v, frameTo(PEER, [60, 1600, 13, 100][o.v]));
              t.dev.transmitPoll();
              break;
            case 'own':
              t.rmd(o.v);
              break;
            case 'reset':
              t.reset();
              break;
          }
          const e = expected(t.dev);
          const c0 = t.dev.peekCsr(0);
          expect((c0 & CSR0_INTR) !== 0).toBe(e.intr);
          expect((c0 & CSR0_ERR) !== 0).toBe(e.err);
          expect(t.dev.irqAsserted).toBe(e.line);
          // Edges alternate, starting with a rise, and end at the current level.
          t.edges.forEach((lvl, i) => expect(lvl).toBe(i % 2 === 0));
          expect(t.edges.length % 2 === 1).toBe(e.line);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('random port I/O, polls and frames never throw, stay bounded, and never touch memory outside the guest', () => {
    const PAD = 4096;
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.array(
          fc.record({
            kind: fc.constantFrom('r', 'w', 'poll', 'rx', 'mem'),
            off: fc.integer({ min: -2, max: 0x22 }),
            size: fc.constantFrom(1, 2, 4),
            value: fc.integer({ min: 0, max: 0xffffffff }),
            at: fc.integer({ min: 0, max: MEM_SIZE / 4 - 1 }),
          }),
          { maxLength: 200 },
        ),
        (started, ops) => {
          // Guest memory is a window into a larger buffer whose edges must stay untouched.
          const outer = new Uint8Array(new SharedArrayBuffer(PAD + MEM_SIZE + PAD)).fill(0xa5);
          const guest = outer.subarray(PAD, PAD + MEM_SIZE);
          guest.fill(0);
          const t = new Harness(guest);
          if (started) {
            t.up({ rlog: 3, tlog: 3 });
            for (let i = 0; i < 8; i++) t.rmd(i, { len: 64 + i * 200 });
            for (let i = 0; i < 8; i++) t.tmd(i, { addr: TX_BUF + i * 0x800, len: 100 + i * 300, stp: i % 3 !== 1, enp: i % 2 === 0 });
          }
          const tail = (n: number) => t.dev.counters.txDescriptorsRead - n;
          for (const o of ops) {
            if (o.kind === 'r') t.dev.ioRead(o.off, o.size as 1 | 2 | 4);
            else if (o.kind === 'w') t.dev.ioWrite(o.off, o.size as 1 | 2 | 4, o.value);
            else if (o.kind === 'mem') t.view.setUint32((o.at & 1 ? TX_RING : RX_RING) + ((o.at >> 1) & 0x1ff) * 4, o.value, true); // scribble the rings
            else if (o.kind === 'rx') t.dev.receive(frameTo(o.value & 1 ? MAC : BCAST, 14 + (o.value % 1600)));
            else {
              const before = t.dev.counters.txDescriptorsRead;
              t.dev.transmitPoll();
              const ringLen = -t.dev.peekCsr(78) & 0xffff;
              expect(tail(before)).toBeLessThanOrEqual(2 * ringLen + 1);
            }
          }
          expect(outer.subarray(0, PAD).every((b) => b === 0xa5)).toBe(true);
          expect(outer.subarray(PAD + guest.byteLength).every((b) => b === 0xa5)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});
