/**
 * What the control endpoint serves: one snapshot of the cluster as dom0 sees it, refreshed once
 * a second from counters every mechanism keeps (never from per-entry trace events, so a
 * saturated cluster costs the views nothing extra). `ringvisor list|top|rings`, the dashboard
 * and `/metrics` all read this one shape.
 */

export type RingVerdict = 'BUSY' | 'IDLE' | 'STUCK';

export interface RingRow {
  /** Stable id: "<host>/<domain>/<device>/<ring>", e.g. "host0/guest1/vif0/tx". */
  id: string;
  host: string;
  domid: number;
  domain: string;
  /** "vbd0", "vif0". */
  device: string;
  /** "blk", "tx", "rx". */
  ring: string;
  mode: 'pv' | 'emulated' | 'direct' | 'svio';
  size: number;
  /** Shared indices as the page holds them now. */
  reqProd: number;
  reqEvent: number;
  rspProd: number;
  rspEvent: number;
  /** The backend's private consumer index. */
  reqCons: number;
  /** Requests published and not yet answered (req_prod − rsp_prod). */
  occupancy: number;
  /** Requests published and not yet consumed by the backend. */
  pendingRequests: number;
  requestsPerSec: number;
  responsesPerSec: number;
  /** Totals since the ring was connected. */
  requests: number;
  responses: number;
  verdict: RingVerdict;
  /** Which half did not move while entries waited (xen-ringwatch reports halves). */
  stuck?: 'requests' | 'responses';
  /** Backend paused by an admin (consumer stopped on purpose). */
  paused: boolean;
}

export interface DeviceRow {
  type: 'vbd' | 'vif' | 'cam';
  devid: number;
  /** PV: "vbd51712", "vif0"; emulated: "ata0", "lance0". */
  name: string;
  mode: 'pv' | 'emulated' | 'direct' | 'svio';
  /** Emulated devices: where the model runs — dom0 (Xen HVM / QEMU) or hosted in the guest's VMApp. */
  placement?: 'dom0' | 'hosted';
  /** PV: the backend's state. Emulated: the device model's (Lance running/stopped, ATA idle/busy/pio-in/…; "in VMApp" when hosted). */
  backendState: string;
  /** Xenbus state of the frontend; "-" for an emulated device (no xenbus: the guest probes its ports). */
  frontendState: string;
  /** Event-channel figures of the backend (0 for an emulated device: its I/O is traps, its notifications interrupts). */
  eventsPerSec: number;
  notificationsPerSec: number;
  suppressedPerSec: number;
  events: number;
  notifications: number;
  suppressed: number;
  /**
   * Emulated devices: guest port accesses the model served, each one a trap of the vCPU and two
   * world switches (hosted: those the guest's VMM forwarded to the VMApp).
   */
  traps?: number;
  trapsPerSec?: number;
  /** Emulated devices: interrupts the model raised (virtual IRQ edges sent to the guest). */
  interrupts?: number;
  interruptsPerSec?: number;
  /** Emulated devices: the I/O port ranges the model decodes, e.g. "0x1f0-0x1f7". */
  ports?: string[];
  /**
   * Direct devices: the assigned function's requester id ("00:03.1"); SV-IO devices: "vif <id>".
   * Events are their doorbells, notifications their interrupts (between guest and hardware, not dom0).
   */
  rid?: string;
  /** Direct devices: DMA of the function the IOMMU blocked. */
  dmaFaults?: number;
}

export interface DomainRow {
  host: string;
  domid: number;
  name: string;
  state: string;
  memKiB: number;
  vcpus: number;
  uptimeSec: number;
  /** Share of one CPU the domain's runtime was busy over the last interval (event-loop utilisation). */
  cpuPct: number;
  netTxPackets: number;
  netTxBytes: number;
  netRxPackets: number;
  netRxBytes: number;
  vbdReads: number;
  vbdWrites: number;
  vbdSectorsRead: number;
  vbdSectorsWritten: number;
  /** Events received by this domain's backends (guest → dom0) per second. */
  eventsPerSec: number;
  integrityChecked: number;
  integrityFailures: number;
  /** Guests with emulated devices: every access their device models' side served, including ports no device decodes. */
  traps?: number;
  trapsPerSec?: number;
  devices: DeviceRow[];
  /** The process running the domain (ws transport; dom0's own for domain 0). */
  pid?: number;
  /** A guest whose runtime died unplanned (state "crashed"): how it ended. Its domain is reclaimed. */
  exit?: { code: number | null; signal: string | null };
}

export interface RuntimeRow {
  host: string;
  name: string;
  role: 'dom0' | 'hwsim' | 'guest' | 'switch';
  /** "thread" (threads transport) or "process" (ws). */
  kind: 'thread' | 'process';
  pid?: number;
  state: 'up' | 'down';
}

export interface HostRow {
  name: string;
  transport: 'threads' | 'ws';
  eventsPerSec: number;
  notificationsPerSec: number;
  suppressedPerSec: number;
  trapsPerSec: number;
  worldSwitchesPerSec: number;
  grantOpsPerSec: number;
  /** Guest port accesses served by the host's device models (dom0's ioreq servers and hosted VMApps). */
  traps: number;
  worldSwitches: number;
  grantMaps: number;
  grantUnmaps: number;
  grantCopies: number;
  bytesCopied: number;
}

export interface TimelineEntry {
  t: number;
  kind: string;
  host: string;
  domid: number;
  device?: string;
  text: string;
}

export interface ClusterSnapshot {
  /** Wall-clock ms when taken. */
  time: number;
  uptimeSec: number;
  transport: 'threads' | 'ws';
  hosts: HostRow[];
  runtimes: RuntimeRow[];
  domains: DomainRow[];
  rings: RingRow[];
  /** Newest last; bounded. */
  timeline: TimelineEntry[];
}

/** One ring's latest entries, as the backend took (requests) and wrote (responses) them. */
export interface RingEntries {
  id: string;
  /** The ring protocol: "blkif", "netif-tx", "netif-rx". */
  protocol: string;
  reqProd: number;
  rspProd: number;
  requests: Array<{ index: number } & Record<string, unknown>>;
  responses: Array<{ index: number } & Record<string, unknown>>;
}
