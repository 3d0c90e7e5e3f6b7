/**
 * Test support for the split-driver frontends: a real GuestKernel whose hypercalls (event
 * channels, store) are served in this thread from the shared primitives — event-channel and
 * grant authorities, the store — and backends scripted by the test on a real BackRing mapped
 * through the grant authority, with a real file as the disk. The test decides when the backend
 * takes requests, when each finishes, and when responses are pushed.
 */
import { MessageChannel } from 'node:worker_threads';
import { open, type FileHandle } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_WRITE,
  BLKIF_RSP_OKAY,
  BackRing,
  EventChannelAuthority,
  EventChannelGate,
  GrantAuthority,
  GuestMemory,
  LocalStoreClient,
  PortLink,
  RpcPeer,
  SECTOR_SIZE,
  Store,
  TimeoutError,
  XenbusState,
  backendPath,
  blkifProtocol,
  createEventMemory,
  createGrantTableMemory,
  createLogger,
  frontendPath,
  netifRxProtocol,
  netifTxProtocol,
  readState,
  switchState,
  type BlkifRequest,
  type BlkifResponse,
  type DeviceType,
  type GrantMapping,
  type NetifRxRequest,
  type NetifRxResponse,
  type NetifTxRequest,
  type NetifTxResponse,
} from '@ringvisor/shared';
import { GuestKernel } from '../../kernel/kernel.js';

const log = createLogger('test', {});
const GUEST = 1;

/** The hypervisor side in this thread, and one guest kernel talking to it by hypercalls. */
export class PvHost {
  readonly eventMemory = createEventMemory();
  readonly evtchn = new EventChannelAuthority(this.eventMemory);
  readonly grants = new GrantAuthority();
  readonly store = new Store();
  readonly dom0Store = new LocalStoreClient(this.store, 0);
  readonly dom0Events = new EventChannelGate(this.eventMemory, 0);
  readonly memory = GuestMemory.allocate(GUEST, 2048);
  readonly grantTable = createGrantTableMemory();
  readonly kernel: GuestKernel;
  private readonly channel = new MessageChannel();

  constructor() {
    this.evtchn.createDomain(0);
    this.evtchn.createDomain(GUEST);
    this.grants.registerDomain(0, GuestMemory.allocate(0, 16), createGrantTableMemory());
    this.grants.registerDomain(GUEST, this.memory, this.grantTable);
    this.dom0Events.start();
    const server = new RpcPeer(new PortLink(this.channel.port1), 'hv');
    const p = (x: unknown) => x as Record<string, never>;
    const s = this.store;
    server
      .handle('evtchn.allocUnbound', (x) => this.evtchn.allocUnbound(GUEST, p(x).remoteDom))
      .handle('evtchn.close', (x) => this.evtchn.close(GUEST, p(x).port))
      .handle('store.read', (x) => s.read(GUEST, p(x).path, p(x).tx))
      .handle('store.tryRead', (x) => s.tryRead(GUEST, p(x).path, p(x).tx) ?? null)
      .handle('store.write', (x) => s.write(GUEST, p(x).path, p(x).value, p(x).tx))
      .handle('store.directory', (x) => s.directory(GUEST, p(x).path, p(x).tx))
      .handle('store.watch', (x) => s.watch(GUEST, p(x).path, p(x).token, (changed) => server.notify('store.watch', { token: p(x).token, path: changed })))
      .handle('store.unwatch', (x) => s.unwatch(GUEST, p(x).path, p(x).token))
      .handle('store.txStart', () => s.transactionStart(GUEST))
      .handle('store.txEnd', (x) => s.transactionEnd(GUEST, p(x).tx, (x as { commit?: boolean }).commit === true));
    this.kernel = new GuestKernel({
      domid: GUEST,
      memory: this.memory.buffer,
      grantTable: this.grantTable,
      eventMemory: this.eventMemory,
      hypercalls: new RpcPeer(new PortLink(this.channel.port2), 'guest'),
      log,
    });
  }

  /** The store nodes the toolstack writes before either half looks (as xl does). */
  async createDevice(type: DeviceType, devid: number, extra: Record<string, string> = {}): Promise<{ fdir: string; bdir: string }> {
    const s = this.dom0Store;
    const fdir = frontendPath(GUEST, type, devid);
    const bdir = backendPath(0, type, GUEST, devid);
    await s.write(`${fdir}/backend`, bdir);
    await s.write(`${fdir}/backend-id`, '0');
    await s.write(`${fdir}/state`, String(XenbusState.Initialising));
    await s.write(`${bdir}/frontend`, fdir);
    await s.write(`${bdir}/frontend-id`, String(GUEST));
    await s.write(`${bdir}/state`, String(XenbusState.Initialising));
    for (const [k, v] of Object.entries(extra)) {
      await s.write(`${bdir}/${k}`, v);
      await s.write(`${fdir}/${k}`, v);
    }
    return { fdir, bdir };
  }

  async waitFrontend(fdir: string, want: XenbusState): Promise<void> {
    for (let i = 0; i < 5000; i++) {
      if ((await readState(this.dom0Store, fdir)) === want) return;
      await new Promise((r) => setTimeout(r, 1));
    }
    throw new TimeoutError(`frontend ${fdir} never reached state ${want}`);
  }

  stop(): void {
    this.kernel.shutdown();
    this.dom0Events.stop();
    this.channel.port1.close();
    this.channel.port2.close();
  }
}

/** Common xenbus part of the scripted backends: InitWait, wait for Initialised, map, Connected. */
abstract class ScriptedBackend {
  port = -1;
  protected readonly maps: GrantMapping[] = [];

  constructor(
    readonly host: PvHost,
    readonly fdir: string,
    readonly bdir: string,
  ) {}

  protected async handshake(connectedKeys: Record<string, string>): Promise<void> {
    const s = this.host.dom0Store;
    await switchState(s, this.bdir, XenbusState.InitWait);
    await this.host.waitFrontend(this.fdir, XenbusState.Initialised);
    await this.attach();
    this.port = this.host.evtchn.bindInterdomain(0, GUEST, Number(await s.read(`${this.fdir}/event-channel`)));
    for (const [k, v] of Object.entries(connectedKeys)) await s.write(`${this.bdir}/${k}`, v);
    await switchState(s, this.bdir, XenbusState.Connected);
  }

  protected abstract attach(): Promise<void>;

  protected mapRing(ref: number): Uint8Array {
    const m = this.host.grants.map(0, GUEST, ref, true);
    this.maps.push(m);
    return m.bytes;
  }

  protected notify(needed: boolean): void {
    if (needed) this.host.dom0Events.send(this.port);
  }
}

/** blkback reduced to what a test steers, serving a real file. */
export class ScriptedBlkBack extends ScriptedBackend {
  ring!: BackRing<BlkifRequest, BlkifResponse>;
  /** Taken off the ring, not finished. */
  readonly taken: BlkifRequest[] = [];
  /** Executions at the file, by request id (decimal). */
  readonly executions = new Map<string, number>();
  private constructor(
    host: PvHost,
    fdir: string,
    bdir: string,
    readonly file: FileHandle,
    readonly dir: string,
    readonly sectors: number,
  ) {
    super(host, fdir, bdir);
  }

  /** A backend on a fresh file of `sectors` sectors filled by `initial(sector)`, handshaking as the frontend connects. */
  static async start(host: PvHost, fdir: string, bdir: string, sectors: number, initial: (sector: number) => number): Promise<{ back: ScriptedBlkBack; connected: Promise<void> }> {
    const dir = mkdtempSync(join(tmpdir(), 'rv-blkfront-persist-'));
    const file = await open(join(dir, 'disk.img'), 'w+');
    const buf = new Uint8Array(sectors * SECTOR_SIZE);
    for (let s = 0; s < sectors; s++) buf.fill(initial(s), s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
    await file.write(buf, 0, buf.byteLength, 0);
    const back = new ScriptedBlkBack(host, fdir, bdir, file, dir, sectors);
    const connected = back.handshake({ sectors: String(sectors), 'sector-size': String(SECTOR_SIZE) });
    return { back, connected };
  }

  protected async attach(): Promise<void> {
    this.ring = BackRing.attach(this.mapRing(Number(await this.host.dom0Store.read(`${this.fdir}/ring-ref`))), blkifProtocol);
  }

  /** Requests published and not taken. */
  get unconsumed(): number {
    return (this.ring.page.load(0) - this.ring.reqCons) >>> 0;
  }

  /** Take up to `n` requests off the ring (copies; nothing executed yet). */
  take(n = Infinity): number {
    let k = 0;
    while (k < n) {
      const req = this.ring.takeRequest();
      if (!req) break;
      this.taken.push(req);
      k++;
    }
    return k;
  }

  /** Execute the oldest `n` taken requests on the file and write their responses (not pushed). */
  async complete(n = Infinity): Promise<number> {
    let k = 0;
    while (k < n && this.taken.length > 0) {
      const req = this.taken.shift()!;
      const key = req.id.toString();
      this.executions.set(key, (this.executions.get(key) ?? 0) + 1);
      let sector = Number(req.sectorNumber);
      if (req.operation !== BLKIF_OP_FLUSH_DISKCACHE) {
        for (const seg of req.segments) {
          const m = this.host.grants.map(0, GUEST, seg.gref, req.operation !== BLKIF_OP_WRITE);
          const bytes = m.bytes.subarray(seg.firstSect * SECTOR_SIZE, (seg.lastSect + 1) * SECTOR_SIZE);
          if (req.operation === BLKIF_OP_WRITE) await this.file.write(bytes, 0, bytes.byteLength, sector * SECTOR_SIZE);
          else await this.file.read(bytes, 0, bytes.byteLength, sector * SECTOR_SIZE);
          this.host.grants.unmap(0, m.handle);
          sector += seg.lastSect - seg.firstSect + 1;
        }
      }
      this.ring.putResponse({ id: req.id, operation: req.operation, status: BLKIF_RSP_OKAY });
      k++;
    }
    return k;
  }

  /** Publish the written responses, notifying the frontend if its event index says so. */
  push(): void {
    this.notify(this.ring.pushResponses());
  }

  /** Take, finish and push everything, until the ring is empty. */
  async drain(): Promise<void> {
    this.take();
    await this.complete();
    this.push();
  }

  async close(): Promise<void> {
    await this.file.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** netback reduced to what a test steers: tx frames land in `sent`, rx frames go into posted buffers. */
export class ScriptedNetBack extends ScriptedBackend {
  tx!: BackRing<NetifTxRequest, NetifTxResponse>;
  rx!: BackRing<NetifRxRequest, NetifRxResponse>;
  /** Frames the frontend transmitted, in the order the backend took them. */
  readonly sent: Uint8Array[] = [];

  static start(host: PvHost, fdir: string, bdir: string): { back: ScriptedNetBack; connected: Promise<void> } {
    const back = new ScriptedNetBack(host, fdir, bdir);
    return { back, connected: back.handshake({}) };
  }

  protected async attach(): Promise<void> {
    const s = this.host.dom0Store;
    this.tx = BackRing.attach(this.mapRing(Number(await s.read(`${this.fdir}/tx-ring-ref`))), netifTxProtocol);
    this.rx = BackRing.attach(this.mapRing(Number(await s.read(`${this.fdir}/rx-ring-ref`))), netifRxProtocol);
  }

  /** Take up to `n` tx requests, copy their frames out, answer them (not pushed). */
  takeTx(n = Infinity): number {
    let k = 0;
    while (k < n) {
      const req = this.tx.takeRequest();
      if (!req) break;
      const m = this.host.grants.map(0, GUEST, req.gref, false);
      this.sent.push(m.bytes.slice(req.offset, req.offset + req.size));
      this.host.grants.unmap(0, m.handle);
      this.tx.putResponse({ id: req.id, status: 0 });
      k++;
    }
    return k;
  }

  /** Put `frame` into the next posted rx buffer; false if none is posted. */
  deliver(frame: Uint8Array): boolean {
    const req = this.rx.takeRequest();
    if (!req) return false;
    const m = this.host.grants.map(0, GUEST, req.gref, true);
    m.bytes.set(frame);
    this.host.grants.unmap(0, m.handle);
    this.rx.putResponse({ id: req.id, offset: 0, flags: 0, status: frame.byteLength });
    return true;
  }

  push(): void {
    const a = this.tx.pushResponses();
    const b = this.rx.pushResponses();
    this.notify(a || b);
  }
}
