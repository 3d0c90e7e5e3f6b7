/**
 * AtaDriver — the guest's driver for an ATA PIO disk (full emulation: every port access traps).
 *
 * One command at a time (callers queue), LBA28, READ/WRITE SECTORS of at most 256 sectors per
 * command, FLUSH CACHE, and IDENTIFY DEVICE at probe. Per command: check ALTSTATUS is idle,
 * program DEVICE, COUNT, LBA low/mid/high, write COMMAND; then per 512-byte DRQ block wait for
 * the interrupt, read STATUS (which acknowledges it), check ERR/DF, move 256 words on the data
 * port. A WRITE's first block needs no interrupt (poll ALTSTATUS for DRQ); its last interrupt
 * means the data is on the disk.
 *
 * An interrupt that does not come within `irqTimeoutMs` is not waited for forever: the driver
 * polls ALTSTATUS (no side effect) and carries on if the drive is no longer busy, counting a lost
 * interrupt. A drive still busy at the command deadline, or in a state the protocol does not
 * allow (no DRQ where data is due, DRQ left over), fails the request; the next command starts
 * with a software reset. An ATA error (ERR) fails only its request: the drive is idle after it.
 *
 * The register constants are the guest's own copy (a driver carries its own ATA header, as
 * Linux has include/linux/ata.h); the device model (shared/src/devicemodels/ata) is a separate implementation.
 */
import {
  AtaCommandError,
  ClosedError,
  DeviceError,
  InvalidArgumentError,
  SECTOR_SIZE,
  StateError,
  TimeoutError,
  loadRecord,
  saveRecord,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type PortIo,
} from '@ringvisor/shared';
import { ATA_DRIVER_STATE, type AtaDriverState, type AtaPendingRequest } from './state.js';
import type { BlockDevice } from '../../workloads/block-verifier.js';
import { newAtaDriverMetrics, type AtaDriverMetrics } from './metrics.js';

// Command block register offsets.
const REG_DATA = 0;
const REG_ERROR = 1;
const REG_COUNT = 2;
const REG_LBA_LOW = 3;
const REG_LBA_MID = 4;
const REG_LBA_HIGH = 5;
const REG_DEVICE = 6;
const REG_STATUS = 7;
const REG_COMMAND = 7;

const ST_BSY = 0x80;
const ST_DRDY = 0x40;
const ST_DF = 0x20;
const ST_DRQ = 0x08;
const ST_ERR = 0x01;

const DEVCTL_SRST = 0x04;

const DEVICE_LBA = 0xe0; // obsolete bits 7 and 5 set, L = 1, DEV = 0

const CMD_READ_SECTORS = 0x20;
const CMD_WRITE_SECTORS = 0x30;
const CMD_FLUSH_CACHE = 0xe7;
const CMD_IDENTIFY_DEVICE = 0xec;

const MAX_SECTORS_PER_COMMAND = 256;
const WORDS_PER_SECTOR = SECTOR_SIZE / 2;
const LBA28_LIMIT = 0x10000000;
/** ALTSTATUS polls before a poll loop starts yielding to the event loop. */
const SPIN_POLLS = 64;

const STATUS_BITS: Array<[number, string]> = [
  [ST_BSY, 'BSY'],
  [ST_DRDY, 'DRDY'],
  [ST_DF, 'DF'],
  [0x10, 'DSC'],
  [ST_DRQ, 'DRQ'],
  [ST_ERR, 'ERR'],
];
const ERROR_BITS: Array<[number, string]> = [
  [0x80, 'ICRC'],
  [0x40, 'UNC'],
  [0x20, 'MC'],
  [0x10, 'IDNF'],
  [0x08, 'MCR'],
  [0x04, 'ABRT'],
  [0x02, 'NM'],
  [0x01, 'AMNF'],
];

function bitNames(v: number, table: Array<[number, string]>): string {
  const set = table.filter(([b]) => v & b).map(([, n]) => n);
  return set.length ? set.join('|') : 'none';
}

function hex2(v: number): string {
  return '0x' + (v & 0xff).toString(16).padStart(2, '0');
}

/** A command the drive ended with ERR or DF, as AtaCommandError: the registers as read, bit by bit. */
function ataCommandError(command: string, status: number, error: number): AtaCommandError {
  const message = `ATA ${command} failed: status ${hex2(status)} (${bitNames(status, STATUS_BITS)}), error ${hex2(error)} (${bitNames(error, ERROR_BITS)})`;
  return new AtaCommandError(message, command, status, error);
}

export interface AtaDriverOptions {
  /** Every call is a trap; the vCPU blocks until answered. */
  io: PortIo;
  /** Register the virtual IRQ handler (an event channel upcall). */
  onInterrupt(handler: () => void): void;
  /** Command block base port (default 0x1F0). */
  commandBase?: number;
  /** Control block port: ALTSTATUS / DEVCTL (default 0x3F6). */
  controlBase?: number;
  /** Wait this long for an interrupt before polling ALTSTATUS (default 50 ms). */
  irqTimeoutMs?: number;
  /** Fail a command whose drive stays busy this long (default 30 s). */
  commandTimeoutMs?: number;
  /** The vbd's device id in its guest (identity and the record's instance name); default 0. */
  devid?: number;
}

/** A request waiting its turn; `request` is its description as data (absent for exclusive()). */
interface Queued {
  request?: AtaPendingRequest;
  run(): Promise<void>;
  resolve(): void;
  reject(e: unknown): void;
}

interface Command {
  name: string;
  opcode: number;
  lba: number;
  count: number;
  deadline: number;
}

/**
 * Persistence (the Device interface): quiesce() lets the command in progress finish and starts
 * no other; save() writes the record (state.ts) with the requests still waiting, as data;
 * `AtaDriver.restore(options, record)` builds a driver that runs them, in order, and hands
 * their results out through `carried`. The source's callers of those requests are answered
 * with ClosedError when it is stopped: their requests moved.
 */
export class AtaDriver implements BlockDevice, Device {
  readonly counters: AtaDriverMetrics = newAtaDriverMetrics();
  readonly identity: DeviceIdentity;
  /** Requests a restored driver took over from a record, and their results (a read's data). */
  readonly carried: Array<{ request: AtaPendingRequest; done: Promise<Uint8Array | undefined> }> = [];
  private readonly waiting: Queued[] = [];
  private current: Promise<void> | undefined;
  private paused = false;
  private stopped = false;
  private readonly io: PortIo;
  private readonly cmdBase: number;
  private readonly ctlPort: number;
  private readonly irqTimeoutMs: number;
  private readonly commandTimeoutMs: number;
  private _sectors = 0;
  private _model = '';
  private _serial = '';
  private probed = false;
  /** Set when the drive was left mid-protocol: the next command resets it first. */
  private needsReset = false;
  /** An interrupt that arrived while nobody was waiting. */
  private irqLatched = false;
  private irqWaiter: (() => void) | undefined;

  constructor(o: AtaDriverOptions) {
    this.io = o.io;
    this.cmdBase = o.commandBase ?? 0x1f0;
    this.ctlPort = o.controlBase ?? 0x3f6;
    this.irqTimeoutMs = o.irqTimeoutMs ?? 50;
    this.commandTimeoutMs = o.commandTimeoutMs ?? 30_000;
    this.identity = { kind: 'blk', mode: 'emulated', side: 'guest', type: ATA_DRIVER_STATE.type, devid: o.devid ?? 0 };
    o.onInterrupt(() => this.interrupt());
  }

  /** Capacity in 512-byte sectors (0 until probed). */
  get sectors(): number {
    return this._sectors;
  }

  /** The drive's model string from IDENTIFY (empty until probed). */
  get model(): string {
    return this._model;
  }

  get serial(): string {
    return this._serial;
  }

  /** Soft reset, then IDENTIFY DEVICE: learns the capacity and the model string. */
  probe(): Promise<void> {
    return this.request(() => this.doProbe(), { kind: 'probe' });
  }

  read(sector: number, buf: Uint8Array): Promise<void> {
    return this.request(
      async () => {
        this.checkRange(sector, buf);
        await this.transfer('read', sector, buf);
      },
      // A count the record can carry (a bad buffer fails when the request runs, as before).
      { kind: 'read', sector, count: Math.max(1, Math.ceil(buf.length / SECTOR_SIZE)) },
    );
  }

  write(sector: number, buf: Uint8Array): Promise<void> {
    return this.request(
      async () => {
        this.checkRange(sector, buf);
        await this.transfer('write', sector, buf);
      },
      { kind: 'write', sector, data: buf },
    );
  }

  flush(): Promise<void> {
    return this.request(async () => {
      if (!this.probed) throw new DeviceError('ATA drive not probed');
      const c = await this.issue('FLUSH CACHE', CMD_FLUSH_CACHE, 0, 0);
      this.checkStatus(c, await this.waitForDrive(c));
    }, { kind: 'flush' });
  }

  // ---- the Device interface ----

  /** Probe the drive (what guest boot does). */
  async attach(): Promise<void> {
    if (this.stopped) throw new StateError(`ata-driver${this.identity.devid}: attach after stop`);
    if (!this.probed) await this.probe();
  }

  /**
   * No more requests. A quiesced driver whose state was saved answers the requests still
   * waiting with ClosedError (they moved with the record); a running one lets them fail the same way.
   */
  async stop(reason: string): Promise<void> {
    this.stopped = true;
    this.paused = true;
    await this.current;
    for (const q of this.waiting.splice(0)) q.reject(new ClosedError(`ata-driver${this.identity.devid}: stopped (${reason})`));
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.commands,
      bytes: (m.sectorsRead + m.sectorsWritten) * SECTOR_SIZE,
      errors: m.errors,
      detail: { ...m, bytesRead: m.sectorsRead * SECTOR_SIZE, bytesWritten: m.sectorsWritten * SECTOR_SIZE, waiting: this.waiting.length },
    };
  }

  /** The command in progress finishes (the drive must still be running); no other starts. */
  async quiesce(): Promise<void> {
    this.paused = true;
    while (this.current) await this.current;
  }

  resume(): void {
    if (this.stopped) return;
    this.paused = false;
    this.pump();
  }

  save(): DeviceStateRecord {
    if (!this.paused || this.current || this.stopped) throw new StateError(`ata-driver${this.identity.devid}: save() needs a quiesced, running driver`);
    const pending: AtaPendingRequest[] = [];
    for (const q of this.waiting) {
      // exclusive(): a program of raw port accesses (a hostile-guest test) is not data.
      if (!q.request) throw new StateError(`ata-driver${this.identity.devid}: an exclusive port program is queued; it cannot be saved`);
      pending.push(q.request.kind === 'write' ? { ...q.request, data: q.request.data.slice() } : { ...q.request });
    }
    const state: AtaDriverState = {
      probed: this.probed,
      sectors: this._sectors,
      model: this._model,
      serial: this._serial,
      needsReset: this.needsReset,
      irqLatched: this.irqLatched,
      pending,
    };
    return saveRecord(ATA_DRIVER_STATE, `ata-driver${this.identity.devid}`, state);
  }

  /**
   * A driver built with `options` (the same PortIo and IRQ; the drive restored alongside) in
   * the state `record` holds, running: the pending requests run in order, their results in
   * `carried`. An inconsistent record is refused (StateRecordError) before anything is set.
   */
  static restore(options: AtaDriverOptions, record: unknown): AtaDriver {
    const s = loadRecord(ATA_DRIVER_STATE, record);
    const d = new AtaDriver(options);
    d.probed = s.probed;
    d._sectors = s.sectors;
    d._model = s.model;
    d._serial = s.serial;
    d.needsReset = s.needsReset;
    d.irqLatched = s.irqLatched;
    for (const r of s.pending) {
      let done: Promise<Uint8Array | undefined>;
      if (r.kind === 'read') {
        const buf = new Uint8Array(r.count * SECTOR_SIZE);
        done = d.read(r.sector, buf).then(() => buf);
      } else if (r.kind === 'write') done = d.write(r.sector, r.data.slice()).then(() => undefined);
      else done = (r.kind === 'probe' ? d.probe() : d.flush()).then(() => undefined);
      done.catch(() => undefined); // a carried request's failure is its holder's to see, not unhandled
      d.carried.push({ request: r, done });
    }
    return d;
  }

  /**
   * Run `op` with the drive to itself (between this driver's commands), then reset the drive
   * before the next command: `op` may leave it in any state (a hostile program on this vCPU).
   */
  exclusive<T>(op: () => T): Promise<T> {
    let out!: T;
    return this.request(async () => {
      out = op();
      this.needsReset = true;
    }).then(() => out);
  }

  // ---- request queue ----

  /** Run `op` after every earlier request has finished (one command on the wire at a time). */
  private request(op: () => Promise<void>, request?: AtaPendingRequest): Promise<void> {
    if (this.stopped) return Promise.reject(new ClosedError(`ata-driver${this.identity.devid}: stopped`));
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ ...(request ? { request } : {}), run: op, resolve, reject });
      this.pump();
    });
  }

  /** Start the next waiting request unless one runs or the driver is quiesced. */
  private pump(): void {
    if (this.current || this.paused || this.waiting.length === 0) return;
    const next = this.waiting.shift()!;
    this.current = (async () => {
      await Promise.resolve(); // a request starts on a later microtask than the call that queued it
      try {
        await next.run();
        next.resolve();
      } catch (e) {
        this.counters.errors++;
        next.reject(e);
      } finally {
        this.current = undefined;
        this.pump();
      }
    })();
  }

  private checkRange(sector: number, buf: Uint8Array): void {
    if (!this.probed) throw new DeviceError('ATA drive not probed');
    if (buf.length % SECTOR_SIZE !== 0) throw new InvalidArgumentError(`buffer of ${buf.length} bytes is not a whole number of sectors`);
    const n = buf.length / SECTOR_SIZE;
    if (!Number.isSafeInteger(sector) || sector < 0 || sector + n > this._sectors)
      throw new InvalidArgumentError(`sectors ${sector}..${sector + n - 1} outside a ${this._sectors}-sector disk`);
  }

  // ---- ports (every call counted) ----

  private inb(reg: number): number {
    this.counters.portAccesses++;
    return this.io.inb(this.cmdBase + reg);
  }
  private outb(reg: number, v: number): void {
    this.counters.portAccesses++;
    this.io.outb(this.cmdBase + reg, v);
  }
  private altStatus(): number {
    this.counters.portAccesses++;
    return this.io.inb(this.ctlPort);
  }
  private deviceControl(v: number): void {
    this.counters.portAccesses++;
    this.io.outb(this.ctlPort, v);
  }

  // ---- interrupts ----

  private interrupt(): void {
    this.counters.interrupts++;
    const w = this.irqWaiter;
    if (w) w();
    else this.irqLatched = true;
  }

  /** True when an interrupt came, false when `ms` passed without one. */
  private waitIrq(ms: number): Promise<boolean> {
    if (this.irqLatched) {
      this.irqLatched = false;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.irqWaiter = undefined;
        resolve(false);
      }, ms);
      this.irqWaiter = () => {
        clearTimeout(timer);
        this.irqWaiter = undefined;
        resolve(true);
      };
    });
  }

  /**
   * Wait until the drive has something to say for `c`, then read STATUS (acknowledging the
   * interrupt) and return it. A lost interrupt costs one ALTSTATUS poll per `irqTimeoutMs`; a
   * stale one (the drive still BSY) just means waiting again.
   */
  private async waitForDrive(c: Command): Promise<number> {
    for (;;) {
      if (!(await this.waitIrq(this.irqTimeoutMs))) {
        this.counters.irqWaitTimeouts++;
        if (this.altStatus() & ST_BSY) {
          this.checkDeadline(c);
          continue;
        }
        this.counters.lostInterruptPolls++;
      }
      const st = this.inb(REG_STATUS);
      if (!(st & ST_BSY)) return st;
      this.checkDeadline(c);
    }
  }

  /** Poll ALTSTATUS until BSY clears (no interrupt expected), yielding after a short spin. */
  private async pollNotBusy(c: Command): Promise<number> {
    for (let n = 0; ; n++) {
      const st = this.altStatus();
      if (!(st & ST_BSY)) return st;
      // All ones is a floating bus: nothing decodes these ports (or the device model is gone).
      if (st === 0xff) {
        this.needsReset = true;
        throw new DeviceError(`ATA ${c.name}: no drive answers at 0x${this.ctlPort.toString(16)} (status 0xff)`);
      }
      this.checkDeadline(c);
      if (n >= SPIN_POLLS) await new Promise((r) => setTimeout(r, 1));
    }
  }

  private checkDeadline(c: Command): void {
    if (performance.now() < c.deadline) return;
    this.needsReset = true;
    this.counters.timeouts++;
    throw new TimeoutError(`ATA ${c.name}: drive still busy after ${this.commandTimeoutMs} ms`);
  }

  // ---- commands ----

  private deadline(): number {
    return performance.now() + this.commandTimeoutMs;
  }

  /** SRST pulse with interrupts enabled; waits for the drive to come out of reset. */
  private async softReset(): Promise<number> {
    this.counters.resets++;
    this.deviceControl(DEVCTL_SRST);
    this.deviceControl(0); // nIEN clear: interrupts on
    this.irqLatched = false;
    const st = await this.pollNotBusy({ name: 'reset', opcode: 0, lba: 0, count: 0, deadline: this.deadline() });
    this.needsReset = false;
    return st;
  }

  /** Program the taskfile and write COMMAND, after making sure the drive will accept it. */
  private async issue(name: string, opcode: number, lba: number, count: number): Promise<Command> {
    const c: Command = { name, opcode, lba, count, deadline: this.deadline() };
    if (!this.needsReset) {
      // A drive left BSY or with DRQ would ignore the command; only a reset gets its attention.
      const st = this.altStatus();
      if (st & (ST_BSY | ST_DRQ)) this.needsReset = true;
    }
    if (this.needsReset) await this.softReset();
    this.outb(REG_DEVICE, DEVICE_LBA | ((lba >>> 24) & 0x0f));
    this.outb(REG_COUNT, count & 0xff); // 256 is written as 0
    this.outb(REG_LBA_LOW, lba & 0xff);
    this.outb(REG_LBA_MID, (lba >>> 8) & 0xff);
    this.outb(REG_LBA_HIGH, (lba >>> 16) & 0xff);
    this.irqLatched = false; // anything before this command is stale
    this.outb(REG_COMMAND, opcode);
    this.counters.commands++;
    return c;
  }

  /** Throw AtaCommandError if STATUS shows ERR or DF (reading ERROR for the reason). */
  private checkStatus(c: Command, st: number): void {
    if (!(st & (ST_ERR | ST_DF))) return;
    const error = this.inb(REG_ERROR);
    throw ataCommandError(c.count ? `${c.name} lba ${c.lba} count ${c.count}` : c.name, st, error);
  }

  /** The drive broke the protocol (no DRQ where data is due, or DRQ left over): reset before the next command. */
  private protocolError(c: Command, st: number, what: string): never {
    this.needsReset = true;
    throw new DeviceError(`ATA ${c.name} lba ${c.lba}: ${what} (status ${hex2(st)} ${bitNames(st, STATUS_BITS)})`);
  }

  private async transfer(dir: 'read' | 'write', sector: number, buf: Uint8Array): Promise<void> {
    const total = buf.length / SECTOR_SIZE;
    for (let done = 0; done < total; done += MAX_SECTORS_PER_COMMAND) {
      const n = Math.min(MAX_SECTORS_PER_COMMAND, total - done);
      const part = buf.subarray(done * SECTOR_SIZE, (done + n) * SECTOR_SIZE);
      if (dir === 'read') await this.readSectors(sector + done, n, part);
      else await this.writeSectors(sector + done, n, part);
    }
  }

  /** PIO data-in: an interrupt, STATUS, 256 words, per sector. */
  private async readSectors(lba: number, count: number, into: Uint8Array): Promise<void> {
    const c = await this.issue('READ SECTORS', CMD_READ_SECTORS, lba, count);
    for (let s = 0; s < count; s++) {
      const st = await this.waitForDrive(c);
      this.checkStatus(c, st);
      if (!(st & ST_DRQ)) this.protocolError(c, st, `no DRQ for sector ${s} of ${count}`);
      this.readBlock(into, s * SECTOR_SIZE);
      this.counters.sectorsRead++;
    }
    const st = this.altStatus();
    this.checkStatus(c, st);
    if (st & (ST_DRQ | ST_BSY)) this.protocolError(c, st, 'drive still busy or requesting data after the last sector');
  }

  /** PIO data-out: DRQ for the first sector by polling; an interrupt before each later sector and at the end. */
  private async writeSectors(lba: number, count: number, from: Uint8Array): Promise<void> {
    const c = await this.issue('WRITE SECTORS', CMD_WRITE_SECTORS, lba, count);
    let st = await this.pollNotBusy(c);
    if (st & (ST_ERR | ST_DF)) {
      st = this.inb(REG_STATUS); // acknowledges the error's interrupt
      this.checkStatus(c, st);
    }
    for (let s = 0; s < count; s++) {
      if (s > 0) {
        st = await this.waitForDrive(c);
        this.checkStatus(c, st);
      }
      if (!(st & ST_DRQ)) this.protocolError(c, st, `no DRQ for sector ${s} of ${count}`);
      this.writeBlock(from, s * SECTOR_SIZE);
    }
    st = await this.waitForDrive(c);
    this.checkStatus(c, st);
    if (st & ST_DRQ) this.protocolError(c, st, 'drive requesting data after the last sector');
    this.counters.sectorsWritten += count;
  }

  private readBlock(into: Uint8Array, off: number): void {
    const port = this.cmdBase + REG_DATA;
    for (let i = 0; i < WORDS_PER_SECTOR; i++) {
      const w = this.io.inw(port);
      into[off + 2 * i] = w & 0xff;
      into[off + 2 * i + 1] = w >>> 8;
    }
    this.counters.portAccesses += WORDS_PER_SECTOR;
  }

  private writeBlock(from: Uint8Array, off: number): void {
    const port = this.cmdBase + REG_DATA;
    for (let i = 0; i < WORDS_PER_SECTOR; i++) this.io.outw(port, from[off + 2 * i] | (from[off + 2 * i + 1] << 8));
    this.counters.portAccesses += WORDS_PER_SECTOR;
  }

  private async doProbe(): Promise<void> {
    this.probed = false;
    const st = await this.softReset();
    if (st === 0 || st === 0xff) throw new DeviceError(`no ATA drive at 0x${this.cmdBase.toString(16)} (status ${hex2(st)})`);
    // The reset signature tells an ATA disk (LBA mid/high 00/00) from ATAPI (14/EB) or SATA (3C/C3).
    const mid = this.inb(REG_LBA_MID);
    const high = this.inb(REG_LBA_HIGH);
    if (mid !== 0 || high !== 0) throw new DeviceError(`device at 0x${this.cmdBase.toString(16)} is not an ATA disk (signature ${hex2(mid)}/${hex2(high)})`);
    const c = await this.issue('IDENTIFY DEVICE', CMD_IDENTIFY_DEVICE, 0, 0);
    const s = await this.waitForDrive(c);
    this.checkStatus(c, s);
    if (!(s & ST_DRQ)) this.protocolError(c, s, 'no DRQ for the IDENTIFY data');
    const id = new Uint8Array(SECTOR_SIZE);
    this.readBlock(id, 0);
    const word = (w: number) => id[2 * w] | (id[2 * w + 1] << 8);
    if (id[510] === 0xa5 && id.reduce((a, b) => a + b, 0) % 256 !== 0) throw new DeviceError('ATA IDENTIFY data fails its checksum');
    if (!(word(49) & (1 << 9))) throw new DeviceError('ATA drive without LBA support (CHS only) is not supported');
    const sectors = word(60) + word(61) * 0x10000;
    if (sectors <= 0 || sectors >= LBA28_LIMIT) throw new DeviceError(`ATA IDENTIFY reports ${sectors} LBA28 sectors`);
    this._sectors = sectors;
    this._model = ataString(id, 27, 40);
    this._serial = ataString(id, 10, 20);
    this.probed = true;
  }
}

/** An IDENTIFY string: two characters per word, the first in the high byte; trailing spaces dropped. */
function ataString(id: Uint8Array, word: number, chars: number): string {
  let s = '';
  for (let i = 0; i < chars; i++) s += String.fromCharCode(id[word * 2 + (i ^ 1)]);
  return s.trim();
}
