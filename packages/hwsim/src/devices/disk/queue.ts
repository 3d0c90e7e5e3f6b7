/**
 * DiskQueue — the drive's hwblk host-interface queue (the BackRing end; dom0's driver owns the
 * FrontRing and initialised the page).
 *
 * Each doorbell runs QueueService passes (bounded by the ring size, final check, IRQ only when
 * the driver asked). Each request's private copy is validated (request.ts); a bad one is answered
 * HW_STATUS_EIO (malformed) or HW_STATUS_ENOTSUP (unknown op) and the queue carries on. A good
 * one is executed: READ preads straight into DMA views of the guest pages, WRITE pwrites straight
 * from them, FLUSH fsyncs. An I/O or DMA failure mid-request (e.g. memory detached after
 * validation) fails that request with EIO.
 *
 * Fault injection (faults.ts) sits between validation and the data transfer: a request the
 * table hits with eio is answered HW_STATUS_EIO before any byte moves (a write leaves the image
 * untouched); a bitflip lets it succeed with one bit wrong — flipped in guest memory after a
 * READ's pread, or in a private copy of the data before a WRITE's pwrite (the guest's own buffer
 * stays intact, as with a drive that corrupts on the way to the medium).
 */
import {
  errorFields,
  BackRing,
  DOMID_HW,
  HW_STATUS_EIO,
  HW_STATUS_ENOTSUP,
  HW_STATUS_OK,
  SECTOR_SIZE,
  traceChannel,
  traceNow,
  type HwStatusResponse,
  type Logger,
  type MachineFrame,
  type TraceEvent,
} from '@ringvisor/shared';
import type { DmaEngine } from '../../dma/dma-engine.js';
import { QueueService, type QueueStats } from '../queue-service.js';
import type { PhysicalDisk } from './device.js';
import { locateBit, readPiece, writePiece, type DiskFaultHit, type DiskFaultTable } from './faults.js';
import type { DiskMetrics } from './metrics.js';
import { hwBlkDeviceProtocol, validateHwBlkRequest, type BlkOpKind, type HwBlkWireRequest } from './request.js';

const faultChannel = traceChannel('fault');

export interface DiskQueueOptions {
  disk: PhysicalDisk;
  dma: DmaEngine;
  /** The queue page (dom0 memory), reached through the DMA engine. */
  ring: MachineFrame;
  /** Raise the disk's interrupt. */
  irq: () => void;
  metrics: DiskMetrics;
  /** Fault rules to apply to every validated request (absent: none). */
  faults?: DiskFaultTable;
  logger?: Logger;
}

export class DiskQueue {
  readonly ringFrame: MachineFrame;
  private readonly service: QueueService<HwBlkWireRequest, HwStatusResponse>;

  constructor(private readonly options: DiskQueueOptions) {
    this.ringFrame = { ...options.ring };
    // Across a link: if the driver armed its event index behind responses already pushed, interrupt.
    const { page, sync } = options.dma.ringPage(options.ring, () => options.irq());
    const ring = BackRing.attach(page, hwBlkDeviceProtocol, sync);
    this.service = new QueueService({
      ring,
      handle: (req) => ({ id: req.id, status: this.execute(req) }),
      irq: options.irq,
      onRogue: (e) => options.logger?.warn({ err: errorFields(e), ring: this.ringFrame }, 'disk queue stopped: rogue driver'),
    });
  }

  /** The doorbell (dom0 wrote the queue's MMIO kick register). */
  kick(): void {
    this.service.kick();
  }

  stop(reason: string): void {
    this.service.stop(reason);
  }

  get stopped(): boolean {
    return this.service.stopped;
  }

  get stopReason(): string | undefined {
    return this.service.stopReason;
  }

  stats(): QueueStats & { stopped: boolean; stopReason: string | null } {
    return { ...this.service.stats, stopped: this.stopped, stopReason: this.stopReason ?? null };
  }

  private execute(req: HwBlkWireRequest): number {
    const { disk, dma, metrics, faults, logger } = this.options;
    const check = validateHwBlkRequest(req, { diskSectors: disk.sectors, reachable: (f) => dma.reachable(f) });
    if (!check.ok) {
      if (check.status === HW_STATUS_ENOTSUP) metrics.errors.enotsup++;
      else metrics.errors.eio++;
      logger?.debug({ id: req.id, reason: check.reason }, 'disk request rejected');
      return check.status;
    }
    // Decided before any data moves, so an injected EIO on a write leaves the disk as it was.
    const fault = faults && faults.size > 0 ? faults.match(check.kind, check.sector, check.sectors) : undefined;
    if (fault) this.injected(req.id, check.kind, check.sector, check.sectors, fault);
    if (fault?.error === 'eio') {
      metrics.errors.eio++;
      return HW_STATUS_EIO;
    }
    const flip = fault?.error === 'bitflip' ? locateBit(check.transfers.map((t) => t.len), fault.bit) : undefined;
    try {
      switch (check.kind) {
        case 'read':
          check.transfers.forEach((t, i) => readPiece(disk, t.sector, dma.writeView(t.frame, t.offset, t.len), flip?.index === i ? flip.bit : undefined));
          metrics.ops.read++;
          metrics.sectorsRead += check.sectors;
          metrics.bytesRead += check.sectors * SECTOR_SIZE;
          break;
        case 'write':
          check.transfers.forEach((t, i) => writePiece(disk, t.sector, dma.read(t.frame, t.offset, t.len), flip?.index === i ? flip.bit : undefined));
          metrics.ops.write++;
          metrics.sectorsWritten += check.sectors;
          metrics.bytesWritten += check.sectors * SECTOR_SIZE;
          break;
        case 'flush':
          disk.flush();
          metrics.ops.flush++;
          break;
      }
      return HW_STATUS_OK;
    } catch (e) {
      metrics.errors.eio++;
      metrics.errors.io++;
      logger?.warn({ id: req.id, op: check.kind, err: errorFields(e) }, 'disk I/O failed');
      return HW_STATUS_EIO;
    }
  }

  /** Count, log and trace a fault rule that fired (before its effect is applied). */
  private injected(id: number, op: BlkOpKind, sector: number, sectors: number, fault: DiskFaultHit): void {
    const { dma, metrics, logger } = this.options;
    metrics.injected[fault.error]++;
    const bit = fault.error === 'bitflip' ? fault.bit : undefined;
    logger?.debug({ id, op, sector, sectors, rule: fault.rule.id, error: fault.error, bit }, 'disk fault injected');
    if (faultChannel.hasSubscribers) {
      const detail: Record<string, unknown> = { rule: fault.rule.id, error: fault.error, op, sector, sectors, request: id };
      if (bit !== undefined) detail.bit = bit;
      const event: TraceEvent = { kind: 'fault', t: traceNow(), host: dma.traceHost, domid: DOMID_HW, device: 'disk0', fault: `disk.${fault.error}`, detail };
      faultChannel.publish(event);
    }
  }
}
