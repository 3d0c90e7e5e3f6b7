/**
 * Trapped port I/O: the contract between a guest's vCPU and a device model (full emulation).
 *
 * A guest driver for an emulated device executes `in`/`out` instructions. Each one is a *trap*:
 * the vCPU stops, the VMM forwards an I/O request (port, size, direction, data) to whoever owns
 * the device model, and the vCPU resumes only when the answer is back. Nothing here is a cost
 * model: the vCPU really blocks (threads: `Atomics.wait` on its I/O request slot) until the
 * device model's loop has handled the access.
 *
 * Device models see accesses relative to the base of the port range they registered, and do
 * DMA through a DmaWindow bounded to the guest's memory. Guest-physical addresses (gpa) are
 * `pfn * 4096 + offset` in the guest's own memory.
 */

/** Width of one port access in bytes (inb/outb, inw/outw, inl/outl). */
export type IoSize = 1 | 2 | 4;

export const IO_DIR_OUT = 0;
export const IO_DIR_IN = 1;

/** What reads of a port nothing decodes return on x86: all ones, of the access's width. */
export function floatingBus(size: IoSize): number {
  return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
}

/** Mask a value to the access width. */
export function ioMask(value: number, size: IoSize): number {
  return size === 4 ? value >>> 0 : size === 2 ? value & 0xffff : value & 0xff;
}

/**
 * A vCPU's port I/O instructions, as a guest driver sees them. Every call is one trap: it returns
 * only once the device model has answered.
 */
export interface PortIo {
  inb(port: number): number;
  inw(port: number): number;
  inl(port: number): number;
  outb(port: number, value: number): void;
  outw(port: number, value: number): void;
  outl(port: number, value: number): void;
  /**
   * Linux's dma_sync_single_for_device: the driver wrote `len` bytes at guest-physical `gpa` for
   * the device to read (a descriptor, a buffer, an init block). A no-op when the device model
   * shares the guest's memory; across a link the range travels with the next trap.
   */
  syncForDevice?(gpa: number, len: number): void;
}

/** The six instructions over one `access` primitive: what a vCPU or a VMM implements. */
export abstract class PortIoInstructions implements PortIo {
  protected abstract access(port: number, size: IoSize, dir: number, value: number): number;
  syncForDevice(_gpa: number, _len: number): void {}
  inb(port: number): number {
    return this.access(port, 1, IO_DIR_IN, 0);
  }
  inw(port: number): number {
    return this.access(port, 2, IO_DIR_IN, 0);
  }
  inl(port: number): number {
    return this.access(port, 4, IO_DIR_IN, 0);
  }
  outb(port: number, value: number): void {
    this.access(port, 1, IO_DIR_OUT, value);
  }
  outw(port: number, value: number): void {
    this.access(port, 2, IO_DIR_OUT, value);
  }
  outl(port: number, value: number): void {
    this.access(port, 4, IO_DIR_OUT, value);
  }
}

/**
 * A device model's port range: accesses arrive with `offset` relative to the range's base, the
 * width the guest used, and (for writes) the value masked to that width. Handlers must be total:
 * any offset and width a guest can produce gets an answer (unknown registers read as the
 * hardware documents, usually 0 or all ones), never an exception.
 */
export interface PortIoHandler {
  ioRead(offset: number, size: IoSize): number;
  ioWrite(offset: number, size: IoSize, value: number): void;
}

/**
 * Device DMA into and out of one guest's memory, bounded to it: an address range that leaves the
 * guest's memory is refused (the model reports a bus error — the Lance's MERR, ATA's ERR), never
 * clamped or wrapped.
 */
export interface DmaWindow {
  /** A private copy of `len` bytes at guest-physical `gpa`, or undefined if out of range. */
  read(gpa: number, len: number): Uint8Array | undefined;
  /** Write `data` at `gpa`; false (nothing written) if out of range. */
  write(gpa: number, data: Uint8Array): boolean;
  /** Bytes of guest memory this window reaches. */
  readonly size: number;
}

/** A DmaWindow over guest memory that this runtime can address directly (shared memory). */
export class GuestMemoryDma implements DmaWindow {
  /** Bytes moved by device DMA, both directions. */
  bytesRead = 0;
  bytesWritten = 0;
  /** Told of every range written (a copy of guest memory across a link ships them back). */
  onWrite?: (gpa: number, len: number) => void;
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.byteLength;
  }
  private inRange(gpa: number, len: number): boolean {
    return Number.isInteger(gpa) && Number.isInteger(len) && gpa >= 0 && len >= 0 && gpa + len <= this.bytes.byteLength;
  }
  read(gpa: number, len: number): Uint8Array | undefined {
    if (!this.inRange(gpa, len)) return undefined;
    this.bytesRead += len;
    return this.bytes.slice(gpa, gpa + len);
  }
  write(gpa: number, data: Uint8Array): boolean {
    if (!this.inRange(gpa, data.byteLength)) return false;
    this.bytes.set(data, gpa);
    this.bytesWritten += data.byteLength;
    this.onWrite?.(gpa, data.byteLength);
    return true;
  }
}
