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
  XenbusState,
  blkifProtocol,
  type BlkifRequest,
  type BlkifResponse,
  type GrantMapping,
  type Logger,
} from '@ringvisor/shared';
import type { Hypervisor } from '../../hypervisor/hypervisor.js';
import type { PhysicalDiskDriver } from '../../drivers/disk.js';
import { XenbusBackend } from '../xenbus-backend.js';
import { newBlkbackMetrics, type BlkbackMetrics } from './metrics.js';
import { parseBlkRequest } from './request.js';

export interface DiskRegion {
  /** First sector of the vbd on the physical disk. */
  start: number;
  sectors: number;
}

export type BlkbackState = 'init' | 'waiting' | 'connected' | 'rogue' | 'closing' | 'closed';

export class BlkBackend {
  readonly xb: XenbusBackend;
  readonly metrics: BlkbackMetrics = newBlkbackMetrics();
  state: BlkbackState = 'init';
  private ring?: BackRing<BlkifRequest, BlkifResponse>;
  private ringMapping?: GrantMapping;
  private port = -1;
  private scheduled = false;
  private flushScheduled = false;
  private inflight = 0;
  private drainWaiters: Array<() => void> = [];
  private readonly log: Logger;

  constructor(
    readonly hv: Hypervisor,
    readonly disk: PhysicalDiskDriver,
    readonly frontDomid: number,
    readonly devid: number,
    readonly region: DiskRegion,
    log: Logger,
  ) {
    this.xb = new XenbusBackend(hv.dom0Store, 'vbd', frontDomid, devid);
    this.log = log.child({ backend: 'vbd', domid: frontDomid, devid });
  }

  get ringStats(): BackRing<BlkifRequest, BlkifResponse>['stats'] | undefined {
    return this.ring?.stats;
  }

  /** Publish features and wait for the frontend (xenbus probe). */
  async start(): Promise<void> {
    const s = this.hv.dom0Store;
    await s.write(`${this.xb.dir}/feature-flush-cache`, '1');
    await s.write(`${this.xb.dir}/feature-barrier`, '0');
    await s.write(`${this.xb.dir}/max-ring-page-order`, '0');
    await this.xb.setState(XenbusState.InitWait);
    this.state = 'waiting';
    await this.xb.watchFrontend((fs) => void this.onFrontendState(fs).catch((e) => this.log.error({ err: e }, 'blkback state change failed')));
  }

  private async onFrontendState(fs: XenbusState): Promise<void> {
    if (fs === XenbusState.Initialised && this.state === 'waiting') await this.connect();
    else if ((fs === XenbusState.Closing || fs === XenbusState.Closed) && (this.state === 'connected' || this.state === 'rogue')) {
      await this.disconnect();
      await this.xb.setState(fs === XenbusState.Closed ? XenbusState.Closed : XenbusState.Closing);
      if (fs === XenbusState.Closing) await this.xb.setState(XenbusState.Closed);
    } else if (fs === XenbusState.Initialising && this.state === 'closed') {
      // The frontend is coming back (reboot or recovery): offer the device again.
      this.state = 'waiting';
      await this.xb.setState(XenbusState.InitWait);
    }
  }

  private async connect(): Promise<void> {
    try {
      const ringRef = await this.xb.frontendInt('ring-ref');
      const evtchn = await this.xb.frontendInt('event-channel');
      this.ringMapping = this.hv.grants.map(0, this.frontDomid, ringRef, true);
      this.metrics.grantMaps++;
      this.ring = BackRing.attach(this.ringMapping.bytes, blkifProtocol, this.ringMapping.sync);
      if (this.ringMapping.sync) this.ringMapping.sync.lateWake = () => this.sendEvent();
      this.port = this.hv.evtchn.bindInterdomain(0, this.frontDomid, evtchn);
      this.hv.dom0Events.on(this.port, () => {
        this.metrics.events++;
        this.kick();
      });
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'frontend handshake rejected');
      this.releaseRing();
      await this.xb.setState(XenbusState.Closed);
      this.state = 'closed';
      return;
    }
    const s = this.hv.dom0Store;
    await s.write(`${this.xb.dir}/sectors`, String(this.region.sectors));
    await s.write(`${this.xb.dir}/sector-size`, String(SECTOR_SIZE));
    await s.write(`${this.xb.dir}/info`, '0');
    this.state = 'connected';
    await this.xb.setState(XenbusState.Connected);
    this.log.debug('connected');
    this.kick();
  }

  /** Schedule one processing pass (idempotent: an event storm schedules it once). */
  kick(): void {
    if (this.scheduled || this.state !== 'connected') return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.process();
    });
  }

  private process(): void {
    const ring = this.ring;
    if (!ring || this.state !== 'connected') return;
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
          this.kick();
          return;
        }
        if (!ring.finalCheckForRequests()) return;
      }
    } catch (e) {
      if (!(e instanceof RogueRingError)) throw e;
      this.state = 'rogue';
      this.metrics.rogue++;
      this.log.warn({ err: e.message }, 'rogue frontend: ring stopped');
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
      void this.disk.submit({ op: HWBLK_OP_FLUSH, sector: 0, segments: [] }).then((st) => this.finish(p.id, p.operation, st, []));
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
    if (p.write) {
      this.metrics.writes++;
      this.metrics.sectorsWritten += p.nsectors;
    } else {
      this.metrics.reads++;
      this.metrics.sectorsRead += p.nsectors;
    }
    this.inflight++;
    void this.disk
      .submit({
        op: p.write ? HWBLK_OP_WRITE : HWBLK_OP_READ,
        sector: this.region.start + p.sector,
        segments: maps.map((m, i) => ({ domid: m.frame.domid, pfn: m.frame.pfn, firstSect: p.segments[i].firstSect, lastSect: p.segments[i].lastSect })),
      })
      .then((st) => this.finish(p.id, p.operation, st, maps));
  }

  private finish(id: number, operation: number, deviceStatus: number, maps: GrantMapping[]): void {
    this.unmapAll(maps);
    this.inflight--;
    if (deviceStatus !== 0) this.metrics.errors++;
    // A ring torn down meanwhile (guest gone) gets no response: nobody is there to read it.
    if (this.ring && (this.state === 'connected' || this.state === 'closing')) this.respond(id, operation, deviceStatus === 0 ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR);
    if (this.inflight === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  private unmapAll(maps: GrantMapping[]): void {
    for (const m of maps) {
      this.hv.grants.unmap(0, m.handle);
      this.metrics.grantUnmaps++;
    }
  }

  private respond(id: number, operation: number, status: number): void {
    this.ring!.putResponse({ id, operation, status });
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      if (!this.ring) return;
      if (this.ring.pushResponses()) this.sendEvent();
      else this.metrics.suppressed++;
      // Responses freed ring slots; the frontend may have queued more meanwhile.
      this.kick();
    });
  }

  private sendEvent(): void {
    if (this.port < 0) return;
    this.hv.dom0Events.send(this.port);
    this.metrics.notifications++;
  }

  /** Stop taking requests, let in-flight ones finish, then release the ring and the channel. */
  async disconnect(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closing';
    if (this.inflight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
    if (this.ring && this.ring.rspProdPvt !== this.ring.page.load(RSP_PROD)) this.ring.pushResponses();
    this.releaseRing();
    this.state = 'closed';
  }

  private releaseRing(): void {
    if (this.port >= 0) {
      this.hv.dom0Events.off(this.port);
      try {
        this.hv.evtchn.close(0, this.port);
      } catch {
        /* the guest may already be gone */
      }
      this.port = -1;
    }
    if (this.ringMapping) {
      try {
        this.hv.grants.unmap(0, this.ringMapping.handle);
        this.metrics.grantUnmaps++;
      } catch {
        /* guest destroyed: its mappings were already dropped */
      }
      this.ringMapping = undefined;
    }
    this.ring = undefined;
  }

  /** The toolstack is removing the device (guest shut down or destroyed). */
  async destroy(): Promise<void> {
    await this.xb.stopWatching();
    await this.disconnect();
  }
}
