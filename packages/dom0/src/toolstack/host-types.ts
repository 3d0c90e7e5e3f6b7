/**
 * What the toolstack's modules hold about a host's runtimes and domains: a guest's handle, a
 * runtime's exit and crash record, a domain's devices per mode, and the names views give them.
 */
import type { DirectFunctionSpec, GuestStats, Logger, RpcPeer, SvioCreateParams, SvioVifSpec, VfAssignParams } from '@ringvisor/shared';
import type { Domain } from '../hypervisor/hypervisor.js';
import type { BlkBackend } from '../backends/blk/device.js';
import type { NetBackend } from '../backends/net/device.js';
import type { EmulatedPlatform } from '../devicemodels/platform.js';
import type { GuestConfig } from './config.js';
import type { DeviceKind } from './device-kinds.js';

export interface GuestHandle {
  config: GuestConfig;
  domain: Domain;
  /** The guest's control link; set once its runtime connected (at once for a worker). */
  peer?: RpcPeer;
  blk: BlkBackend[];
  net: NetBackend[];
  ready: Promise<void>;
  /** Resolves when the runtime we started is gone (never, for a guest run elsewhere). */
  exited: Promise<number>;
  /** Kill the runtime we started (worker thread or child process, by pid). */
  kill(): Promise<void>;
  pid?: number;
  isReady?: boolean;
  /** Its runtime exited (or its link closed). */
  down?: boolean;
  lastStats?: GuestStats;
  /** How its runtime ended: exit code or signal (a process), code (a worker thread). */
  exit?: RuntimeExit;
  /** The toolstack killed it itself (a fault plan, a reboot): its death was planned. */
  killedByToolstack?: boolean;
}

/** How a runtime ended. */
export interface RuntimeExit {
  code: number | null;
  signal: string | null;
}

/**
 * A runtime that died unplanned (not by the toolstack's hand: kill -9 from outside, an OOM kill,
 * a crash) and what the toolstack did about it — the run summary's `crashes`.
 */
export interface RuntimeCrash {
  host: string;
  runtime: 'hwsim' | 'guest';
  /** "host0/hwsim", or the guest's name. */
  name: string;
  pid?: number;
  exit: RuntimeExit;
  /** When dom0 noticed (ms since the epoch). */
  at: number;
  /** The hardware restarted; the guest's domain reclaimed (grants, ports, rings, functions, VIFs). */
  recovery?: 'restarted' | 'reclaimed' | 'failed';
  /** From noticing to the recovery done. */
  recoveryMs?: number;
  error?: string;
}

/** The hardware simulator's runtime as dom0 holds it. */
export interface HwsimRuntime {
  peer: RpcPeer;
  exited: Promise<number>;
  kill(): Promise<void>;
  pid?: number;
  exit?: RuntimeExit;
  /** The toolstack is taking it down itself (a restart, a kill fault, shutdown). */
  planned?: boolean;
  /** Its death was seen (process exit, thread exit or link closed). */
  gone?: boolean;
}

export interface HostOptions {
  seed: number;
  log: Logger;
  /** Base directory for relative disk paths (default: cwd). */
  baseDir?: string;
  /**
   * Run guests without shared memory: each keeps its own memory and talks to dom0 only through
   * the domain link (mirrored rings, grant leases, routed events) — the ws transport's data path.
   */
  linkedGuests?: boolean;
  /**
   * ws transport: guests are processes that connect to dom0 over authenticated WebSockets.
   * `spawn` false leaves starting them to someone else (docker compose); dom0 waits for them.
   */
  ws?: { secret: Uint8Array; host?: string; port?: number; spawn?: boolean; bin?: string };
  /** Several hosts: this host's physical NIC is cabled to a switch runtime at `url`. */
  lan?: { url: string; secret: Uint8Array; hostIndex: number };
  /** Every guest's IP in the cluster, for UDP peers on other hosts (default: this host's). */
  clusterIps?: Map<string, string>;
}

/** The physical disk as the hardware simulator opens it. */
export interface HardwareDisk {
  path: string;
  sizeBytes: number;
  cache?: 'writethrough' | 'writeback';
}

/** A domain the toolstack created, with its devices by I/O mode (each mode's attacher fills its own). */
export interface CreatedDomain {
  domain: Domain;
  /** pv: its backends. */
  blk: BlkBackend[];
  net: NetBackend[];
  /** direct: the virtual functions assigned to it. */
  direct: AssignedFunction[];
  /** svio: the VIFs bound to it. */
  svio: BoundVif[];
  /** emulated: its ioreq server and device models. */
  platform?: EmulatedPlatform;
}

/** A device function assigned to a domain (direct I/O). */
export interface AssignedFunction {
  kind: 'nic' | 'disk';
  devid: number;
  rid: string;
  /** The guest's end of the doorbell/interrupt channel, and the hardware's. */
  port: number;
  hwPort: number;
  /** threads: the function's register page. */
  bar?: SharedArrayBuffer;
  /** What the hardware was asked (hw.vf.assign), to assign it again after a hardware restart. */
  request: VfAssignParams;
}

/** A VIF as `ringvisor svio list` shows it: the engine's row, and whose device it is. */
export type SvioVifRow = Record<string, unknown> & { vif: number; host: string; domain: string; device: string };

/** An SV-IO VIF bound to a domain. */
export interface BoundVif {
  kind: 'net' | 'blk' | 'cam';
  devid: number;
  vif: number;
  /** The guest's end of the VIF's doorbell/interrupt channel, and the hardware's. */
  port: number;
  hwPort: number;
  /** threads: the VIF's access-API register page. */
  page?: SharedArrayBuffer;
  /** What hw.svio.create was asked (to create it again after a reset or a hardware restart). */
  request: SvioCreateParams;
  /** Destroyed by a reset, not yet created again. */
  down?: boolean;
  /**
   * Bumped each time the VIF goes away (a reset destroys it, the hardware under it dies): a
   * verdict taken across a change would compare two different VIFs.
   */
  generation: number;
}

/** The name a VIF's device has in a guest's config and the views: vif0, vbd51712, cam0. */
export function vifDeviceName(v: { kind: 'net' | 'blk' | 'cam'; devid: number }): string {
  return `${VIF_DEVICE_KIND[v.kind]}${v.devid}`;
}

/** The device kind of a guest's config that each kind of SV-IO VIF serves. */
const VIF_DEVICE_KIND = { net: 'vif', blk: 'vbd', cam: 'cam' } as const satisfies Record<BoundVif['kind'], DeviceKind>;

/** The device kind of a guest's config that each kind of function serves. */
const FUNCTION_DEVICE_KIND = { nic: 'vif', disk: 'vbd' } as const satisfies Record<'nic' | 'disk', DeviceKind>;

/** What the guest is told of a VIF. */
export function vifSpec(b: BoundVif): SvioVifSpec {
  return { kind: b.kind, devid: b.devid, vif: b.vif, port: b.port, ...(b.page ? { page: b.page } : {}) };
}

/** "vif0", "vbd51712": how views and the CLI name a guest's function. */
export function directDeviceName(f: { kind: 'nic' | 'disk'; devid: number }): string {
  return `${FUNCTION_DEVICE_KIND[f.kind]}${f.devid}`;
}

/** What the guest is told of a function assigned to it. */
export function directSpec(f: AssignedFunction): DirectFunctionSpec {
  return { kind: f.kind, devid: f.devid, rid: f.rid, port: f.port, ...(f.bar ? { bar: f.bar } : {}) };
}
