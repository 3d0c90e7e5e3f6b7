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
 */
import {
  BackRing,
  HW_STATUS_EIO,
  HW_STATUS_ENOTSUP,
  HW_STATUS_OK,
  SECTOR_SIZE,
  type HwStatusResponse,
  type Logger,
  type MachineFrame,
} from '@ringvisor/shared';
import type { DmaEngine } from '../../dma/dma-engine.js';
import { QueueService, type QueueStats } from '../queue-service.js';
import type { PhysicalDisk } from './device.js';
import type { DiskMetrics } from './metrics.js';
import { hwBlkDeviceProtocol, validateHwBlkRequest, type HwBlkWireRequest } from './request.js';

export interface DiskQueueOptions {
  disk: PhysicalDisk;
  dma: DmaEngine;
  /** The queue page (dom0 memory), reached through the DMA engine. */
  ring: MachineFrame;
  /** Raise the disk's interrupt. */
  irq: () => void;
  metrics: DiskMetrics;
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
      onRogue: (e) => options.logger?.warn({ err: e.message, ring: this.ringFrame }, 'disk queue stopped: rogue driver'),
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
    const { disk, dma, metrics, logger } = this.options;
    const check = validateHwBlkRequest(req, { diskSectors: disk.sectors, reachable: (f) => dma.reachable(f) });
    if (!check.ok) {
      if (check.status === HW_STATUS_ENOTSUP) metrics.errors.enotsup++;
      else metrics.errors.eio++;
      logger?.debug({ id: req.id, reason: check.reason }, 'disk request rejected');
      return check.status;
    }
    try {
      switch (check.kind) {
        case 'read':
          for (const t of check.transfers) disk.readSectors(t.sector, dma.writeView(t.frame, t.offset, t.len));
          metrics.ops.read++;
          metrics.sectorsRead += check.sectors;
          metrics.bytesRead += check.sectors * SECTOR_SIZE;
          break;
        case 'write':
          for (const t of check.transfers) disk.writeSectors(t.sector, dma.read(t.frame, t.offset, t.len));
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
      logger?.warn({ id: req.id, op: check.kind, err: (e as Error).message }, 'disk I/O failed');
      return HW_STATUS_EIO;
    }
  }
}
