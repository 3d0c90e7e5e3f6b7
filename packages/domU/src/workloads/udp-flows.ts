/**
 * UDP echo workload over NetStack. A client flow sends numbered, checksummed
 * datagrams, keeps up to `window` of them un-echoed, and classifies what comes back.
 * UDP has no retransmission, so loss only shows as datagrams outstanding too long.
 *
 * Datagram layout (big-endian), `payloadSize` bytes in total:
 *
 *   off  size  field
 *     0     4  magic "RVUF"
 *     4     4  flowId
 *     8     4  seq (0, 1, 2, ...)
 *    12     4  crc32c over bytes 0..11 then 16..end (covers flowId and seq too)
 *    16     *  SplitMix32 stream seeded from (flowId, seq)
 */
import { InvalidArgumentError, LatencySamples, crc32c } from '@ringvisor/shared';
import { MAX_UDP_PAYLOAD, type NetStack, type UdpSource } from '../net/stack.js';
import { mixSeed, SplitMix32 } from '@ringvisor/shared';

export const FLOW_HEADER_SIZE = 16;
const FLOW_MAGIC = 0x52565546; // "RVUF"

function flowCrc(buf: Uint8Array): number {
  return crc32c(buf.subarray(FLOW_HEADER_SIZE), crc32c(buf.subarray(0, 12)));
}

/** Fills `out` (>= 16 bytes) with datagram `seq` of flow `flowId`. */
export function encodeFlowDatagram(out: Uint8Array, flowId: number, seq: number): void {
  if (out.length < FLOW_HEADER_SIZE) throw new InvalidArgumentError(`datagram must be >= ${FLOW_HEADER_SIZE} bytes`);
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  v.setUint32(0, FLOW_MAGIC);
  v.setUint32(4, flowId >>> 0);
  v.setUint32(8, seq >>> 0);
  new SplitMix32(mixSeed(flowId, seq)).fill(out.subarray(FLOW_HEADER_SIZE));
  v.setUint32(12, flowCrc(out));
}

/** The (flowId, seq) of an intact datagram, or null if too short, bad magic or bad crc. */
export function decodeFlowDatagram(buf: Uint8Array): { flowId: number; seq: number } | null {
  if (buf.length < FLOW_HEADER_SIZE) return null;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint32(0) !== FLOW_MAGIC || v.getUint32(12) !== flowCrc(buf)) return null;
  return { flowId: v.getUint32(4), seq: v.getUint32(8) };
}

export interface UdpEchoServerOptions {
  stack: NetStack;
  port: number;
}

export interface UdpEchoServerStats {
  received: number;
  echoed: number;
  /** Echoes the stack refused (sendUdp returned false). */
  refused: number;
  bytes: number;
}

/** Echoes every datagram on `port` back to its sender, unmodified. */
export class UdpEchoServer {
  readonly port: number;
  private readonly stack: NetStack;
  private readonly s: UdpEchoServerStats = { received: 0, echoed: 0, refused: 0, bytes: 0 };

  constructor(opts: UdpEchoServerOptions) {
    this.stack = opts.stack;
    this.port = opts.port;
    this.stack.bindUdp(this.port, (src, payload) => this.onDatagram(src, payload));
  }

  get stats(): UdpEchoServerStats {
    return { ...this.s };
  }

  close(): void {
    this.stack.unbindUdp(this.port);
  }

  private onDatagram(src: UdpSource, payload: Uint8Array): void {
    this.s.received++;
    if (this.stack.sendUdp(src.ip, src.port, this.port, payload)) {
      this.s.echoed++;
      this.s.bytes += payload.length;
    } else {
      this.s.refused++;
    }
  }
}

export interface UdpFlowClientOptions {
  stack: NetStack;
  dstIp: string;
  dstPort: number;
  srcPort: number;
  flowId: number;
  /** Total UDP payload bytes per datagram, header included (16..1472). */
  payloadSize: number;
  /** Maximum un-echoed datagrams outstanding. */
  window: number;
  /**
   * A datagram un-echoed for this long (by tick time) leaves the window and is counted lost
   * (default 1000 ms) — until its echo turns up after all: then it was late, not lost.
   */
  timeoutMs?: number;
  /** Stop after sending this many datagrams (default: unlimited). */
  count?: number;
}

export interface UdpFlowStats {
  sent: number;
  echoed: number;
  lost: number;
  /** Echoes of a datagram that was already echoed. */
  duplicated: number;
  /** Echoes arriving after an echo of a higher seq. */
  reordered: number;
  /** Bad magic/crc/length, another flowId, another peer, or a seq never sent. */
  corrupted: number;
  /**
   * Echoes that came after their datagram's timeout (not counted in echoed). Such a datagram is
   * no longer counted in `lost`: a slow path is slow, not lossy.
   */
  late: number;
  /** Sends the stack refused; the seq is not consumed and sending pauses until the next tick or echo. */
  refused: number;
  outstanding: number;
  bytesSent: number;
  bytesEchoed: number;
  /** Round-trip times of recent echoes (µs; the last RTT_SAMPLES), for percentiles. */
  rttP50Us?: number;
  rttP99Us?: number;
  rttP999Us?: number;
}

/** Echo round trips remembered for percentiles (a ring of the most recent ones). */
const RTT_SAMPLES = 8192;

/** Per-seq states, remembered for the last HISTORY seqs to tell duplicates from late echoes. */
const HISTORY = 1 << 16;
const ST_OUTSTANDING = 1;
const ST_ECHOED = 2;
const ST_LOST = 3;

export class UdpFlowClient {
  readonly flowId: number;
  private readonly stack: NetStack;
  private readonly dstIp: string;
  private readonly dstPort: number;
  private readonly srcPort: number;
  private readonly payloadSize: number;
  private readonly window: number;
  private readonly timeoutMs: number;
  private readonly count: number;
  /** seq -> send time; Map order is send order, so expiry scans from the front. */
  private readonly outstanding = new Map<number, number>();
  /** seq -> performance.now() at send, for round-trip times (tick time is too coarse). */
  private readonly sentAt = new Map<number, number>();
  private readonly rtts = new LatencySamples(RTT_SAMPLES);
  private readonly history = new Uint8Array(HISTORY);
  private nextSeq = 0;
  private highestEchoed = -1;
  private nowMs = 0;
  private closed = false;
  private sending = true;
  private readonly s = {
    sent: 0,
    echoed: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    corrupted: 0,
    late: 0,
    refused: 0,
    bytesSent: 0,
    bytesEchoed: 0,
  };

  constructor(opts: UdpFlowClientOptions) {
    const { payloadSize, window } = opts;
    if (!Number.isInteger(payloadSize) || payloadSize < FLOW_HEADER_SIZE || payloadSize > MAX_UDP_PAYLOAD) {
      throw new InvalidArgumentError(`payloadSize must be ${FLOW_HEADER_SIZE}..${MAX_UDP_PAYLOAD}, got ${payloadSize}`);
    }
    if (!Number.isInteger(window) || window < 1 || window > HISTORY / 2) throw new InvalidArgumentError(`invalid window ${window}`);
    if (!Number.isInteger(opts.flowId) || opts.flowId < 0 || opts.flowId > 0xffffffff) {
      throw new InvalidArgumentError(`invalid flowId ${opts.flowId}`);
    }
    this.stack = opts.stack;
    this.dstIp = opts.dstIp;
    this.dstPort = opts.dstPort;
    this.srcPort = opts.srcPort;
    this.flowId = opts.flowId;
    this.payloadSize = payloadSize;
    this.window = window;
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.count = Math.min(opts.count ?? Infinity, 0x1_0000_0000); // seq is u32
    this.stack.bindUdp(this.srcPort, (src, payload) => this.onDatagram(src, payload));
  }

  get stats(): UdpFlowStats {
    const p = this.rtts.percentiles();
    if (!p) return { ...this.s, outstanding: this.outstanding.size };
    return { ...this.s, outstanding: this.outstanding.size, rttP50Us: p.p50, rttP99Us: p.p99, rttP999Us: p.p999 };
  }

  /** Forget the round trips seen so far (a benchmark's measurement window starts). */
  resetRtt(): void {
    this.rtts.reset();
  }

  /** True once `count` datagrams were sent and none is outstanding. */
  get done(): boolean {
    return this.nextSeq >= this.count && this.outstanding.size === 0;
  }

  /** Advances the flow's clock, expires lost datagrams, then refills the window. */
  tick(nowMs: number): void {
    this.nowMs = Math.max(this.nowMs, nowMs);
    for (const [seq, sentAt] of this.outstanding) {
      if (this.nowMs - sentAt < this.timeoutMs) break;
      this.outstanding.delete(seq);
      this.sentAt.delete(seq);
      this.history[seq % HISTORY] = ST_LOST;
      this.s.lost++;
    }
    this.pump();
  }

  /** Sends until the window is full, `count` is reached or the stack refuses; returns how many were sent. */
  pump(): number {
    let n = 0;
    while (!this.closed && this.sending && this.outstanding.size < this.window && this.nextSeq < this.count) {
      const seq = this.nextSeq;
      const buf = new Uint8Array(this.payloadSize);
      encodeFlowDatagram(buf, this.flowId, seq);
      // Mark outstanding before sending: a synchronous wire may deliver the echo inside sendUdp.
      this.nextSeq++;
      this.outstanding.set(seq, this.nowMs);
      this.sentAt.set(seq, performance.now());
      this.history[seq % HISTORY] = ST_OUTSTANDING;
      if (!this.stack.sendUdp(this.dstIp, this.dstPort, this.srcPort, buf)) {
        this.nextSeq--;
        this.outstanding.delete(seq);
        this.sentAt.delete(seq);
        this.history[seq % HISTORY] = 0;
        this.s.refused++;
        break;
      }
      this.s.sent++;
      this.s.bytesSent += buf.length;
      n++;
    }
    return n;
  }

  /** Stops sending but keeps listening, so echoes still in flight are counted (a drain). */
  stopSending(): void {
    this.sending = false;
  }

  /** Stops sending and unbinds the port; outstanding datagrams are left as they are. */
  close(): void {
    this.closed = true;
    this.stack.unbindUdp(this.srcPort);
  }

  private onDatagram(src: UdpSource, payload: Uint8Array): void {
    const d = decodeFlowDatagram(payload);
    if (
      !d ||
      payload.length !== this.payloadSize ||
      d.flowId !== this.flowId ||
      src.ip !== this.dstIp ||
      src.port !== this.dstPort ||
      d.seq >= this.nextSeq
    ) {
      this.s.corrupted++;
      return;
    }
    const { seq } = d;
    if (this.outstanding.delete(seq)) {
      const t0 = this.sentAt.get(seq);
      this.sentAt.delete(seq);
      if (t0 !== undefined) this.rtts.record((performance.now() - t0) * 1000);
      this.history[seq % HISTORY] = ST_ECHOED;
      this.s.echoed++;
      this.s.bytesEchoed += payload.length;
      if (seq < this.highestEchoed) this.s.reordered++;
      else this.highestEchoed = seq;
      this.pump();
      return;
    }
    // Older than the history window: cannot tell a duplicate from a late echo; call it late.
    const old = this.nextSeq - seq > HISTORY;
    const state = old ? ST_LOST : this.history[seq % HISTORY];
    if (state === ST_ECHOED) {
      this.s.duplicated++;
      return;
    }
    this.s.late++;
    if (!old) {
      // It did come back: late, not lost (a second echo of it will count as a duplicate).
      this.s.lost--;
      this.history[seq % HISTORY] = ST_ECHOED;
    }
  }
}
