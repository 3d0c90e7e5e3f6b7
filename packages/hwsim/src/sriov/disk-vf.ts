/**
 * DiskVf — a virtual function of the disk controller: a partition of the physical disk (sectors
 * [start, start + sectors) of the image), driven through one hwblk queue in the owner's memory.
 *
 * Requests are the hwblk layout with each segment's domid reserved (0) and its pfn an I/O page
 * number. The function works as a controller with a command queue does: at a doorbell it fetches
 * every request from the ring (each decoded once into a private copy and validated: sectors within
 * the partition, segments within their page), queues the commands, and executes them on its own
 * later turns — DMA through the IOMMU at the moment each transfer happens — answering each with a
 * status and raising its interrupt once per batch. Commands queued in the device are exactly the
 * "DMA still in flight" that makes reclaim need bus-master off and a function-level reset: both
 * drop them before a byte moves.
 */
import {
  errorFields,
  BackRing,
  HW_STATUS_EIO,
  HW_STATUS_OK,
  PAGE_SIZE,
  RogueRingError,
  SECTOR_SIZE,
  VF_REG,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { PhysicalDisk } from '../devices/disk/device.js';
import { locateBit, readPiece, writePiece, type DiskFaultTable } from '../devices/disk/faults.js';
import { hwBlkDeviceProtocol, validateHwBlkRequest, type HwBlkWireRequest } from '../devices/disk/request.js';
import { DmaBlocked, VirtualFunction, type FunctionEnv } from './function.js';

/** Commands executed per turn of the device (the rest wait for the next turn). */
const COMMANDS_PER_TURN = 32;

export interface DiskVfMetrics {
  reads: number;
  writes: number;
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests answered with an error (malformed, outside the partition, DMA blocked, I/O error). */
  errors: number;
  /** Commands fetched and not yet executed. */
  queued: number;
  /** Requests a fault rule of the drive (hw.disk.faults) hit: failed (EIO) or a bit flipped. */
  injected: number;
}

export class DiskVf extends VirtualFunction {
  readonly metrics: DiskVfMetrics = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, errors: 0, queued: 0, injected: 0 };
  /** The partition of the physical disk this function exposes (set by the toolstack at assign). */
  partition = { start: 0, sectors: 0 };
  private ring: BackRing<HwBlkWireRequest, HwStatusResponse> | undefined;
  private commands: HwBlkWireRequest[] = [];
  private turn: NodeJS.Immediate | undefined;

  constructor(
    index: number,
    rid: number,
    env: FunctionEnv,
    private readonly disk: PhysicalDisk,
    /** The drive's fault rules: a function's partition is the same media as the PF's. */
    private readonly faults?: DiskFaultTable,
  ) {
    super('disk', rid, index, env);
  }

  setPartition(start: number, sectors: number): void {
    this.partition = { start, sectors };
    this.describe();
  }

  protected describe(): void {
    this.regs.sectors = BigInt(this.partition?.sectors ?? 0);
  }

  protected attachQueues(): void {
    const { page, sync } = this.ringPage(this.regs.read(VF_REG.Q0));
    this.ring = BackRing.attach(page, hwBlkDeviceProtocol, sync);
  }

  protected resetQueues(): void {
    this.ring = undefined;
    this.commands = [];
    this.metrics.queued = 0;
    if (this.turn) clearImmediate(this.turn);
    this.turn = undefined;
  }

  protected kick(): void {
    this.fetch();
  }

  private fetch(): void {
    const ring = this.ring;
    if (!ring) return;
    try {
      for (let n = 0; n < ring.size; n++) {
        const req = ring.takeRequest();
        if (!req) break;
        this.commands.push(req);
      }
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.stopWithError(e.message);
      return;
    }
    this.metrics.queued = this.commands.length;
    if (this.commands.length > 0 && !this.turn) this.turn = setImmediate(() => this.execute());
  }

  /** One turn of the controller: execute queued commands, answer them, then look for more. */
  private execute(): void {
    this.turn = undefined;
    const ring = this.ring;
    if (!ring) return;
    const batch = this.commands.splice(0, COMMANDS_PER_TURN);
    for (const cmd of batch) ring.putResponse({ id: cmd.id, status: this.run(cmd) });
    this.metrics.queued = this.commands.length;
    if (ring.pushResponses()) this.raise();
    try {
      if (ring.finalCheckForRequests()) this.fetch();
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.stopWithError(e.message);
      return;
    }
    if (this.commands.length > 0 && !this.turn) this.turn = setImmediate(() => this.execute());
  }

  private run(cmd: HwBlkWireRequest): number {
    const m = this.metrics;
    // Each segment's domid is reserved: the IOMMU, not the request, says whose memory it is.
    const check = validateHwBlkRequest(cmd, { diskSectors: this.partition.sectors, reachable: (f) => f.domid === 0 });
    if (!check.ok) {
      m.errors++;
      return check.status;
    }
    // The drive's fault rules, on the image's sectors, decided before any data moves: an
    // injected EIO on a write leaves the medium as it was.
    const fault = this.faults?.match(check.kind, check.kind === 'flush' ? 0 : this.partition.start + check.sector, check.sectors);
    if (fault) m.injected++;
    if (fault?.error === 'eio') {
      m.errors++;
      return HW_STATUS_EIO;
    }
    try {
      // Translate every segment before moving a byte: a request with one blocked segment fails
      // whole, touching neither memory nor the disk.
      const moves = check.transfers.map((t) => {
        const iova = t.frame.pfn * PAGE_SIZE + t.offset;
        return { sector: this.partition.start + t.sector, views: check.kind === 'read' ? this.dmaWriteViews(iova, t.len) : this.dmaRead(iova, t.len) };
      });
      const flip = fault?.error === 'bitflip' ? locateBit(moves.flatMap((mv) => mv.views.map((v) => v.byteLength)), fault.bit) : undefined;
      let piece = 0;
      for (const mv of moves) {
        let sector = mv.sector;
        for (const view of mv.views) {
          const bit = flip?.index === piece++ ? flip.bit : undefined;
          if (check.kind === 'read') readPiece(this.disk, sector, view, bit);
          else writePiece(this.disk, sector, view, bit);
          sector += view.byteLength / SECTOR_SIZE;
        }
      }
      if (check.kind === 'flush') {
        this.disk.flush();
        m.flushes++;
      } else if (check.kind === 'read') {
        m.reads++;
        m.bytesRead += check.sectors * SECTOR_SIZE;
      } else {
        m.writes++;
        m.bytesWritten += check.sectors * SECTOR_SIZE;
      }
      return HW_STATUS_OK;
    } catch (e) {
      if (!(e instanceof DmaBlocked)) this.env.logger?.warn({ vf: this.name, err: errorFields(e) }, 'disk VF I/O failed');
      m.errors++;
      return HW_STATUS_EIO;
    }
  }
}
