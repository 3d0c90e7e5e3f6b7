/**
 * Save and restore of the guest's ATA driver together with the ATA model it drives (shared
 * code: the real drive, port access by port access) on a real disk file: requests queued behind
 * the one in progress move with the record and complete exactly once, with the right data.
 */
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AtaDevice, ClosedError, IO_DIR_IN, PortIoInstructions, StateRecordError, type AtaBacking, type AtaOptions, type IoSize } from '@ringvisor/shared';
import { AtaDriver, type AtaDriverOptions } from './index.js';

const SECTORS = 64;

class FileBacking implements AtaBacking {
  readonly writes: Array<{ lba: number; count: number }> = [];
  constructor(
    private readonly fh: FileHandle,
    readonly sectors: number,
  ) {}
  async read(lba: number, count: number): Promise<Uint8Array | number> {
    const buf = new Uint8Array(count * 512);
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, lba * 512);
    return bytesRead === buf.length ? buf : -1;
  }
  async write(lba: number, data: Uint8Array): Promise<number> {
    this.writes.push({ lba, count: data.length / 512 });
    await this.fh.write(data, 0, data.length, lba * 512);
    return 0;
  }
  async flush(): Promise<number> {
    await this.fh.sync();
    return 0;
  }
}

function pattern(sectors: number, seed: number): Uint8Array {
  const b = new Uint8Array(sectors * 512);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed * 53 + (i >> 9)) & 0xff;
  return b;
}

/** A guest with one emulated disk: a vCPU whose port accesses reach the current drive, and its IRQ. */
class Machine {
  handler: (() => void) | undefined;
  drive: AtaDevice;
  readonly driverOptions: AtaDriverOptions;
  constructor(readonly backing: FileBacking) {
    const machine = this;
    class Vcpu extends PortIoInstructions {
      protected access(port: number, size: IoSize, dir: number, value: number): number {
        const [block, off] = port >= 0x1f0 && port < 0x1f8 ? [machine.drive.commandBlock, port - 0x1f0] : port === 0x3f6 ? [machine.drive.controlBlock, 0] : [undefined, 0];
        if (!block) return 0xffffffff;
        if (dir === IO_DIR_IN) return block.ioRead(off, size);
        block.ioWrite(off, size, value);
        return 0;
      }
    }
    this.drive = new AtaDevice(this.driveOptions(backing));
    this.driverOptions = { io: new Vcpu(), onInterrupt: (h) => (this.handler = h) };
  }
  driveOptions(backing: AtaBacking): AtaOptions {
    // The interrupt is an event: delivered after the access that raised it.
    return { backing, irq: () => queueMicrotask(() => this.handler?.()) };
  }
}

let dir: string;
let fh: FileHandle;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rv-ata-driver-'));
  fh = await open(join(dir, 'disk.img'), 'w+');
  await fh.truncate(SECTORS * 512);
});
afterEach(async () => {
  await fh.close();
  await rm(dir, { recursive: true, force: true });
});

describe('ATA driver save/restore with queued requests (with the ATA model, a real disk file)', () => {
  it('the command in progress finishes at the source; the queued ones run once on the restored driver, with the right data', async () => {
    const m = new Machine(new FileBacking(fh, SECTORS));
    const driver = new AtaDriver(m.driverOptions);
    await driver.attach();
    expect(driver.sectors).toBe(SECTORS);
    const A = pattern(8, 1);
    const B = pattern(3, 2);
    const C = pattern(2, 3);
    const w1 = driver.write(0, A);
    const moved = [driver.write(8, B), driver.read(0, new Uint8Array(8 * 512)), driver.write(20, C), driver.read(8, new Uint8Array(3 * 512)), driver.flush()];
    for (const p of moved) p.catch(() => undefined);
    await driver.quiesce(); // w1 is on the wire by now: it finishes here
    await w1;
    await m.drive.quiesce();
    const driverRecord = structuredClone(driver.save());
    const driveRecord = structuredClone(m.drive.save());
    expect((driverRecord.state as { pending: Array<{ kind: string }> }).pending.map((r) => r.kind)).toEqual(['write', 'read', 'write', 'read', 'flush']);
    await driver.stop('moved');
    await m.drive.stop('moved');
    for (const p of moved) await expect(p).rejects.toBeInstanceOf(ClosedError); // their requests moved
    const sourceWrites = [...m.backing.writes];
    const backing = new FileBacking(fh, SECTORS);
    m.drive = AtaDevice.restore(m.driveOptions(backing), driveRecord);
    const restored = AtaDriver.restore(m.driverOptions, driverRecord);
    const results = await Promise.all(restored.carried.map((c) => c.done));
    expect(results[1]).toEqual(A);
    expect(results[3]).toEqual(B);
    expect(sourceWrites).toEqual([{ lba: 0, count: 8 }]);
    expect(backing.writes).toEqual([
      { lba: 8, count: 3 },
      { lba: 20, count: 2 },
    ]);
    const disk = new Uint8Array(SECTORS * 512);
    await fh.read(disk, 0, disk.length, 0);
    expect(disk.subarray(0, 8 * 512)).toEqual(A);
    expect(disk.subarray(8 * 512, 11 * 512)).toEqual(B);
    expect(disk.subarray(20 * 512, 22 * 512)).toEqual(C);
    expect(restored.metrics()).toMatchObject({ ops: 5, errors: 0, bytes: (3 + 8 + 2 + 3) * 512 });
  });

  it('refuses inconsistent records (RV_ERR_STATE_RECORD), the record untouched', async () => {
    const m = new Machine(new FileBacking(fh, SECTORS));
    const driver = new AtaDriver(m.driverOptions);
    await driver.attach();
    await driver.quiesce();
    const good = driver.save();
    type S = Record<string, unknown> & { pending: unknown[] };
    const corruptions: Array<(s: S) => void> = [
      (s) => s.pending.push({ kind: 'write', sector: SECTORS - 1, data: new Uint8Array(1024) }),
      (s) => s.pending.push({ kind: 'write', sector: 0, data: new Uint8Array(700) }),
      (s) => s.pending.push({ kind: 'read', sector: 0, count: 0 }),
      (s) => s.pending.push({ kind: 'format' }),
      (s) => (s.probed = false),
      (s) => (s.model = 'x'.repeat(41)),
    ];
    for (const corrupt of corruptions) {
      const bad = structuredClone(good) as unknown as { state: S };
      corrupt(bad.state);
      const seen = structuredClone(bad);
      const fresh = new Machine(m.backing);
      expect(() => AtaDriver.restore(fresh.driverOptions, bad)).toThrow(StateRecordError);
      expect(bad).toEqual(seen);
      expect(fresh.handler).toBeUndefined();
    }
    await driver.stop('done');
  });
});
