import { beforeEach, describe, expect, it } from 'vitest';
import { GrantError, InvalidArgumentError } from '../errors.js';
import { GuestMemory, PAGE_SIZE } from '../memory/index.js';
import {
  GNTST_bad_copy_arg,
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_bad_handle,
  GNTST_bad_page,
  GNTST_no_space,
  GNTST_okay,
  GNTST_permission_denied,
  GNTTAB_NR_RESERVED_ENTRIES,
  GTF_PERMIT_ACCESS,
  GTF_READING,
  GTF_READONLY,
  GTF_WRITING,
  GrantAuthority,
  GrantTable,
  createGrantTableMemory,
} from './index.js';

const DOM0 = 0;
const GUEST = 3;
const OTHER = 4;

function setup() {
  const mem = { dom0: GuestMemory.allocate(DOM0, 16), guest: GuestMemory.allocate(GUEST, 16), other: GuestMemory.allocate(OTHER, 4) };
  const tables = { dom0: createGrantTableMemory(), guest: createGrantTableMemory(), other: createGrantTableMemory() };
  const auth = new GrantAuthority();
  auth.registerDomain(DOM0, mem.dom0, tables.dom0);
  auth.registerDomain(GUEST, mem.guest, tables.guest);
  auth.registerDomain(OTHER, mem.other, tables.other);
  const gt = new GrantTable(tables.guest, GUEST);
  return { mem, tables, auth, gt };
}

/** The shared grant entry as the hypervisor and the granter see it. */
function entry(table: SharedArrayBuffer, ref: number) {
  const v = new DataView(table, ref * 8, 8);
  return { flags: v.getUint16(0, true), domid: v.getUint16(2, true), frame: v.getUint32(4, true) };
}

function expectGrantError(fn: () => unknown, status: number): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(GrantError);
  expect((err as GrantError).status).toBe(status);
}

describe('grant table (granter side)', () => {
  it('grantAccess publishes flags, domid and frame in the 8-byte entry layout', () => {
    const { tables, gt } = setup();
    const rw = gt.grantAccess(DOM0, 5, false);
    const ro = gt.grantAccess(0x1234, 0xabcdef, true);
    expect(rw).toBeGreaterThanOrEqual(GNTTAB_NR_RESERVED_ENTRIES);
    expect(ro).not.toBe(rw);
    expect(entry(tables.guest, rw)).toEqual({ flags: GTF_PERMIT_ACCESS, domid: DOM0, frame: 5 });
    expect(entry(tables.guest, ro)).toEqual({ flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: 0x1234, frame: 0xabcdef });
    expect(GTF_READONLY).toBe(4);
    expect(GTF_READING).toBe(8);
    expect(GTF_WRITING).toBe(16);
    expect(gt.granted).toBe(2);
  });

  it('never hands out the reserved refs, and reports a full table with GNTST_no_space', () => {
    const small = new GrantTable(createGrantTableMemory(GNTTAB_NR_RESERVED_ENTRIES + 2), GUEST);
    expect(small.available).toBe(2);
    const refs = [small.grantAccess(DOM0, 1, false), small.grantAccess(DOM0, 2, false)];
    expect(refs.every((r) => r >= GNTTAB_NR_RESERVED_ENTRIES)).toBe(true);
    expectGrantError(() => small.grantAccess(DOM0, 3, false), GNTST_no_space);
    expect(small.endAccess(refs[0])).toBe(true);
    expect(small.grantAccess(DOM0, 3, false)).toBe(refs[0]); // a freed ref is reused
  });

  it('endAccess clears the entry and rejects refs outside the table', () => {
    const { tables, gt } = setup();
    const ref = gt.grantAccess(DOM0, 5, false);
    expect(gt.endAccess(ref)).toBe(true);
    expect(entry(tables.guest, ref).flags).toBe(0);
    expect(gt.granted).toBe(0);
    expect(() => gt.endAccess(3)).toThrow(InvalidArgumentError);
    expect(() => gt.endAccess(gt.entries)).toThrow(InvalidArgumentError);
  });
});

describe('grant map / unmap (hypervisor side)', () => {
  let env: ReturnType<typeof setup>;
  beforeEach(() => {
    env = setup();
  });

  it('only the named domain may map a grant', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    expectGrantError(() => env.auth.map(OTHER, GUEST, ref, false), GNTST_permission_denied);
    expectGrantError(() => env.auth.map(OTHER, GUEST, ref, true), GNTST_permission_denied);
    expect(GNTST_permission_denied).toBe(-8);
    expect(env.auth.countersFor(OTHER)).toMatchObject({ maps: 0, failures: 2 });
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS); // a refused map leaves no trace
    const m = env.auth.map(DOM0, GUEST, ref, false);
    expect(m.granter).toBe(GUEST);
    expect(m.frame).toEqual({ domid: GUEST, pfn: 5 });
  });

  it('honours readonly: a writable map of a readonly grant is refused, a readonly map works', () => {
    const ref = env.gt.grantAccess(DOM0, 5, true);
    expectGrantError(() => env.auth.map(DOM0, GUEST, ref, true), GNTST_permission_denied);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS | GTF_READONLY);
    const m = env.auth.map(DOM0, GUEST, ref, false);
    expect(m.writable).toBe(false);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
  });

  it('sets READING (and WRITING for a writable map) while mapped; endAccess fails until unmap', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const m = env.auth.map(DOM0, GUEST, ref, true);
    expect(entry(env.tables.guest, ref)).toEqual({ flags: GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING, domid: DOM0, frame: 5 });
    expect(env.gt.inUse(ref)).toBe(true);
    expect(env.gt.endAccess(ref)).toBe(false);
    expect(entry(env.tables.guest, ref).flags & GTF_PERMIT_ACCESS).toBe(GTF_PERMIT_ACCESS); // still granted
    env.auth.unmap(DOM0, m.handle);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS);
    expect(env.gt.inUse(ref)).toBe(false);
    expect(env.gt.endAccess(ref)).toBe(true);
    expectGrantError(() => env.auth.map(DOM0, GUEST, ref, false), GNTST_bad_gntref); // revoked
  });

  it('keeps READING while any mapping remains and WRITING while a writable one remains', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const r = env.auth.map(DOM0, GUEST, ref, false);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS | GTF_READING);
    const w = env.auth.map(DOM0, GUEST, ref, true);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    env.auth.unmap(DOM0, w.handle);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS | GTF_READING);
    expect(env.gt.endAccess(ref)).toBe(false);
    env.auth.unmap(DOM0, r.handle);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS);
    expect(env.gt.endAccess(ref)).toBe(true);
  });

  it('a mapping is a zero-copy view of the granter page, in both directions', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const m = env.auth.map(DOM0, GUEST, ref, true);
    const guestPage = env.mem.guest.page(5);
    m.bytes[0] = 0x42;
    m.bytes[PAGE_SIZE - 1] = 0x99;
    expect(guestPage[0]).toBe(0x42);
    expect(guestPage[PAGE_SIZE - 1]).toBe(0x99);
    expect(env.mem.guest.bytes[5 * PAGE_SIZE]).toBe(0x42);
    expect(env.mem.guest.bytes[4 * PAGE_SIZE + PAGE_SIZE - 1]).toBe(0); // neighbouring frame untouched
    guestPage[100] = 7;
    expect(m.bytes[100]).toBe(7);
    expect(m.bytes.buffer).toBe(env.mem.guest.buffer);
    expect(m.bytes.byteLength).toBe(PAGE_SIZE);
  });

  it('reads the frame once at first pin: a granter rewriting it cannot redirect live mappings', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const m1 = env.auth.map(DOM0, GUEST, ref, false);
    new DataView(env.tables.guest).setUint32(ref * 8 + 4, 6, true); // hostile rewrite of the frame
    const m2 = env.auth.map(DOM0, GUEST, ref, false);
    expect(m2.frame.pfn).toBe(5);
    expect(m2.bytes.byteOffset).toBe(m1.bytes.byteOffset);
  });

  it('rejects bad refs with GNTST_bad_gntref and unknown granters with GNTST_bad_domain', () => {
    expectGrantError(() => env.auth.map(DOM0, GUEST, 99999, false), GNTST_bad_gntref);
    expectGrantError(() => env.auth.map(DOM0, GUEST, -1, false), GNTST_bad_gntref);
    expectGrantError(() => env.auth.map(DOM0, GUEST, 1.5, false), GNTST_bad_gntref);
    expectGrantError(() => env.auth.map(DOM0, GUEST, 100, false), GNTST_bad_gntref); // never granted
    expectGrantError(() => env.auth.map(DOM0, 9, 10, false), GNTST_bad_domain);
    expect(GNTST_bad_gntref).toBe(-3);
  });

  it('rejects a grant naming a frame outside the granter memory with GNTST_bad_page, leaving no flags', () => {
    const ref = env.gt.grantAccess(DOM0, 16, false); // guest has frames 0..15
    expectGrantError(() => env.auth.map(DOM0, GUEST, ref, true), GNTST_bad_page);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS);
    expect(env.gt.endAccess(ref)).toBe(true);
    expect(env.auth.mappingsHeldBy(DOM0)).toBe(0);
  });

  it('unmap checks the handle and its owner', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const m = env.auth.map(DOM0, GUEST, ref, false);
    expectGrantError(() => env.auth.unmap(OTHER, m.handle), GNTST_bad_handle);
    expectGrantError(() => env.auth.unmap(DOM0, 12345), GNTST_bad_handle);
    env.auth.unmap(DOM0, m.handle);
    expectGrantError(() => env.auth.unmap(DOM0, m.handle), GNTST_bad_handle); // no double unmap
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS);
  });

  it('bounds the mappings one domain may hold', () => {
    env.auth.maxMappingsPerDomain = 2;
    const refs = [5, 6, 7].map((pfn) => env.gt.grantAccess(DOM0, pfn, false));
    const a = env.auth.map(DOM0, GUEST, refs[0], false);
    env.auth.map(DOM0, GUEST, refs[1], false);
    expectGrantError(() => env.auth.map(DOM0, GUEST, refs[2], false), GNTST_no_space);
    expect(entry(env.tables.guest, refs[2]).flags).toBe(GTF_PERMIT_ACCESS);
    env.auth.unmap(DOM0, a.handle);
    expect(() => env.auth.map(DOM0, GUEST, refs[2], false)).not.toThrow();
    expect(env.auth.mappingsHeldBy(DOM0)).toBe(2);
  });

  it('unregistering a granter drops the mappings of its grants', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    env.auth.map(DOM0, GUEST, ref, false);
    env.auth.unregisterDomain(GUEST);
    expect(env.auth.mappingsHeldBy(DOM0)).toBe(0);
    expectGrantError(() => env.auth.map(DOM0, GUEST, ref, false), GNTST_bad_domain);
  });
});

describe('held references', () => {
  it('a reference revoked with hold is not handed out again until released', () => {
    const { gt } = setup();
    const ref = gt.grantAccess(DOM0, 1, false);
    expect(gt.endAccess(ref, { hold: true })).toBe(true);
    const others = Array.from({ length: 8 }, (_, i) => gt.grantAccess(DOM0, 2 + i, false));
    expect(others).not.toContain(ref);
    gt.releaseRef(ref);
    expect(gt.grantAccess(DOM0, 12, false)).toBe(ref);
  });
});

describe('a granter whose runtime is unreachable', () => {
  it('a map fails with a grant error and leaves the entry unpinned (dom0 survives a vanished guest)', () => {
    const { auth } = setup();
    const gone = 9;
    const m9 = GuestMemory.allocate(gone, 4);
    const t9 = createGrantTableMemory();
    auth.registerDomain(gone, m9, t9, {
      flagsChanged: () => {},
      pageWritten: () => {},
      ringSync: () => {
        throw new GrantError('domain 9 has no runtime attached', GNTST_bad_domain);
      },
    });
    const ref = new GrantTable(t9, gone).grantAccess(DOM0, 1, false);
    expectGrantError(() => auth.map(DOM0, gone, ref, true), GNTST_bad_domain);
    expect(entry(t9, ref).flags & (GTF_READING | GTF_WRITING)).toBe(0);
    expect(auth.mappingsHeldBy(DOM0)).toBe(0);
    expect(auth.countersFor(DOM0).failures).toBe(1);
  });
});

describe('grant copy', () => {
  let env: ReturnType<typeof setup>;
  beforeEach(() => {
    env = setup();
  });

  it('copies from a granted page into the caller own frame', () => {
    const src = env.mem.guest.page(5);
    for (let i = 0; i < PAGE_SIZE; i++) src[i] = i & 0xff;
    const ref = env.gt.grantAccess(DOM0, 5, true); // readonly is enough to copy *from*
    const st = env.auth.copy(DOM0, [{ source: { ref, domid: GUEST, offset: 100 }, dest: { pfn: 2, domid: DOM0, offset: 200 }, len: 50 }]);
    expect(st).toEqual([GNTST_okay]);
    const dst = env.mem.dom0.page(2);
    expect([...dst.subarray(200, 250)]).toEqual([...src.subarray(100, 150)]);
    expect(dst[199]).toBe(0);
    expect(dst[250]).toBe(0);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS | GTF_READONLY); // pins released
  });

  it('copies from the caller own frame into a writable granted page, not into a readonly one', () => {
    env.mem.dom0.page(3).fill(0x5a, 0, 512);
    const rw = env.gt.grantAccess(DOM0, 7, false);
    const ro = env.gt.grantAccess(DOM0, 8, true);
    const st = env.auth.copy(DOM0, [
      { source: { pfn: 3, domid: DOM0, offset: 0 }, dest: { ref: rw, domid: GUEST, offset: PAGE_SIZE - 512 }, len: 512 },
      { source: { pfn: 3, domid: DOM0, offset: 0 }, dest: { ref: ro, domid: GUEST, offset: 0 }, len: 512 },
    ]);
    expect(st).toEqual([GNTST_okay, GNTST_permission_denied]);
    expect(env.mem.guest.page(7).subarray(PAGE_SIZE - 512).every((b) => b === 0x5a)).toBe(true);
    expect(env.mem.guest.page(8).every((b) => b === 0)).toBe(true);
    expect(entry(env.tables.guest, rw).flags).toBe(GTF_PERMIT_ACCESS);
  });

  it('rejects a copy crossing the page end (GNTST_bad_copy_arg) and moves nothing', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    env.mem.dom0.page(2).fill(1);
    const ops = [
      { source: { pfn: 2, domid: DOM0, offset: 4000 }, dest: { ref, domid: GUEST, offset: 0 }, len: 97 },
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 4000 }, len: 97 },
      { source: { pfn: 2, domid: DOM0, offset: -1 }, dest: { ref, domid: GUEST, offset: 0 }, len: 1 },
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 0 }, len: -1 },
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 0 }, len: PAGE_SIZE + 1 },
    ];
    expect(env.auth.copy(DOM0, ops)).toEqual(ops.map(() => GNTST_bad_copy_arg));
    expect(env.mem.guest.page(5).every((b) => b === 0)).toBe(true);
    // Exactly to the end is fine.
    expect(env.auth.copy(DOM0, [{ source: { pfn: 2, domid: DOM0, offset: 4000 }, dest: { ref, domid: GUEST, offset: 0 }, len: 96 }])).toEqual([GNTST_okay]);
    expect(env.mem.guest.page(5)[95]).toBe(1);
    expect(env.mem.guest.page(5)[96]).toBe(0);
  });

  it('returns a status per op in a batch; failures do not stop later ops', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const foreign = env.gt.grantAccess(OTHER, 6, false);
    env.mem.dom0.page(2).fill(9, 0, 10);
    const st = env.auth.copy(DOM0, [
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 0 }, len: 10 }, // ok
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref: 999, domid: GUEST, offset: 0 }, len: 10 }, // never granted
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref: foreign, domid: GUEST, offset: 0 }, len: 10 }, // not ours
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { pfn: 2, domid: GUEST, offset: 0 }, len: 10 }, // someone else's frame
      { source: { pfn: 99, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 0 }, len: 10 }, // own frame missing
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref, domid: 42, offset: 0 }, len: 10 }, // no such granter
      { source: { pfn: 2, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 10 }, len: 10 }, // ok
    ]);
    expect(st).toEqual([GNTST_okay, GNTST_bad_gntref, GNTST_permission_denied, GNTST_permission_denied, GNTST_bad_page, GNTST_bad_domain, GNTST_okay]);
    expect([...env.mem.guest.page(5).subarray(0, 21)]).toEqual([...Array(20).fill(9), 0]);
    expect(env.mem.guest.page(6).every((b) => b === 0)).toBe(true);
    expect(env.mem.guest.page(2).every((b) => b === 0)).toBe(true);
    expect(entry(env.tables.guest, ref).flags).toBe(GTF_PERMIT_ACCESS);
  });

  it('counts maps, unmaps, copies and bytes copied per calling domain', () => {
    const ref = env.gt.grantAccess(DOM0, 5, false);
    const m1 = env.auth.map(DOM0, GUEST, ref, false);
    const m2 = env.auth.map(DOM0, GUEST, ref, true);
    env.auth.unmap(DOM0, m1.handle);
    env.auth.copy(DOM0, [
      { source: { ref, domid: GUEST, offset: 0 }, dest: { pfn: 1, domid: DOM0, offset: 0 }, len: 100 },
      { source: { pfn: 1, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 0 }, len: 4096 },
      { source: { pfn: 1, domid: DOM0, offset: 1 }, dest: { ref, domid: GUEST, offset: 0 }, len: 4096 }, // bad
      { source: { pfn: 1, domid: DOM0, offset: 0 }, dest: { ref, domid: GUEST, offset: 0 }, len: 0 },
    ]);
    expect(env.auth.countersFor(DOM0)).toEqual({ maps: 2, unmaps: 1, copies: 3, bytesCopied: 4196, failures: 1 });
    expect(env.auth.countersFor(GUEST)).toEqual({ maps: 0, unmaps: 0, copies: 0, bytesCopied: 0, failures: 0 });
    env.auth.unmap(DOM0, m2.handle);
    expect(env.auth.countersFor(DOM0).unmaps).toBe(2);
  });
});

describe('grant ref lifetime', () => {
  it('ending access twice (or on a ref never granted) does not hand the same ref out twice', () => {
    const { gt } = setup();
    const ref = gt.grantAccess(DOM0, 5, false);
    expect(gt.endAccess(ref)).toBe(true);
    gt.endAccess(ref); // a second revoke of the same ref: must not free it twice
    gt.endAccess(gt.entries - 1); // a ref that is not granted at all
    const handedOut = new Set<number>();
    const available = gt.available;
    for (let i = 0; i < available; i++) {
      const r = gt.grantAccess(DOM0, i % 16, false);
      expect(handedOut.has(r), `ref ${r} handed out twice`).toBe(false);
      handedOut.add(r);
    }
    expect(handedOut.size).toBe(gt.entries - GNTTAB_NR_RESERVED_ENTRIES);
    expect(gt.granted).toBe(handedOut.size);
  });
});
