/**
 * Child process of the transport benchmark (bench/transport.ts): the BACKEND side, in a process
 * of its own, so nothing is shared with the frontend but TCP connections on 127.0.0.1.
 *
 * The parent drives it over the Node IPC channel (never over the measured socket):
 *
 *   → { t: 'ring', secret, mode }      listen (authenticated WsLink, as dom0 does) and serve one
 *                                      netif-tx ring backend on its own copy of the page
 *   → { t: 'raw', ackEvery }           listen (plain `ws`, no auth) and count msgpackr records
 *   ← { t: 'listening', port }
 *   → { t: 'mark' }  ← { t: 'marked' } the measurement window starts
 *   → { t: 'stop' }  ← { t: 'result' } the window ends: what happened in it; the listener closes
 *   ← { t: 'error', message }          something failed (the parent aborts the suite)
 *
 * Ring backend ('one-way' | 'round-trip'). The page is mirrored by PageMirror over `mem.pages`
 * notifications, kicks are `evt` notifications (the topics of shared/transport/domain-link.ts), and
 * a page update arming an event index our producer index already passed gets a late kick (the
 * re-check of ring/mirror.ts). The loop is the runtimes' (docs/ARCHITECTURE.md): asleep until an
 * `evt`, then one pass that copies out and checks every request, answers all of them — in one-way
 * mode only as flow control (rsp_prod advanced, no response bodies, as ring.ts's one-way mode), in
 * round-trip mode with a response each — and publishes them with one push. It arms req_event (the
 * final check) before that push, so the armed index and rsp_prod travel in one page message.
 *
 * Raw baseline. Frames are msgpackr (records) arrays of netif-tx-shaped objects; every record is
 * checked the same way, and every `ackEvery` frames an acknowledgement (records so far) goes back.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr, Unpackr } from 'msgpackr';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  ProtocolError,
  BackRing,
  DL_EVENT,
  DL_PAGES,
  PAGE_SIZE,
  PageMirror,
  RpcPeer,
  applyPageUpdates,
  listen,
  netifTxProtocol,
  type NetifTxRequest,
  type NetifTxResponse,
  type PageUpdate,
  type WsLink,
  type WsServer,
} from '@ringvisor/shared';
import { Slicer } from './ring.worker.js';

/** The ring page's id on the link (domain 1, frame 0), and the port named in `evt` notifications. */
export const PAGE_ID = '1:0';
export const EVT_PORT = 1;
/** The frontend connects as this guest; the backend lets nobody else in. */
export const FRONT_DOMID = 1;

export type RingMode = 'one-way' | 'round-trip';

export type ToPeer = { t: 'ring'; secret: string; mode: RingMode } | { t: 'raw'; ackEvery: number } | { t: 'mark' } | { t: 'stop' };

/** What one end of a ring link did in a window (deltas from `mark` to `stop`). */
export interface LinkCounters {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** `mem.pages` messages sent (one per mirror flush). */
  pageMessages: number;
  eventsSent: number;
  eventsReceived: number;
  /** Kicks sent because a page update armed an event index already passed (ring/mirror.ts). */
  lateWakes: number;
  /** Pushes that had to notify, and pushes whose notification the peer's event index suppressed. */
  notifies: number;
  suppressed: number;
  /** Page updates or events refused (must stay 0). */
  rejected: number;
  /** Passes over the ring (one per event received, in practice). */
  passes: number;
}

export interface PeerResult {
  t: 'result';
  /** Entries consumed in the window: requests taken off the ring, or raw records received. */
  count: number;
  ms: number;
  /** Rate per 50 ms slice of the window (the first slice dropped). */
  slices: number[];
  /** Entries that arrived wrong since the session started (must be 0). */
  errors: number;
  /** CPU time this process used in the window (user + system, µs). */
  cpuUs: number;
  counters: LinkCounters;
}

export function newLinkCounters(): LinkCounters {
  return { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, pageMessages: 0, eventsSent: 0, eventsReceived: 0, lateWakes: 0, notifies: 0, suppressed: 0, rejected: 0, passes: 0 };
}

export function diffCounters(after: LinkCounters, before: LinkCounters): LinkCounters {
  const out = newLinkCounters();
  for (const k of Object.keys(out) as Array<keyof LinkCounters>) out[k] = after[k] - before[k];
  return out;
}

/**
 * The request for sequence number `seq` (a netif tx request: 12 bytes in its slot), written into
 * `into`. The receiver checks every field of every entry against the same function.
 */
export function fillRequest(into: NetifTxRequest, seq: number): NetifTxRequest {
  into.gref = seq >>> 0;
  into.offset = seq & 0xfff;
  into.flags = seq & 0x3;
  into.id = seq & 0xffff;
  into.size = 60 + (seq % 1455);
  return into;
}

export function requestMatches(r: NetifTxRequest, seq: number): boolean {
  return r.gref === seq >>> 0 && r.offset === (seq & 0xfff) && r.flags === (seq & 0x3) && r.id === (seq & 0xffff) && r.size === 60 + (seq % 1455);
}

/** One serving session: a listener and what it counts. */
interface Session {
  port: number;
  /** Entries consumed since the session started. */
  consumed(): number;
  errors(): number;
  counters(): LinkCounters;
  /** Told the running count after every batch consumed, so the window can be sliced. */
  onProgress?: (count: number) => void;
  close(): Promise<void>;
}

// ---- ring backend over an authenticated WsLink ----------------------------------------------

async function ringSession(secretHex: string, mode: RingMode): Promise<Session> {
  const oneWay = mode === 'one-way';
  const c = newLinkCounters();
  let consumed = 0;
  let errors = 0;
  let link: WsLink | undefined;
  let ring: BackRing<NetifTxRequest, NetifTxResponse> | undefined;

  const serve = (l: WsLink): void => {
    if (link) {
      l.close('one frontend per window');
      return;
    }
    link = l;
    const peer = new RpcPeer(l, 'bench back');
    const page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
    const mirror = new PageMirror((updates: PageUpdate[]) => {
      c.pageMessages++;
      peer.notify(DL_PAGES, updates);
    });
    const back = new BackRing<NetifTxRequest, NetifTxResponse>(page, netifTxProtocol, mirror.syncFor(PAGE_ID, page));
    ring = back;
    const rsp: NetifTxResponse = { id: 0, status: 0 };
    const kick = (): void => {
      mirror.flush(); // the event must not overtake the page update it announces
      c.eventsSent++;
      peer.notify(DL_EVENT, { port: EVT_PORT });
    };
    /** One pass: take every request, answer each, arm req_event, publish with one push. */
    const pass = (): void => {
      c.passes++;
      let n = 0;
      do {
        for (let r = back.takeRequest(); r !== undefined; r = back.takeRequest()) {
          if (!requestMatches(r, consumed + n)) errors++;
          if (oneWay) back.rspProdPvt = back.reqCons; // flow control only: the slot is free again
          else {
            rsp.id = r.id;
            back.putResponse(rsp);
          }
          n++;
        }
        // RING_FINAL_CHECK_FOR_REQUESTS before publishing: the armed req_event then rides in the
        // same page message as rsp_prod.
      } while (back.finalCheckForRequests());
      if (n > 0) {
        consumed += n;
        session.onProgress?.(consumed);
        if (back.pushResponses()) kick();
      }
    };
    peer.on(DL_PAGES, (u) => {
      const r = applyPageUpdates(u, (id) => (id === PAGE_ID ? page : undefined));
      c.rejected += r.rejected;
      if (r.lateWakes.length > 0) {
        c.lateWakes++;
        kick();
      }
    });
    peer.on(DL_EVENT, (p) => {
      if ((p as { port?: unknown } | null)?.port !== EVT_PORT) {
        c.rejected++;
        return;
      }
      c.eventsReceived++;
      pass();
    });
  };

  const server: WsServer = await listen({
    port: 0,
    secret: Buffer.from(secretHex, 'hex'),
    authorize: (claim) => claim.role === 'guest' && claim.domid === FRONT_DOMID,
    onConnection: serve,
  });
  const session: Session = {
    port: server.port,
    consumed: () => consumed,
    errors: () => errors,
    counters: () => ({
      ...c,
      framesSent: link?.counters.framesSent ?? 0,
      framesReceived: link?.counters.framesReceived ?? 0,
      bytesSent: link?.counters.bytesSent ?? 0,
      bytesReceived: link?.counters.bytesReceived ?? 0,
      notifies: ring?.stats.notifies ?? 0,
      suppressed: ring?.stats.suppressed ?? 0,
    }),
    close: async () => {
      link?.close('benchmark window over');
      await server.close();
    },
  };
  return session;
}

// ---- raw baseline: plain ws + msgpackr records ------------------------------------------------

async function rawSession(ackEvery: number): Promise<Session> {
  const c = newLinkCounters();
  let received = 0;
  let errors = 0;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((res, rej) => {
    wss.once('listening', res);
    wss.once('error', rej);
  });
  const expect: NetifTxRequest = { gref: 0, offset: 0, flags: 0, id: 0, size: 0 };
  wss.on('connection', (ws: WebSocket) => {
    const packr = new Packr({ useRecords: true });
    const unpackr = new Unpackr({ useRecords: true });
    ws.on('message', (data: Buffer) => {
      c.framesReceived++;
      c.bytesReceived += data.byteLength;
      const recs = unpackr.unpack(data) as NetifTxRequest[];
      for (let i = 0; i < recs.length; i++) {
        const r = recs[i];
        fillRequest(expect, received + i);
        if (r.gref !== expect.gref || r.offset !== expect.offset || r.flags !== expect.flags || r.id !== expect.id || r.size !== expect.size) errors++;
      }
      received += recs.length;
      session.onProgress?.(received);
      if (c.framesReceived % ackEvery === 0) {
        const ack = packr.pack({ ack: received });
        c.framesSent++;
        c.bytesSent += ack.byteLength;
        ws.send(ack, { binary: true });
      }
    });
  });
  const session: Session = {
    port: (wss.address() as { port: number }).port,
    consumed: () => received,
    errors: () => errors,
    counters: () => ({ ...c }),
    close: () =>
      new Promise<void>((res) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close(() => res());
      }),
  };
  return session;
}

// ---- entry ---------------------------------------------------------------------------------

function main(): void {
  const send = (m: unknown): void => {
    process.send?.(m);
  };
  let session: Session | undefined;
  let mark: { at: number; count: number; counters: LinkCounters; cpu: NodeJS.CpuUsage; slicer: Slicer } | undefined;

  const handle = async (m: ToPeer): Promise<void> => {
    switch (m.t) {
      case 'ring':
      case 'raw': {
        await session?.close();
        mark = undefined;
        session = m.t === 'ring' ? await ringSession(m.secret, m.mode) : await rawSession(m.ackEvery);
        send({ t: 'listening', port: session.port });
        break;
      }
      case 'mark': {
        if (!session) throw new ProtocolError('mark without a session');
        const s = session;
        const slicer = new Slicer();
        const base = s.consumed();
        mark = { at: performance.now(), count: base, counters: s.counters(), cpu: process.cpuUsage(), slicer };
        s.onProgress = (count) => slicer.tick(count - base);
        send({ t: 'marked' });
        break;
      }
      case 'stop': {
        if (!session || !mark) throw new ProtocolError('stop without a marked session');
        const s = session;
        const cpu = process.cpuUsage(mark.cpu);
        const result: PeerResult = {
          t: 'result',
          count: s.consumed() - mark.count,
          ms: performance.now() - mark.at,
          slices: mark.slicer.slices,
          errors: s.errors(),
          cpuUs: cpu.user + cpu.system,
          counters: diffCounters(s.counters(), mark.counters),
        };
        s.onProgress = undefined;
        session = undefined;
        mark = undefined;
        send(result);
        await s.close();
        break;
      }
    }
  };
  process.on('message', (m: ToPeer) => {
    handle(m).catch((e: unknown) => send({ t: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) }));
  });
  // The parent went away (or closed the channel): nothing is left to serve.
  process.on('disconnect', () => process.exit(0));
  send({ t: 'ready' });
}

const invoked = process.argv[1] ? resolve(process.argv[1]) : '';
if (invoked === fileURLToPath(import.meta.url) && process.send) main();
