/**
 * Every 64-bit field of every codec round-trips all 2^64 values exactly (decoded as bigint):
 * blkif request id and sector_number and response id, hwblk sector, SV-IO block sector and camera
 * timestamp, the camera frame header's timestamp, and the 64-bit register pairs (a function's or
 * a VIF's disk size). A JS number would round anything above 2^53 — two blkif requests could get
 * the same id back — so the arbitraries cover the whole range, edges included.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blkifRequestCodec, blkifResponseCodec, type BlkifRequest } from './ring/blkif.js';
import { hwBlkProtocol, type HwBlkRequest } from './hw/index.js';
import { VfRegisters } from './hw/vf.js';
import { SvioRegisters, SVIO_REG } from './svio/access.js';
import { VIF_CAM_FRAME, VIF_FLUSH, VIF_READ, VIF_WRITE, vifCodec, vifMessage } from './svio/messages.js';
import { cameraFrameSize, renderCameraFrame, verifyCameraFrame } from './camera/frame.js';
import { decimalU64s } from './util/u64.js';

const U64_MAX = 2n ** 64n - 1n;
/** The whole u64 range, with the edges (0, 2^32, 2^53 ± 1, 2^63, 2^64 − 1) weighted in. */
const u64 = fc.oneof(
  { weight: 4, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
  { weight: 1, arbitrary: fc.constantFrom(0n, 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, U64_MAX - 1n, U64_MAX) },
);
const RUNS = { numRuns: 2000 };

describe('u64 fields are exact over all 2^64 values', () => {
  it('blkif request: id and sector_number', () => {
    const v = new DataView(new ArrayBuffer(112));
    fc.assert(
      fc.property(u64, u64, (id, sectorNumber) => {
        const r: BlkifRequest = { operation: 1, nrSegments: 1, handle: 7, id, sectorNumber, segments: [{ gref: 9, firstSect: 0, lastSect: 7 }] };
        blkifRequestCodec.encode(v, 0, r);
        const d = blkifRequestCodec.decode(v, 0);
        expect(d.id).toBe(id);
        expect(d.sectorNumber).toBe(sectorNumber);
        expect(v.getBigUint64(8, true)).toBe(id); // at the documented offsets, little-endian
        expect(v.getBigUint64(16, true)).toBe(sectorNumber);
      }),
      RUNS,
    );
  });

  it('blkif response: id', () => {
    const v = new DataView(new ArrayBuffer(16));
    fc.assert(
      fc.property(u64, (id) => {
        blkifResponseCodec.encode(v, 0, { id, operation: 0, status: 0 });
        expect(blkifResponseCodec.decode(v, 0).id).toBe(id);
        expect(v.getBigUint64(0, true)).toBe(id);
      }),
      RUNS,
    );
  });

  it('two requests whose ids differ only below 2^11 of a 2^63-sized pointer come back distinct', () => {
    // A pointer-sized id: 2^63 + k rounds to 2^63 for every k < 1024 as a JS number.
    const v = new DataView(new ArrayBuffer(16));
    const ids = [2n ** 63n + 8n, 2n ** 63n + 16n];
    const back = ids.map((id) => {
      blkifResponseCodec.encode(v, 0, { id, operation: 0, status: 0 });
      return blkifResponseCodec.decode(v, 0).id;
    });
    expect(back).toEqual(ids);
    expect(new Set(back).size).toBe(2);
  });

  it('hwblk request: sector', () => {
    const v = new DataView(new ArrayBuffer(hwBlkProtocol.request.size));
    fc.assert(
      fc.property(u64, (sector) => {
        const r: HwBlkRequest = { op: 1, id: 3, sector, segments: [{ domid: 1, pfn: 2, firstSect: 0, lastSect: 7 }] };
        hwBlkProtocol.request.encode(v, 0, r);
        expect(hwBlkProtocol.request.decode(v, 0).sector).toBe(sector);
        expect(v.getBigUint64(8, true)).toBe(sector);
      }),
      RUNS,
    );
  });

  it('SV-IO messages: block sector and camera timestamp', () => {
    const v = new DataView(new ArrayBuffer(64));
    fc.assert(
      fc.property(fc.constantFrom(VIF_READ, VIF_WRITE, VIF_FLUSH), u64, u64, (type, sector, timestampUs) => {
        vifCodec.encode(v, 0, vifMessage({ type, id: 1, sector, segments: [] }));
        expect(vifCodec.decode(v, 0).sector).toBe(sector);
        vifCodec.encode(v, 0, vifMessage({ type: VIF_CAM_FRAME, id: 2, seq: 5, used: 64, timestampUs }));
        expect(vifCodec.decode(v, 0).timestampUs).toBe(timestampUs);
      }),
      RUNS,
    );
  });

  it('camera frame header: timestamp', () => {
    const fmt = { width: 4, height: 2 };
    const buf = new Uint8Array(cameraFrameSize(fmt));
    fc.assert(
      fc.property(u64, (ts) => {
        renderCameraFrame(buf, fmt, 1, ts);
        const check = verifyCameraFrame(buf, buf.byteLength, fmt);
        expect(check.ok && check.timestampUs).toBe(ts);
      }),
      { numRuns: 500 },
    );
  });

  it('64-bit register pairs: a disk function\'s and a block VIF\'s size', () => {
    const page = new Uint8Array(new SharedArrayBuffer(4096));
    const vf = new VfRegisters(page);
    const vif = new SvioRegisters(page);
    fc.assert(
      fc.property(u64, (n) => {
        vf.sectors = n;
        expect(vf.sectors).toBe(n);
        vif.write64(SVIO_REG.SECTORS_LO, SVIO_REG.SECTORS_HI, n);
        expect(vif.sectors).toBe(n);
      }),
      RUNS,
    );
  });

  it('leave the process as exact decimal strings (JSON has no bigint)', () => {
    fc.assert(
      fc.property(u64, u64, (id, sectorNumber) => {
        const entry = { index: 3, operation: 0, id, sectorNumber, segments: [{ gref: 1, firstSect: 0, lastSect: 7 }] };
        const plain = JSON.parse(JSON.stringify(decimalU64s(entry))) as Record<string, unknown>;
        expect(BigInt(plain.id as string)).toBe(id);
        expect(BigInt(plain.sectorNumber as string)).toBe(sectorNumber);
        expect(plain.segments).toEqual(entry.segments);
      }),
      RUNS,
    );
    const noBigints = { a: 1, b: [1, 2], c: { d: 'x' } };
    expect(decimalU64s(noBigints)).toBe(noBigints); // nothing to convert: no copy
  });
});
