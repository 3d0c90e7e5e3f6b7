/**
 * AtaDevice — an emulated ATA PIO hard disk (device 0 on one channel; full emulation).
 *
 * The guest's driver reaches it only through trapped port accesses (registers.ts documents the
 * interface and the sequencing a host must follow). The drive is a small state machine:
 *
 *   idle ──READ──▶ busy(read) ──data──▶ pio-in ──last word──▶ idle
 *   idle ──IDENTIFY──────────────────▶ pio-in
 *   idle ──WRITE──▶ pio-out ──last word──▶ busy(write) ──written──▶ idle
 *   idle ──FLUSH──▶ busy(flush) ──flushed──▶ idle
 *   any ──SRST set──▶ srst ──SRST clear──▶ idle (or resetting, until an abandoned backing op settles)
 *
 * STATUS is derived from the phase alone (idle: DRDY[|ERR], pio-*: DRDY|DRQ, busy: BSY|DRDY,
 * srst/resetting: BSY), so BSY and DRQ can never be set together.
 *
 * Transfers go to the backing store whole: a READ fetches all its sectors in one backing read
 * before the first DRQ; a WRITE collects all its sectors from the data port, then makes one
 * backing write, and raises its completion interrupt only after that write resolved (so an
 * acknowledged write is in the backing store, and a write cut short by a reset reaches nothing).
 * At most one backing operation is ever in flight: a reset waits for an abandoned one (BSY)
 * rather than start a new command that could overtake it.
 *
 * Nothing the guest does makes a handler throw or a backing call go out of range: commands are
 * validated against the capacity before the backing is touched, and every buffer is bounded by
 * 256 sectors.
 */
import { InternalError, InvalidArgumentError, floatingBus, type IoSize, type PortIoHandler } from '@ringvisor/shared';
import { buildIdentify, isAtaString } from './identify.js';
import { newAtaMetrics, type AtaMetrics } from './metrics.js';
import { decodeCommand, type Taskfile } from './request.js';
import {
  ATA_LBA28_MAX_SECTORS,
  ATA_SECTOR_SIZE,
  DEVCTL_NIEN,
  DEVCTL_SRST,
  DEVICE_DEV1,
  ERROR_ABRT,
  ERROR_DIAG_PASSED,
  ERROR_IDNF,
  ERROR_UNC,
  REG_ALT_STATUS,
  REG_COUNT,
  REG_DATA,
  REG_DEVICE_CONTROL,
  REG_FEATURES,
  REG_DEVICE,
  REG_ERROR,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_STATUS,
  SIGNATURE,
  STATUS_BSY,
  STATUS_DRDY,
  STATUS_DRQ,
  STATUS_ERR,
} from './registers.js';

export interface AtaBacking {
  /** Capacity in 512-byte sectors. */
  readonly sectors: number;
  /** `count` sectors at `lba`: the data (count·512 bytes, which the drive may keep), or a nonzero error status. */
  read(lba: number, count: number): Promise<Uint8Array | number>;
  /** 0 when written, nonzero on error. The drive hands over `data` and never touches it again. */
  write(lba: number, data: Uint8Array): Promise<number>;
  /** 0 when every completed write is durable, nonzero on error. */
  flush(): Promise<number>;
}

export interface AtaOptions {
  backing: AtaBacking;
  /** Raise the virtual IRQ: one call per rising edge of INTRQ (never under nIEN). */
  irq(): void;
  serial?: string;
  model?: string;
  firmware?: string;
}

export type AtaPhase = 'idle' | 'pio-in' | 'pio-out' | 'busy' | 'srst' | 'resetting';

/** A snapshot of the drive, for views and tests. */
export interface AtaDeviceState {
  phase: AtaPhase;
  /** STATUS of device 0 (what reading it would return with device 0 selected). */
  status: number;
  error: number;
  taskfile: Taskfile;
  /** The drive's interrupt pending flag, and the INTRQ line it drives (pending ∧ ¬nIEN ∧ selected). */
  interruptPending: boolean;
  intrq: boolean;
  nIEN: boolean;
  srst: boolean;
  selected: 0 | 1;
  backingInFlight: boolean;
  /** Bytes left in the current PIO transfer (0 outside pio-in/pio-out). */
  transferRemaining: number;
  /** What the drive is BSY with in phase 'busy'. */
  busyWith?: 'read' | 'write' | 'flush';
}

type BackingKind = 'read' | 'write' | 'flush';

type Phase =
  | { kind: 'idle' }
  | { kind: 'pio-in'; counted: boolean; buf: Uint8Array; pos: number; blockEnd: number }
  | { kind: 'pio-out'; lba: number; buf: Uint8Array; pos: number; blockEnd: number }
  | { kind: 'busy'; what: BackingKind }
  | { kind: 'srst' }
  | { kind: 'resetting' };

const DEFAULT_SERIAL = 'RINGVISOR-ATA-0001';
const DEFAULT_MODEL = 'ringvisor ATA PIO disk';
const DEFAULT_FIRMWARE = '0.1.0';

export class AtaDevice {
  readonly metrics: AtaMetrics = newAtaMetrics();
  readonly commandBlock: PortIoHandler;
  readonly controlBlock: PortIoHandler;
  /** Sectors the drive serves: the backing's capacity, at most what LBA28 addresses. */
  readonly capacity: number;
  private readonly backing: AtaBacking;
  private readonly raiseIrq: () => void;
  private readonly identifyBlock: Uint8Array;
  private phase: Phase = { kind: 'idle' };
  private err = false;
  private error: number = ERROR_DIAG_PASSED;
  private readonly tf: Taskfile = { features: 0, ...SIGNATURE };
  private pending = false;
  private intrq = false;
  private nien = false;
  private srst = false;
  /** Bumped by every reset: a backing completion from an older epoch is stale. */
  private epoch = 0;
  private inflight: Promise<void> | undefined;

  constructor(o: AtaOptions) {
    const sectors = o.backing.sectors;
    if (!Number.isSafeInteger(sectors) || sectors < 0) throw new InvalidArgumentError(`ATA backing capacity must be a whole number of sectors, got ${sectors}`);
    const ids = { serial: o.serial ?? DEFAULT_SERIAL, model: o.model ?? DEFAULT_MODEL, firmware: o.firmware ?? DEFAULT_FIRMWARE };
    for (const [k, v] of Object.entries(ids)) if (!isAtaString(v)) throw new InvalidArgumentError(`ATA ${k} must be printable ASCII, got ${JSON.stringify(v)}`);
    this.backing = o.backing;
    this.raiseIrq = o.irq;
    this.capacity = Math.min(sectors, ATA_LBA28_MAX_SECTORS);
    this.identifyBlock = buildIdentify(this.capacity, ids);
    this.commandBlock = {
      ioRead: (offset, size) => this.commandRead(offset, size),
      ioWrite: (offset, size, value) => this.commandWrite(offset, size, value),
    };
    this.controlBlock = {
      ioRead: (offset, size) => this.controlRead(offset, size),
      ioWrite: (offset, size, value) => this.controlWrite(offset, size, value),
    };
  }

  /** Resolves when no backing operation is in flight (tests, orderly shutdown). */
  async idle(): Promise<void> {
    while (this.inflight) await this.inflight;
  }

  get state(): AtaDeviceState {
    const p = this.phase;
    return {
      phase: p.kind,
      status: this.status(),
      error: this.error,
      taskfile: { ...this.tf },
      interruptPending: this.pending,
      intrq: this.intrq,
      nIEN: this.nien,
      srst: this.srst,
      selected: this.selected(),
      backingInFlight: this.inflight !== undefined,
      transferRemaining: p.kind === 'pio-in' || p.kind === 'pio-out' ? p.buf.length - p.pos : 0,
      ...(p.kind === 'busy' ? { busyWith: p.what } : {}),
    };
  }

  // ---- status and interrupts ----

  private status(): number {
    switch (this.phase.kind) {
      case 'idle':
        return STATUS_DRDY | (this.err ? STATUS_ERR : 0);
      case 'pio-in':
      case 'pio-out':
        return STATUS_DRDY | STATUS_DRQ;
      case 'busy':
        return STATUS_BSY | STATUS_DRDY;
      case 'srst':
      case 'resetting':
        return STATUS_BSY;
    }
  }

  private selected(): 0 | 1 {
    return this.tf.device & DEVICE_DEV1 ? 1 : 0;
  }

  /** Accepting host writes to the command block? (ATA: not while BSY or DRQ.) */
  private busyOrDrq(): boolean {
    return this.phase.kind !== 'idle';
  }

  private assertInterrupt(): void {
    if (this.pending) this.metrics.irqsCoalesced++;
    else if (this.nien || this.selected() !== 0) this.metrics.irqsMasked++;
    this.pending = true;
    this.updateLine();
  }

  private clearInterrupt(): void {
    this.pending = false;
    this.updateLine();
  }

  /** Recompute INTRQ; a rising edge is what the host's interrupt controller sees. */
  private updateLine(): void {
    const line = this.pending && !this.nien && this.selected() === 0;
    const rising = line && !this.intrq;
    this.intrq = line;
    if (!rising) return;
    this.metrics.irqs++;
    try {
      this.raiseIrq();
    } catch {
      // The host's IRQ plumbing failing must not turn into an exception on the guest's trap.
    }
  }

  // ---- port handlers ----

  private commandRead(offset: number, size: IoSize): number {
    this.metrics.portAccesses++;
    const sz = normSize(size);
    if (!Number.isInteger(offset) || offset < 0) return floatingBus(sz);
    if (offset === REG_DATA) return this.dataRead(sz);
    let v = 0;
    for (let i = 0; i < sz; i++) v |= this.readRegister(offset + i) << (8 * i);
    return v >>> 0;
  }

  private commandWrite(offset: number, size: IoSize, value: number): void {
    this.metrics.portAccesses++;
    const sz = normSize(size);
    if (!Number.isInteger(offset) || offset < 0) return;
    if (offset === REG_DATA) return this.dataWrite(sz, value);
    for (let i = 0; i < sz; i++) this.writeRegister(offset + i, (value >>> (8 * i)) & 0xff);
  }

  private controlRead(offset: number, size: IoSize): number {
    this.metrics.portAccesses++;
    const sz = normSize(size);
    if (offset !== REG_ALT_STATUS) return floatingBus(sz);
    // ALTSTATUS is the only control register decoded; the bytes after it (0x3F7…) float.
    const alt = this.selected() === 0 ? this.status() : 0;
    return (alt | (floatingBus(sz) & ~0xff)) >>> 0;
  }

  private controlWrite(offset: number, _size: IoSize, value: number): void {
    this.metrics.portAccesses++;
    if (offset !== REG_DEVICE_CONTROL) return;
    const v = value & 0xff;
    const srst = (v & DEVCTL_SRST) !== 0;
    this.nien = (v & DEVCTL_NIEN) !== 0;
    if (srst && !this.srst) this.beginReset();
    else if (!srst && this.srst) this.endReset();
    this.updateLine();
  }

  private readRegister(reg: number): number {
    switch (reg) {
      case REG_ERROR:
        return this.selected() === 0 ? this.error : 0;
      case REG_COUNT:
        return this.tf.count;
      case REG_LBA_LOW:
        return this.tf.lbaLow;
      case REG_LBA_MID:
        return this.tf.lbaMid;
      case REG_LBA_HIGH:
        return this.tf.lbaHigh;
      case REG_DEVICE:
        return this.tf.device;
      case REG_STATUS: {
        // Device 1 is absent: its STATUS reads 0 and reading it leaves device 0's interrupt alone.
        if (this.selected() !== 0) return 0;
        const s = this.status();
        this.clearInterrupt();
        return s;
      }
      default:
        return 0xff;
    }
  }

  private writeRegister(reg: number, v: number): void {
    if (reg === REG_STATUS) return this.command(v);
    if (reg < REG_FEATURES || reg > REG_DEVICE) return;
    if (this.busyOrDrq()) {
      this.metrics.taskfileWritesIgnored++;
      return;
    }
    switch (reg) {
      case REG_FEATURES:
        this.tf.features = v;
        break;
      case REG_COUNT:
        this.tf.count = v;
        break;
      case REG_LBA_LOW:
        this.tf.lbaLow = v;
        break;
      case REG_LBA_MID:
        this.tf.lbaMid = v;
        break;
      case REG_LBA_HIGH:
        this.tf.lbaHigh = v;
        break;
      case REG_DEVICE:
        this.tf.device = v;
        this.updateLine(); // selection gates INTRQ
        break;
    }
  }

  // ---- data port ----

  private dataRead(size: IoSize): number {
    const m = this.metrics;
    m.dataPortAccesses++;
    if (size === 1 || this.phase.kind !== 'pio-in' || this.selected() !== 0) {
      m.strayDataAccesses++;
      return floatingBus(size);
    }
    const lo = this.readWord();
    if (size === 2) return lo;
    // A dword straddling the end of the transfer: the missing half floats.
    const hi = this.phase.kind === 'pio-in' ? this.readWord() : 0xffff;
    return (lo | (hi << 16)) >>> 0;
  }

  private dataWrite(size: IoSize, value: number): void {
    const m = this.metrics;
    m.dataPortAccesses++;
    if (size === 1 || this.phase.kind !== 'pio-out' || this.selected() !== 0) {
      m.strayDataAccesses++;
      return;
    }
    this.writeWord(value & 0xffff);
    if (size === 4 && this.phase.kind === 'pio-out') this.writeWord((value >>> 16) & 0xffff);
  }

  private readWord(): number {
    const p = this.phase;
    if (p.kind !== 'pio-in') return 0xffff;
    const v = p.buf[p.pos] | (p.buf[p.pos + 1] << 8);
    p.pos += 2;
    if (p.pos === p.blockEnd) {
      if (p.counted) this.metrics.sectorsRead++;
      if (p.pos >= p.buf.length) {
        this.phase = { kind: 'idle' }; // last word of the last block: DRQ drops, no interrupt
      } else {
        p.blockEnd += ATA_SECTOR_SIZE;
        this.assertInterrupt(); // next block ready
      }
    }
    return v;
  }

  private writeWord(v: number): void {
    const p = this.phase;
    if (p.kind !== 'pio-out') return;
    p.buf[p.pos] = v & 0xff;
    p.buf[p.pos + 1] = v >>> 8;
    p.pos += 2;
    if (p.pos !== p.blockEnd) return;
    if (p.pos < p.buf.length) {
      p.blockEnd += ATA_SECTOR_SIZE;
      this.assertInterrupt(); // ready for the next block
      return;
    }
    const { lba, buf } = p;
    const count = buf.length / ATA_SECTOR_SIZE;
    this.phase = { kind: 'busy', what: 'write' };
    this.runBacking(
      'write',
      () => this.backing.write(lba, buf),
      (r) => {
        if (r === 0) {
          this.metrics.sectorsWritten += count;
          this.complete();
        } else this.fail(ERROR_ABRT, true);
      },
    );
  }

  // ---- commands ----

  private command(opcode: number): void {
    const m = this.metrics;
    if (this.selected() !== 0) {
      m.absentDeviceCommands++;
      return;
    }
    if (this.busyOrDrq()) {
      m.busyRejected++;
      return;
    }
    this.err = false;
    this.error = 0;
    this.clearInterrupt(); // writing COMMAND negates INTRQ
    const d = decodeCommand(opcode, { ...this.tf }, this.capacity);
    if (!d.ok) {
      if (d.kind === 'unknown') m.commands.unknown++;
      else m.commands[d.kind]++;
      this.fail(d.error, false);
      return;
    }
    const c = d.command;
    m.commands[c.kind]++;
    switch (c.kind) {
      case 'identify':
        this.phase = { kind: 'pio-in', counted: false, buf: this.identifyBlock.slice(), pos: 0, blockEnd: ATA_SECTOR_SIZE };
        this.assertInterrupt();
        return;
      case 'read': {
        const { lba, count } = c;
        this.phase = { kind: 'busy', what: 'read' };
        this.runBacking(
          'read',
          () => this.backing.read(lba, count),
          (r) => {
            if (r instanceof Uint8Array && r.length === count * ATA_SECTOR_SIZE) {
              this.phase = { kind: 'pio-in', counted: true, buf: r, pos: 0, blockEnd: ATA_SECTOR_SIZE };
              this.assertInterrupt();
            } else this.fail(ERROR_UNC, true);
          },
        );
        return;
      }
      case 'write':
        // DRQ for the first block at once, without an interrupt (PIO data-out protocol).
        this.phase = { kind: 'pio-out', lba: c.lba, buf: new Uint8Array(c.count * ATA_SECTOR_SIZE), pos: 0, blockEnd: ATA_SECTOR_SIZE };
        return;
      case 'flush':
        this.phase = { kind: 'busy', what: 'flush' };
        this.runBacking(
          'flush',
          () => this.backing.flush(),
          (r) => (r === 0 ? this.complete() : this.fail(ERROR_ABRT, true)),
        );
        return;
    }
  }

  private complete(): void {
    this.phase = { kind: 'idle' };
    this.assertInterrupt();
  }

  /** End the command with ERR and `bits` in ERROR, and interrupt. */
  private fail(bits: number, backing: boolean): void {
    const m = this.metrics;
    if (backing) m.backingErrors++;
    if (bits & ERROR_ABRT) m.errors.abrt++;
    if (bits & ERROR_IDNF) m.errors.idnf++;
    if (bits & ERROR_UNC) m.errors.unc++;
    this.phase = { kind: 'idle' };
    this.err = true;
    this.error = bits;
    this.assertInterrupt();
  }

  /**
   * Start one backing operation; `finish` runs with its result (undefined if it rejected or threw)
   * unless a reset intervened, in which case the result is dropped.
   */
  private runBacking<T>(kind: BackingKind, run: () => Promise<T>, finish: (result: T | undefined) => void): void {
    this.metrics.backingOps[kind]++;
    const epoch = this.epoch;
    let p: Promise<T>;
    try {
      p = Promise.resolve(run());
    } catch (e) {
      p = Promise.reject(e instanceof Error ? e : new InternalError(String(e), { cause: e }));
    }
    this.inflight = p
      .then(
        (v) => v,
        () => undefined,
      )
      .then((r) => {
        this.inflight = undefined;
        if (epoch !== this.epoch) {
          this.metrics.staleCompletions++;
          if (this.phase.kind === 'resetting') this.completeReset();
          return;
        }
        finish(r);
      });
  }

  // ---- reset ----

  private beginReset(): void {
    this.srst = true;
    const k = this.phase.kind;
    if (k === 'pio-in' || k === 'pio-out' || k === 'busy') this.metrics.abortedByReset++;
    this.epoch++;
    this.phase = { kind: 'srst' };
    this.err = false;
    this.pending = false;
  }

  private endReset(): void {
    this.srst = false;
    this.metrics.resets++;
    if (this.inflight) this.phase = { kind: 'resetting' };
    else this.completeReset();
  }

  private completeReset(): void {
    this.phase = { kind: 'idle' };
    this.err = false;
    this.error = ERROR_DIAG_PASSED;
    Object.assign(this.tf, SIGNATURE);
    this.pending = false;
    this.updateLine();
  }
}

function normSize(size: number): IoSize {
  return size === 2 || size === 4 ? size : 1;
}
