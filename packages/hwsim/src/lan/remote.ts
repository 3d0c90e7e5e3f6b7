/**
 * A LAN cable over a link: a host's hardware simulator and a switch runtime in another thread,
 * process or container exchange Ethernet frames as `lan.frame` notifications (one binary frame
 * per Ethernet frame). Either side dropping the link is a cable pulled: frames stop, counted.
 * Frames leaving a port can be dropped, duplicated, reordered or corrupted on purpose
 * (`setFrameFaults`, see faults.ts) — a lossy LAN for fault injection; heartbeats never are.
 */
import { ControlContract, listen, serveContract, type Logger, RpcPeer, type WsServer } from '@ringvisor/shared';
import { FrameFaulter, newFrameFaultCounters, type FrameFaultCounters, type FrameFaults } from './faults.js';
import type { LanPort } from './lan-port.js';
import { LanSegment } from './segment.js';

export const LAN_FRAME = 'lan.frame';
export const LAN_HEARTBEAT = 'lan.hb';
const MAX_FRAME = 1514;
const HEARTBEAT_MS = 250;
/** No heartbeat for this long: the cable is reported down (carrier lost), until one arrives. */
const CARRIER_TIMEOUT_MS = 1_000;

export interface UplinkState {
  carrier: boolean;
  /** Times the carrier was lost, and the longest outage seen. */
  outages: number;
  longestOutageMs: number;
  dropped: number;
}

/** A host's end of a remote cable (or the switch's end of one). */
export interface RemoteLanPort extends LanPort {
  /** Frames lost because the link was closed, or refused from the wire as malformed. */
  readonly dropped: number;
  readonly state: UplinkState;
  /** Frame faults injected on frames leaving this port so far (cumulative across settings). */
  readonly frameFaults: FrameFaultCounters;
  /** Starts injecting faults on outgoing frames (replacing earlier ones), or stops with undefined. */
  setFrameFaults(faults: FrameFaults | undefined): void;
  /** Stops injecting faults; a frame held back for reordering goes out now. */
  clearFrameFaults(): void;
  close(): void;
}

/**
 * The local end of a cable whose far end is across `peer`. A TCP connection whose path is cut
 * does not fail for minutes, so both ends send heartbeats and each reports the carrier lost when
 * they stop (a partition) and restored when they resume.
 */
export function remoteLanPort(
  peer: RpcPeer,
  name: string,
  log?: Logger,
): RemoteLanPort {
  let dropped = 0;
  const faultCounters = newFrameFaultCounters();
  let faulter: FrameFaulter | undefined;
  const emit = (frame: Uint8Array): void => {
    if (peer.closed) dropped++;
    else peer.notify(LAN_FRAME, frame);
  };
  const setFrameFaults = (faults: FrameFaults | undefined): void => {
    // Validate first: a bad setting throws and leaves the current one in force. All-zero
    // probabilities install nothing, so frames take the plain path again.
    const next = faults === undefined ? undefined : new FrameFaulter(faults, emit, faultCounters);
    faulter?.flush();
    faulter = next?.active ? next : undefined;
  };
  const state: UplinkState = { carrier: true, outages: 0, longestOutageMs: 0, dropped: 0 };
  let lastBeat = performance.now();
  let downSince = 0;
  peer.on(LAN_HEARTBEAT, () => {
    lastBeat = performance.now();
    if (!state.carrier) {
      const ms = Math.round(lastBeat - downSince);
      state.carrier = true;
      state.longestOutageMs = Math.max(state.longestOutageMs, ms);
      log?.warn({ port: name, outageMs: ms }, 'LAN carrier restored');
    }
  });
  const timer = setInterval(() => {
    if (peer.closed) return clearInterval(timer);
    peer.notify(LAN_HEARTBEAT, null);
    const now = performance.now();
    if (state.carrier && now - lastBeat > CARRIER_TIMEOUT_MS) {
      state.carrier = false;
      state.outages++;
      downSince = lastBeat;
      log?.warn({ port: name, silentMs: Math.round(now - lastBeat) }, 'LAN carrier lost (partition?)');
    }
  }, HEARTBEAT_MS);
  timer.unref();
  return {
    name,
    get dropped() {
      return dropped;
    },
    get state() {
      return { ...state, dropped };
    },
    get frameFaults() {
      return { ...faultCounters };
    },
    setFrameFaults,
    clearFrameFaults() {
      setFrameFaults(undefined);
    },
    close() {
      clearInterval(timer);
      dropped += faulter?.discard() ?? 0;
      faulter = undefined;
    },
    send(frame) {
      if (peer.closed) {
        dropped++;
        return;
      }
      if (faulter !== undefined) faulter.apply(frame);
      else peer.notify(LAN_FRAME, frame.slice());
    },
    onFrame(cb) {
      peer.on(LAN_FRAME, (f) => {
        // Frames from the wire are untrusted: only sane Ethernet sizes reach the segment.
        if (f instanceof Uint8Array && f.byteLength >= 14 && f.byteLength <= MAX_FRAME) cb(new Uint8Array(f));
        else dropped++;
      });
    },
  };
}

export interface SwitchRuntime {
  readonly segment: LanSegment;
  readonly server: WsServer;
  close(): Promise<void>;
}

/**
 * The LAN switch runtime: a learning switch whose ports are hosts' uplinks. A host connects as
 * role `hwsim` with its host index as id; one connection per host.
 */
export async function runSwitch(o: { host?: string; port: number; secret: Uint8Array; name?: string; log?: Logger }): Promise<SwitchRuntime> {
  const segment = new LanSegment({ name: o.name ?? 'lan0' });
  const attached = new Set<number>();
  const server = await listen({
    host: o.host ?? '127.0.0.1',
    port: o.port,
    secret: o.secret,
    ...(o.log ? { log: o.log } : {}),
    authorize: (who) => (who.role === 'hwsim' && !attached.has(who.domid)) || (who.role === 'control' && who.domid === 0),
    onConnection: (link, who) => {
      if (who.role === 'control') {
        // Healthchecks: the switch is up; how many hosts are cabled to it.
        serveContract(new RpcPeer(link, 'switch/control'), ControlContract, { ping: () => ({ host: `switch ${segment.name}`, guests: attached.size, ready: attached.size }) });
        return;
      }
      attached.add(who.domid);
      const name = `host${who.domid}`;
      const peer = new RpcPeer(link, `switch/${name}`);
      const port = segment.attach(name);
      const wire = remoteLanPort(peer, name, o.log);
      port.onFrame((f) => wire.send(f));
      wire.onFrame((f) => port.send(f));
      o.log?.info({ port: name }, 'host uplink connected');
      link.onClose((reason) => {
        wire.close();
        attached.delete(who.domid);
        segment.detach(name);
        o.log?.warn({ port: name, reason }, 'host uplink lost');
      });
    },
  });
  return { segment, server, close: () => server.close() };
}
