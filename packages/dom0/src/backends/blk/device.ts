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
 *
 * Persistence: quiesce() waits for the disk requests in flight; their responses are written to
 * the ring and kept unpushed. save() records the ring's private indices and those responses
 * (state.ts); BlkBackend.restore maps the same ring and carries on from them.
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
  RING_HEADER_SIZE,
  RogueRingError,
  SECTOR_SIZE,
  StateRecordError,
  blkifProtocol,
  loadRecord,
  saveRecord,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
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
import { BLKBACK_STATE, type BlkbackSavedState } from './state.js';

/** What blkback needs of a disk: submit one request naming machine frames; resolves with the device status (0 OK), never rejects. */
export type BlockSubmitter = Pick<PhysicalDiskDriver, 'submit'>;

export interface DiskRegion {
  /** First sector of the vbd on the physical disk. */
  start: number;
  sectors: number;
}

export class BlkBackend extends SplitBackend<BlkbackMetrics> {
  readonly identity: DeviceIdentity;
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
    readonly disk: BlockSubmitter,
    frontDomid: number,
    devid: number,
    readonly region: DiskRegion,
    log: Logger,
  ) {
    super(hv, 'vbd', frontDomid, devid, newBlkbackMetrics(), log);
    this.identity = { kind: 'blk', mode: 'pv', side: 'dom0', type: 'blkback', devid };
  }

  /** Requests served (read, write, flush), their bytes, and every request that failed or was refused. */
  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.reads + m.writes + m.flushes,
      bytes: (m.sectorsRead + m.sectorsWritten) * SECTOR_SIZE,
      errors: m.errors + m.rejected + m.grantFailures,
      detail: { ...m, inFlight: this.inflight, state: this.state },
    };
  }

  protected async drainBacking(): Promise<void> {
    if (this.inflight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
  }

  protected override resumed(): void {
    const ring = this.ring;
    if (ring && ring.rspProdPvt !== ring.page.load(RSP_PROD)) this.notify(ring.pushResponses());
  }

  /** The record of a quiesced backend (state.ts says what it holds and why). */
  save(): DeviceStateRecord {
    const link = this.savedLink();
    const ring = this.ring;
    if (!ring) throw new StateRecordError(`${this.device}: no ring to save`);
    const rspProd = ring.page.load(RSP_PROD);
    const n = (ring.rspProdPvt - rspProd) >>> 0;
    const unpushed = (n === 0 ? [] : this.lastResponses.slice(-n)).map((r) => ({ id: r.id.toString(), operation: r.operation, status: r.status }));
    const state: BlkbackSavedState = {
      ...link,
      sectors: this.region.sectors,
      ring: { ref: this.ringRef, reqCons: ring.reqCons, rspProdPvt: ring.rspProdPvt, rspProd },
      unpushed,
      counters: { ...this.counters },
    };
    return saveRecord(BLKBACK_STATE, `dom${this.frontDomid}/vbd/${this.devid}`, state);
  }

  /**
   * A fresh backend from a saved record, with the same constructor arguments as the saved one
   * (hypervisor, disk, frontend domain, devid, region). The record is checked completely first: a
   * bad one throws StateRecordError and nothing is mapped or bound. It comes back quiesced;
   * resume() pushes the responses the saved one kept and consumes the ring again. Drop the saved
   * instance with abandon().
   */
  static async restore(args: ConstructorParameters<typeof BlkBackend>, record: unknown): Promise<BlkBackend> {
    const [hv, disk, frontDomid, devid, region, log] = args;
    const st = loadRecord(BLKBACK_STATE, record);
    if (st.frontDomid !== frontDomid || st.devid !== devid) throw new StateRecordError(`blkback: the record is of domain ${st.frontDomid} vbd ${st.devid}, not domain ${frontDomid} vbd ${devid}`);
    if (st.sectors !== region.sectors) throw new StateRecordError(`blkback: the record's vbd has ${st.sectors} sectors, the region ${region.sectors}`);
    const b = new BlkBackend(hv, disk, frontDomid, devid, region, log);
    for (const [k, v] of Object.entries(st.counters)) if (k in b.counters) b.counters[k as keyof BlkbackMetrics] = v;
    const { bytes, sync } = b.mapRing(st.ring.ref);
    b.ringRef = st.ring.ref;
    const ring = BackRing.resume(bytes, blkifProtocol, st.ring, sync);
    b.ring = ring;
    b.labelRing(ring as BackRing<unknown, unknown>, 'blk');
    // Our decisions, not the page's bytes: write the kept responses into their slots again.
    const size = ring.size;
    const slot = (i: number) => RING_HEADER_SIZE + (i & (size - 1)) * ring.slot;
    st.unpushed.forEach((r, k) => {
      const off = slot((st.ring.rspProd + k) >>> 0);
      const rsp = { id: BigInt(r.id), operation: r.operation, status: r.status };
      b.lastResponses.push(rsp);
      blkifProtocol.response.encode(ring.page.view, off, rsp);
      ring.page.sync?.wroteBytes(off, blkifProtocol.response.size);
    });
    await b.restoreLink(st);
    return b;
  }

  get ringStats(): BackRing<BlkifRequest, BlkifResponse>['stats'] | undefined {
    return this.ring?.stats;
  }

  protected features(): Record<string, string> {
    return { 'feature-flush-cache': '1', 'feature-barrier': '0', 'max-ring-page-order': '0' };
  }

  /** The frontend's grant reference of the ring page (for save). */
  private ringRef = -1;

  protected async attachRings(): Promise<void> {
    this.ringRef = await this.xb.frontendInt('ring-ref');
    const { bytes, sync } = this.mapRing(this.ringRef);
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
          this.counters.yields++;
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
    this.counters.requests++;
    const p = parseBlkRequest(req, this.region.sectors);
    if (p.kind === 'reject') {
      this.counters.rejected++;
      this.log.debug({ reason: p.reason, id: p.id }, 'request rejected');
      this.respond(p.id, p.operation, p.status);
      return;
    }
    if (p.kind === 'flush') {
      this.counters.flushes++;
      this.inflight++;
      void this.disk.submit({ op: HWBLK_OP_FLUSH, sector: 0n, segments: [] }).then((st) => this.finish(p.id, p.operation, st, []));
      return;
    }
    const maps: GrantMapping[] = [];
    try {
      for (const seg of p.segments) {
        maps.push(this.hv.grants.map(0, this.frontDomid, seg.gref, !p.write));
        this.counters.grantMaps++;
      }
    } catch (e) {
      if (!(e instanceof GrantError)) throw e;
      this.counters.grantFailures++;
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
      this.counters.writes++;
      this.counters.sectorsWritten += p.nsectors;
    } else {
      this.counters.reads++;
      this.counters.sectorsRead += p.nsectors;
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
    if (deviceStatus !== 0) this.counters.errors++;
    // A ring torn down meanwhile (guest gone) gets no response: nobody is there to read it.
    if (answer && this.ring && (this.state === 'connected' || this.state === 'closing')) this.respond(id, operation, deviceStatus === 0 ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR);
    if (this.inflight === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  private unmapAll(maps: GrantMapping[]): void {
    for (const m of maps) {
      this.hv.grants.unmap(0, m.handle);
      this.counters.grantUnmaps++;
    }
  }

  /** The last responses written (at most a ring's worth): save() takes the unpushed ones from here. */
  private readonly lastResponses: BlkifResponse[] = [];

  private respond(id: bigint, operation: number, status: number): void {
    this.ring!.putResponse({ id, operation, status });
    this.lastResponses.push({ id, operation, status });
    if (this.lastResponses.length > this.ring!.size) this.lastResponses.shift();
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      // A quiesced backend keeps its responses private: save() records them, resume() pushes them.
      if (!this.ring || this.quiesced) return;
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
