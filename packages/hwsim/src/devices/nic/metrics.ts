/** NIC counters, named after the usual `ip -s link` / ethtool ones. Plain JSON. */
export interface NicMetrics {
  txPackets: number;
  txBytes: number;
  /** tx requests refused: bad length, buffer outside its page, frame unreachable by DMA. */
  txErrors: number;
  /** tx requests answered with an error because the link was down. */
  txDropped: number;
  rxPackets: number;
  rxBytes: number;
  /** Frames lost because no rx buffer was posted and the backlog was full (or no rx queue). */
  rxMissed: number;
  /** Frames dropped because the link was down (including a backlog flushed by link down/detach). */
  rxDropped: number;
  /** Bad rx buffers returned with an error, plus over/undersized frames from the wire. */
  rxErrors: number;
  /** Frames waiting for rx buffers right now, and the most ever waiting. */
  rxBacklog: number;
  rxBacklogPeak: number;
  /** Doorbells rung by the driver (plus the sweep made when queues are attached). */
  doorbells: number;
  irqs: number;
}

export function newNicMetrics(): NicMetrics {
  return {
    txPackets: 0,
    txBytes: 0,
    txErrors: 0,
    txDropped: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxMissed: 0,
    rxDropped: 0,
    rxErrors: 0,
    rxBacklog: 0,
    rxBacklogPeak: 0,
    doorbells: 0,
    irqs: 0,
  };
}
