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
  StateRecordError,
  loadRecord,
  saveRecord,
  type DeviceMetrics,
  type DeviceStateRecord,
  type HwStatusResponse,
} from '@ringvisor/shared';
import type { PhysicalDisk } from '../devices/disk/device.js';
import { locateBit, readPiece, writePiece, type DiskFaultTable } from '../devices/disk/faults.js';
import { hwBlkDeviceProtocol, validateHwBlkRequest, type HwBlkWireRequest } from '../devices/disk/request.js';
import { DmaBlocked, VirtualFunction, type FunctionEnv } from './function.js';
import { diskVfLayout, type DiskVfState } from './state.js';

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

/** A request slot as the function copied it out, for the record (and back). */
function encodeCommand(cmd: HwBlkWireRequest): Uint8Array {
  const bytes = new Uint8Array(hwBlkDeviceProtocol.request.size);
  hwBlkDeviceProtocol.request.encode(new DataView(bytes.buffer), 0, cmd);
  return bytes;
}

function decodeCommand(bytes: Uint8Array): HwBlkWireRequest {
  return hwBlkDeviceProtocol.request.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
}

export class DiskVf extends VirtualFunction {
  readonly io: DiskVfMetrics = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, errors: 0, queued: 0, injected: 0 };
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
    /** The register page the owner maps (default: a fresh one). */
    bar?: SharedArrayBuffer,
  ) {
    super('disk', rid, index, env, bar);
  }

  /**
   * A fresh function from `args` (the constructor's) carrying on the saved one's I/O: its queue
   * reattached at the record's indices, the commands it had fetched held again, the register page
   * (`args`' bar, if given) showing what the old one showed. Throws StateRecordError for a record
   * that does not check, or that this environment does not match; `args`' bar is then untouched.
   */
  static restore(args: ConstructorParameters<typeof DiskVf>, record: unknown): DiskVf {
    const s = loadRecord(diskVfLayout, record);
    const [index, rid, env, disk, faults, bar] = args;
    if (s.partition.start + s.partition.sectors > disk.sectors)
      throw new StateRecordError(`disk function ${index}: the record's partition ${s.partition.start}+${s.partition.sectors} runs past this disk's ${disk.sectors} sectors`);
    const fn = new DiskVf(index, rid, env, disk, faults);
    fn.partition = { ...s.partition };
    fn.restoreFunction(
      s,
      () => {
        fn.attachQueues();
        VirtualFunction.restoreIndices(fn.ring!, s.queue!, `${fn.name} queue`);
        fn.commands = s.commands.map(decodeCommand);
      },
      bar,
    );
    Object.assign(fn.io, s.io);
    return fn;
  }

  save(): DeviceStateRecord {
    this.requireQuiesced();
    const state: DiskVfState = {
      ...this.saveFunction(),
      partition: { ...this.partition },
      queue: this.ring ? VirtualFunction.queueState(this.regs.read(VF_REG.Q0), this.ring) : null,
      commands: this.commands.map(encodeCommand),
      io: { ...this.io },
    };
    return saveRecord(diskVfLayout, this.instanceName, state);
  }

  metrics(): DeviceMetrics {
    const m = this.io;
    return { ops: m.reads + m.writes + m.flushes, bytes: m.bytesRead + m.bytesWritten, errors: m.errors, detail: { ...m, ...this.counters } };
  }

  protected cancelTurns(): void {
    if (this.turn) clearImmediate(this.turn);
    this.turn = undefined;
  }

  protected serveHeld(): void {
    this.fetch();
    if (this.commands.length > 0 && !this.turn) this.turn = setImmediate(() => this.execute());
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
    this.io.queued = 0;
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
    this.io.queued = this.commands.length;
    if (this.commands.length > 0 && !this.turn) this.turn = setImmediate(() => this.execute());
  }

  /** One turn of the controller: execute queued commands, answer them, then look for more. */
  private execute(): void {
    this.turn = undefined;
    if (this.quiesced) return;
    const ring = this.ring;
    if (!ring) return;
    const batch = this.commands.splice(0, COMMANDS_PER_TURN);
    for (const cmd of batch) ring.putResponse({ id: cmd.id, status: this.run(cmd) });
    this.io.queued = this.commands.length;
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
    const m = this.io;
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
