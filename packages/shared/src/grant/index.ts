/**
 * Grant tables — Xen's v1 grant entries (public/grant_table.h).
 *
 * Each domain owns a table of 8-byte entries in shared memory:
 *
 *   0  u16 flags   type in bits 0-1 (INVALID 0, PERMIT_ACCESS 1, ACCEPT_TRANSFER 2),
 *                  READONLY 1<<2 (set by the granter), READING 1<<3 and WRITING 1<<4 (set by
 *                  the hypervisor while the grant is mapped)
 *   2  u16 domid   the only domain allowed to map or copy it
 *   4  u32 frame   the granter's pfn
 *
 * Who writes what. The granter fills domid and frame, then publishes flags — the order matters:
 * the hypervisor trusts domid/frame only once it sees PERMIT_ACCESS. The hypervisor sets and
 * clears READING/WRITING with compare-and-swap on the (flags, domid) word, so a granter ending
 * access races safely with a map: one of the two CASes fails. A granter may not end access
 * while READING or WRITING is set — the mapping domain could still be touching the page.
 *
 * The first 32 bits of an entry are one Int32 word (flags low, domid high, little-endian), so
 * every check-and-set is a single Atomics.compareExchange.
 */
import { traceChannel, traceNow } from '../trace/index.js';
import { GrantError, InvalidArgumentError } from '../errors.js';
import { GuestMemory, PAGE_SIZE, type MachineFrame } from '../memory/index.js';
import type { PageSync } from '../ring/ring.js';

export const GTF_INVALID = 0;
export const GTF_PERMIT_ACCESS = 1;
export const GTF_ACCEPT_TRANSFER = 2;
export const GTF_TYPE_MASK = 3;
export const GTF_READONLY = 1 << 2;
export const GTF_READING = 1 << 3;
export const GTF_WRITING = 1 << 4;

/** GNTST_* status codes. */
export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_bad_handle = -4;
export const GNTST_bad_page = -9;
export const GNTST_bad_copy_arg = -10;
export const GNTST_permission_denied = -8;
export const GNTST_no_space = -7;

export const GRANT_ENTRY_SIZE = 8;
export const NR_GRANT_ENTRIES = 2048;
/** Refs below this are reserved (Xen keeps the first 8 for the toolstack). */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;

export function createGrantTableMemory(entries = NR_GRANT_ENTRIES): SharedArrayBuffer {
  return new SharedArrayBuffer(entries * GRANT_ENTRY_SIZE);
}

const word0 = (flags: number, domid: number): number => (flags & 0xffff) | ((domid & 0xffff) << 16);

/**
 * Told of grants made and ended, when the grantee is across a link with no shared memory (ws):
 * the transport ships the entry and the page's contents so the grantee's mirror can honour it.
 */
export interface GrantTableHooks {
  granted(ref: number, remoteDom: number, pfn: number, readonly: boolean): void;
  ended(ref: number): void;
}

/** The granting domain's side (gnttab_grant_foreign_access / gnttab_end_foreign_access_ref). */
export class GrantTable {
  readonly words: Int32Array;
  readonly entries: number;
  private readonly free: number[] = [];
  granted = 0;
  hooks?: GrantTableHooks;

  constructor(
    buffer: SharedArrayBuffer,
    readonly domid: number,
  ) {
    this.words = new Int32Array(buffer);
    this.entries = buffer.byteLength / GRANT_ENTRY_SIZE;
    for (let r = this.entries - 1; r >= GNTTAB_NR_RESERVED_ENTRIES; r--) this.free.push(r);
  }

  get available(): number {
    return this.free.length;
  }

  /** Grant `remoteDom` access to our frame `pfn`. Returns the grant reference. */
  grantAccess(remoteDom: number, pfn: number, readonly: boolean): number {
    const ref = this.free.pop();
    if (ref === undefined) throw new GrantError(`domain ${this.domid}: grant table full`, GNTST_no_space);
    Atomics.store(this.words, ref * 2 + 1, pfn);
    Atomics.store(this.words, ref * 2, word0(GTF_PERMIT_ACCESS | (readonly ? GTF_READONLY : 0), remoteDom));
    this.granted++;
    this.hooks?.granted(ref, remoteDom, pfn, readonly);
    return ref;
  }

  /**
   * Revoke; fails (returns false) while the grantee has it mapped. Revoking a ref that is not
   * granted (already revoked, or never handed out) is a no-op returning true: the ref must not be
   * put on the free list a second time, or two later grants would share it.
   */
  endAccess(ref: number, opts: { hold?: boolean } = {}): boolean {
    this.checkRef(ref);
    for (;;) {
      const w = Atomics.load(this.words, ref * 2);
      if ((w & GTF_TYPE_MASK) === GTF_INVALID) return true;
      if (w & (GTF_READING | GTF_WRITING)) return false;
      if (Atomics.compareExchange(this.words, ref * 2, w, 0) === w) break;
    }
    // `hold`: revoked, but not handed out again until releaseRef — so a reference kept (by a
    // driver, or on purpose by a misbehaving one) cannot silently come to mean another page.
    if (!opts.hold) this.free.push(ref);
    else this.held.add(ref);
    this.granted--;
    this.hooks?.ended(ref);
    return true;
  }

  private readonly held = new Set<number>();

  /** Return a reference revoked with `hold` to the free list. */
  releaseRef(ref: number): void {
    if (this.held.delete(ref)) this.free.push(ref);
  }

  /** Mirror the grantee's in-use flags (READING/WRITING) reported across a link. */
  setInUse(ref: number, flags: number): void {
    this.checkRef(ref);
    const bits = flags & (GTF_READING | GTF_WRITING);
    for (;;) {
      const w = Atomics.load(this.words, ref * 2);
      if ((w & GTF_TYPE_MASK) === GTF_INVALID) return;
      const nw = (w & ~(GTF_READING | GTF_WRITING)) | bits;
      if (Atomics.compareExchange(this.words, ref * 2, w, nw) === w) return;
    }
  }

  inUse(ref: number): boolean {
    this.checkRef(ref);
    return (Atomics.load(this.words, ref * 2) & (GTF_READING | GTF_WRITING)) !== 0;
  }

  private checkRef(ref: number): void {
    if (!Number.isInteger(ref) || ref < GNTTAB_NR_RESERVED_ENTRIES || ref >= this.entries)
      throw new InvalidArgumentError(`grant ref ${ref} out of range`);
  }
}

/**
 * A granting domain across a link (ws): its memory and grant table here are mirrors. The
 * authority reports what the granter must learn: in-use flags, and bytes written into its pages
 * (a writable mapping's page on unmap, a copy's destination), and gives ring users a PageSync.
 */
export interface RemoteGranter {
  flagsChanged(ref: number, inUse: number): void;
  pageWritten(pfn: number, offset: number, length: number): void;
  ringSync(pfn: number, page: Uint8Array): PageSync & { lateWake?: () => void };
}

export interface GrantMapping {
  readonly handle: number;
  readonly granter: number;
  readonly ref: number;
  readonly frame: MachineFrame;
  readonly writable: boolean;
  /** Zero-copy view of the granter's page. */
  readonly bytes: Uint8Array;
  /** For a granter across a link: hand this to a ring built on the page. */
  readonly sync?: PageSync & { lateWake?: () => void };
}

/** One side of a grant copy: a grant ref of another domain, or a frame of the caller's own. */
export type GrantCopySide = { ref: number; domid: number; offset: number } | { pfn: number; domid: number; offset: number };

export interface GrantCopyOp {
  source: GrantCopySide;
  dest: GrantCopySide;
  len: number;
}

export interface GrantCounters {
  maps: number;
  unmaps: number;
  copies: number;
  bytesCopied: number;
  failures: number;
}

interface ActiveEntry {
  pfn: number;
  readPins: number;
  writePins: number;
}

interface DomainGrants {
  memory: GuestMemory;
  words: Int32Array;
  entries: number;
  active: Map<number, ActiveEntry>;
  remote?: RemoteGranter;
}

/**
 * The hypervisor's side: map, unmap, copy. Holds, per granter, the active entries (pin counts
 * and the frame read once at first pin), like Xen's active grant table.
 */
const grantMapChannel = traceChannel('grant.map');
const grantUnmapChannel = traceChannel('grant.unmap');
const grantCopyChannel = traceChannel('grant.copy');

export class GrantAuthority {
  private readonly domains = new Map<number, DomainGrants>();
  private readonly mappings = new Map<number, GrantMapping & { mapper: number }>();
  private nextHandle = 1;
  /** Per mapping domain. */
  readonly counters = new Map<number, GrantCounters>();
  /** Per mapping domain cap on simultaneous mappings (a per-guest bound on what dom0 holds). */
  maxMappingsPerDomain = 4096;
  /** Host name in trace events. */
  traceHost = '';

  registerDomain(domid: number, memory: GuestMemory, table: SharedArrayBuffer, remote?: RemoteGranter): void {
    this.domains.set(domid, { memory, words: new Int32Array(table), entries: table.byteLength / GRANT_ENTRY_SIZE, active: new Map(), remote });
  }

  /** A dying domain: drop every mapping of its grants (the backends were told first). */
  unregisterDomain(domid: number): void {
    for (const [h, m] of this.mappings)
      if (m.granter === domid || m.mapper === domid) {
        this.mappings.delete(h);
        this.held.set(m.mapper, this.mappingsHeldBy(m.mapper) - 1);
      }
    this.domains.delete(domid);
    this.held.delete(domid);
  }

  countersFor(domid: number): GrantCounters {
    let c = this.counters.get(domid);
    if (!c) {
      c = { maps: 0, unmaps: 0, copies: 0, bytesCopied: 0, failures: 0 };
      this.counters.set(domid, c);
    }
    return c;
  }

  private readonly held = new Map<number, number>();

  mappingsHeldBy(mapper: number): number {
    return this.held.get(mapper) ?? 0;
  }

  private fail(mapper: number, message: string, status: number): never {
    this.countersFor(mapper).failures++;
    if (grantMapChannel.hasSubscribers) grantMapChannel.publish({ kind: 'grant.map', t: traceNow(), host: this.traceHost, domid: mapper, granter: -1, ref: -1, status });
    throw new GrantError(message, status);
  }

  /** Pin an entry for `mapper`: validate the shared entry and set READING/WRITING with CAS. */
  private pin(mapper: number, granter: number, ref: number, writable: boolean): { d: DomainGrants; a: ActiveEntry } {
    const d = this.domains.get(granter);
    if (!d) this.fail(mapper, `no domain ${granter}`, GNTST_bad_domain);
    if (!Number.isInteger(ref) || ref < 0 || ref >= d.entries) this.fail(mapper, `grant ref ${ref} of domain ${granter} out of range`, GNTST_bad_gntref);
    for (;;) {
      const w = Atomics.load(d.words, ref * 2);
      const flags = w & 0xffff;
      const domid = (w >>> 16) & 0xffff;
      if ((flags & GTF_TYPE_MASK) !== GTF_PERMIT_ACCESS)
        this.fail(mapper, `grant ref ${ref} of domain ${granter} is not a permit-access grant`, GNTST_bad_gntref);
      if (domid !== mapper) this.fail(mapper, `grant ref ${ref} of domain ${granter} is not for domain ${mapper}`, GNTST_permission_denied);
      if (writable && flags & GTF_READONLY) this.fail(mapper, `grant ref ${ref} of domain ${granter} is read-only`, GNTST_permission_denied);
      const nw = w | GTF_READING | (writable ? GTF_WRITING : 0);
      if (Atomics.compareExchange(d.words, ref * 2, w, nw) === w) {
        if (nw !== w) d.remote?.flagsChanged(ref, nw & (GTF_READING | GTF_WRITING));
        break;
      }
    }
    let a = d.active.get(ref);
    if (!a) {
      // The frame is read once, at first pin; later changes by the granter are ignored until unpinned.
      a = { pfn: Atomics.load(d.words, ref * 2 + 1) >>> 0, readPins: 0, writePins: 0 };
      if (!d.memory.hasFrame(a.pfn)) {
        this.clearFlags(d, ref, a);
        this.fail(mapper, `grant ref ${ref} of domain ${granter} names frame ${a.pfn} it does not own`, GNTST_bad_page);
      }
      d.active.set(ref, a);
    }
    if (writable) a.writePins++;
    else a.readPins++;
    return { d, a };
  }

  private clearFlags(d: DomainGrants, ref: number, a: ActiveEntry): void {
    const clear = (a.readPins + a.writePins === 0 ? GTF_READING : 0) | (a.writePins === 0 ? GTF_WRITING : 0);
    if (!clear) return;
    for (;;) {
      const w = Atomics.load(d.words, ref * 2);
      if (Atomics.compareExchange(d.words, ref * 2, w, w & ~clear) === w) {
        d.remote?.flagsChanged(ref, w & ~clear & (GTF_READING | GTF_WRITING));
        break;
      }
    }
  }

  private unpin(d: DomainGrants, ref: number, writable: boolean): void {
    const a = d.active.get(ref);
    if (!a) return;
    if (writable) a.writePins--;
    else a.readPins--;
    this.clearFlags(d, ref, a);
    if (a.readPins + a.writePins === 0) d.active.delete(ref);
  }

  /** GNTTABOP_map_grant_ref: a zero-copy view of the granter's frame. */
  map(mapper: number, granter: number, ref: number, writable: boolean): GrantMapping {
    if (this.mappingsHeldBy(mapper) >= this.maxMappingsPerDomain)
      this.fail(mapper, `domain ${mapper} holds too many mappings`, GNTST_no_space);
    const { d, a } = this.pin(mapper, granter, ref, writable);
    let sync: ReturnType<RemoteGranter["ringSync"]> | undefined;
    try {
      sync = d.remote?.ringSync(a.pfn, d.memory.page(a.pfn));
    } catch (e) {
      // The granter's runtime is unreachable: undo the pin, report the failure like any other.
      this.unpin(d, ref, writable);
      if (e instanceof GrantError) this.fail(mapper, e.message, e.status);
      throw e;
    }
    const m = {
      handle: this.nextHandle++,
      granter,
      ref,
      mapper,
      writable,
      frame: { domid: granter, pfn: a.pfn },
      bytes: d.memory.page(a.pfn),
      ...(sync ? { sync } : {}),
    };
    this.mappings.set(m.handle, m);
    this.held.set(mapper, this.mappingsHeldBy(mapper) + 1);
    this.countersFor(mapper).maps++;
    if (grantMapChannel.hasSubscribers) grantMapChannel.publish({ kind: 'grant.map', t: traceNow(), host: this.traceHost, domid: mapper, granter, ref, writable, status: GNTST_okay });
    return m;
  }

  /** GNTTABOP_unmap_grant_ref. */
  unmap(mapper: number, handle: number): void {
    const m = this.mappings.get(handle);
    if (!m || m.mapper !== mapper) this.fail(mapper, `bad grant handle ${handle}`, GNTST_bad_handle);
    this.mappings.delete(handle);
    this.held.set(mapper, this.mappingsHeldBy(mapper) - 1);
    const d = this.domains.get(m.granter);
    // A writable lease is written back to a granter across a link before the flags clear.
    if (d && m.writable && d.remote) d.remote.pageWritten(m.frame.pfn, 0, PAGE_SIZE);
    if (d) this.unpin(d, m.ref, m.writable);
    this.countersFor(mapper).unmaps++;
    if (grantUnmapChannel.hasSubscribers)
      grantUnmapChannel.publish({ kind: 'grant.unmap', t: traceNow(), host: this.traceHost, domid: mapper, granter: m.granter, ref: m.ref, status: GNTST_okay });
  }

  /**
   * GNTTABOP_copy: each op's status is returned, failures do not abort the batch (as Xen).
   * Bytes really move between the two domains' memories.
   */
  copy(caller: number, ops: GrantCopyOp[]): number[] {
    return ops.map((op) => {
      let status: number = GNTST_okay;
      try {
        this.copyOne(caller, op);
      } catch (e) {
        if (!(e instanceof GrantError)) throw e;
        status = e.status;
      }
      if (grantCopyChannel.hasSubscribers) grantCopyChannel.publish({ kind: 'grant.copy', t: traceNow(), host: this.traceHost, domid: caller, bytes: op.len, status });
      return status;
    });
  }

  private resolveSide(caller: number, side: GrantCopySide, writable: boolean, len: number): { bytes: Uint8Array; release: () => void } {
    if ('ref' in side) {
      const { d, a } = this.pin(caller, side.domid, side.ref, writable);
      return {
        bytes: d.memory.page(a.pfn),
        release: () => {
          if (writable && d.remote) d.remote.pageWritten(a.pfn, side.offset, len);
          this.unpin(d, side.ref, writable);
        },
      };
    }
    if (side.domid !== caller) this.fail(caller, `a frame side of a copy must be the caller's own`, GNTST_permission_denied);
    const d = this.domains.get(caller);
    if (!d) this.fail(caller, `no domain ${caller}`, GNTST_bad_domain);
    if (!d.memory.hasFrame(side.pfn)) this.fail(caller, `frame ${side.pfn} outside domain ${caller}`, GNTST_bad_page);
    return { bytes: d.memory.page(side.pfn), release: () => {} };
  }

  private copyOne(caller: number, op: GrantCopyOp): void {
    const { source, dest, len } = op;
    const inPage = (off: number) => Number.isInteger(off) && off >= 0 && off + len <= PAGE_SIZE;
    if (!Number.isInteger(len) || len < 0 || !inPage(source.offset) || !inPage(dest.offset))
      this.fail(caller, `copy of ${len} bytes at ${source.offset}→${dest.offset} crosses a page`, GNTST_bad_copy_arg);
    const src = this.resolveSide(caller, source, false, len);
    try {
      const dst = this.resolveSide(caller, dest, true, len);
      try {
        dst.bytes.set(src.bytes.subarray(source.offset, source.offset + len), dest.offset);
      } finally {
        dst.release();
      }
    } finally {
      src.release();
    }
    const c = this.countersFor(caller);
    c.copies++;
    c.bytesCopied += len;
  }
}
