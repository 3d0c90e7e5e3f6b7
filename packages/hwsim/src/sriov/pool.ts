/**
 * FunctionPool — the SR-IOV management side of the hardware: the NIC's and the disk controller's
 * virtual functions, and the IOMMU state that makes assigning them safe. Only dom0's toolstack
 * calls it (hwsim's RPC surface binds it to dom0's control link).
 *
 * assign (xl pci-attach / VFIO bind): the function must be free — a function in use by another
 * domain cannot be assigned. The domain's I/O page table (one per domain, shared by all its
 * functions) maps each of its guest frames, read and write, at I/O page = guest frame number;
 * the function's context entry points at it; an interrupt remapping entry is programmed that only
 * this function's requester id may raise, aimed at the owner's event port. Then bus mastering
 * goes on and the owner's driver may enable the queues.
 *
 * reclaim (VFIO's order; the textbook's hazard): 1. clear bus master — the function issues no
 * more DMA; 2. function-level reset — queues, prefetched descriptors and queued commands are
 * dropped, registers cleared; 3. tear down the context entry and the interrupt entry and flush
 * the IOTLB — anything the function still attempted would now be blocked and faulted; 4. back to
 * the pool, clean, for the next owner.
 */
import { InvalidArgumentError, DeviceError, type VfKind, type Logger, type ReclaimReport } from '@ringvisor/shared';
import type { DmaEngine } from '../dma/dma-engine.js';
import { IoPageTable, formatRequesterId, requesterId, type Iommu } from '../iommu/iommu.js';
import type { DiskFaultTable } from '../devices/disk/faults.js';
import type { PhysicalDisk } from '../devices/disk/device.js';
import type { LanSegment } from '../lan/segment.js';
import { DiskVf, type DiskVfMetrics } from './disk-vf.js';
import { NicVf, type NicVfMetrics } from './nic-vf.js';
import type { FunctionInfo, VirtualFunction } from './function.js';

/** PCI placement of the functions: the NIC at 00:03, the disk controller at 00:04; PF is .0. */
export const NIC_PCI_DEV = 3;
export const DISK_PCI_DEV = 4;
export const DEFAULT_VFS = 4;

export interface AssignRequest {
  kind: VfKind;
  /** A particular function ("bb:dd.f"); absent: the first free one of the kind. */
  rid?: string;
  domid: number;
  /** Guest frames the owner has (its I/O address space is [0, frames) pages). */
  frames: number;
  /** The owner's event port the function's interrupt goes to. */
  guestPort: number;
  /** NIC: the MAC the function answers to. */
  mac?: string;
  /** Disk: the partition of the physical disk. */
  partition?: { start: number; sectors: number };
  /** The IOMMU in pass-through for this function (the bare-metal baseline; nothing is translated). */
  passthrough?: boolean;
}

export interface Assignment {
  rid: string;
  kind: VfKind;
  index: number;
  vector: number;
  fn: VirtualFunction;
}

/** What a reclaim did (the hardware contract's hw.vf.reclaim result). */
export type { ReclaimReport };

/** Test-only: skip steps of reclaim to show what each one prevents. Never reachable over RPC. */
export interface UnsafeReclaim {
  skipBusMaster?: boolean;
  skipFlr?: boolean;
  keepContext?: boolean;
}

export type FunctionStats = FunctionInfo & { mac?: string; partition?: { start: number; sectors: number }; metrics: NicVfMetrics | DiskVfMetrics };

export class FunctionPool {
  readonly nics: NicVf[] = [];
  readonly disks: DiskVf[] = [];
  private readonly tables = new Map<number, IoPageTable>();

  constructor(
    private readonly o: {
      dma: DmaEngine;
      iommu: Iommu;
      lan: LanSegment;
      disk: PhysicalDisk;
      /** The drive's fault rules, which its functions' partitions take too. */
      diskFaults?: DiskFaultTable;
      host: string;
      nicLinkUp: () => boolean;
      deliverMsi: (domid: number, port: number) => void;
      logger?: Logger;
      vfs?: { nic?: number; disk?: number };
    },
  ) {
    const env = { dma: o.dma, iommu: o.iommu, deliverMsi: (d: number, p: number) => o.deliverMsi(d, p), logger: o.logger, host: o.host };
    const nics = o.vfs?.nic ?? DEFAULT_VFS;
    const disks = o.vfs?.disk ?? DEFAULT_VFS;
    if (nics > 7 || disks > 7) throw new InvalidArgumentError('at most 7 virtual functions per device (functions 1..7)');
    for (let i = 1; i <= nics; i++) this.nics.push(new NicVf(i, requesterId(0, NIC_PCI_DEV, i), env, o.lan.attach(`${o.host}:nic0vf${i}`), o.nicLinkUp));
    for (let i = 1; i <= disks; i++) this.disks.push(new DiskVf(i, requesterId(0, DISK_PCI_DEV, i), env, o.disk, o.diskFaults));
  }

  get all(): VirtualFunction[] {
    return [...this.nics, ...this.disks];
  }

  byRid(rid: string): VirtualFunction | undefined {
    return this.all.find((f) => formatRequesterId(f.rid) === rid);
  }

  ownedBy(domid: number): VirtualFunction[] {
    return this.all.filter((f) => f.owner === domid);
  }

  assign(req: AssignRequest): Assignment {
    const pool: VirtualFunction[] = req.kind === 'nic' ? this.nics : this.disks;
    let fn: VirtualFunction | undefined;
    if (req.rid !== undefined) {
      fn = pool.find((f) => formatRequesterId(f.rid) === req.rid);
      if (!fn) throw new InvalidArgumentError(`no ${req.kind} virtual function ${req.rid} (have ${pool.map((f) => formatRequesterId(f.rid)).join(', ')})`);
      if (fn.owner !== null) throw new DeviceError(`${req.rid} is in use by domain ${fn.owner}; reclaim it first`);
    } else {
      fn = pool.find((f) => f.owner === null);
      if (!fn) throw new DeviceError(`no free ${req.kind} virtual function (all ${pool.length} assigned)`);
    }
    if (!Number.isInteger(req.frames) || req.frames < 1) throw new InvalidArgumentError(`frames ${req.frames}: expected a positive integer`);
    if (fn instanceof NicVf) {
      if (!req.mac) throw new InvalidArgumentError('a NIC function needs a MAC');
      fn.setMac(req.mac);
    }
    if (fn instanceof DiskVf) {
      const p = req.partition;
      if (!p || !Number.isSafeInteger(p.start) || !Number.isSafeInteger(p.sectors) || p.start < 0 || p.sectors < 1 || p.start + p.sectors > this.o.disk.sectors)
        throw new InvalidArgumentError(`a disk function needs a partition within the disk's ${this.o.disk.sectors} sectors`);
      fn.setPartition(p.start, p.sectors);
    }
    const { iommu } = this.o;
    let table = this.tables.get(req.domid);
    if (!table) {
      table = new IoPageTable(req.domid, req.frames);
      // Guest frame n at I/O page n: the device is programmed with guest-physical addresses.
      for (let pfn = 0; pfn < req.frames; pfn++) table.map(pfn, { frame: { domid: req.domid, pfn }, read: true, write: true });
      this.tables.set(req.domid, table);
    }
    iommu.setContext(fn.rid, { domid: req.domid, table, ...(req.passthrough ? { passthrough: true } : {}) });
    // One remapping entry per function, indexed by its requester id: only it may raise it.
    const vector = fn.rid;
    iommu.setInterruptEntry(vector, { sourceRid: fn.rid, domid: req.domid, port: req.guestPort });
    iommu.invalidate();
    fn.assign(req.domid, vector);
    this.o.logger?.info({ rid: formatRequesterId(fn.rid), domid: req.domid }, 'virtual function assigned');
    return { rid: formatRequesterId(fn.rid), kind: fn.kind, index: fn.index, vector, fn };
  }

  reclaim(rid: string, unsafe: UnsafeReclaim = {}): ReclaimReport {
    const fn = this.byRid(rid);
    if (!fn) throw new InvalidArgumentError(`no virtual function ${rid}`);
    if (fn.owner === null) throw new DeviceError(`${rid} is not assigned`);
    const owner = fn.owner;
    const steps: string[] = [];
    const dropped = {
      rxDescriptors: fn instanceof NicVf ? fn.io.rxCached : 0,
      commands: fn instanceof DiskVf ? fn.io.queued : 0,
    };
    if (!unsafe.skipBusMaster) {
      fn.clearBusMaster();
      steps.push('bus-master-off');
    }
    if (!unsafe.skipFlr) {
      fn.flr();
      steps.push('flr');
    } else {
      dropped.rxDescriptors = 0;
      dropped.commands = 0;
    }
    if (!unsafe.keepContext) {
      this.o.iommu.clearContext(fn.rid);
      this.o.iommu.clearInterruptEntry(fn.vector);
      this.o.iommu.invalidate();
      steps.push('context-cleared');
      if (this.ownedBy(owner).length === 1) this.tables.delete(owner);
    }
    fn.release();
    steps.push('released');
    // An unsafe reclaim leaves bus mastering as it was: the next assign turns it on anyway.
    this.o.logger?.info({ rid, owner, steps }, 'virtual function reclaimed');
    return { rid, owner, steps, dropped };
  }

  /** A domain is going away: reclaim every function it holds. */
  reclaimDomain(domid: number): ReclaimReport[] {
    return this.ownedBy(domid).map((f) => this.reclaim(formatRequesterId(f.rid)));
  }

  stats(): FunctionStats[] {
    return [
      ...this.nics.map((f) => ({ ...f.info(), mac: f.mac, metrics: { ...f.io } })),
      ...this.disks.map((f) => ({ ...f.info(), partition: { ...f.partition }, metrics: { ...f.io } })),
    ];
  }
}
