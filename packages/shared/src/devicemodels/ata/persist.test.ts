/**
 * Save and restore of the emulated ATA drive: a record taken in the middle of a PIO transfer,
 * restored into a fresh drive on the same disk, finishes the transfer exactly once with the
 * right data; a random point of save/restore in random command traffic changes nothing a guest
 * or the disk can see; a corrupt record is refused and leaves the original alone.
 */
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateRecordError } from '../../errors.js';
import type { DeviceStateRecord } from '../../device/index.js';
import { ATA_SECTOR_SIZE, AtaDevice, CMD_FLUSH_CACHE, CMD_IDENTIFY_DEVICE, CMD_READ_SECTORS, CMD_WRITE_SECTORS, MemoryAtaBacking, STATUS_DRQ, type AtaBacking, type AtaOptions } from './index.js';

/** The disk as a real file: each call is a pread/pwrite/fsync on it, and counted. */
class FileBacking implements AtaBacking {
  readonly calls: Array<{ op: string; lba: number; count: number }> = [];
  constructor(
    private readonly fh: FileHandle,
    readonly sectors: number,
  ) {}
  async read(lba: number, count: number): Promise<Uint8Array | number> {
    this.calls.push({ op: 'read', lba, count });
    const buf = new Uint8Array(count * ATA_SECTOR_SIZE);
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, lba * ATA_SECTOR_SIZE);
    return bytesRead === buf.length ? buf : -1;
  }
  async write(lba: number, data: Uint8Array): Promise<number> {
    this.calls.push({ op: 'write', lba, count: data.length / ATA_SECTOR_SIZE });
    const { bytesWritten } = await this.fh.write(data, 0, data.length, lba * ATA_SECTOR_SIZE);
    return bytesWritten === data.length ? 0 : -1;
  }
  async flush(): Promise<number> {
    this.calls.push({ op: 'flush', lba: 0, count: 0 });
    await this.fh.sync();
    return 0;
  }
}

/** A guest's view of one drive: the register accesses a driver makes, on whichever instance is current. */
function ports(get: () => AtaDevice) {
  return {
    issue(command: number, lba: number, count: number) {
      const c = get().commandBlock;
      c.ioWrite(6, 1, 0xe0 | ((lba >>> 24) & 0x0f));
      c.ioWrite(2, 1, count & 0xff);
      c.ioWrite(3, 1, lba & 0xff);
      c.ioWrite(4, 1, (lba >>> 8) & 0xff);
      c.ioWrite(5, 1, (lba >>> 16) & 0xff);
      c.ioWrite(7, 1, command);
    },
    status: () => get().commandBlock.ioRead(7, 1),
    readWords(into: Uint8Array, from: number, words: number) {
      for (let i = 0; i < words; i++) {
        const w = get().commandBlock.ioRead(0, 2);
        into[from + 2 * i] = w & 0xff;
        into[from + 2 * i + 1] = w >>> 8;
      }
    },
    writeWords(from: Uint8Array, at: number, words: number) {
      for (let i = 0; i < words; i++) get().commandBlock.ioWrite(0, 2, from[at + 2 * i] | (from[at + 2 * i + 1] << 8));
    },
  };
}

function pattern(bytes: number, seed: number): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 13 + seed * 101 + (i >> 9)) & 0xff;
  return b;
}

const SECTORS = 32;
let dir: string;
let fh: FileHandle;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rv-ata-persist-'));
  fh = await open(join(dir, 'disk.img'), 'w+');
  await fh.truncate(SECTORS * ATA_SECTOR_SIZE);
});
afterEach(async () => {
  await fh.close();
  await rm(dir, { recursive: true, force: true });
});

/** Save `dev` (quiesced), stop it, and restore the record — passed through structuredClone, as off a wire — into a fresh drive. */
async function moveTo(dev: AtaDevice, options: AtaOptions): Promise<{ next: AtaDevice; record: DeviceStateRecord }> {
  await dev.quiesce();
  const record = dev.save();
  await dev.stop('moved');
  return { next: AtaDevice.restore(options, structuredClone(record)), record };
}

describe('ATA save/restore in the middle of I/O (a real disk file)', () => {
  it('a 4-sector READ saved halfway through its DRQ words completes on the restored drive with the right data, read from the file once', async () => {
    const want = pattern(4 * ATA_SECTOR_SIZE, 1);
    await fh.write(want, 0, want.length, 5 * ATA_SECTOR_SIZE);
    const irqs = { a: 0, b: 0 };
    let dev = new AtaDevice({ backing: new FileBacking(fh, SECTORS), irq: () => irqs.a++ });
    const p = ports(() => dev);
    const got = new Uint8Array(want.length);
    p.issue(CMD_READ_SECTORS, 5, 4);
    await dev.idle();
    expect(p.status() & STATUS_DRQ).toBeTruthy();
    p.readWords(got, 0, 256); // sector 0
    expect(p.status() & STATUS_DRQ).toBeTruthy(); // acknowledges sector 1's interrupt
    p.readWords(got, 512, 128); // halfway through sector 1
    const before = irqs.a;
    const backingB = new FileBacking(fh, SECTORS);
    const { next, record } = await moveTo(dev, { backing: backingB, irq: () => irqs.b++ });
    expect(record.state).toMatchObject({ phase: 'pio-in', transfer: { pos: 512 + 256, blockEnd: 1024, lba: 5, counted: true } });
    dev = next;
    expect(irqs.a).toBe(before);
    p.readWords(got, 512 + 256, 128);
    for (let s = 2; s < 4; s++) {
      expect(p.status() & STATUS_DRQ).toBeTruthy();
      p.readWords(got, s * 512, 256);
    }
    expect(p.status() & STATUS_DRQ).toBe(0);
    expect(got).toEqual(want);
    expect(irqs.b).toBe(2); // sectors 2 and 3: one interrupt each, none twice
    expect(backingB.calls).toEqual([]); // the data came with the record: no second read of the file
    expect(dev.counters.sectorsRead).toBe(3); // sectors 1..3 finished here (the source counted sector 0)
  });

  it('a 4-sector WRITE saved halfway through its DRQ words reaches the file exactly once, whole, from the restored drive', async () => {
    const data = pattern(4 * ATA_SECTOR_SIZE, 2);
    const irqs = { a: 0, b: 0 };
    const backingA = new FileBacking(fh, SECTORS);
    let dev = new AtaDevice({ backing: backingA, irq: () => irqs.a++ });
    const p = ports(() => dev);
    p.issue(CMD_WRITE_SECTORS, 9, 4);
    p.writeWords(data, 0, 256);
    p.status();
    p.writeWords(data, 512, 256);
    p.status();
    p.writeWords(data, 1024, 100); // sector 2, partly
    const backingB = new FileBacking(fh, SECTORS);
    const { next, record } = await moveTo(dev, { backing: backingB, irq: () => irqs.b++ });
    expect(record.state).toMatchObject({ phase: 'pio-out', transfer: { pos: 1024 + 200, lba: 9 } });
    dev = next;
    p.writeWords(data, 1224, 156);
    p.status();
    p.writeWords(data, 1536, 256);
    await dev.idle();
    expect(p.status() & STATUS_DRQ).toBe(0);
    expect(backingA.calls).toEqual([]);
    expect(backingB.calls).toEqual([{ op: 'write', lba: 9, count: 4 }]);
    expect(irqs.b).toBe(2); // sector 3's DRQ, then the completion
    const onDisk = new Uint8Array(data.length);
    await fh.read(onDisk, 0, onDisk.length, 9 * ATA_SECTOR_SIZE);
    expect(onDisk).toEqual(data);
  });

  it('quiesce waits for the backing read in flight; its interrupt is held back and raised once by the restored drive', async () => {
    const backing = new MemoryAtaBacking(SECTORS);
    backing.bytes.set(pattern(512, 3), 0);
    backing.holding = true;
    const irqs = { a: 0, b: 0 };
    const dev = new AtaDevice({ backing, irq: () => irqs.a++ });
    const p = ports(() => dev);
    p.issue(CMD_READ_SECTORS, 0, 1);
    let quiesced = false;
    const q = dev.quiesce().then(() => (quiesced = true));
    await expect.poll(() => backing.heldCount).toBe(1);
    expect(quiesced).toBe(false);
    backing.release();
    await q;
    expect(dev.state.phase).toBe('pio-in');
    expect(irqs.a).toBe(0); // held back: the source is paused
    expect(dev.commandBlock.ioRead(7, 1)).toBe(0xff); // and refuses accesses
    const record = dev.save();
    expect(record.state).toMatchObject({ interruptPending: true, intrq: false });
    const next = AtaDevice.restore({ backing, irq: () => irqs.b++ }, structuredClone(record));
    expect(irqs).toEqual({ a: 0, b: 1 });
    const got = new Uint8Array(512);
    ports(() => next).readWords(got, 0, 256);
    expect(got).toEqual(pattern(512, 3));
    expect(backing.calls.filter((c) => c.op === 'read')).toHaveLength(1);
  });

  it('resume() after quiesce carries on in place (save without moving)', async () => {
    const backing = new MemoryAtaBacking(SECTORS);
    const irqs = { n: 0 };
    const dev = new AtaDevice({ backing, irq: () => irqs.n++ });
    ports(() => dev).issue(CMD_IDENTIFY_DEVICE, 0, 0);
    await dev.quiesce();
    dev.save();
    expect(dev.state.interruptPending).toBe(true);
    dev.resume();
    expect(irqs.n).toBe(1); // raised at the command: not again
    expect(dev.commandBlock.ioRead(7, 1) & STATUS_DRQ).toBeTruthy();
  });
});

describe('ATA state records are untrusted input', () => {
  async function midWrite(): Promise<DeviceStateRecord> {
    const dev = new AtaDevice({ backing: new MemoryAtaBacking(SECTORS), irq: () => undefined });
    const p = ports(() => dev);
    p.issue(CMD_WRITE_SECTORS, 3, 2);
    p.writeWords(pattern(512, 4), 0, 256);
    p.status();
    p.writeWords(pattern(512, 5), 0, 10);
    await dev.quiesce();
    return dev.save();
  }
  type Mutable = { state: Record<string, unknown> & { transfer: Record<string, unknown>; taskfile: Record<string, unknown> } } & Record<string, unknown>;
  const corruptions: Array<[string, (r: Mutable) => void]> = [
    ['an odd data position', (r) => (r.state.transfer.pos = 513)],
    ['a position outside its DRQ block', (r) => (r.state.transfer.pos = 100)],
    ['a block end past the transfer', (r) => (r.state.transfer.blockEnd = 2048)],
    ['a transfer that is not whole sectors', (r) => (r.state.transfer.data = new Uint8Array(700))],
    ['a BSY phase (never saved)', (r) => (r.state.phase = 'busy')],
    ['SRST without the reset phase', (r) => (r.state.srst = true)],
    ['INTRQ without a pending interrupt', (r) => ((r.state.intrq = true), (r.state.interruptPending = false))],
    ['a taskfile byte out of range', (r) => (r.state.taskfile.count = 256)],
    ['a missing field', (r) => delete r.state.error],
    ['a transfer past the end of this drive', (r) => (r.state.transfer.lba = SECTORS - 1)],
    ['an unknown version', (r) => (r.version = 9)],
    ['another device type', (r) => (r.type = 'lance')],
  ];
  for (const [what, corrupt] of corruptions)
    it(`refuses ${what} with RV_ERR_STATE_RECORD, leaving the record it was given alone`, async () => {
      const good = await midWrite();
      const bad = structuredClone(good) as unknown as Mutable;
      corrupt(bad);
      const seen = structuredClone(bad);
      let thrown: unknown;
      try {
        AtaDevice.restore({ backing: new MemoryAtaBacking(SECTORS), irq: () => undefined }, bad);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(StateRecordError);
      expect((thrown as StateRecordError).code).toBe('RV_ERR_STATE_RECORD');
      expect(bad).toEqual(seen);
      expect(() => AtaDevice.restore({ backing: new MemoryAtaBacking(SECTORS), irq: () => undefined }, structuredClone(good))).not.toThrow();
    });
});

// ---- property: a save/restore at a random point changes nothing a guest or the disk sees ----

type Op = { t: 'command'; opcode: number; lba: number; count: number } | { t: 'words'; n: number } | { t: 'status' } | { t: 'alt' } | { t: 'settle' } | { t: 'reset' };
const PROP_SECTORS = 24;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('command' as const),
      opcode: fc.constantFrom(CMD_READ_SECTORS, CMD_READ_SECTORS, CMD_WRITE_SECTORS, CMD_WRITE_SECTORS, CMD_FLUSH_CACHE, CMD_IDENTIFY_DEVICE),
      lba: fc.integer({ min: 0, max: PROP_SECTORS + 2 }),
      count: fc.integer({ min: 1, max: 5 }),
    }),
  },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('words' as const), n: fc.oneof(fc.constant(256), fc.integer({ min: 1, max: 700 })) }) },
  { weight: 3, arbitrary: fc.constant({ t: 'status' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'alt' as const }) },
  { weight: 2, arbitrary: fc.constant({ t: 'settle' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'reset' as const }) },
);

/**
 * Run `ops` against a drive on a fresh in-memory disk, logging every value the guest reads and
 * every interrupt edge. At op `savePoint` the drive is either waited for (`idle()`, what quiesce
 * does to timing) or quiesced, saved, cloned and replaced by a restored drive.
 */
async function run(ops: Op[], savePoint: number, move: boolean): Promise<{ trace: string[]; disk: Uint8Array; calls: string[] }> {
  const backing = new MemoryAtaBacking(PROP_SECTORS);
  backing.bytes.set(pattern(backing.bytes.length, 7));
  const trace: string[] = [];
  const options: AtaOptions = { backing, irq: () => trace.push('irq') };
  let dev = new AtaDevice(options);
  for (let i = 0; i <= ops.length; i++) {
    if (i === savePoint) {
      if (move) {
        await dev.quiesce();
        const record = structuredClone(dev.save());
        await dev.stop('moved');
        dev = AtaDevice.restore(options, record);
      } else await dev.idle();
    }
    if (i === ops.length) break;
    const op = ops[i];
    const c = dev.commandBlock;
    switch (op.t) {
      case 'command':
        c.ioWrite(6, 1, 0xe0);
        c.ioWrite(2, 1, op.count);
        c.ioWrite(3, 1, op.lba);
        c.ioWrite(4, 1, 0);
        c.ioWrite(5, 1, 0);
        c.ioWrite(7, 1, op.opcode);
        break;
      case 'words': {
        // Write if the drive wants data, else read: a driver following DRQ's direction.
        const out = dev.state.phase === 'pio-out';
        let sum = 0;
        for (let w = 0; w < op.n; w++) out ? c.ioWrite(0, 2, (w * 7 + i) & 0xffff) : (sum = (sum * 31 + c.ioRead(0, 2)) >>> 0);
        trace.push(out ? `wrote ${op.n}` : `read ${op.n} ${sum}`);
        break;
      }
      case 'status':
        trace.push(`status ${c.ioRead(7, 1)} error ${c.ioRead(1, 1)} count ${c.ioRead(2, 1)}`);
        break;
      case 'alt':
        trace.push(`alt ${dev.controlBlock.ioRead(0, 1)}`);
        break;
      case 'settle':
        await new Promise((r) => setImmediate(r));
        break;
      case 'reset':
        dev.controlBlock.ioWrite(0, 1, 0x04);
        dev.controlBlock.ioWrite(0, 1, 0);
        break;
    }
  }
  await dev.idle();
  trace.push(`final ${dev.commandBlock.ioRead(7, 1)}`);
  return { trace, disk: backing.bytes, calls: backing.calls.map((c) => `${c.op} ${c.lba} ${c.count}`) };
}

describe('ATA: property', () => {
  it('a save/restore at a random point of random PIO traffic gives the same register trace, interrupts, backing calls and disk', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 60 }).chain((ops) => fc.tuple(fc.constant(ops), fc.integer({ min: 0, max: ops.length }))),
        async ([ops, savePoint]) => {
          const plain = await run(ops, savePoint, false);
          const moved = await run(ops, savePoint, true);
          expect(moved.trace).toEqual(plain.trace);
          expect(moved.calls).toEqual(plain.calls);
          expect(moved.disk).toEqual(plain.disk);
        },
      ),
      { numRuns: 120 },
    );
  });
});
