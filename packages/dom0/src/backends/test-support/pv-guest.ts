/**
 * Test support for the split-driver backends: a real hypervisor core (event channels, grant
 * authority, store) with one guest domain whose frontend is scripted by the test on the shared
 * primitives (its ring in the guest's memory, its grant table, its event port), and a disk that
 * serves blkback from a real file, holding each request until the test lets it run.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  EventChannelGate,
  FrameAllocator,
  FrontRing,
  GrantTable,
  HWBLK_OP_FLUSH,
  HWBLK_OP_WRITE,
  HW_STATUS_OK,
  LocalStoreClient,
  PAGE_SIZE,
  RSP_PROD,
  SECTOR_SIZE,
  TimeoutError,
  XenbusState,
  backendPath,
  blkifProtocol,
  createLogger,
  frontendPath,
  initSharedRing,
  netifRxProtocol,
  netifTxProtocol,
  readState,
  type BlkifRequest,
  type BlkifResponse,
  type DeviceType,
  type HwBlkRequest,
  type NetifRxRequest,
  type NetifRxResponse,
  type NetifTxRequest,
  type NetifTxResponse,
} from '@ringvisor/shared';
import { Hypervisor, type Domain } from '../../hypervisor/hypervisor.js';
import type { BlockSubmitter } from '../blk/device.js';

export const testLog = createLogger('test', {});

/** A hypervisor and one guest whose frontends the test drives by hand. */
export class PvTestbed {
  readonly hv = new Hypervisor(testLog, 256);
  readonly domain: Domain;
  readonly grants: GrantTable;
  readonly events: EventChannelGate;
  readonly store: LocalStoreClient;
  readonly frames: FrameAllocator;

  constructor() {
    this.hv.dom0Events.start();
    this.domain = this.hv.createDomain('guest', 8);
    this.grants = new GrantTable(this.domain.grantTable, this.domain.domid);
    this.events = new EventChannelGate(this.hv.eventMemory, this.domain.domid);
    this.events.start();
    this.store = new LocalStoreClient(this.hv.store, this.domain.domid);
    this.frames = new FrameAllocator(this.domain.memory);
  }

  get domid(): number {
    return this.domain.domid;
  }

  /** The store nodes the toolstack writes before either half looks (as xl does). */
  async createDevice(type: DeviceType, devid: number, extra: Record<string, string> = {}): Promise<{ fdir: string; bdir: string }> {
    const s = this.hv.dom0Store;
    const fdir = frontendPath(this.domid, type, devid);
    const bdir = backendPath(0, type, this.domid, devid);
    await s.write(`${fdir}/backend`, bdir);
    await s.write(`${fdir}/backend-id`, '0');
    await s.write(`${fdir}/state`, String(XenbusState.Initialising));
    await s.write(`${bdir}/frontend`, fdir);
    await s.write(`${bdir}/frontend-id`, String(this.domid));
    await s.write(`${bdir}/online`, '1');
    await s.write(`${bdir}/state`, String(XenbusState.Initialising));
    for (const [k, v] of Object.entries(extra)) await s.write(`${bdir}/${k}`, v);
    return { fdir, bdir };
  }

  /** Poll the backend's xenbus state until `want` (the store's watch fires asynchronously). */
  async waitBackend(bdir: string, want: XenbusState): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      if ((await readState(this.hv.dom0Store, bdir)) === want) return;
      await new Promise((r) => setImmediate(r));
    }
    throw new TimeoutError(`backend ${bdir} never reached state ${want}`);
  }

  stop(): void {
    this.events.stop();
    this.hv.dom0Events.stop();
  }
}

/** One disk request as the file disk saw it. */
interface HeldIo {
  req: HwBlkRequest;
  resolve: (status: number) => void;
}

/**
 * blkback's disk: a real file. Every request waits until the test releases it (`release`), so
 * a test can hold I/O "in the device" across quiesce; `executions` counts what reached the file.
 */
export class FileDisk implements BlockSubmitter {
  readonly held: HeldIo[] = [];
  /** Writes and reads executed on the file, by first sector. */
  readonly writesAt = new Map<number, number>();
  readonly readsAt = new Map<number, number>();
  executed = 0;
  autoRelease = false;
  private constructor(
    readonly hv: Hypervisor,
    readonly file: FileHandle,
    readonly dir: string,
    readonly sectors: number,
  ) {}

  /** A file of `sectors` sectors, each filled with `initialByte(sector)`. */
  static async create(hv: Hypervisor, sectors: number): Promise<FileDisk> {
    const dir = mkdtempSync(join(tmpdir(), 'rv-blk-persist-'));
    const file = await open(join(dir, 'disk.img'), 'w+');
    const buf = new Uint8Array(sectors * SECTOR_SIZE);
    for (let s = 0; s < sectors; s++) buf.fill(initialByte(s), s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
    await file.write(buf, 0, buf.byteLength, 0);
    return new FileDisk(hv, file, dir, sectors);
  }

  submit(req: Omit<HwBlkRequest, 'id'>): Promise<number> {
    return new Promise((resolve) => {
      this.held.push({ req: { ...req, id: 0 }, resolve });
      if (this.autoRelease) void this.releaseAll();
    });
  }

  /** Run the oldest held request on the file; resolves once blkback has its completion. */
  async releaseOne(): Promise<boolean> {
    const io = this.held.shift();
    if (!io) return false;
    io.resolve(await this.execute(io.req));
    await new Promise((r) => setImmediate(r));
    return true;
  }

  async releaseAll(): Promise<void> {
    while (await this.releaseOne());
  }

  private async execute(req: HwBlkRequest): Promise<number> {
    this.executed++;
    if (req.op === HWBLK_OP_FLUSH) {
      await this.file.sync();
      return HW_STATUS_OK;
    }
    const first = Number(req.sector);
    const count = req.op === HWBLK_OP_WRITE ? this.writesAt : this.readsAt;
    count.set(first, (count.get(first) ?? 0) + 1);
    let sector = first;
    for (const seg of req.segments) {
      const page = this.hv.domains.get(seg.domid)!.memory.page(seg.pfn);
      const bytes = page.subarray(seg.firstSect * SECTOR_SIZE, (seg.lastSect + 1) * SECTOR_SIZE);
      if (req.op === HWBLK_OP_WRITE) await this.file.write(bytes, 0, bytes.byteLength, sector * SECTOR_SIZE);
      else await this.file.read(bytes, 0, bytes.byteLength, sector * SECTOR_SIZE);
      sector += seg.lastSect - seg.firstSect + 1;
    }
    return HW_STATUS_OK;
  }

  async close(): Promise<void> {
    await this.file.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The byte every sector of a fresh FileDisk holds. */
export function initialByte(sector: number): number {
  return (sector * 37 + 11) & 0xff;
}

/** One request of the scripted frontend and how it ended. */
export interface ScriptedBlkRequest {
  id: bigint;
  operation: number;
  sector: number;
  pfn: number;
  gref: number;
  /** WRITE: what was written. READ: filled when the response is collected. */
  data: Uint8Array;
  responses: number;
  status?: number;
}

/**
 * A blkfront reduced to what the test steers: one-page requests with ids it chooses, pushed with
 * the real ring and notified on the real event channel, responses collected only when asked.
 */
export class ScriptedBlkFront {
  readonly ring: FrontRing<BlkifRequest, BlkifResponse>;
  readonly requests = new Map<bigint, ScriptedBlkRequest>();
  /** Responses whose id this frontend never sent (must stay 0). */
  unexpected = 0;
  readonly ringRef: number;
  readonly port: number;
  private nextId = 1n;

  private constructor(
    readonly tb: PvTestbed,
    readonly ringPfn: number,
  ) {
    const page = tb.domain.memory.page(ringPfn);
    page.fill(0);
    initSharedRing(page);
    this.ring = new FrontRing(page, blkifProtocol);
    this.ringRef = tb.grants.grantAccess(0, ringPfn, false);
    this.port = tb.hv.evtchn.allocUnbound(tb.domid, 0);
  }

  /** Handshake with the backend (which must be started): ring-ref, event-channel, Initialised → Connected. */
  static async connect(tb: PvTestbed, fdir: string, bdir: string): Promise<ScriptedBlkFront> {
    await tb.waitBackend(bdir, XenbusState.InitWait);
    const f = new ScriptedBlkFront(tb, tb.frames.alloc());
    await tb.store.write(`${fdir}/ring-ref`, String(f.ringRef));
    await tb.store.write(`${fdir}/event-channel`, String(f.port));
    await tb.store.write(`${fdir}/state`, String(XenbusState.Initialised));
    await tb.waitBackend(bdir, XenbusState.Connected);
    await tb.store.write(`${fdir}/state`, String(XenbusState.Connected));
    return f;
  }

  /** Put one 4 KiB READ or WRITE (8 sectors from `sector`) on the ring, publish it, and kick if needed. */
  submit(operation: typeof BLKIF_OP_READ | typeof BLKIF_OP_WRITE, sector: number, data?: Uint8Array): ScriptedBlkRequest {
    const id = this.nextId++;
    const pfn = this.tb.frames.alloc();
    const page = this.tb.domain.memory.page(pfn);
    const r: ScriptedBlkRequest = { id, operation, sector, pfn, gref: -1, data: data ?? new Uint8Array(PAGE_SIZE), responses: 0 };
    if (operation === BLKIF_OP_WRITE) page.set(r.data);
    else page.fill(0xee);
    r.gref = this.tb.grants.grantAccess(0, pfn, operation === BLKIF_OP_WRITE);
    this.ring.putRequest({ operation, nrSegments: 1, handle: 0, id, sectorNumber: BigInt(sector), segments: [{ gref: r.gref, firstSect: 0, lastSect: 7 }] });
    this.requests.set(id, r);
    if (this.ring.pushRequests()) this.tb.events.send(this.port);
    return r;
  }

  /** Ring slots still free. */
  get room(): number {
    return this.ring.freeRequests();
  }

  /** Collect every published response: count it against its request, copy READ data out. */
  collect(): number {
    let n = 0;
    for (;;) {
      const rsp = this.ring.takeResponse();
      if (!rsp) break;
      n++;
      const r = this.requests.get(rsp.id);
      if (!r) {
        this.unexpected++;
        continue;
      }
      r.responses++;
      r.status = rsp.status;
      if (r.responses === 1) {
        this.tb.grants.endAccess(r.gref);
        if (r.operation === BLKIF_OP_READ) r.data = this.tb.domain.memory.page(r.pfn).slice();
        this.tb.frames.release(r.pfn);
      }
    }
    return n;
  }

  /** Responses published and not collected. */
  get published(): number {
    return (this.ring.page.load(RSP_PROD) - this.ring.rspCons) >>> 0;
  }
}

/**
 * A netfront reduced to what the test steers: tx frames with ids it chooses, rx buffers it posts,
 * responses collected only when asked.
 */
export class ScriptedNetFront {
  readonly tx: FrontRing<NetifTxRequest, NetifTxResponse>;
  readonly rx: FrontRing<NetifRxRequest, NetifRxResponse>;
  readonly refs: { tx: number; rx: number };
  readonly port: number;
  /** tx id → responses seen. */
  readonly txAnswers = new Map<number, number>();
  /** Frames received, in order, with the rx id they came in. */
  readonly received: Array<{ id: number; frame: Uint8Array }> = [];
  private readonly txBufs = new Map<number, { pfn: number; gref: number }>();
  private readonly rxBufs: Array<{ pfn: number; gref: number }> = [];

  private constructor(readonly tb: PvTestbed) {
    const ring = <Req, Rsp>(protocol: typeof netifTxProtocol | typeof netifRxProtocol): { ring: FrontRing<Req, Rsp>; ref: number } => {
      const pfn = tb.frames.alloc();
      const page = tb.domain.memory.page(pfn);
      page.fill(0);
      initSharedRing(page);
      return { ring: new FrontRing(page, protocol as never), ref: tb.grants.grantAccess(0, pfn, false) };
    };
    const t = ring<NetifTxRequest, NetifTxResponse>(netifTxProtocol);
    const r = ring<NetifRxRequest, NetifRxResponse>(netifRxProtocol);
    this.tx = t.ring;
    this.rx = r.ring;
    this.refs = { tx: t.ref, rx: r.ref };
    this.port = tb.hv.evtchn.allocUnbound(tb.domid, 0);
  }

  static async connect(tb: PvTestbed, fdir: string, bdir: string): Promise<ScriptedNetFront> {
    await tb.waitBackend(bdir, XenbusState.InitWait);
    const f = new ScriptedNetFront(tb);
    await tb.store.write(`${fdir}/tx-ring-ref`, String(f.refs.tx));
    await tb.store.write(`${fdir}/rx-ring-ref`, String(f.refs.rx));
    await tb.store.write(`${fdir}/event-channel`, String(f.port));
    await tb.store.write(`${fdir}/request-rx-copy`, '1');
    await tb.store.write(`${fdir}/state`, String(XenbusState.Initialised));
    await tb.waitBackend(bdir, XenbusState.Connected);
    await tb.store.write(`${fdir}/state`, String(XenbusState.Connected));
    return f;
  }

  /** Send one frame under tx id `id`. */
  send(id: number, frame: Uint8Array): void {
    const pfn = this.tb.frames.alloc();
    this.tb.domain.memory.page(pfn).set(frame);
    const gref = this.tb.grants.grantAccess(0, pfn, true);
    this.txBufs.set(id, { pfn, gref });
    this.tx.putRequest({ gref, offset: 0, flags: 0, id, size: frame.byteLength });
    if (this.tx.pushRequests()) this.tb.events.send(this.port);
  }

  /** Post `n` more empty rx buffers. */
  postRx(n: number): void {
    for (let i = 0; i < n; i++) {
      const pfn = this.tb.frames.alloc();
      const gref = this.tb.grants.grantAccess(0, pfn, false);
      const id = this.rxBufs.length;
      this.rxBufs.push({ pfn, gref });
      this.rx.putRequest({ id, gref });
    }
    if (this.rx.pushRequests()) this.tb.events.send(this.port);
  }

  collect(): void {
    for (let rsp = this.tx.takeResponse(); rsp; rsp = this.tx.takeResponse()) this.txAnswers.set(rsp.id, (this.txAnswers.get(rsp.id) ?? 0) + 1);
    for (let rsp = this.rx.takeResponse(); rsp; rsp = this.rx.takeResponse()) {
      const b = this.rxBufs[rsp.id];
      this.received.push({ id: rsp.id, frame: b && rsp.status > 0 ? this.tb.domain.memory.page(b.pfn).slice(rsp.offset, rsp.offset + rsp.status) : new Uint8Array(0) });
    }
  }
}
