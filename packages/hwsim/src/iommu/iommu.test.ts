/**
 * The IOMMU from VT-d's documented behaviour: translation through a function's context entry and
 * its domain's I/O page table with read/write permission, all-or-nothing transfers, fault records,
 * interrupt remapping that validates the source id, and teardown.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, subscribeTrace, type TraceEvent } from '@ringvisor/shared';
import { IOMMU_FAULT_LOG, Iommu, IoPageTable, formatRequesterId, requesterId } from './iommu.js';

const VF1 = requesterId(0, 2, 1);
const VF2 = requesterId(0, 2, 2);

function setup() {
  const iommu = new Iommu();
  const a = new IoPageTable(5, 256); // domain 5: 1 MiB of I/O space
  const b = new IoPageTable(6, 256);
  // Domain 5's guest-physical pages 0..3 → its own frames 100..103; page 3 read-only.
  for (let p = 0; p < 4; p++) a.map(p, { frame: { domid: 5, pfn: 100 + p }, read: true, write: p !== 3 });
  b.map(0, { frame: { domid: 6, pfn: 200 }, read: true, write: true });
  iommu.setContext(VF1, { domid: 5, table: a });
  iommu.setContext(VF2, { domid: 6, table: b });
  return { iommu, a, b };
}

describe('IOMMU DMA remapping', () => {
  it('names functions as lspci does', () => {
    expect(formatRequesterId(requesterId(0x3a, 0x1f, 7))).toBe('3a:1f.7');
    expect(() => requesterId(0, 32, 0)).toThrow(/out of range/);
  });

  it('translates a transfer page by page into the owner\'s machine frames', () => {
    const { iommu } = setup();
    const r = iommu.translate(VF1, PAGE_SIZE - 100, 300, true);
    expect(r).toEqual({
      ok: true,
      segments: [
        { frame: { domid: 5, pfn: 100 }, offset: PAGE_SIZE - 100, len: 100 },
        { frame: { domid: 5, pfn: 101 }, offset: 0, len: 200 },
      ],
    });
    expect(iommu.counters.pagesTranslated).toBe(2);
  });

  it('honours read and write permission: a write to a read-only page is blocked and faulted', () => {
    const { iommu } = setup();
    expect(iommu.translate(VF1, 3 * PAGE_SIZE, 16, false).ok).toBe(true);
    const w = iommu.translate(VF1, 3 * PAGE_SIZE + 8, 16, true);
    expect(w.ok).toBe(false);
    expect(iommu.faults()).toEqual([expect.objectContaining({ rid: VF1, address: 3 * PAGE_SIZE, write: true, reason: 'write-not-permitted', domid: 5 })]);
  });

  it('all or nothing: a transfer running into an unmapped page is blocked whole', () => {
    const { iommu } = setup();
    const r = iommu.translate(VF1, 2 * PAGE_SIZE, 3 * PAGE_SIZE, false); // pages 2, 3, 4 — 4 unmapped
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.fault).toMatchObject({ reason: 'pte-not-present', address: 4 * PAGE_SIZE });
  });

  it('a function reaches only its own domain: another domain\'s addresses are not in its table', () => {
    const { iommu } = setup();
    // VF2 (domain 6) programmed with an address that is mapped for domain 5 only.
    const r = iommu.translate(VF2, 1 * PAGE_SIZE, 64, true);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.fault).toMatchObject({ rid: VF2, reason: 'pte-not-present', domid: 6 });
    // Nothing VF2 can translate names a frame of domain 5.
    const ok = iommu.translate(VF2, 0, PAGE_SIZE, true);
    expect(ok.ok && ok.segments.every((s) => s.frame.domid === 6)).toBe(true);
  });

  it('an unassigned function, or one whose context was torn down, is blocked; addresses past the table too', () => {
    const { iommu } = setup();
    const stranger = requesterId(0, 3, 0);
    expect(iommu.translate(stranger, 0, 4, false)).toMatchObject({ ok: false, fault: { reason: 'context-not-present' } });
    iommu.clearContext(VF1);
    expect(iommu.translate(VF1, 0, 4, true)).toMatchObject({ ok: false, fault: { reason: 'context-not-present' } });
    expect(iommu.translate(VF2, 256 * PAGE_SIZE - 2, 4, true)).toMatchObject({ ok: false, fault: { reason: 'address-out-of-range' } });
    expect(iommu.translate(VF2, 0, 0, true)).toMatchObject({ ok: false, fault: { reason: 'address-out-of-range' } });
  });

  it('keeps a bounded fault log, numbered in order, drained by the management API, and traces each fault', () => {
    const { iommu } = setup();
    const seen: TraceEvent[] = [];
    const off = subscribeTrace(['iommu.fault'], (e) => seen.push(e));
    try {
      for (let i = 0; i < IOMMU_FAULT_LOG + 10; i++) iommu.translate(VF2, 9 * PAGE_SIZE, 4, true);
    } finally {
      off();
    }
    expect(iommu.counters.faults).toBe(IOMMU_FAULT_LOG + 10);
    expect(iommu.counters.faultsOverflowed).toBe(10);
    const log = iommu.drainFaults();
    expect(log).toHaveLength(IOMMU_FAULT_LOG);
    expect(log.map((f) => f.seq)).toEqual(Array.from({ length: IOMMU_FAULT_LOG }, (_, i) => i + 1));
    expect(iommu.faults()).toEqual([]);
    expect(seen).toHaveLength(IOMMU_FAULT_LOG + 10);
    expect(seen[0]).toMatchObject({ kind: 'iommu.fault', domid: 6, device: '00:02.2', address: 9 * PAGE_SIZE, reason: 'pte-not-present' });
  });

  it('property: a translation succeeds exactly when every page it covers is mapped with the permission, and names only mapped frames', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ page: fc.integer({ min: 0, max: 15 }), read: fc.boolean(), write: fc.boolean(), pfn: fc.integer({ min: 0, max: 1000 }) }), { maxLength: 20 }),
        fc.array(fc.record({ iova: fc.integer({ min: 0, max: 16 * PAGE_SIZE }), len: fc.integer({ min: 1, max: 3 * PAGE_SIZE }), write: fc.boolean() }), { maxLength: 20 }),
        (maps, dmas) => {
          const iommu = new Iommu();
          const t = new IoPageTable(7, 16);
          const model = new Map<number, { read: boolean; write: boolean; pfn: number }>();
          for (const m of maps) {
            t.map(m.page, { frame: { domid: 7, pfn: m.pfn }, read: m.read, write: m.write });
            model.set(m.page, m);
          }
          iommu.setContext(VF1, { domid: 7, table: t });
          for (const d of dmas) {
            const r = iommu.translate(VF1, d.iova, d.len, d.write);
            const inRange = d.iova + d.len <= 16 * PAGE_SIZE;
            const pages: number[] = [];
            for (let p = Math.floor(d.iova / PAGE_SIZE); p * PAGE_SIZE < d.iova + d.len; p++) pages.push(p);
            const allowed = inRange && pages.every((p) => model.has(p) && (d.write ? model.get(p)!.write : model.get(p)!.read));
            expect(r.ok).toBe(allowed);
            if (r.ok) {
              expect(r.segments.reduce((a, s) => a + s.len, 0)).toBe(d.len);
              r.segments.forEach((s, i) => expect(s.frame).toEqual({ domid: 7, pfn: model.get(pages[i])!.pfn }));
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('IOMMU interrupt remapping', () => {
  it('delivers an interrupt only for the function its entry names', () => {
    const { iommu } = setup();
    iommu.setInterruptEntry(4, { sourceRid: VF1, domid: 5, port: 9 });
    expect(iommu.remapInterrupt(VF1, 4)).toEqual({ ok: true, domid: 5, port: 9 });
    // VF2 tries to raise VF1's interrupt (a forged source): blocked and faulted.
    expect(iommu.remapInterrupt(VF2, 4)).toMatchObject({ ok: false, fault: { reason: 'irte-source-mismatch', rid: VF2 } });
    expect(iommu.remapInterrupt(VF1, 5)).toMatchObject({ ok: false, fault: { reason: 'irte-not-present' } });
    iommu.clearInterruptEntry(4);
    expect(iommu.remapInterrupt(VF1, 4)).toMatchObject({ ok: false, fault: { reason: 'irte-not-present' } });
    expect(iommu.counters.interrupts).toBe(1);
  });
});
