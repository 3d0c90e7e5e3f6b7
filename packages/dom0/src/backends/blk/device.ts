/**
 * blkback — serves one guest vbd from a region of the one physical disk.
 *
 * Data path of one request: copy the request out of the shared ring once (BackRing.takeRequest),
 * validate the private copy (request.ts), grant-map every segment (writable for READ: the device
 * writes guest memory), submit to the physical disk with the mapped machine frames so the device
 * DMAs straight into the guest's pages, and on completion unmap and queue the response. Responses
 * are published in batches (one push per turn of the event loop) so notifications coalesce.
 *
 * Fairness and bounds: each pass over the ring handles at most one ring's worth of requests, then
 * yields (setImmediate) so every other guest's ring gets its turn; an event storm only re-arms the
 * same scheduled pass. A frontend that publishes impossible indices has its ring stopped.
 */
import {
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  BackRing,
  GrantError,
  HWBLK_OP_FLUSH,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  RSP_PROD,
  RogueRingError,
  SECTOR_SIZE,
  blkifProtocol,
  type BlkifRequest,
  type BlkifResponse,
  type GrantMapping,
  type Logger,
} from '@ringvisor/shared';
import type { Hypervisor } from '../../hypervisor/hypervisor.js';
import type { PhysicalDiskDriver } from '../../physdev/disk.js';
import { SplitBackend } from '../split-backend.js';
import { newBlkbackMetrics, type BlkbackMetrics } from './metrics.js';
import { parseBlkRequest } from './request.js';

export interface DiskRegion {
  /** First sector of the vbd on the physical disk. */
  start: number;
  sectors: number;
}

export class BlkBackend extends SplitBackend<BlkbackMetrics> {
  private ring?: BackRing<BlkifRequest, BlkifResponse>;
  private flushScheduled = false;
  private inflight = 0;
  private drainWaiters: Array<() => void> = [];
  /**
   * Checker self-test only (fault kind `backend.lie`, refused unless RINGVISOR_TEST_FAULTS=1): a
   * broken backend that acknowledges writes without performing them. The campaign's block ledger
   * must catch it.
   */
  lieAboutWrites = false;
  /**
   * Checker self-test only (fault kind `grant.unmap-early`, refused unless RINGVISOR_TEST_FAULTS=1):
   * a broken backend that lets go of a request's grants — and answers it — as soon as it handed
   * the request to the disk, while the device has yet to DMA into (or out of) those pages. The
   * guest then reuses its buffers under the device; the block ledger must catch it.
   */
  unmapEarly = false;

  constructor(
    hv: Hypervisor,
    readonly disk: PhysicalDiskDriver,
    frontDomid: number,
    devid: number,
    readonly region: DiskRegion,
    log: Logger,
  ) {
    super(hv, 'vbd', frontDomid, devid, newBlkbackMetrics(), log);
  }

  get ringStats(): BackRing<BlkifRequest, BlkifResponse>['stats'] | undefined {
    return this.ring?.stats;
  }

  protected features(): Record<string, string> {
    return { 'feature-flush-cache': '1', 'feature-barrier': '0', 'max-ring-page-order': '0' };
  }

  protected async attachRings(): Promise<void> {
    const { bytes, sync } = this.mapRing(await this.xb.frontendInt('ring-ref'));
    this.ring = BackRing.attach(bytes, blkifProtocol, sync);
    this.labelRing(this.ring as BackRing<unknown, unknown>, 'blk');
  }

  rings(): Array<{ name: string; ring: BackRing<unknown, unknown> }> {
    return this.ring ? [{ name: 'blk', ring: this.ring as BackRing<unknown, unknown> }] : [];
  }

  protected override connectedKeys(): Record<string, string> {
    return { sectors: String(this.region.sectors), 'sector-size': String(SECTOR_SIZE), info: '0' };
  }

  /** At most one ring's worth of requests per pass; then yield to the other rings. */
  protected process(): boolean {
    const ring = this.ring;
    if (!ring) return false;
    let budget = ring.size;
    try {
      for (;;) {
        while (budget > 0) {
          const req = ring.takeRequest();
          if (!req) break;
          budget--;
          this.execute(req);
        }
        if (budget === 0) {
          this.metrics.yields++;
          return true;
        }
        if (!ring.finalCheckForRequests()) return false;
      }
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.stopRogue(e.message);
      return false;
    }
  }

  private execute(req: BlkifRequest): void {
    this.metrics.requests++;
    const p = parseBlkRequest(req, this.region.sectors);
    if (p.kind === 'reject') {
      this.metrics.rejected++;
      this.log.debug({ reason: p.reason, id: p.id }, 'request rejected');
      this.respond(p.id, p.operation, p.status);
      return;
    }
    if (p.kind === 'flush') {
      this.metrics.flushes++;
      this.inflight++;
      void this.disk.submit({ op: HWBLK_OP_FLUSH, sector: 0n, segments: [] }).then((st) => this.finish(p.id, p.operation, st, []));
      return;
    }
    const maps: GrantMapping[] = [];
    try {
      for (const seg of p.segments) {
        maps.push(this.hv.grants.map(0, this.frontDomid, seg.gref, !p.write));
        this.metrics.grantMaps++;
      }
    } catch (e) {
      if (!(e instanceof GrantError)) throw e;
      this.metrics.grantFailures++;
      this.unmapAll(maps);
      this.respond(p.id, p.operation, BLKIF_RSP_ERROR);
      return;
    }
    if (p.write && this.lieAboutWrites) {
      this.unmapAll(maps);
      this.respond(p.id, p.operation, BLKIF_RSP_OKAY);
      return;
    }
    if (p.write) {
      this.metrics.writes++;
      this.metrics.sectorsWritten += p.nsectors;
    } else {
      this.metrics.reads++;
      this.metrics.sectorsRead += p.nsectors;
    }
    this.inflight++;
    const done = this.disk.submit({
      op: p.write ? HWBLK_OP_WRITE : HWBLK_OP_READ,
      sector: BigInt(this.region.start + p.sector),
      segments: maps.map((m, i) => ({ domid: m.frame.domid, pfn: m.frame.pfn, firstSect: p.segments[i].firstSect, lastSect: p.segments[i].lastSect })),
    });
    if (this.unmapEarly) {
      // The bug: unmapped and answered while the device still holds the machine frames.
      this.finish(p.id, p.operation, 0, maps);
      this.inflight++;
      void done.then(() => this.finish(-1n, p.operation, 0, [], false));
      return;
    }
    void done.then((st) => this.finish(p.id, p.operation, st, maps));
  }

  private finish(id: bigint, operation: number, deviceStatus: number, maps: GrantMapping[], answer = true): void {
    this.unmapAll(maps);
    this.inflight--;
    if (deviceStatus !== 0) this.metrics.errors++;
    // A ring torn down meanwhile (guest gone) gets no response: nobody is there to read it.
    if (answer && this.ring && (this.state === 'connected' || this.state === 'closing')) this.respond(id, operation, deviceStatus === 0 ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR);
    if (this.inflight === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  private unmapAll(maps: GrantMapping[]): void {
    for (const m of maps) {
      this.hv.grants.unmap(0, m.handle);
      this.metrics.grantUnmaps++;
    }
  }

  private respond(id: bigint, operation: number, status: number): void {
    this.ring!.putResponse({ id, operation, status });
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      if (!this.ring) return;
      this.notify(this.ring.pushResponses());
      // Responses freed ring slots; the frontend may have queued more meanwhile.
      this.kick();
    });
  }

  protected async detachRings(): Promise<void> {
    if (this.inflight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
    if (this.ring && this.ring.rspProdPvt !== this.ring.page.load(RSP_PROD)) this.ring.pushResponses();
    this.ring = undefined;
  }
}
