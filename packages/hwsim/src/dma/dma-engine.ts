/**
 * The DMA engine: the one door through which every simulated device touches memory.
 *
 * Devices name memory in machine frames ({domid, pfn}), as real hardware names it in machine
 * addresses. The engine resolves a frame to the owning domain's memory, which dom0 attaches
 * (`hw.attachMemory`) when it builds a domain and detaches when it destroys one. A frame that
 * cannot be resolved — domain not attached, pfn outside its memory, window outside the page —
 * is a DMA fault: it is counted, remembered (last fault), and thrown as DeviceError so the
 * device can fail just that request.
 *
 * Because every access goes through `page`/`read`/`write`/`writeView`, this is where the
 * VT-d-style IOMMU plugs in later: translation and permission checks happen here, before the
 * view is handed out.
 *
 * Views, not copies: `read` and `writeView` return Uint8Array windows on the guest's shared
 * memory, so a disk can pread/pwrite straight between the image file and guest pages (zero
 * copy, like a real DMA transfer). A device that must keep data beyond the current request
 * (a NIC handing a frame to the wire) copies it.
 */
import {
  traceChannel,
  traceNow, DeviceError, InvalidArgumentError, PAGE_SIZE, type GuestMemory, type MachineFrame, type PageSync } from '@ringvisor/shared';

export interface DmaCounters {
  /** Read transfers (device ← memory) and their bytes. */
  reads: number;
  bytesRead: number;
  /** Write transfers (device → memory) and their bytes. */
  writes: number;
  bytesWritten: number;
  /** Whole-page mappings handed out (queue pages). */
  maps: number;
  /** Accesses refused: unknown domain, pfn out of range, window outside the page. */
  faults: number;
}

export type DmaAccess = 'read' | 'write' | 'map';

export interface DmaFault {
  domid: number;
  pfn: number;
  offset: number;
  len: number;
  access: DmaAccess;
  reason: string;
}

/**
 * Set when machine memory is not shared with the driver's side (the simulator in its own
 * process): device writes are reported so they can be shipped back before their completion,
 * and device queue pages get a PageSync so the ring is mirrored.
 */
export interface DmaLink {
  wrote(domid: number, pfn: number, offset: number, length: number): void;
  ringSync(frame: MachineFrame, page: Uint8Array, lateWake: () => void): PageSync;
}

const dmaChannel = traceChannel('dma');

export class DmaEngine {
  readonly counters: DmaCounters = { reads: 0, bytesRead: 0, writes: 0, bytesWritten: 0, maps: 0, faults: 0 };
  lastFault: DmaFault | undefined;
  /** Host name in trace events. */
  traceHost = '';
  private readonly memories = new Map<number, GuestMemory>();
  /** Across a process boundary: the link that keeps machine memory current with dom0's side. */
  link?: DmaLink;
  /**
   * Domains whose memory is kept current by a direct link of their own (direct I/O over ws: the
   * guest's process, not dom0, ships what the device reads and receives what it writes).
   */
  readonly directLinks = new Map<number, DmaLink>();

  private linkOf(domid: number): DmaLink | undefined {
    return this.directLinks.get(domid) ?? this.link;
  }

  /**
   * A device queue's ring page: the page and, across a link, its PageSync. `lateWake` runs when
   * the driver armed its event index behind what the device already produced (ring/mirror.ts).
   */
  ringPage(frame: MachineFrame, lateWake: () => void): { page: Uint8Array; sync?: PageSync } {
    const page = this.page(frame);
    const link = this.linkOf(frame.domid);
    return link ? { page, sync: link.ringSync(frame, page, lateWake) } : { page };
  }

  /** The page of an attached domain's frame, without counting (link plumbing). */
  peek(domid: number, pfn: number): Uint8Array | undefined {
    const mem = this.memories.get(domid);
    return mem && mem.hasFrame(pfn) ? mem.page(pfn) : undefined;
  }

  /** Make a domain's memory reachable by device DMA. Replaces an earlier attachment of the same domid. */
  attachMemory(domid: number, memory: GuestMemory): void {
    if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) throw new InvalidArgumentError(`domid ${domid} out of range`);
    if (memory.domid !== domid) throw new InvalidArgumentError(`memory of domain ${memory.domid} attached as domain ${domid}`);
    this.memories.set(domid, memory);
  }

  /** Make a domain's memory unreachable; later DMA to it faults. Returns whether it was attached. */
  detachMemory(domid: number): boolean {
    return this.memories.delete(domid);
  }

  isAttached(domid: number): boolean {
    return this.memories.has(domid);
  }

  /** An attached domain's memory buffer (the SV-IO engine's cores reach a bound guest's memory). */
  memoryOf(domid: number): SharedArrayBuffer | undefined {
    return this.memories.get(domid)?.buffer;
  }

  /** Frames of an attached domain's memory (0 if not attached). */
  framesOf(domid: number): number {
    return this.memories.get(domid)?.frames ?? 0;
  }

  attachedDomains(): number[] {
    return [...this.memories.keys()].sort((a, b) => a - b);
  }

  /** Would a transfer to this frame succeed? (No side effects; used to validate requests up front.) */
  reachable(frame: MachineFrame): boolean {
    const mem = this.memories.get(frame.domid);
    return mem !== undefined && mem.hasFrame(frame.pfn);
  }

  /** A whole 4 KiB frame, for structures the device keeps using (queue rings). */
  page(frame: MachineFrame): Uint8Array {
    const view = this.resolve(frame, 0, PAGE_SIZE, 'map');
    this.counters.maps++;
    return view;
  }

  /** A view of `len` bytes at `offset` of the frame for the device to read (memory → device). */
  read(frame: MachineFrame, offset: number, len: number): Uint8Array {
    const view = this.resolve(frame, offset, len, 'read');
    this.counters.reads++;
    this.counters.bytesRead += len;
    if (dmaChannel.hasSubscribers) dmaChannel.publish({ kind: 'dma', t: traceNow(), host: this.traceHost, domid: frame.domid, pfn: frame.pfn, bytes: len, write: false });
    return view;
  }

  /** A view of `len` bytes at `offset` of the frame for the device to fill (device → memory). */
  writeView(frame: MachineFrame, offset: number, len: number): Uint8Array {
    const view = this.resolve(frame, offset, len, 'write');
    this.counters.writes++;
    this.counters.bytesWritten += len;
    if (dmaChannel.hasSubscribers) dmaChannel.publish({ kind: 'dma', t: traceNow(), host: this.traceHost, domid: frame.domid, pfn: frame.pfn, bytes: len, write: true });
    // Shipped at the link's next flush — after the device filled the view, before its completion.
    this.linkOf(frame.domid)?.wrote(frame.domid, frame.pfn, offset, len);
    return view;
  }

  /** Copy `data` into the frame at `offset` (device → memory). */
  write(frame: MachineFrame, offset: number, data: Uint8Array): void {
    this.writeView(frame, offset, data.byteLength).set(data);
  }

  stats(): DmaCounters & { attachedDomains: number[]; lastFault: DmaFault | null } {
    return { ...this.counters, attachedDomains: this.attachedDomains(), lastFault: this.lastFault ? { ...this.lastFault } : null };
  }

  private resolve(frame: MachineFrame, offset: number, len: number, access: DmaAccess): Uint8Array {
    const mem = this.memories.get(frame.domid);
    let reason: string | undefined;
    if (!mem) reason = `domain ${frame.domid} has no memory attached`;
    else if (!mem.hasFrame(frame.pfn)) reason = `pfn ${frame.pfn} outside domain ${frame.domid}'s ${mem.frames} frames`;
    else if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > PAGE_SIZE)
      reason = `window ${offset}+${len} outside a ${PAGE_SIZE}-byte page`;
    if (reason !== undefined || !mem) {
      this.counters.faults++;
      this.lastFault = { domid: frame.domid, pfn: frame.pfn, offset, len, access, reason: reason ?? 'unreachable' };
      throw new DeviceError(`DMA ${access} fault at ${frame.domid}:${frame.pfn}+${offset}: ${reason}`);
    }
    return new Uint8Array(mem.buffer, frame.pfn * PAGE_SIZE + offset, len);
  }
}
