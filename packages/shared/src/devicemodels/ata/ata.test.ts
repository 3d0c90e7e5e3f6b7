/**
 * Register-level conformance of the emulated ATA drive, from the documented protocol (ATA/ATAPI-6
 * PIO data-in, data-out and non-data protocols; registers.ts), not from snapshots of its output.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { IoSize } from '../../trap/index.js';
import {
  AtaDevice,
  CMD_FLUSH_CACHE,
  CMD_IDENTIFY_DEVICE,
  CMD_READ_SECTORS,
  CMD_WRITE_SECTORS,
  DEVCTL_NIEN,
  DEVCTL_SRST,
  ERROR_ABRT,
  ERROR_IDNF,
  ERROR_UNC,
  MemoryAtaBacking,
  STATUS_BSY,
  STATUS_DRDY,
  STATUS_DRQ,
  STATUS_ERR,
  decodeCommand,
  getAtaString,
  lba28,
  sectorCount,
  statusNames,
  type AtaBacking,
} from './index.js';

const READY = STATUS_DRDY;
const DATA = STATUS_DRDY | STATUS_DRQ;
const BUSY = STATUS_BSY | STATUS_DRDY;
const FAILED = STATUS_DRDY | STATUS_ERR;

/** A drive on an in-memory backing, driven register by register as a guest would. */
function rig(sectors = 64, opts: { serial?: string; model?: string; firmware?: string } = {}) {
  const backing = new MemoryAtaBacking(sectors);
  const irq = { count: 0 };
  const dev = new AtaDevice({ backing, irq: () => irq.count++, ...opts });
  const cmd = dev.commandBlock;
  const ctl = dev.controlBlock;
  const r = {
    dev,
    backing,
    irq,
    inb: (reg: number) => cmd.ioRead(reg, 1),
    outb: (reg: number, v: number) => cmd.ioWrite(reg, 1, v),
    inw: () => cmd.ioRead(0, 2),
    outw: (v: number) => cmd.ioWrite(0, 2, v),
    status: () => cmd.ioRead(7, 1),
    alt: () => ctl.ioRead(0, 1),
    error: () => cmd.ioRead(1, 1),
    devctl: (v: number) => ctl.ioWrite(0, 1, v),
    /** Program the taskfile for LBA28 and write the command. */
    issue(command: number, lba = 0, count = 1) {
      cmd.ioWrite(6, 1, 0xe0 | ((lba >>> 24) & 0x0f));
      cmd.ioWrite(2, 1, count & 0xff);
      cmd.ioWrite(3, 1, lba & 0xff);
      cmd.ioWrite(4, 1, (lba >>> 8) & 0xff);
      cmd.ioWrite(5, 1, (lba >>> 16) & 0xff);
      cmd.ioWrite(7, 1, command);
    },
    readSector(): Uint8Array {
      const out = new Uint8Array(512);
      for (let i = 0; i < 256; i++) {
        const w = cmd.ioRead(0, 2);
        out[2 * i] = w & 0xff;
        out[2 * i + 1] = w >>> 8;
      }
      return out;
    },
    writeSector(data: Uint8Array): void {
      for (let i = 0; i < 256; i++) cmd.ioWrite(0, 2, data[2 * i] | (data[2 * i + 1] << 8));
    },
  };
  return r;
}

function pattern(sectors: number, seed: number): Uint8Array {
  const b = new Uint8Array(sectors * 512);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

function expectStatus(actual: number, want: number): void {
  expect(statusNames(actual)).toBe(statusNames(want));
}

describe('ATA: power-on and reset', () => {
  it('powers on ready, with the diagnostic code and the ATA signature in the taskfile', () => {
    const r = rig();
    expectStatus(r.status(), READY);
    expect(r.error()).toBe(0x01);
    expect([r.inb(2), r.inb(3), r.inb(4), r.inb(5), r.inb(6)]).toEqual([1, 1, 0, 0, 0]);
  });

  it('SRST: BSY while set; clearing it leaves DRDY, ERROR 01h and the signature, with no interrupt', () => {
    const r = rig();
    r.issue(CMD_IDENTIFY_DEVICE); // leaves an interrupt pending and DRQ set
    r.outb(2, 0x55);
    r.devctl(DEVCTL_SRST);
    expectStatus(r.alt(), STATUS_BSY);
    expect(r.dev.state.interruptPending).toBe(false);
    const before = r.irq.count;
    r.devctl(0);
    expectStatus(r.status(), READY);
    expect(r.error()).toBe(0x01);
    expect([r.inb(2), r.inb(3), r.inb(4), r.inb(5), r.inb(6)]).toEqual([1, 1, 0, 0, 0]);
    expect(r.irq.count).toBe(before);
    expect(r.dev.counters.resets).toBe(1);
    expect(r.dev.counters.abortedByReset).toBe(1);
    // The abandoned data-in is gone: the data port floats.
    expect(r.inw()).toBe(0xffff);
  });

  it('SRST during a write transfer: the partial data never reaches the backing', async () => {
    const r = rig();
    r.issue(CMD_WRITE_SECTORS, 4, 3);
    r.writeSector(pattern(1, 1));
    r.devctl(DEVCTL_SRST);
    r.devctl(0);
    await r.dev.idle();
    expect(r.backing.calls).toEqual([]);
    expect(r.backing.bytes.every((b) => b === 0)).toBe(true);
    expectStatus(r.status(), READY);
  });

  it('SRST while a backing operation is in flight: BSY until it settles, its result dropped', async () => {
    const r = rig();
    r.backing.holding = true;
    r.issue(CMD_READ_SECTORS, 0, 2);
    expectStatus(r.alt(), BUSY);
    r.devctl(DEVCTL_SRST);
    r.devctl(0);
    expectStatus(r.alt(), STATUS_BSY); // still busy: the abandoned read has not settled
    r.issue(CMD_READ_SECTORS, 0, 1); // ignored: BSY
    expect(r.dev.counters.busyRejected).toBe(1);
    r.backing.release();
    await r.dev.idle();
    expectStatus(r.status(), READY);
    expect(r.error()).toBe(0x01);
    expect(r.irq.count).toBe(0);
    expect(r.dev.counters.staleCompletions).toBe(1);
    expect(r.backing.calls).toHaveLength(1);
  });
});

describe('ATA: IDENTIFY DEVICE', () => {
  it('PIO data-in of one block: interrupt with DRQ, then 256 words, then DRQ clear and no interrupt', () => {
    const r = rig(70_000, { serial: 'SN-12345', model: 'ringvisor test disk', firmware: 'fw1.2' });
    r.issue(CMD_IDENTIFY_DEVICE);
    expect(r.irq.count).toBe(1);
    expectStatus(r.status(), DATA);
    const id = r.readSector();
    expectStatus(r.status(), READY);
    expect(r.irq.count).toBe(1);
    const word = (w: number) => id[2 * w] | (id[2 * w + 1] << 8);
    expect(word(0) & 0x8000).toBe(0); // ATA device
    expect(word(49) & (1 << 9)).not.toBe(0); // LBA supported
    expect(word(60) | (word(61) << 16)).toBe(70_000);
    expect(word(61)).toBe(1); // capacity above 65535 uses the high word
    expect(word(80)).toBeGreaterThan(0);
    expect(word(83) & (1 << 12)).not.toBe(0); // FLUSH CACHE supported
    // Strings: each word holds two characters, the first in the high byte.
    expect(String.fromCharCode(id[54], id[55])).toBe('ir');
    expect(getAtaString(id, 27, 40)).toBe('ringvisor test disk');
    expect(getAtaString(id, 10, 20)).toBe('SN-12345');
    expect(getAtaString(id, 23, 8)).toBe('fw1.2');
    expect(id[27 * 2 + 39]).toBe(0x20); // space padded
    // Integrity word: signature A5h and a checksum over the whole block.
    expect(id[510]).toBe(0xa5);
    expect(id.reduce((a, b) => a + b, 0) % 256).toBe(0);
    expect(r.dev.counters.commands.identify).toBe(1);
    expect(r.dev.counters.sectorsRead).toBe(0);
  });

  it('saturates words 60–61 at 0FFFFFFFh for a drive larger than LBA28 reaches', () => {
    const huge: AtaBacking = { sectors: 2 ** 30, read: async () => -1, write: async () => -1, flush: async () => 0 };
    const dev = new AtaDevice({ backing: huge, irq: () => {} });
    dev.commandBlock.ioWrite(7, 1, CMD_IDENTIFY_DEVICE);
    const words: number[] = [];
    for (let i = 0; i < 256; i++) words.push(dev.commandBlock.ioRead(0, 2));
    expect(words[60] | (words[61] << 16)).toBe(0x0fffffff);
    expect(dev.capacity).toBe(0x0fffffff);
  });

  it('refuses identity strings that are not printable ASCII', () => {
    expect(() => new AtaDevice({ backing: new MemoryAtaBacking(8), irq: () => {}, model: 'disk\u00e9' })).toThrow(/printable ASCII/);
  });
});

describe('ATA: READ SECTORS', () => {
  it('count 3: BSY while the backing reads, then one interrupt per sector before its DRQ', async () => {
    const r = rig();
    const data = pattern(3, 5);
    r.backing.bytes.set(data, 10 * 512);
    r.issue(CMD_READ_SECTORS, 10, 3);
    expectStatus(r.alt(), BUSY);
    expect(r.irq.count).toBe(0);
    await r.dev.idle();
    for (let s = 0; s < 3; s++) {
      expect(r.irq.count).toBe(s + 1);
      expectStatus(r.status(), DATA);
      expect(r.dev.state.interruptPending).toBe(false);
      expect(r.readSector()).toEqual(data.subarray(s * 512, (s + 1) * 512));
    }
    expectStatus(r.status(), READY);
    expect(r.irq.count).toBe(3);
    expect(r.backing.calls).toEqual([{ op: 'read', lba: 10, count: 3 }]);
    expect(r.dev.counters.sectorsRead).toBe(3);
    expect(r.dev.counters.dataPortAccesses).toBe(3 * 256);
  });

  it('count 0 means 256 sectors', async () => {
    const r = rig(300);
    const data = pattern(256, 9);
    r.backing.bytes.set(data, 20 * 512);
    r.issue(CMD_READ_SECTORS, 20, 0);
    await r.dev.idle();
    const got = new Uint8Array(256 * 512);
    for (let s = 0; s < 256; s++) {
      expectStatus(r.status(), DATA);
      got.set(r.readSector(), s * 512);
    }
    expect(got).toEqual(data);
    expectStatus(r.status(), READY);
    expect(r.irq.count).toBe(256);
    expect(r.backing.calls).toEqual([{ op: 'read', lba: 20, count: 256 }]);
  });

  it('32-bit data accesses move two words each, low word first', async () => {
    const r = rig();
    const data = pattern(1, 2);
    r.backing.bytes.set(data, 0);
    r.issue(CMD_READ_SECTORS, 0, 1);
    await r.dev.idle();
    r.status();
    const got = new Uint8Array(512);
    const dv = new DataView(got.buffer);
    for (let i = 0; i < 128; i++) dv.setUint32(4 * i, r.dev.commandBlock.ioRead(0, 4), true);
    expect(got).toEqual(data);
    expectStatus(r.status(), READY);
  });

  it('a backing read error ends the command with ERR and UNC, and the drive stays usable', async () => {
    const r = rig();
    r.backing.failNext.read = 5;
    r.issue(CMD_READ_SECTORS, 0, 2);
    await r.dev.idle();
    expect(r.irq.count).toBe(1);
    expectStatus(r.status(), FAILED);
    expect(r.error()).toBe(ERROR_UNC);
    expect(r.inw()).toBe(0xffff); // no data phase
    r.issue(CMD_READ_SECTORS, 0, 1);
    await r.dev.idle();
    expectStatus(r.status(), DATA);
    expect(r.error()).toBe(0);
  });

  it('a backing that rejects is an error too, not an exception', async () => {
    const backing: AtaBacking = {
      sectors: 16,
      read: () => Promise.reject(new Error('disk on fire')),
      write: () => {
        throw new Error('sync throw');
      },
      flush: async () => 0,
    };
    const dev = new AtaDevice({ backing, irq: () => {} });
    const c = dev.commandBlock;
    c.ioWrite(6, 1, 0xe0);
    c.ioWrite(2, 1, 1);
    c.ioWrite(7, 1, CMD_READ_SECTORS);
    await dev.idle();
    expect(c.ioRead(7, 1)).toBe(FAILED);
    expect(c.ioRead(1, 1)).toBe(ERROR_UNC);
    c.ioWrite(7, 1, CMD_WRITE_SECTORS);
    for (let i = 0; i < 256; i++) c.ioWrite(0, 2, i);
    await dev.idle();
    expect(c.ioRead(7, 1)).toBe(FAILED);
    expect(c.ioRead(1, 1)).toBe(ERROR_ABRT);
    expect(dev.counters.backingErrors).toBe(2);
  });
});

describe('ATA: WRITE SECTORS', () => {
  it('count 3: DRQ without interrupt for the first block, an interrupt per later block, the last only once written', async () => {
    const r = rig();
    const data = pattern(3, 3);
    r.backing.holding = true;
    r.issue(CMD_WRITE_SECTORS, 7, 3);
    expectStatus(r.alt(), DATA);
    expect(r.irq.count).toBe(0);
    for (let s = 0; s < 3; s++) {
      r.writeSector(data.subarray(s * 512, (s + 1) * 512));
      if (s < 2) {
        expect(r.irq.count).toBe(s + 1);
        expectStatus(r.status(), DATA);
      }
    }
    // All data in: BSY while the backing write is outstanding, no completion interrupt yet.
    expectStatus(r.alt(), BUSY);
    expect(r.irq.count).toBe(2);
    expect(r.backing.calls).toEqual([{ op: 'write', lba: 7, count: 3 }]);
    expect(r.backing.bytes.subarray(7 * 512, 10 * 512).every((b) => b === 0)).toBe(true);
    r.backing.release();
    await r.dev.idle();
    expect(r.irq.count).toBe(3);
    expectStatus(r.status(), READY);
    expect(r.backing.bytes.subarray(7 * 512, 10 * 512)).toEqual(data);
    expect(r.dev.counters.sectorsWritten).toBe(3);
  });

  it('count 0 means 256 sectors: 255 block interrupts plus the completion', async () => {
    const r = rig(256);
    const data = pattern(256, 4);
    r.issue(CMD_WRITE_SECTORS, 0, 0);
    for (let s = 0; s < 256; s++) {
      expectStatus(r.alt(), DATA);
      r.writeSector(data.subarray(s * 512, (s + 1) * 512));
      if (s < 255) r.status();
    }
    await r.dev.idle();
    expect(r.irq.count).toBe(256);
    expectStatus(r.status(), READY);
    expect(r.backing.bytes).toEqual(data);
    expect(r.backing.calls).toEqual([{ op: 'write', lba: 0, count: 256 }]);
  });

  it('32-bit data writes move two words each', async () => {
    const r = rig();
    const data = pattern(1, 8);
    const dv = new DataView(data.buffer);
    r.issue(CMD_WRITE_SECTORS, 1, 1);
    for (let i = 0; i < 128; i++) r.dev.commandBlock.ioWrite(0, 4, dv.getUint32(4 * i, true));
    await r.dev.idle();
    expectStatus(r.status(), READY);
    expect(r.backing.bytes.subarray(512, 1024)).toEqual(data);
  });

  it('a backing write error reports ERR with ABRT after the data phase; nothing acknowledged', async () => {
    const r = rig();
    r.backing.failNext.write = 1;
    r.issue(CMD_WRITE_SECTORS, 0, 1);
    r.writeSector(pattern(1, 1));
    await r.dev.idle();
    expect(r.irq.count).toBe(1);
    expectStatus(r.status(), FAILED);
    expect(r.error()).toBe(ERROR_ABRT);
    expect(r.dev.counters.sectorsWritten).toBe(0);
  });
});

describe('ATA: FLUSH CACHE', () => {
  it('BSY until the backing flush resolves, then DRDY and one interrupt', async () => {
    const r = rig();
    r.backing.holding = true;
    r.issue(CMD_FLUSH_CACHE);
    expectStatus(r.alt(), BUSY);
    await Promise.resolve();
    expect(r.irq.count).toBe(0);
    r.backing.release();
    await r.dev.idle();
    expect(r.irq.count).toBe(1);
    expectStatus(r.status(), READY);
    expect(r.backing.calls).toEqual([{ op: 'flush', lba: 0, count: 0 }]);
  });

  it('a failed flush is ERR with ABRT', async () => {
    const r = rig();
    r.backing.failNext.flush = 3;
    r.issue(CMD_FLUSH_CACHE);
    await r.dev.idle();
    expectStatus(r.status(), FAILED);
    expect(r.error()).toBe(ERROR_ABRT);
  });
});

describe('ATA: errors without touching the backing', () => {
  it('an LBA range past the end is IDNF with an interrupt, and no backing call', async () => {
    const r = rig(64);
    for (const [cmd, lba, count] of [
      [CMD_READ_SECTORS, 62, 3],
      [CMD_WRITE_SECTORS, 64, 1],
      [CMD_READ_SECTORS, 0, 0], // 256 sectors on a 64-sector drive
      [CMD_READ_SECTORS, 0x0fffffff, 1],
    ]) {
      const before = r.irq.count;
      r.issue(cmd, lba, count);
      await r.dev.idle();
      expect(r.irq.count).toBe(before + 1);
      expectStatus(r.status(), FAILED);
      expect(r.error()).toBe(ERROR_IDNF);
    }
    expect(r.backing.calls).toEqual([]);
    expect(r.dev.counters.errors.idnf).toBe(4);
    // The last sectors are in range.
    r.issue(CMD_READ_SECTORS, 61, 3);
    await r.dev.idle();
    expectStatus(r.status(), DATA);
  });

  it('an unknown command is ABRT with an interrupt; so is CHS addressing', () => {
    const r = rig();
    for (const op of [0x00, 0xc8, 0xca, 0x24, 0xff]) {
      r.outb(7, op);
      expectStatus(r.status(), FAILED);
      expect(r.error()).toBe(ERROR_ABRT);
    }
    r.outb(6, 0xa0); // L bit clear: CHS
    r.outb(7, CMD_READ_SECTORS);
    expectStatus(r.status(), FAILED);
    expect(r.error()).toBe(ERROR_ABRT);
    expect(r.irq.count).toBe(6);
    expect(r.dev.counters.commands.unknown).toBe(5);
    expect(r.backing.calls).toEqual([]);
  });
});

describe('ATA: interrupts', () => {
  it('reading STATUS clears the pending interrupt; ALTSTATUS does not', () => {
    const r = rig();
    r.issue(CMD_IDENTIFY_DEVICE);
    expect(r.dev.state.intrq).toBe(true);
    expectStatus(r.alt(), DATA);
    expect(r.dev.state.interruptPending).toBe(true);
    expectStatus(r.status(), DATA);
    expect(r.dev.state.interruptPending).toBe(false);
    expect(r.dev.state.intrq).toBe(false);
  });

  it('an interrupt raised while the last one is unacknowledged gives no new edge', async () => {
    const r = rig();
    r.issue(CMD_READ_SECTORS, 0, 2);
    await r.dev.idle();
    r.readSector(); // no STATUS read in between: the line is still up
    expect(r.irq.count).toBe(1);
    expect(r.dev.counters.irqsCoalesced).toBe(1);
    r.status();
    r.readSector();
    expectStatus(r.status(), READY);
  });

  it('nIEN masks delivery; the interrupt stays pending and arrives when nIEN is cleared', async () => {
    const r = rig();
    r.devctl(DEVCTL_NIEN);
    r.issue(CMD_READ_SECTORS, 0, 3);
    await r.dev.idle();
    for (let s = 0; s < 3; s++) {
      expectStatus(r.alt(), DATA); // a polling host sees DRQ
      expect(r.dev.state.interruptPending).toBe(true);
      r.status();
      r.readSector();
    }
    expect(r.irq.count).toBe(0);
    expect(r.dev.counters.irqsMasked).toBe(3);
    r.issue(CMD_IDENTIFY_DEVICE);
    expect(r.irq.count).toBe(0);
    r.devctl(0);
    expect(r.irq.count).toBe(1);
    r.status();
    r.readSector();
  });
});

describe('ATA: device 1 is absent', () => {
  it('reads STATUS, ALTSTATUS and ERROR as 0 and ignores commands; device 0 keeps its state', async () => {
    const r = rig();
    r.outb(6, 0xf0);
    expect(r.status()).toBe(0);
    expect(r.alt()).toBe(0);
    expect(r.error()).toBe(0);
    r.outb(2, 9);
    expect(r.inb(2)).toBe(9); // the taskfile is latched by both devices
    r.outb(7, CMD_READ_SECTORS);
    r.outb(7, CMD_IDENTIFY_DEVICE);
    await r.dev.idle();
    expect(r.irq.count).toBe(0);
    expect(r.backing.calls).toEqual([]);
    expect(r.dev.counters.absentDeviceCommands).toBe(2);
    expect(r.inw()).toBe(0xffff);
    r.outb(6, 0xe0);
    expectStatus(r.status(), READY);
    r.issue(CMD_IDENTIFY_DEVICE);
    expect(r.irq.count).toBe(1);
  });

  it('selecting device 1 gates INTRQ; selecting device 0 again re-asserts a pending interrupt', () => {
    const r = rig();
    r.issue(CMD_IDENTIFY_DEVICE);
    r.readSector(); // pending, not acknowledged; transfer over so DEVICE may be written
    expect(r.irq.count).toBe(1);
    r.outb(6, 0xf0);
    expect(r.dev.state.intrq).toBe(false);
    r.outb(6, 0xe0);
    expect(r.irq.count).toBe(2);
  });
});

describe('ATA: bus discipline', () => {
  it('the data port with DRQ clear floats on reads and drops writes, at every width', () => {
    const r = rig();
    expect(r.inw()).toBe(0xffff);
    expect(r.dev.commandBlock.ioRead(0, 4)).toBe(0xffffffff);
    expect(r.inb(0)).toBe(0xff);
    r.outw(0x1234);
    r.dev.commandBlock.ioWrite(0, 4, 0x12345678);
    expectStatus(r.status(), READY);
    expect(r.dev.counters.strayDataAccesses).toBe(5);
  });

  it('an 8-bit data access moves nothing, even with DRQ set', () => {
    const r = rig();
    r.issue(CMD_IDENTIFY_DEVICE);
    const left = r.dev.state.transferRemaining;
    expect(r.inb(0)).toBe(0xff);
    r.outb(0, 0x12);
    expect(r.dev.state.transferRemaining).toBe(left);
  });

  it('COMMAND and taskfile writes are ignored while BSY or DRQ', async () => {
    const r = rig();
    r.backing.holding = true;
    r.issue(CMD_READ_SECTORS, 3, 2);
    r.outb(3, 0x77);
    r.outb(7, CMD_IDENTIFY_DEVICE);
    expect(r.dev.counters.busyRejected).toBe(1);
    expect(r.dev.counters.taskfileWritesIgnored).toBe(1);
    expect(r.inb(3)).toBe(3);
    r.backing.release();
    await r.dev.idle();
    r.outb(7, CMD_IDENTIFY_DEVICE); // DRQ now: still ignored
    expect(r.dev.counters.busyRejected).toBe(2);
    expect(r.dev.counters.commands.identify).toBe(0);
  });

  it('wider accesses to byte registers split into consecutive byte accesses', () => {
    const r = rig();
    r.dev.commandBlock.ioWrite(2, 2, 0x0403);
    expect([r.inb(2), r.inb(3)]).toEqual([3, 4]);
    expect(r.dev.commandBlock.ioRead(2, 4)).toBe((r.inb(5) << 24) | (r.inb(4) << 16) | 0x0403);
    expect(r.dev.commandBlock.ioRead(7, 2) & 0xff00).toBe(0xff00); // past cmd+7 floats
    expect(r.dev.commandBlock.ioRead(9, 1)).toBe(0xff);
    expect(r.dev.controlBlock.ioRead(1, 1)).toBe(0xff);
  });
});

describe('ATA: request decoding', () => {
  it('LBA28 from the taskfile, COUNT 0 = 256', () => {
    expect(lba28({ features: 0, count: 0, lbaLow: 0x10, lbaMid: 0x21, lbaHigh: 0x43, device: 0xe5 })).toBe(0x5432110);
    expect(lba28({ features: 0, count: 0, lbaLow: 0xff, lbaMid: 0xff, lbaHigh: 0xff, device: 0xef })).toBe(0x0fffffff);
    expect(sectorCount(0)).toBe(256);
    expect(sectorCount(255)).toBe(255);
    const tf = { features: 0, count: 0, lbaLow: 0, lbaMid: 1, lbaHigh: 0, device: 0xe0 };
    expect(decodeCommand(CMD_WRITE_SECTORS, tf, 512)).toEqual({ ok: true, command: { kind: 'write', lba: 256, count: 256 } });
    expect(decodeCommand(CMD_WRITE_SECTORS, tf, 511)).toMatchObject({ ok: false, error: ERROR_IDNF });
  });
});

// ---- property: arbitrary guest port traffic ----

type Op =
  | { t: 'read'; block: 'cmd' | 'ctl'; offset: number; size: IoSize }
  | { t: 'write'; block: 'cmd' | 'ctl'; offset: number; size: IoSize; value: number }
  | { t: 'command'; opcode: number; lba: number; count: number }
  | { t: 'burst'; dir: 'in' | 'out' | 'auto'; words: number }
  | { t: 'drain' }
  | { t: 'settle' };

const sizeArb = fc.constantFrom<IoSize>(1, 2, 4);
// Device control values are mostly benign: a random byte sets SRST half the time, which would
// park the drive in reset for the rest of the run.
const devctlArb = fc.oneof(fc.constantFrom(0, 0, 0, DEVCTL_NIEN, DEVCTL_SRST, DEVCTL_SRST | DEVCTL_NIEN), fc.integer({ min: 0, max: 0xff }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('read' as const), block: fc.constantFrom('cmd' as const, 'ctl' as const), offset: fc.integer({ min: 0, max: 9 }), size: sizeArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('write' as const),
      block: fc.constant('cmd' as const),
      offset: fc.integer({ min: 0, max: 9 }),
      size: sizeArb,
      value: fc.integer({ min: 0, max: 0xffffffff }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant('write' as const), block: fc.constant('ctl' as const), offset: fc.constantFrom(0, 0, 0, 1), size: sizeArb, value: devctlArb }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('command' as const),
      opcode: fc.constantFrom(CMD_READ_SECTORS, CMD_READ_SECTORS, CMD_WRITE_SECTORS, CMD_WRITE_SECTORS, CMD_FLUSH_CACHE, CMD_IDENTIFY_DEVICE, 0x00, 0xc8, 0x91),
      lba: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0x0fffffff })),
      count: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('burst' as const), dir: fc.constantFrom('in' as const, 'out' as const, 'auto' as const, 'auto' as const), words: fc.oneof(fc.constant(256), fc.integer({ min: 1, max: 600 })) }) },
  { weight: 3, arbitrary: fc.constant({ t: 'settle' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'drain' as const }) },
);

describe('ATA: property', () => {
  it('random port traffic never throws, never reaches the backing out of range, and keeps the state machine consistent', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 48 }), fc.array(opArb, { minLength: 5, maxLength: 120, size: 'max' }), fc.integer(), async (sectors, ops, seed) => {
        const backing = new MemoryAtaBacking(sectors);
        let inFlight = 0;
        let maxInFlight = 0;
        let rng = seed >>> 0;
        const coin = () => ((rng = (Math.imul(rng, 1103515245) + 12345) >>> 0) & 0xff) < 40;
        // Wrap the store: count concurrency and fail some operations.
        const wrapped: AtaBacking = {
          sectors,
          read: async (lba, count) => {
            inFlight++;
            maxInFlight = Math.max(maxInFlight, inFlight);
            try {
              return coin() ? 7 : await backing.read(lba, count);
            } finally {
              inFlight--;
            }
          },
          write: async (lba, data) => {
            inFlight++;
            maxInFlight = Math.max(maxInFlight, inFlight);
            try {
              return coin() ? 7 : await backing.write(lba, data);
            } finally {
              inFlight--;
            }
          },
          flush: async () => {
            if (coin()) throw new Error('flush failed');
            return 0;
          },
        };
        let badIrq = 0;
        const dev: AtaDevice = new AtaDevice({
          backing: wrapped,
          irq: () => {
            const s = dev.state;
            if (s.nIEN || s.selected !== 0 || !s.interruptPending) badIrq++;
          },
        });
        const check = () => {
          const s = dev.state;
          const bsy = (s.status & STATUS_BSY) !== 0;
          const drq = (s.status & STATUS_DRQ) !== 0;
          expect(bsy && drq).toBe(false);
          expect(drq).toBe(s.phase === 'pio-in' || s.phase === 'pio-out');
          expect(bsy).toBe(s.phase === 'busy' || s.phase === 'srst' || s.phase === 'resetting');
          if (s.backingInFlight) expect(bsy).toBe(true);
          expect(s.intrq).toBe(s.interruptPending && !s.nIEN && s.selected === 0);
          expect(s.transferRemaining).toBeLessThanOrEqual(256 * 512);
        };
        for (const op of ops) {
          const c = dev.commandBlock;
          switch (op.t) {
            case 'read': {
              const v = (op.block === 'cmd' ? c : dev.controlBlock).ioRead(op.offset, op.size);
              expect(Number.isInteger(v) && v >= 0 && v <= (op.size === 4 ? 0xffffffff : op.size === 2 ? 0xffff : 0xff)).toBe(true);
              break;
            }
            case 'write':
              (op.block === 'cmd' ? c : dev.controlBlock).ioWrite(op.offset, op.size, op.value & (op.size === 4 ? 0xffffffff : op.size === 2 ? 0xffff : 0xff));
              break;
            case 'command':
              c.ioWrite(6, 1, 0xe0 | (op.lba >>> 24));
              c.ioWrite(2, 1, op.count);
              c.ioWrite(3, 1, op.lba & 0xff);
              c.ioWrite(4, 1, (op.lba >>> 8) & 0xff);
              c.ioWrite(5, 1, (op.lba >>> 16) & 0xff);
              c.ioWrite(7, 1, op.opcode);
              break;
            case 'burst': {
              // 'auto' follows the drive's direction, as a driver would; the others may be wrong.
              const write = op.dir === 'out' || (op.dir === 'auto' && dev.state.phase === 'pio-out');
              for (let i = 0; i < op.words; i++) write ? c.ioWrite(0, 2, i) : c.ioRead(0, 2);
              break;
            }
            case 'drain': {
              // Finish the current transfer, as a well-behaved driver would.
              const s = dev.state;
              for (let i = 0; i < s.transferRemaining / 2; i++) s.phase === 'pio-out' ? c.ioWrite(0, 2, i) : c.ioRead(0, 2);
              break;
            }
            case 'settle':
              await new Promise((r) => setImmediate(r));
              break;
          }
          check();
        }
        await dev.idle();
        check();
        expect(backing.outOfRange).toBe(0);
        expect(maxInFlight).toBeLessThanOrEqual(1);
        expect(badIrq).toBe(0);
        for (const call of backing.calls) if (call.op !== 'flush') expect(call.lba + call.count).toBeLessThanOrEqual(sectors);
      }),
      { numRuns: 300 },
    );
  });
});
