/**
 * A VT-d-style IOMMU: DMA remapping and interrupt remapping for assignable device functions
 * (direct I/O). Every DMA of a virtual function (sriov/) is translated here at the moment it happens.
 *
 * (A context may also be in pass-through mode, the bare-metal baseline: see ContextEntry.)
 *
 * DMA remapping. A device function is named by its requester id (PCI bus:dev.fn, 16 bits). Its
 * **context entry** says whether it may do DMA at all (present), for which domain, and through
 * which **I/O page table**. The table maps I/O virtual page numbers (the addresses the device was
 * programmed with — the owner's guest-physical addresses) to machine frames with read and write
 * permission. Every DMA is translated page by page before any byte moves; one page that is not
 * present or lacks the permission blocks the whole transfer, which then touches no memory and
 * leaves a **fault record** (address, requester id, read/write, reason) in a bounded log, as
 * VT-d's fault recording registers do.
 *
 * Interrupt remapping. A device raises an interrupt by index into the **interrupt remapping
 * table**; each entry names the source id allowed to use it and where the interrupt goes (a
 * domain and its event port). A device using another function's entry — or an absent one — is
 * blocked and faulted: a device cannot forge another's interrupt.
 *
 * Only dom0's toolstack programs contexts, tables and remapping entries (hwsim's RPC surface
 * binds these calls to dom0's link); devices only translate.
 */
import { DOMID_HW, InvalidArgumentError, PAGE_SHIFT, PAGE_SIZE, publishTrace, traceChannel, traceNow, type MachineFrame } from '@ringvisor/shared';

const faultChannel = traceChannel('iommu.fault');

/** A PCI requester id: bus (8 bits), device (5), function (3). */
export function requesterId(bus: number, dev: number, fn: number): number {
  if (!Number.isInteger(bus) || bus < 0 || bus > 255 || !Number.isInteger(dev) || dev < 0 || dev > 31 || !Number.isInteger(fn) || fn < 0 || fn > 7)
    throw new InvalidArgumentError(`requester id ${bus}:${dev}.${fn} out of range (bus 0..255, dev 0..31, fn 0..7)`);
  return (bus << 8) | (dev << 3) | fn;
}

/** "bb:dd.f", as lspci prints it. */
export function formatRequesterId(rid: number): string {
  const h = (n: number, w: number) => n.toString(16).padStart(w, '0');
  return `${h((rid >> 8) & 0xff, 2)}:${h((rid >> 3) & 0x1f, 2)}.${rid & 7}`;
}

export interface IoPte {
  frame: MachineFrame;
  read: boolean;
  write: boolean;
}

/** One I/O page table (per assigned domain, shared by the functions assigned to it). */
export class IoPageTable {
  private readonly ptes = new Map<number, IoPte>();
  constructor(
    readonly domid: number,
    /** I/O virtual pages this table can map: [0, limit). */
    readonly limit: number,
  ) {}

  map(iovaPfn: number, pte: IoPte): void {
    if (!Number.isInteger(iovaPfn) || iovaPfn < 0 || iovaPfn >= this.limit) throw new InvalidArgumentError(`I/O page ${iovaPfn} outside 0..${this.limit - 1}`);
    this.ptes.set(iovaPfn, { frame: { ...pte.frame }, read: pte.read, write: pte.write });
  }

  unmap(iovaPfn: number): boolean {
    return this.ptes.delete(iovaPfn);
  }

  lookup(iovaPfn: number): IoPte | undefined {
    return this.ptes.get(iovaPfn);
  }

  get size(): number {
    return this.ptes.size;
  }

  clear(): void {
    this.ptes.clear();
  }
}

export interface ContextEntry {
  domid: number;
  table: IoPageTable;
  /**
   * VT-d's pass-through translation type (Linux iommu=pt): the function's addresses are the
   * owner's frames as they are, no page-table walk and no permission check — what a bare-metal
   * host runs with, the baseline direct I/O is measured against. Still bounded to the owner's
   * `table.limit` frames (this machine names memory per domain).
   */
  passthrough?: boolean;
}

export type IommuFaultReason =
  | 'context-not-present'
  | 'pte-not-present'
  | 'read-not-permitted'
  | 'write-not-permitted'
  | 'address-out-of-range'
  | 'irte-not-present'
  | 'irte-source-mismatch';

export interface IommuFault {
  /** Numbered from 1 in the order they happened. */
  seq: number;
  t: number;
  rid: number;
  /** The faulting I/O virtual address (first byte of the page that failed), or the IRTE index. */
  address: number;
  write: boolean;
  reason: IommuFaultReason;
  /** The domain the function was assigned to, if any. */
  domid?: number;
}

/** A translated transfer: the machine frames to touch, in order, each a window of one page. */
export interface DmaSegment {
  frame: MachineFrame;
  offset: number;
  len: number;
}

export type Translation = { ok: true; segments: DmaSegment[] } | { ok: false; fault: IommuFault };

export interface InterruptRemapEntry {
  /** The only requester id that may raise this interrupt. */
  sourceRid: number;
  domid: number;
  port: number;
}

export interface IommuCounters {
  translations: number;
  pagesTranslated: number;
  faults: number;
  /** Faults not kept because the log was full (the count still grows). */
  faultsOverflowed: number;
  interrupts: number;
  /** IOTLB invalidations requested by the toolstack (this model keeps no IOTLB; counted). */
  invalidations: number;
  /** Pages passed through untranslated (contexts in pass-through mode). */
  passthrough: number;
}

/** Fault records kept (VT-d keeps a small number of fault recording registers; we keep more). */
export const IOMMU_FAULT_LOG = 1024;
/** Most bytes one translation may cover (a bound on guest-programmed lengths). */
export const IOMMU_MAX_TRANSFER = 1 << 20;

export class Iommu {
  readonly counters: IommuCounters = { translations: 0, pagesTranslated: 0, faults: 0, faultsOverflowed: 0, interrupts: 0, invalidations: 0, passthrough: 0 };
  private readonly contexts = new Map<number, ContextEntry>();
  private readonly irt = new Map<number, InterruptRemapEntry>();
  private readonly log: IommuFault[] = [];
  private seq = 0;
  /** Host name in trace events. */
  traceHost = '';

  // ---- programming (dom0's toolstack only) ----

  setContext(rid: number, entry: ContextEntry): void {
    checkRid(rid);
    this.contexts.set(rid, entry);
  }

  /** Tear down a function's context: from now on every DMA it attempts is blocked and faulted. */
  clearContext(rid: number): void {
    this.contexts.delete(rid);
    this.counters.invalidations++;
  }

  context(rid: number): ContextEntry | undefined {
    return this.contexts.get(rid);
  }

  setInterruptEntry(index: number, entry: InterruptRemapEntry): void {
    if (!Number.isInteger(index) || index < 0 || index > 0xffff) throw new InvalidArgumentError(`IRTE index ${index} outside 0..65535`);
    checkRid(entry.sourceRid);
    this.irt.set(index, { ...entry });
  }

  clearInterruptEntry(index: number): void {
    this.irt.delete(index);
  }

  /** After changing a table's mappings, the toolstack flushes the IOTLB (counted; nothing cached here). */
  invalidate(): void {
    this.counters.invalidations++;
  }

  // ---- what devices do ----

  /**
   * Translate a DMA of `len` bytes at I/O virtual address `iova` by function `rid`. All pages or
   * none: a blocked transfer touches no memory and leaves a fault record.
   */
  translate(rid: number, iova: number, len: number, write: boolean): Translation {
    this.counters.translations++;
    const ctx = this.contexts.get(rid);
    if (!ctx) return { ok: false, fault: this.fault(rid, iova, write, 'context-not-present') };
    if (!Number.isInteger(iova) || !Number.isInteger(len) || iova < 0 || len < 1 || len > IOMMU_MAX_TRANSFER || iova + len > ctx.table.limit * PAGE_SIZE)
      return { ok: false, fault: this.fault(rid, Number.isFinite(iova) ? iova : 0, write, 'address-out-of-range', ctx.domid) };
    const segments: DmaSegment[] = [];
    for (let at = iova; at < iova + len; ) {
      const page = Math.floor(at / PAGE_SIZE);
      const offset = at - page * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - offset, iova + len - at);
      if (ctx.passthrough) {
        segments.push({ frame: { domid: ctx.domid, pfn: page }, offset, len: n });
        at += n;
        continue;
      }
      const pte = ctx.table.lookup(page);
      if (!pte) return { ok: false, fault: this.fault(rid, page << PAGE_SHIFT, write, 'pte-not-present', ctx.domid) };
      if (write ? !pte.write : !pte.read) return { ok: false, fault: this.fault(rid, page << PAGE_SHIFT, write, write ? 'write-not-permitted' : 'read-not-permitted', ctx.domid) };
      segments.push({ frame: { ...pte.frame }, offset, len: n });
      at += n;
    }
    if (!ctx.passthrough) this.counters.pagesTranslated += segments.length;
    else this.counters.passthrough += segments.length;
    return { ok: true, segments };
  }

  /** Remap interrupt `index` raised by `rid`: where it goes, or a fault if `rid` may not use it. */
  remapInterrupt(rid: number, index: number): { ok: true; domid: number; port: number } | { ok: false; fault: IommuFault } {
    const e = this.irt.get(index);
    if (!e) return { ok: false, fault: this.fault(rid, index, true, 'irte-not-present') };
    if (e.sourceRid !== rid) return { ok: false, fault: this.fault(rid, index, true, 'irte-source-mismatch', this.contexts.get(rid)?.domid) };
    this.counters.interrupts++;
    return { ok: true, domid: e.domid, port: e.port };
  }

  // ---- the fault log (management API) ----

  /** Fault records kept so far, oldest first (at most IOMMU_FAULT_LOG). */
  faults(): IommuFault[] {
    return this.log.map((f) => ({ ...f }));
  }

  /** Take the fault records (the log is emptied), as software clears VT-d's fault registers. */
  drainFaults(): IommuFault[] {
    return this.log.splice(0);
  }

  private fault(rid: number, address: number, write: boolean, reason: IommuFaultReason, domid?: number): IommuFault {
    const f: IommuFault = { seq: ++this.seq, t: Date.now(), rid, address, write, reason, ...(domid !== undefined ? { domid } : {}) };
    this.counters.faults++;
    if (this.log.length < IOMMU_FAULT_LOG) this.log.push(f);
    else this.counters.faultsOverflowed++;
    if (faultChannel.hasSubscribers)
      publishTrace({ kind: 'iommu.fault', t: traceNow(), host: this.traceHost, domid: domid ?? DOMID_HW, device: formatRequesterId(rid), address, reason });
    return f;
  }
}

function checkRid(rid: number): void {
  if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) throw new InvalidArgumentError(`requester id ${rid} outside 0..0xffff`);
}
