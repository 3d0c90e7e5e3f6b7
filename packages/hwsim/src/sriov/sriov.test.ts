/**
 * Direct I/O through SR-IOV virtual functions and the IOMMU, on a real HardwareSimulator: the
 * toolstack's calls (assignFunction / reclaimFunction), doorbells and interrupts over real event
 * channels (dispatched synchronously, so each step is deterministic), a real disk image and a LAN
 * probe. Each guest is a test driver (test-support/vf-driver.ts) in a memory filled with a canary
 * pattern, so every byte a device changes can be accounted for.
 */
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  DOMID_HW,
  DeviceError,
  EventChannelAuthority,
  EventChannelGate,
  GuestMemory,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_EIO,
  HW_STATUS_OK,
  InvalidArgumentError,
  PAGE_SIZE,
  SECTOR_SIZE,
  VF_CTRL_ENABLE,
  VF_REG,
  VF_STATUS_BUS_MASTER,
  VF_STATUS_ENABLED,
  VF_STATUS_ERROR,
  createEventMemory,
  type HwStatusResponse,
} from '@ringvisor/shared';
import { HardwareSimulator } from '../runtime.js';
import type { LanPort } from '../lan/lan-port.js';
import { IoPageTable, formatRequesterId } from '../iommu/iommu.js';
import { ethFrame, quietLogger, tempDir } from '../test-support/harness.js';
import { VfDriver, fillCanary, strayPages, type Window } from '../test-support/vf-driver.js';
import type { UnsafeReclaim } from './pool.js';
import type { DiskVf } from './disk-vf.js';
import type { NicVf } from './nic-vf.js';
import type { VirtualFunction } from './function.js';

const PF_MAC = '52:54:00:00:00:01';
const PEER = '02:00:00:00:99:99';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const MAC_A = '02:00:00:00:0a:01';
const MAC_B = '02:00:00:00:0b:01';
const NIC1 = '00:03.1';
const DISK1 = '00:04.1';
const DISK_BYTES = 1 << 20; // 2048 sectors
const PART_A = { start: 256, sectors: 512 };
const PART_B = { start: 1024, sectors: 512 };

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
async function turns(n = 4): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

/** A frame to `dst` whose payload names `seq`. */
function frameTo(dst: string, seq: number, len = 120, src = PEER): Uint8Array {
  return ethFrame(dst, src, Uint8Array.from({ length: len }, (_, i) => (seq * 13 + i * 7) & 0xff));
}

function pattern(bytes: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: bytes }, (_, i) => (i * 31 + seed * 17 + (i >> 9)) & 0xff);
}

interface Domain {
  domid: number;
  mem: GuestMemory;
  gate: EventChannelGate;
  /** The canary the memory was filled with when the domain was built. */
  before: Uint8Array;
}

interface Vf<F extends VirtualFunction = VirtualFunction> {
  rid: string;
  fn: F;
  driver: VfDriver;
  guestPort: number;
  hwPort: number;
  /** Interrupts delivered to the guest's port so far. */
  irqs(): number;
}

interface AssignOpts {
  rid?: string;
  mac?: string;
  partition?: { start: number; sectors: number };
  firstFrame?: number;
  endFrame?: number;
  idBase?: number;
  /** The I/O address space the toolstack declares (default: the memory's size). */
  frames?: number;
}

/** One host: the simulator (not started: doorbells are dispatched synchronously), a LAN probe, guests. */
class Rig {
  readonly tmp = tempDir('hwsim-sriov-');
  readonly eventMemory = createEventMemory();
  readonly authority = new EventChannelAuthority(this.eventMemory);
  readonly sim: HardwareSimulator;
  readonly probe: LanPort;
  readonly heard: Uint8Array[] = [];

  constructor(diskPath?: string) {
    this.authority.createDomain(0);
    this.authority.createDomain(DOMID_HW);
    const path = diskPath ?? join(this.tmp.dir, 'disk.img');
    this.sim = new HardwareSimulator({ eventMemory: this.eventMemory, host: 'h1', disk: { path, sizeBytes: DISK_BYTES }, nic: { mac: PF_MAC }, logger: quietLogger() });
    this.probe = this.sim.lan.attach('probe');
    this.probe.onFrame((f) => this.heard.push(f));
  }

  domain(domid: number, frames: number): Domain {
    const mem = GuestMemory.allocate(domid, frames);
    const before = fillCanary(mem.bytes, domid);
    this.sim.attachMemory(domid, mem.buffer);
    this.authority.createDomain(domid);
    return { domid, mem, gate: new EventChannelGate(this.eventMemory, domid), before };
  }

  assign<F extends VirtualFunction>(dom: Domain, kind: 'nic' | 'disk', o: AssignOpts = {}): Vf<F> {
    // The toolstack binds an event channel guest ↔ hardware: the guest's doorbell, the function's interrupt.
    const hwPort = this.authority.allocUnbound(DOMID_HW, dom.domid);
    const guestPort = this.authority.bindInterdomain(dom.domid, DOMID_HW, hwPort);
    const r = this.sim.assignFunction({
      kind,
      ...(o.rid ? { rid: o.rid } : {}),
      domid: dom.domid,
      frames: o.frames ?? dom.mem.frames,
      port: hwPort,
      guestPort,
      ...(kind === 'nic' ? { mac: o.mac ?? MAC_A } : { partition: o.partition ?? PART_A }),
    });
    expect(r.bar).toBeInstanceOf(SharedArrayBuffer);
    const fn = this.sim.functions.byRid(r.rid) as F;
    let irqs = 0;
    dom.gate.on(guestPort, () => irqs++);
    const driver = new VfDriver({
      mem: dom.mem,
      bar: r.bar!,
      doorbell: () => {
        dom.gate.send(guestPort);
        this.sim.gate.dispatchPending();
      },
      firstFrame: o.firstFrame,
      endFrame: o.endFrame,
      idBase: o.idBase,
    });
    return {
      rid: r.rid,
      fn,
      driver,
      guestPort,
      hwPort,
      irqs: () => {
        dom.gate.dispatchPending();
        return irqs;
      },
    };
  }

  close(): void {
    for (const f of this.sim.functions.all) if (f.owner !== null) this.sim.reclaimFunction(formatRequesterId(f.rid));
    this.sim.shutdown();
    this.tmp.remove();
  }
}

function diskBytes(sim: HardwareSimulator, sector: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  sim.disk.readSectors(sector, out);
  return out;
}

/** Byte equality without vitest's element-by-element diffing (large memories). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function windowsOf(...vfs: Array<Vf | undefined>): Window[] {
  return vfs.flatMap((v) => v?.driver.windows ?? []);
}

describe('SR-IOV virtual functions through the IOMMU', () => {
  let rig: Rig;
  beforeEach(() => {
    rig = new Rig();
  });
  afterEach(() => {
    rig.close();
  });

  it('translates a function\'s DMA into its owner\'s frames: disk write and read back, tx to the LAN, rx into a posted buffer', async () => {
    const A = rig.domain(5, 64);
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1 });
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A, firstFrame: 32 });
    expect(disk.driver.regs.read(VF_REG.STATUS)).toBe(VF_STATUS_BUS_MASTER);
    expect(disk.driver.regs.sectors).toBe(BigInt(PART_A.sectors));
    expect(nic.driver.regs.mac).toBe(MAC_A);
    expect(nic.driver.regs.read(VF_REG.VECTOR)).toBe(nic.fn.vector);

    disk.driver.enable();
    expect(disk.driver.regs.read(VF_REG.STATUS)).toBe(VF_STATUS_BUS_MASTER | VF_STATUS_ENABLED);
    const data = pattern(2 * PAGE_SIZE, 1);
    const w = disk.driver.write(10, data);
    await turns();
    expect(disk.driver.blkResponses()).toEqual([{ id: w.id, status: HW_STATUS_OK }]);
    // The partition starts at sector 256 of the physical disk.
    expect(diskBytes(rig.sim, PART_A.start + 10, data.byteLength)).toEqual(data);
    const r = disk.driver.read(10, 2);
    const f = disk.driver.flush();
    await turns();
    expect(disk.driver.blkResponses()).toEqual([
      { id: r.id, status: HW_STATUS_OK },
      { id: f, status: HW_STATUS_OK },
    ]);
    expect(disk.driver.pageBytes(r.pfns)).toEqual(data);
    expect(disk.irqs()).toBeGreaterThanOrEqual(1);
    expect(disk.fn.io).toMatchObject({ reads: 1, writes: 1, flushes: 1, errors: 0 });
    // Outside the partition: refused by the device, not by the IOMMU.
    const past = disk.driver.read(PART_A.sectors, 1);
    await turns();
    expect(disk.driver.blkResponses()).toEqual([{ id: past.id, status: HW_STATUS_EIO }]);

    nic.driver.enable();
    nic.driver.postRx(4);
    expect(nic.fn.io.rxCached).toBe(4);
    const out = frameTo(PEER, 1, 200, MAC_A);
    const txId = nic.driver.transmit(out);
    expect(nic.driver.txResponses()).toEqual([{ id: txId, status: HW_STATUS_OK }]);
    expect(rig.heard).toHaveLength(1);
    expect(rig.heard[0]).toEqual(out);

    const inbound = [frameTo(MAC_A, 2, 300), frameTo(BCAST, 3, 60)];
    for (const fr of inbound) rig.probe.send(fr);
    rig.probe.send(frameTo('02:00:00:00:0c:01', 4)); // someone else's: filtered by the VF
    const rx = nic.driver.rxResponses();
    expect(rx.map((x) => x.status)).toEqual(inbound.map((fr) => fr.byteLength));
    expect(rx.map((x) => nic.driver.received(x))).toEqual(inbound);
    expect(nic.fn.io).toMatchObject({ rxPackets: 2, rxFiltered: 1, rxCached: 2, txPackets: 1 });
    expect(nic.fn.counters.irqs).toBe(2); // tx completion, then the first rx (the second was coalesced by rsp_event)
    expect(nic.irqs()).toBe(1); // both pending on the guest's port before it looked

    // Every byte the devices changed is one the drivers handed them; no fault was recorded.
    expect(strayPages(A.mem.bytes, A.before, windowsOf(disk, nic))).toEqual([]);
    expect(rig.sim.iommu.faults()).toEqual([]);
  });

  it('the drive\'s fault rules reach a function\'s partition (the same media): an injected EIO moves no byte, a bit flip corrupts what the read delivers, not the medium', async () => {
    const A = rig.domain(5, 64);
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1 });
    disk.driver.enable();
    const kept = pattern(PAGE_SIZE, 3);
    disk.driver.write(10, kept);
    await turns();
    disk.driver.blkResponses();
    // Rules name the image's sectors: the partition's sectors 10..17 are PART_A.start + 10..17.
    const range: [number, number] = [PART_A.start + 10, PART_A.start + 18];
    rig.sim.setDiskFaults({ rules: [{ id: 'w', op: 'write', error: 'eio', sectors: range }, { id: 'r', op: 'read', error: 'bitflip', sectors: range, times: 1 }] });
    const w = disk.driver.write(10, pattern(PAGE_SIZE, 9));
    const r = disk.driver.read(10, 1);
    const clean = disk.driver.write(40, pattern(PAGE_SIZE, 4)); // outside the range: untouched by the rules
    await turns();
    expect(disk.driver.blkResponses()).toEqual([
      { id: w.id, status: HW_STATUS_EIO },
      { id: r.id, status: HW_STATUS_OK },
      { id: clean.id, status: HW_STATUS_OK },
    ]);
    expect(diskBytes(rig.sim, PART_A.start + 10, PAGE_SIZE)).toEqual(kept);
    const got = disk.driver.pageBytes(r.pfns);
    let flipped = 0;
    for (let i = 0; i < PAGE_SIZE; i++) for (let x = got[i] ^ kept[i]; x; x &= x - 1) flipped++;
    expect(flipped).toBe(1);
    expect(disk.fn.io.injected).toBe(2);
  });

  it('interrupt faults (evtchn.lost/delayed on a direct device): the hardware drops or delays the owner\'s MSIs only, and says how many', async () => {
    const A = rig.domain(5, 64);
    const B = rig.domain(6, 64);
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1 });
    const other = rig.assign<DiskVf>(B, 'disk', { partition: PART_B });
    disk.driver.enable();
    other.driver.enable();
    const io = async (v: Vf<DiskVf>) => {
      const before = v.irqs();
      v.driver.write(0, pattern(PAGE_SIZE, 1));
      await turns();
      expect(v.driver.blkResponses()).toHaveLength(1); // the device did the I/O either way
      return v.irqs() - before;
    };
    expect(await io(disk)).toBe(1);
    await rig.sim.setIrqFault(A.domid, { lostToGuest: 1, delayMs: 0, seed: 7 });
    expect(await io(disk)).toBe(0);
    expect(await io(other)).toBe(1); // another owner's interrupts are not touched
    expect(await rig.sim.setIrqFault(A.domid, undefined)).toEqual({ irqsLost: 1, irqsDelayed: 0, kicksLost: 0 }); // what it did, read at the heal
    // Late by far more than a request takes even on a loaded machine; then waited for, not slept on.
    await rig.sim.setIrqFault(A.domid, { lostToGuest: 0, delayMs: 1_000, seed: 7 });
    const late = disk.irqs();
    expect(await io(disk)).toBe(0);
    await vi.waitFor(() => expect(disk.irqs()).toBe(late + 1), { timeout: 10_000, interval: 10 }); // the late one arrived
    expect(await rig.sim.setIrqFault(A.domid, undefined)).toEqual({ irqsLost: 0, irqsDelayed: 1, kicksLost: 0 });
    expect(await io(disk)).toBe(1);
  });

  it('a request naming a frame outside the owner\'s memory, or a non-zero reserved domid, is answered EIO, faulted, and touches nothing', async () => {
    const A = rig.domain(5, 64);
    const B = rig.domain(6, 160); // B has the frames A names
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1 });
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A, firstFrame: 32 });
    const diskB = rig.assign<DiskVf>(B, 'disk', { partition: PART_B });
    disk.driver.enable();
    nic.driver.enable();
    diskB.driver.enable();
    const rid = (v: Vf) => v.fn.rid;

    const a1 = disk.driver.submit(HWBLK_OP_READ, 0, [{ domid: 0, pfn: 100, firstSect: 2, lastSect: 3 }]);
    const a2 = disk.driver.submit(HWBLK_OP_WRITE, 0, [{ domid: 0, pfn: 64, firstSect: 0, lastSect: 7 }]);
    const a3 = disk.driver.submit(HWBLK_OP_READ, 0, [{ domid: 6, pfn: 3, firstSect: 0, lastSect: 7 }]);
    // All or nothing per request: a good segment before a bad one moves no byte either.
    const good = disk.driver.allocPage();
    const a4 = disk.driver.submit(HWBLK_OP_READ, 0, [
      { domid: 0, pfn: good, firstSect: 0, lastSect: 7 },
      { domid: 0, pfn: 120, firstSect: 0, lastSect: 7 },
    ]);
    await turns();
    expect(disk.driver.blkResponses()).toEqual([a1, a2, a3, a4].map((id) => ({ id, status: HW_STATUS_EIO })));

    const t1 = nic.driver.transmit(frameTo(PEER, 1), { pfn: 100, offset: 8 });
    const t2 = nic.driver.transmit(frameTo(PEER, 2), { domid: 6 });
    expect(nic.driver.txResponses()).toEqual([t1, t2].map((id) => ({ id, status: HW_STATUS_EIO })));
    expect(rig.heard).toEqual([]);

    const [r1, r2, r3] = nic.driver.post([
      { domid: 0, id: 901, pfn: 100, offset: 0, len: 2048 },
      { domid: 6, id: 902, pfn: 40, offset: 0, len: 2048 },
      { domid: 0, id: 903, pfn: nic.driver.allocPage(), offset: 0, len: 2048 },
    ]);
    const inbound = frameTo(MAC_A, 9);
    rig.probe.send(inbound);
    const rx = nic.driver.rxResponses();
    // The rogue descriptors fail; the frame lands in the first good one.
    expect(rx).toEqual([
      { id: r1.id, status: HW_STATUS_EIO },
      { id: r2.id, status: HW_STATUS_EIO },
      { id: r3.id, status: inbound.byteLength },
    ]);
    expect(nic.driver.received(rx[2])).toEqual(inbound);

    // Fault records: reason, requester id, the faulting address, and whether the device was writing.
    // The reserved-domid requests were refused by the device before any DMA: no fault.
    expect(rig.sim.iommu.faults().map(({ rid: r, address, write, reason, domid }) => ({ rid: r, address, write, reason, domid }))).toEqual([
      { rid: rid(disk), address: 100 * PAGE_SIZE + 2 * SECTOR_SIZE, write: true, reason: 'address-out-of-range', domid: 5 },
      { rid: rid(disk), address: 64 * PAGE_SIZE, write: false, reason: 'address-out-of-range', domid: 5 },
      { rid: rid(disk), address: 120 * PAGE_SIZE, write: true, reason: 'address-out-of-range', domid: 5 },
      { rid: rid(nic), address: 100 * PAGE_SIZE + 8, write: false, reason: 'address-out-of-range', domid: 5 },
      { rid: rid(nic), address: 100 * PAGE_SIZE, write: true, reason: 'address-out-of-range', domid: 5 },
    ]);
    expect(disk.driver.regs.read(VF_REG.FAULTS)).toBe(3);
    expect(nic.driver.regs.read(VF_REG.FAULTS)).toBe(2);
    expect(disk.fn.counters.dmaFaults).toBe(3);
    expect(disk.fn.io.errors).toBe(4);
    expect(nic.fn.io).toMatchObject({ txErrors: 2, rxErrors: 2, rxPackets: 1 });

    // Nothing moved: A changed only where its drivers allowed (the rogue addresses never were), B not at all.
    expect(strayPages(A.mem.bytes, A.before, windowsOf(disk, nic))).toEqual([]);
    expect(A.mem.page(good)).toEqual(A.before.subarray(good * PAGE_SIZE, (good + 1) * PAGE_SIZE));
    expect(strayPages(B.mem.bytes, B.before, windowsOf(diskB))).toEqual([]);
    expect(diskBytes(rig.sim, PART_A.start, PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE)); // a2 wrote nothing

    // The functions are still fine, and so is B's.
    const data = pattern(PAGE_SIZE, 7);
    const wb = diskB.driver.write(0, data);
    const ok = disk.driver.read(0, 1);
    await turns();
    expect(diskB.driver.blkResponses()).toEqual([{ id: wb.id, status: HW_STATUS_OK }]);
    expect(disk.driver.blkResponses()).toEqual([{ id: ok.id, status: HW_STATUS_OK }]);
    expect(diskBytes(rig.sim, PART_B.start, PAGE_SIZE)).toEqual(data);
    expect(strayPages(B.mem.bytes, B.before, windowsOf(diskB))).toEqual([]);
  });

  it('a guest programming DMA addresses outside its memory (rings, buffers) is blocked and faulted; the other domain is byte-identical', async () => {
    const A = rig.domain(5, 32);
    const B = rig.domain(6, 128);
    const nicB = rig.assign<NicVf>(B, 'nic', { rid: '00:03.2', mac: MAC_B });
    nicB.driver.enable();
    nicB.driver.postRx(4);
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1 });

    // An rx ring at an I/O page B has but A does not: the queues do not come up.
    nic.driver.regs.write(VF_REG.Q0, 3);
    nic.driver.regs.write(VF_REG.Q1, 100);
    nic.driver.regs.write(VF_REG.CTRL, VF_CTRL_ENABLE);
    nic.driver.ringDoorbell();
    expect(nic.fn.enabled).toBe(false);
    expect(nic.driver.regs.read(VF_REG.STATUS)).toBe(VF_STATUS_BUS_MASTER | VF_STATUS_ERROR);
    expect(nic.fn.info().error).toMatch(/address-out-of-range/);
    expect(nic.irqs()).toBe(1); // the error interrupt, remapped to A

    disk.driver.enable();
    const huge = disk.driver.submit(HWBLK_OP_READ, 0, [{ domid: 0, pfn: 0xffffffff, firstSect: 0, lastSect: 7 }]);
    const intoB = disk.driver.submit(HWBLK_OP_READ, 0, [{ domid: 0, pfn: 64, firstSect: 0, lastSect: 7 }]);
    await turns();
    expect(disk.driver.blkResponses()).toEqual([huge, intoB].map((id) => ({ id, status: HW_STATUS_EIO })));

    expect(rig.sim.iommu.faults()).toMatchObject([
      { rid: nic.fn.rid, address: 100 * PAGE_SIZE, write: true, reason: 'address-out-of-range', domid: 5 },
      { rid: disk.fn.rid, address: 0xffffffff * PAGE_SIZE, write: true, reason: 'address-out-of-range', domid: 5 },
      { rid: disk.fn.rid, address: 64 * PAGE_SIZE, write: true, reason: 'address-out-of-range', domid: 5 },
    ]);
    // B's memory: only its own driver's pages changed (its rings were initialised), nothing A named.
    expect(strayPages(B.mem.bytes, B.before, windowsOf(nicB))).toEqual([]);
    expect(sameBytes(B.mem.bytes.subarray(64 * PAGE_SIZE), B.before.subarray(64 * PAGE_SIZE))).toBe(true);
    expect(strayPages(A.mem.bytes, A.before, windowsOf(disk))).toEqual([]);
    // And B's function still works.
    rig.probe.send(frameTo(MAC_B, 1));
    expect(nicB.driver.rxResponses()).toHaveLength(1);
  });

  it('an I/O address space declared larger than the memory behind it is refused; should a table map past the memory anyway, that DMA fails its request, never the queue', () => {
    const A = rig.domain(5, 16);
    expect(() => rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A, frames: 64 })).toThrow(/domain 5 has 16 frames, not 64/);
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
    // A page table larger than the memory behind it (programmed behind the runtime's back).
    const wide = new IoPageTable(5, 64);
    for (let pfn = 0; pfn < 64; pfn++) wide.map(pfn, { frame: { domid: 5, pfn }, read: true, write: true });
    rig.sim.iommu.setContext(nic.fn.rid, { domid: 5, table: wide });
    nic.driver.enable();
    const bad = nic.driver.transmit(frameTo(PEER, 1), { pfn: 40 });
    const good = nic.driver.transmit(frameTo(PEER, 2, 120, MAC_A));
    expect(nic.driver.txResponses()).toEqual([
      { id: bad, status: HW_STATUS_EIO },
      { id: good, status: HW_STATUS_OK },
    ]);
    const [r1, r2] = nic.driver.post([
      { domid: 0, id: 1, pfn: 40, offset: 0, len: 2048 },
      { domid: 0, id: 2, pfn: nic.driver.allocPage(), offset: 0, len: 2048 },
    ]);
    rig.probe.send(frameTo(MAC_A, 3));
    expect(nic.driver.rxResponses()).toEqual([
      { id: r1.id, status: HW_STATUS_EIO },
      { id: r2.id, status: frameTo(MAC_A, 3).byteLength },
    ]);
    expect(nic.fn.enabled).toBe(true);
    expect(strayPages(A.mem.bytes, A.before, windowsOf(nic))).toEqual([]);
  });

  it('honours read-only mappings: a device write into a read-only page is blocked with write-not-permitted, a read from it works', async () => {
    const A = rig.domain(5, 64);
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1 });
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A, firstFrame: 32 });
    disk.driver.enable();
    nic.driver.enable();
    const ro = disk.driver.allocPage();
    const content = pattern(PAGE_SIZE, 3);
    A.mem.page(ro).set(content);
    // The toolstack makes the page read-only for the domain's functions (one table per domain).
    const ctx = rig.sim.iommu.context(disk.fn.rid)!;
    expect(ctx.domid).toBe(5);
    expect(rig.sim.iommu.context(nic.fn.rid)!.table).toBe(ctx.table);
    ctx.table.map(ro, { frame: { domid: 5, pfn: ro }, read: true, write: false });
    rig.sim.iommu.invalidate();

    const w = disk.driver.submit(HWBLK_OP_WRITE, 16, [{ domid: 0, pfn: ro, firstSect: 0, lastSect: 7 }]); // device reads: fine
    const r = disk.driver.submit(HWBLK_OP_READ, 0, [{ domid: 0, pfn: ro, firstSect: 1, lastSect: 1 }]); // device writes: blocked
    await turns();
    expect(disk.driver.blkResponses()).toEqual([
      { id: w, status: HW_STATUS_OK },
      { id: r, status: HW_STATUS_EIO },
    ]);
    expect(diskBytes(rig.sim, PART_A.start + 16, PAGE_SIZE)).toEqual(content);
    const [buf] = nic.driver.post([{ domid: 0, id: 77, pfn: ro, offset: 0, len: 2048 }]);
    rig.probe.send(frameTo(MAC_A, 1));
    expect(nic.driver.rxResponses()).toEqual([{ id: buf.id, status: HW_STATUS_EIO }]);
    const tx = nic.driver.transmit(frameTo(PEER, 1), { pfn: ro, len: 64 }); // reading it is permitted
    expect(nic.driver.txResponses()).toEqual([{ id: tx, status: HW_STATUS_OK }]);
    expect(rig.heard.at(-1)).toEqual(content.subarray(0, 64));

    expect(rig.sim.iommu.faults()).toMatchObject([
      { rid: disk.fn.rid, address: ro * PAGE_SIZE, write: true, reason: 'write-not-permitted', domid: 5 },
      { rid: nic.fn.rid, address: ro * PAGE_SIZE, write: true, reason: 'write-not-permitted', domid: 5 },
    ]);
    expect(A.mem.page(ro)).toEqual(content);

    // Writable again: the same read goes through.
    ctx.table.map(ro, { frame: { domid: 5, pfn: ro }, read: true, write: true });
    const again = disk.driver.submit(HWBLK_OP_READ, 16, [{ domid: 0, pfn: ro, firstSect: 1, lastSect: 1 }]);
    await turns();
    expect(disk.driver.blkResponses()).toEqual([{ id: again, status: HW_STATUS_OK }]);
    expect(A.mem.page(ro).subarray(512, 1024)).toEqual(content.subarray(0, 512));
  });

  it('interrupt remapping validates the source id; a function whose entry was cleared raises nothing', () => {
    const A = rig.domain(5, 64);
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1, firstFrame: 40 });
    nic.driver.enable();
    const iommu = rig.sim.iommu;
    expect(iommu.remapInterrupt(nic.fn.rid, nic.fn.vector)).toEqual({ ok: true, domid: 5, port: nic.guestPort });
    const delivered = iommu.counters.interrupts;
    // The disk function raising the NIC function's entry: blocked and faulted.
    const forged = iommu.remapInterrupt(disk.fn.rid, nic.fn.vector);
    expect(forged).toMatchObject({ ok: false, fault: { reason: 'irte-source-mismatch', rid: disk.fn.rid, address: nic.fn.vector, domid: 5 } });
    expect(iommu.counters.interrupts).toBe(delivered);

    nic.driver.transmit(frameTo(PEER, 1, 120, MAC_A));
    expect(nic.driver.txResponses()).toHaveLength(1);
    const irqs = nic.irqs();
    expect(irqs).toBeGreaterThanOrEqual(1);
    const { irqs: raised, irqsBlocked } = nic.fn.counters;
    expect(irqsBlocked).toBe(0);

    iommu.clearInterruptEntry(nic.fn.vector);
    nic.driver.transmit(frameTo(PEER, 2, 120, MAC_A));
    expect(nic.driver.txResponses()).toEqual([{ id: expect.any(Number), status: HW_STATUS_OK }]);
    expect(nic.fn.counters.irqsBlocked).toBe(irqsBlocked + 1);
    expect(nic.fn.counters.irqs).toBe(raised);
    expect(nic.irqs()).toBe(irqs);
    expect(iommu.faults().at(-1)).toMatchObject({ reason: 'irte-not-present', rid: nic.fn.rid, address: nic.fn.vector });
  });

  it('a function in use by another domain cannot be assigned; after reclaim it can', () => {
    const A = rig.domain(5, 32);
    const B = rig.domain(6, 32);
    const a = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
    expect(() => rig.assign(B, 'nic', { rid: NIC1, mac: MAC_B })).toThrow(DeviceError);
    expect(() => rig.assign(B, 'nic', { rid: NIC1, mac: MAC_B })).toThrow(/in use by domain 5/);
    expect(() => rig.sim.functions.assign({ kind: 'nic', rid: NIC1, domid: 6, frames: 32, guestPort: 9, mac: MAC_B })).toThrow(DeviceError);
    expect(() => rig.sim.functions.assign({ kind: 'nic', rid: '00:03.7', domid: 6, frames: 32, guestPort: 9, mac: MAC_B })).toThrow(InvalidArgumentError);
    // The failed attempts changed nothing.
    expect(a.fn.owner).toBe(5);
    expect(rig.sim.iommu.context(a.fn.rid)?.domid).toBe(5);
    expect(a.driver.regs.mac).toBe(MAC_A);
    // Without a rid: the next free one.
    const others = [rig.assign(B, 'nic', { mac: MAC_B }), rig.assign(B, 'nic', { mac: MAC_B }), rig.assign(B, 'nic', { mac: MAC_B })];
    expect(others.map((o) => o.rid)).toEqual(['00:03.2', '00:03.3', '00:03.4']);
    expect(() => rig.assign(B, 'nic', { mac: MAC_B })).toThrow(/no free nic virtual function/);

    expect(() => rig.sim.reclaimFunction('00:04.1')).toThrow(/not assigned/);
    expect(() => rig.sim.reclaimFunction('00:09.1')).toThrow(InvalidArgumentError);
    rig.sim.reclaimFunction(NIC1);
    const b = rig.assign<NicVf>(B, 'nic', { rid: NIC1, mac: MAC_B });
    expect(b.fn).toBe(a.fn);
    expect(b.fn.owner).toBe(6);
    expect(rig.sim.iommu.context(b.fn.rid)?.domid).toBe(6);
    expect(b.driver.regs.mac).toBe(MAC_B);
    b.driver.enable();
    b.driver.postRx(1);
    rig.probe.send(frameTo(MAC_B, 1));
    expect(b.driver.rxResponses()).toHaveLength(1);
  });

  it('FLR on reclaim: registers cleared but for identity, GEN moves on, queues, cached descriptors and queued commands dropped, context and interrupt entry gone', async () => {
    const A = rig.domain(5, 96);
    const nic = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
    const disk = rig.assign<DiskVf>(A, 'disk', { rid: DISK1, firstFrame: 60 });
    nic.driver.enable();
    disk.driver.enable();
    nic.driver.postRx(20);
    for (let i = 0; i < 2; i++) rig.probe.send(frameTo(MAC_A, i));
    expect(nic.driver.rxResponses()).toHaveLength(2);
    disk.driver.batch(() => {
      for (let i = 0; i < 5; i++) disk.driver.read(i * 8, 1);
    });
    expect(nic.fn.io.rxCached).toBe(18);
    expect(disk.fn.io.queued).toBe(5); // fetched, not yet executed (the next turn would)
    const ids = [nic.driver.regs.read(VF_REG.ID), disk.driver.regs.read(VF_REG.ID)];
    const vectors = [nic.fn.vector, disk.fn.vector];
    expect(nic.driver.regs.read(VF_REG.GEN)).toBe(0);

    const rn = rig.sim.reclaimFunction(NIC1);
    const rd = rig.sim.reclaimFunction(DISK1);
    const steps = ['bus-master-off', 'flr', 'context-cleared', 'released'];
    expect(rn).toEqual({ rid: NIC1, owner: 5, steps, dropped: { rxDescriptors: 18, commands: 0 } });
    expect(rd).toEqual({ rid: DISK1, owner: 5, steps, dropped: { rxDescriptors: 0, commands: 5 } });

    // A's view of the register page after the reset.
    for (const [i, v] of [nic, disk].entries()) {
      const regs = v.driver.regs;
      expect(regs.read(VF_REG.ID)).toBe(ids[i]);
      expect(regs.rid).toBe(v.fn.rid);
      expect(regs.read(VF_REG.STATUS)).toBe(0); // neither BUS_MASTER nor ENABLED
      expect(regs.read(VF_REG.GEN)).toBe(1);
      for (const r of [VF_REG.CTRL, VF_REG.Q0, VF_REG.Q1, VF_REG.VECTOR, VF_REG.FAULTS]) expect(regs.read(r)).toBe(0);
      expect(v.fn.info()).toMatchObject({ owner: null, busMaster: false, enabled: false, error: null, generation: 1, vector: -1 });
      expect(rig.sim.iommu.context(v.fn.rid)).toBeUndefined();
      expect(rig.sim.iommu.remapInterrupt(v.fn.rid, vectors[i])).toMatchObject({ ok: false, fault: { reason: 'irte-not-present' } });
    }
    expect(nic.driver.regs.kind).toBe('nic');
    expect(disk.driver.regs.kind).toBe('disk');
    expect(nic.fn.io.rxCached).toBe(0);
    expect(disk.fn.io.queued).toBe(0);

    // A's stale driver keeps going: re-enables, posts, submits, rings (event channel and directly).
    const counters = { nic: { ...nic.fn.counters }, disk: { ...disk.fn.counters } };
    for (const v of [nic, disk]) v.driver.regs.write(VF_REG.CTRL, VF_CTRL_ENABLE);
    nic.driver.rx!.putRequest({ domid: 0, id: 500, pfn: 80, offset: 0, len: 2048 });
    nic.driver.rx!.pushRequests();
    disk.driver.blk!.putRequest({ op: HWBLK_OP_READ, id: 500, sector: 0n, segments: [{ domid: 0, pfn: 81, firstSect: 0, lastSect: 7 }] });
    disk.driver.blk!.pushRequests();
    const snapshot = A.mem.bytes.slice();
    const readsBefore = disk.fn.io.reads;
    nic.driver.ringDoorbell(); // the event channel: the hardware no longer listens on that port
    disk.driver.ringDoorbell();
    expect(nic.fn.counters.doorbells).toBe(counters.nic.doorbells);
    nic.fn.doorbell(); // straight at the function: it is not assigned, so it stays down
    disk.fn.doorbell();
    for (let i = 0; i < 5; i++) rig.probe.send(frameTo(MAC_A, 10 + i));
    await turns(6);
    expect(nic.fn.enabled).toBe(false);
    expect(disk.fn.enabled).toBe(false);
    expect(nic.fn.counters).toMatchObject({ enables: counters.nic.enables, dmaReads: counters.nic.dmaReads, dmaWrites: counters.nic.dmaWrites, dmaSuppressed: 0 });
    expect(disk.fn.counters).toMatchObject({ enables: counters.disk.enables, dmaReads: counters.disk.dmaReads, dmaWrites: counters.disk.dmaWrites, dmaSuppressed: 0 });
    expect(nic.fn.io.rxMissed).toBe(5);
    expect(disk.fn.io.reads).toBe(readsBefore);
    expect(nic.driver.rxResponses()).toEqual([]);
    expect(disk.driver.blkResponses()).toEqual([]);
    expect(strayPages(A.mem.bytes, snapshot)).toEqual([]);
  });

  it('a reclaimed owner\'s stale register page no longer reaches the function', () => {
    const A = rig.domain(5, 32);
    const B = rig.domain(6, 32);
    const a = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
    a.driver.enable();
    rig.sim.reclaimFunction(NIC1);
    const b = rig.assign<NicVf>(B, 'nic', { rid: NIC1, mac: MAC_B });
    b.driver.enable();
    b.driver.postRx(2);
    // A, still holding its old mapping of the registers, tries to turn B's queues off / move them.
    a.driver.regs.write(VF_REG.CTRL, 0);
    a.driver.regs.write(VF_REG.Q1, 3);
    a.driver.regs.write(VF_REG.STATUS, 0);
    expect(b.driver.regs.read(VF_REG.CTRL)).toBe(VF_CTRL_ENABLE);
    expect(a.driver.regs.mac).toBe(MAC_A); // nor does it see B's identity
    b.driver.postRx(2); // B's next doorbell
    rig.probe.send(frameTo(MAC_B, 1));
    expect(b.fn.enabled).toBe(true);
    expect(b.driver.rxResponses()).toHaveLength(1);
  });
});

interface LoadResult {
  reports: ReturnType<HardwareSimulator['reclaimFunction']>[];
  strayA: number[];
  strayB: number[];
  aRings: number[];
  aBuffers: number[];
  nicA: Vf<NicVf>;
  diskA: Vf<DiskVf>;
  nicB: Vf<NicVf>;
  diskB: Vf<DiskVf>;
  cachedBeforeReclaim: number;
  queuedBeforeReclaim: number;
  readsAtReclaim: number;
  faultsAfterReclaim: number;
  statusAtAssign: number[];
  rxB: HwStatusResponse[];
  blkB: HwStatusResponse[];
  framesToB: Uint8Array[];
  readB: { id: number; pfns: number[] };
}

/**
 * Domain A drives both functions hard, the toolstack reclaims them in the middle of it, A's
 * memory is refilled with a canary, traffic for A keeps coming, then the same functions go to B.
 * `unsafe` (test only) skips reclaim steps, to show the checker notices what they prevent.
 */
async function reclaimUnderLoad(rig: Rig, unsafe?: UnsafeReclaim): Promise<LoadResult> {
  const A = rig.domain(5, 192);
  const B = rig.domain(6, 192);
  const nicA = rig.assign<NicVf>(A, 'nic', { rid: NIC1, mac: MAC_A });
  const diskA = rig.assign<DiskVf>(A, 'disk', { rid: DISK1, partition: PART_A, firstFrame: 96 });
  nicA.driver.enable();
  diskA.driver.enable();
  const data = pattern(16 * PAGE_SIZE, 5);
  for (let i = 0; i < 4; i++) diskA.driver.write(i * 32, data.subarray(i * 4 * PAGE_SIZE, (i + 1) * 4 * PAGE_SIZE));
  await turns();
  expect(diskA.driver.blkResponses().map((r) => r.status)).toEqual([0, 0, 0, 0]);
  nicA.driver.postRx(64);
  for (let i = 0; i < 4; i++) rig.probe.send(frameTo(MAC_A, i));
  expect(nicA.driver.rxResponses()).toHaveLength(4);
  nicA.driver.postRx(8);
  // Many disk reads, fetched by the controller in one doorbell and queued for its next turn.
  diskA.driver.batch(() => {
    for (let i = 0; i < 12; i++) diskA.driver.read((i % 4) * 32, 3);
  });
  const cachedBeforeReclaim = nicA.fn.io.rxCached;
  const queuedBeforeReclaim = diskA.fn.io.queued;
  const readsAtReclaim = diskA.fn.io.reads;
  const seq = rig.sim.iommu.counters.faults;

  // Reclaim now, synchronously: descriptors cached and commands queued in the devices.
  const reclaim = (rid: string) => (unsafe ? rig.sim.functions.reclaim(rid, unsafe) : rig.sim.reclaimFunction(rid));
  const reports = [reclaim(NIC1), reclaim(DISK1)];
  const aBefore = fillCanary(A.mem.bytes, 0x5a); // A's memory is A's alone again
  for (let k = 0; k < 24; k++) {
    rig.probe.send(frameTo(MAC_A, 100 + k));
    if (k % 4 === 0) await turn();
  }
  await turns();

  // The same functions, to B (B's drivers use frames A's never did, so strays are visible).
  const nicB = rig.assign<NicVf>(B, 'nic', { rid: NIC1, mac: MAC_B, firstFrame: 150, idBase: 1000 });
  const diskB = rig.assign<DiskVf>(B, 'disk', { rid: DISK1, partition: PART_A, firstFrame: 170, idBase: 1000 });
  const statusAtAssign = [nicB.driver.regs.read(VF_REG.STATUS), diskB.driver.regs.read(VF_REG.STATUS)];
  rig.probe.send(frameTo(MAC_B, 199)); // traffic for B before its driver is up
  await turn();
  nicB.driver.enable();
  diskB.driver.enable();
  nicB.driver.postRx(8);
  const framesToB = Array.from({ length: 6 }, (_, k) => frameTo(MAC_B, 200 + k));
  for (const [k, f] of framesToB.entries()) {
    rig.probe.send(f);
    rig.probe.send(frameTo(MAC_A, 300 + k));
  }
  const readB = diskB.driver.read(32, 2);
  await turns(6);
  for (let k = 0; k < 4; k++) rig.probe.send(frameTo(MAC_A, 400 + k));
  await turns();

  const aRings = [...nicA.driver.pages.slice(0, 2), diskA.driver.pages[0]];
  return {
    reports,
    strayA: strayPages(A.mem.bytes, aBefore),
    strayB: strayPages(B.mem.bytes, B.before, windowsOf(nicB, diskB)),
    aRings,
    aBuffers: [...nicA.driver.rxPosted.values()].map((b) => b.pfn),
    nicA,
    diskA,
    nicB,
    diskB,
    cachedBeforeReclaim,
    queuedBeforeReclaim,
    readsAtReclaim,
    faultsAfterReclaim: rig.sim.iommu.counters.faults - seq,
    statusAtAssign,
    rxB: nicB.driver.rxResponses(),
    blkB: diskB.driver.blkResponses(),
    framesToB,
    readB,
  };
}

describe('reclaim under load', () => {
  let rig: Rig;
  beforeEach(() => {
    rig = new Rig();
  });
  afterEach(() => {
    rig.close();
  });

  it('nothing the old owner left in the devices ever reaches memory: A untouched after reclaim, B changed only where its driver allowed', async () => {
    const r = await reclaimUnderLoad(rig);
    expect(r.cachedBeforeReclaim).toBe(68);
    expect(r.queuedBeforeReclaim).toBe(12);
    expect(r.reports.map((x) => x.dropped)).toEqual([
      { rxDescriptors: 68, commands: 0 },
      { rxDescriptors: 0, commands: 12 },
    ]);
    // The checker.
    expect(r.strayA).toEqual([]);
    expect(r.strayB).toEqual([]);
    // Nothing was even attempted after the reset (not merely blocked).
    expect(r.faultsAfterReclaim).toBe(0);
    expect(r.nicA.fn.counters.dmaSuppressed).toBe(0);
    expect(r.readsAtReclaim).toBe(0);
    expect(r.diskA.fn.io.reads).toBe(1); // B's read; none of A's 12 ran
    // B's functions started clean: bus master, not enabled; only B's ids on B's rings.
    expect(r.statusAtAssign).toEqual([VF_STATUS_BUS_MASTER, VF_STATUS_BUS_MASTER]);
    expect(r.nicB.driver.regs.read(VF_REG.GEN)).toBe(1);
    expect(r.rxB.every((x) => r.nicB.driver.ids.has(x.id) && x.id >= 1000)).toBe(true);
    expect(r.rxB.map((x) => r.nicB.driver.received(x))).toEqual(r.framesToB);
    expect(r.blkB).toEqual([{ id: r.readB.id, status: HW_STATUS_OK }]);
    expect(r.diskB.driver.pageBytes(r.readB.pfns)).toEqual(diskBytes(rig.sim, PART_A.start + 32, 2 * PAGE_SIZE));
    // The frame for B that came before B's queues were up was missed, not stored for later.
    expect(r.nicB.fn.io.rxMissed).toBeGreaterThanOrEqual(24 + 1);
  });

  it('checker self-test: without the function-level reset the same run leaves stray writes, and the checker finds them', async () => {
    const r = await reclaimUnderLoad(rig, { skipFlr: true });
    expect(r.reports.map((x) => x.steps)).toEqual([
      ['bus-master-off', 'context-cleared', 'released'],
      ['bus-master-off', 'context-cleared', 'released'],
    ]);
    expect(r.strayA.length + r.strayB.length).toBeGreaterThan(0);
    // A's queued commands were answered into A's ring after A's memory was A's again…
    expect(r.strayA).toContain(r.diskA.driver.pages[0]);
    expect(r.strayA.every((p) => r.aRings.includes(p))).toBe(true);
    // …and B's traffic landed in B's memory at the addresses of A's cached rx buffers.
    expect(r.strayB.length).toBeGreaterThan(0);
    expect(r.strayB.every((p) => r.aBuffers.includes(p))).toBe(true);
  });
});

describe('property: isolation across random assign / reclaim / traffic', () => {
  it('no device ever writes outside what the current owner\'s driver handed it', async () => {
    const shared = tempDir('hwsim-sriov-prop-');
    const diskPath = join(shared.dir, 'disk.img');
    const DOMS = [5, 6, 7];
    const MACS = ['02:00:00:00:05:01', '02:00:00:00:06:01', '02:00:00:00:07:01'];
    const FRAMES = 96;
    /** Each driver gets frames of its own, at addresses no other driver (of any domain) uses. */
    const REGION = 8;
    type Op =
      | { t: 'assign'; fn: 0 | 1; dom: number }
      | { t: 'reclaim'; fn: 0 | 1 }
      | { t: 'post'; n: number }
      | { t: 'frame'; to: 'owner' | 'bcast' | number }
      | { t: 'tx' }
      | { t: 'read'; n: number }
      | { t: 'rogue'; fn: 0 | 1 }
      | { t: 'turn' };
    const fn01 = fc.constantFrom(0 as const, 1 as const);
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 3, arbitrary: fc.record({ t: fc.constant('assign' as const), fn: fn01, dom: fc.integer({ min: 0, max: 2 }) }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant('reclaim' as const), fn: fn01 }) },
      { weight: 3, arbitrary: fc.record({ t: fc.constant('post' as const), n: fc.integer({ min: 1, max: 3 }) }) },
      {
        weight: 4,
        arbitrary: fc.record({ t: fc.constant('frame' as const), to: fc.oneof({ weight: 3, arbitrary: fc.constant('owner' as const) }, fc.constant('bcast' as const), fc.integer({ min: 0, max: 2 })) }),
      },
      { weight: 1, arbitrary: fc.record({ t: fc.constant('tx' as const) }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant('read' as const), n: fc.integer({ min: 1, max: 3 }) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant('rogue' as const), fn: fn01 }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant('turn' as const) }) },
    );
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 20, maxLength: 40 }), async (ops) => {
          const rig = new Rig(diskPath);
          try {
            const doms = DOMS.map((d) => rig.domain(d, FRAMES));
            /** What each domain's memory may differ from: refreshed when a driver of it goes away. */
            const baseline = doms.map((d) => d.before);
            let cursor = 1;
            const fns: Array<{ dom: number; vf: Vf } | undefined> = [undefined, undefined];
            let seq = 0;
            const live = (dom: number): Window[] => fns.flatMap((f) => (f && f.dom === dom ? f.vf.driver.windows : []));
            const check = (): void => {
              for (let d = 0; d < doms.length; d++) expect(strayPages(doms[d].mem.bytes, baseline[d], live(d)), `domain ${DOMS[d]}`).toEqual([]);
              for (const f of fns) {
                if (!f) continue;
                // Only this driver's ids come back on its rings.
                for (const x of [...f.vf.driver.rxResponses(), ...f.vf.driver.blkResponses(), ...f.vf.driver.txResponses()]) expect(f.vf.driver.ids.has(x.id)).toBe(true);
              }
            };
            for (const o of ops) {
              const nic = fns[0];
              const disk = fns[1];
              switch (o.t) {
                case 'assign': {
                  if (fns[o.fn] || cursor + REGION > FRAMES) break;
                  const first = cursor;
                  cursor += REGION;
                  const vf = rig.assign(doms[o.dom], o.fn === 0 ? 'nic' : 'disk', { rid: o.fn === 0 ? NIC1 : DISK1, mac: MACS[o.dom], firstFrame: first, endFrame: first + REGION, idBase: seq * 100 });
                  seq++;
                  vf.driver.enable();
                  fns[o.fn] = { dom: o.dom, vf };
                  break;
                }
                case 'reclaim': {
                  const f = fns[o.fn];
                  if (!f) break;
                  check(); // its driver's legitimate writes are allowed up to here…
                  rig.sim.reclaimFunction(f.vf.rid);
                  fns[o.fn] = undefined;
                  baseline[f.dom] = doms[f.dom].mem.bytes.slice(); // …and nowhere after
                  break;
                }
                case 'post':
                  if (nic && nic.vf.driver.framesLeft >= o.n) nic.vf.driver.postRx(o.n);
                  break;
                case 'frame': {
                  // To the NIC function's owner, to everyone, or to a domain's MAC (maybe a former owner's).
                  const dst = o.to === 'bcast' ? BCAST : o.to === 'owner' ? (nic ? MACS[nic.dom] : BCAST) : MACS[o.to];
                  rig.probe.send(frameTo(dst, seq++));
                  break;
                }
                case 'tx':
                  if (nic && nic.vf.driver.framesLeft >= 1) nic.vf.driver.transmit(frameTo(PEER, seq++, 120, MACS[nic.dom]));
                  break;
                case 'read':
                  if (disk && disk.vf.driver.framesLeft >= o.n) disk.vf.driver.read(o.n * 8, o.n);
                  break;
                case 'rogue': {
                  const f = fns[o.fn];
                  if (!f) break;
                  // An address just past the owner's memory: in another domain's range, never reached.
                  if (o.fn === 0) f.vf.driver.post([{ domid: 0, id: f.vf.driver.id(), pfn: FRAMES + 1, offset: 0, len: 2048 }]);
                  else f.vf.driver.submit(HWBLK_OP_READ, 0, [{ domid: 0, pfn: FRAMES, firstSect: 0, lastSect: 7 }]);
                  break;
                }
                case 'turn':
                  await turn();
                  break;
              }
              check();
            }
            await turns(3);
            check();
          } finally {
            rig.close();
          }
        }),
        { numRuns: 50 },
      );
    } finally {
      shared.remove();
    }
  });
});
