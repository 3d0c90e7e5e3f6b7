/**
 * One-way UDP traffic for measuring a NIC path in one direction: a sender streams checksummed
 * flow datagrams (udp-flows.ts layout) to a peer's discard port, and every guest runs a sink on
 * that port that verifies and counts what arrives. No echoes: the sender's NIC only transmits
 * and the sink's only receives (ARP aside).
 *
 * Pacing: `ratePps` > 0 sends at that rate (one datagram at a time, so each can get its own
 * interrupt: the uncoalesced cost); 0 saturates — each 1 ms tick offers datagrams until the stack
 * refuses (the NIC's ring and queue are full) or `burst` were sent.
 */
import type { NetStack, UdpSource } from '../net/stack.js';
import { FLOW_HEADER_SIZE, decodeFlowDatagram, encodeFlowDatagram } from './udp-flows.js';
import { InvalidArgumentError } from '@ringvisor/shared';

/** The discard service (RFC 863). */
export const DISCARD_PORT = 9;

export interface UdpSinkStats {
  received: number;
  bytes: number;
  /** Datagrams that failed the checksum, were truncated or were not flow datagrams. */
  corrupted: number;
  /** Gaps in a flow's sequence numbers (datagrams that did not arrive, or not yet). */
  gaps: number;
}

export class UdpSink {
  private readonly s: UdpSinkStats = { received: 0, bytes: 0, corrupted: 0, gaps: 0 };
  private readonly next = new Map<number, number>();

  constructor(private readonly stack: NetStack) {
    stack.bindUdp(DISCARD_PORT, (src, payload) => this.onDatagram(src, payload));
  }

  get stats(): UdpSinkStats {
    return { ...this.s };
  }

  close(): void {
    this.stack.unbindUdp(DISCARD_PORT);
  }

  private onDatagram(_src: UdpSource, payload: Uint8Array): void {
    const d = decodeFlowDatagram(payload);
    if (!d) {
      this.s.corrupted++;
      return;
    }
    this.s.received++;
    this.s.bytes += payload.length;
    const expected = this.next.get(d.flowId) ?? 0;
    if (d.seq > expected) this.s.gaps += d.seq - expected;
    if (d.seq >= expected) this.next.set(d.flowId, d.seq + 1);
  }
}

export interface UdpStreamStats {
  sent: number;
  bytes: number;
  /** Offers the stack refused (NIC ring and queue full): the sender backs off until the next tick. */
  refused: number;
}

export class UdpStreamSender {
  private readonly s: UdpStreamStats = { sent: 0, bytes: 0, refused: 0 };
  private seq = 0;
  private timer?: NodeJS.Timeout;
  private credit = 0;
  private last = performance.now();

  constructor(
    private readonly o: { stack: NetStack; dstIp: string; srcPort: number; flowId: number; payloadSize: number; ratePps: number; burst: number },
  ) {
    if (o.payloadSize < FLOW_HEADER_SIZE) throw new InvalidArgumentError(`payloadSize must be >= ${FLOW_HEADER_SIZE}`);
  }

  get stats(): UdpStreamStats {
    return { ...this.s };
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(), 1);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const now = performance.now();
    let budget = this.o.burst;
    if (this.o.ratePps > 0) {
      this.credit = Math.min(this.credit + ((now - this.last) * this.o.ratePps) / 1000, this.o.burst);
      budget = Math.floor(this.credit);
    }
    this.last = now;
    for (let i = 0; i < budget; i++) {
      const buf = new Uint8Array(this.o.payloadSize);
      encodeFlowDatagram(buf, this.o.flowId, this.seq);
      if (!this.o.stack.sendUdp(this.o.dstIp, DISCARD_PORT, this.o.srcPort, buf)) {
        this.s.refused++;
        break;
      }
      this.seq++;
      this.s.sent++;
      this.s.bytes += buf.length;
      if (this.o.ratePps > 0) this.credit--;
    }
  }
}
