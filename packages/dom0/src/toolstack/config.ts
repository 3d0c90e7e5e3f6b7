/**
 * Cluster configuration: what `ringvisor up` builds. YAML or JSON, validated against a JSON
 * schema (ajv) so a mistake is reported with its path and what was expected; defaults filled in
 * after validation so the rest of the toolstack sees a complete config.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '@ringvisor/shared';
import { DEVICE_KINDS, checkKindKeys, vbdsOf, vifsOf, type DeviceKind } from './device-kinds.js';
import { IO_MODES, MODE_CONFIG_KEYS } from './attach/modes.js';

export { guestIp, guestMac } from './device-kinds.js';

/**
 * How the guest reaches a device: `pv` a Xen split driver (frontend ↔ backend over a shared ring),
 * `emulated` a real device's registers (Lance NIC, ATA disk) trapped to a device model, `direct`
 * a virtual function of the physical NIC or disk assigned to the guest behind the IOMMU, `svio`
 * a virtual interface of the self-virtualizing device (two message queues, processed by the
 * device's own cores).
 */
export type DeviceModeConfig = 'pv' | 'emulated' | 'direct' | 'svio';

/**
 * Where an emulated device's model runs: in dom0 (Xen HVM / QEMU), or `hosted` in a per-guest
 * VMApp behind a VMM in the guest's world (VMware Workstation). One placement per guest.
 */
export type EmulationPlacement = 'dom0' | 'hosted';

export interface VbdConfig {
  type: 'vbd';
  devid: number;
  mode: DeviceModeConfig;
  /** Direct only: `passthrough` leaves the function's DMA untranslated (bare-metal baseline; unsafe). */
  iommu?: 'on' | 'passthrough';
  /** SV-IO only: the VIF's QoS share (1..1000, default 100). */
  weight?: number;
  /** SV-IO only: the VIF's credit limit `bytes,usec` on the guest's requests; absent = unlimited. */
  rate?: string;
  /** Emulated only. */
  placement?: EmulationPlacement;
  sizeMiB: number;
}

export interface VifConfig {
  type: 'vif';
  devid: number;
  mode: DeviceModeConfig;
  /** Direct only: `passthrough` leaves the function's DMA untranslated (bare-metal baseline; unsafe). */
  iommu?: 'on' | 'passthrough';
  /** SV-IO only: the VIF's QoS share (1..1000, default 100). */
  weight?: number;
  /** Emulated only. */
  placement?: EmulationPlacement;
  /**
   * Hosted only: the VMM handles RAP and status reads itself (vmmIo), and queues transmit
   * demands until the next switch or 3 of them (sendCombining) — Sugerman et al.'s optimisations.
   */
  vmmIo?: boolean;
  sendCombining?: boolean;
  mac: string;
  ip: string;
  /** Credit limit `bytes,usec` on transmit (netback's, or the SV-IO VIF's); absent = unlimited. */
  rate?: string;
}

/** A camera: SV-IO only (a camera VIF of the self-virtualizing device). */
export interface CamConfig {
  type: 'cam';
  devid: number;
  mode: 'svio';
  width: number;
  height: number;
  fps: number;
  weight?: number;
}

export type DeviceConfig = VbdConfig | VifConfig | CamConfig;

export interface BlockWorkloadConfig {
  /** 4 KiB blocks of the vbd to exercise (from block 0). */
  blocks: number;
  queueDepth: number;
}

/**
 * A benchmark's block load (fio-like; bench/): all reads or all writes of `blockKiB`, random or
 * sequential over the first `regionMiB` of the guest's first vbd, `queueDepth` in flight. It
 * checks nothing (the block workload is the verifier).
 */
export interface IoWorkloadConfig {
  op: 'read' | 'write';
  pattern: 'random' | 'sequential';
  blockKiB: number;
  queueDepth: number;
  regionMiB: number;
}

export interface UdpWorkloadConfig {
  /**
   * Guest names to stream to (on any host of this config), or IPv4 addresses (guests of hosts
   * configured elsewhere); 'all' = every other guest with a vif in this config.
   */
  peers: string[] | 'all';
  payloadBytes: number;
  window: number;
  /** `echo` (default): verified round trips; `stream`: one-way to each peer's discard sink. */
  mode?: 'echo' | 'stream';
  /** stream: datagrams per second per peer (0 or absent: as fast as the NIC takes them). */
  ratePps?: number;
}

export interface GuestConfig {
  name: string;
  memoryMiB: number;
  devices: DeviceConfig[];
  workloads: { block?: BlockWorkloadConfig; io?: IoWorkloadConfig; udp?: UdpWorkloadConfig };
}

export interface HostConfig {
  name: string;
  index: number;
  /**
   * The physical disk. `cache: writeback` gives it a volatile write cache (acknowledged writes are
   * durable only once a flush covered them; a power loss tears and drops the rest — disk.torn);
   * default writethrough.
   */
  disk: { path: string; sizeMiB: number; cache?: 'writethrough' | 'writeback' };
  nic: { mac: string };
  dom0MemoryMiB: number;
  /** SV-IO engine cores (worker threads of the hardware simulator), default 2. */
  svio: { cores: number };
  guests: GuestConfig[];
}

export interface ClusterConfig {
  seed: number;
  hosts: HostConfig[];
}

const MAC = '^([0-9a-f]{2}:){5}[0-9a-f]{2}$';
const IPV4 = '^(\\d{1,3}\\.){3}\\d{1,3}$';
const NAME = '^[A-Za-z0-9_.-]{1,64}$';
const IPV4_RE = new RegExp(IPV4);

const schema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    seed: { type: 'integer', minimum: 0 },
    hosts: {
      type: 'array',
      minItems: 1,
      maxItems: 8,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['guests'],
        properties: {
          name: { type: 'string', pattern: NAME },
          /** Numbers this host's default MACs and IPs (198.18.<index>.x); default: its position. */
          index: { type: 'integer', minimum: 0, maximum: 255 },
          disk: {
            type: 'object',
            additionalProperties: false,
            properties: { path: { type: 'string', minLength: 1 }, sizeMiB: { type: 'integer', minimum: 1, maximum: 1048576 }, cache: { enum: ['writethrough', 'writeback'] } },
          },
          nic: { type: 'object', additionalProperties: false, properties: { mac: { type: 'string', pattern: MAC } } },
          dom0MemoryMiB: { type: 'integer', minimum: 8, maximum: 4096 },
          /** The self-virtualizing device's cores (SV-IO engine worker threads). */
          svio: { type: 'object', additionalProperties: false, properties: { cores: { type: 'integer', minimum: 1, maximum: 16 } } },
          guests: {
            type: 'array',
            maxItems: 64,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['name'],
              properties: {
                name: { type: 'string', pattern: NAME },
                memoryMiB: { type: 'integer', minimum: 4, maximum: 4096 },
                devices: {
                  type: 'array',
                  maxItems: 8,
                  items: {
                    type: 'object',
                    required: ['type'],
                    additionalProperties: false,
                    properties: {
                      type: { enum: Object.keys(DEVICE_KINDS) },
                      width: { type: 'integer', minimum: 1, maximum: 1920 },
                      height: { type: 'integer', minimum: 1, maximum: 1080 },
                      fps: { type: 'integer', minimum: 1, maximum: 240 },
                      devid: { type: 'integer', minimum: 0, maximum: 65535 },
                      mode: { enum: Object.keys(IO_MODES) },
                      weight: { type: 'integer', minimum: 1, maximum: 1000 },
                      placement: { enum: ['dom0', 'hosted'] },
                      vmmIo: { type: 'boolean' },
                      sendCombining: { type: 'boolean' },
                      sizeMiB: { type: 'integer', minimum: 1, maximum: 1048576 },
                      mac: { type: 'string', pattern: MAC },
                      ip: { type: 'string', pattern: IPV4 },
                      rate: { type: 'string', pattern: '^\\d+,\\d+$' },
                      iommu: { enum: ['on', 'passthrough'] },
                    },
                  },
                },
                workloads: {
                  type: 'object',
                  additionalProperties: false,
                  properties: {
                    block: {
                      type: 'object',
                      additionalProperties: false,
                      properties: { blocks: { type: 'integer', minimum: 1 }, queueDepth: { type: 'integer', minimum: 1, maximum: 64 } },
                    },
                    io: {
                      type: 'object',
                      additionalProperties: false,
                      properties: {
                        op: { enum: ['read', 'write'] },
                        pattern: { enum: ['random', 'sequential'] },
                        blockKiB: { type: 'integer', minimum: 1, maximum: 64 },
                        queueDepth: { type: 'integer', minimum: 1, maximum: 64 },
                        regionMiB: { type: 'integer', minimum: 1 },
                      },
                    },
                    udp: {
                      type: 'object',
                      additionalProperties: false,
                      properties: {
                        peers: { anyOf: [{ const: 'all' }, { type: 'array', items: { anyOf: [{ type: 'string', pattern: NAME }, { type: 'string', pattern: IPV4 }] } }] },
                        payloadBytes: { type: 'integer', minimum: 16, maximum: 1400 },
                        window: { type: 'integer', minimum: 1, maximum: 256 },
                        mode: { enum: ['echo', 'stream'] },
                        ratePps: { type: 'integer', minimum: 0, maximum: 1000000 },
                      },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
  required: ['hosts'],
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validate = ajv.compile(schema);

export function describeSchemaErrors(errors: ErrorObject[]): string {
  return errors
    .slice(0, 8)
    .map((e) => {
      const where = e.instancePath || '(top level)';
      if (e.keyword === 'additionalProperties') return `${where}: unknown key "${(e.params as { additionalProperty: string }).additionalProperty}"`;
      if (e.keyword === 'enum') return `${where}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`;
      return `${where}: ${e.message}`;
    })
    .join('\n  ');
}

type RawObject = Record<string, unknown>;

/** Options for completing a config. */
export interface NormalizeOptions {
  /**
   * Where a host's disk image goes when the config names no `disk.path`: `<diskDir>/<host>/disk.img`.
   * The CLI passes the config's own state directory (toolstack/state.ts), so two configs never
   * share an image; default `.ringvisor`.
   */
  diskDir?: string;
}

/** One device of a guest: its kind's and its mode's keys checked, their defaults filled in. */
function normalizeDevice(d: RawObject, nth: number, at: { origin: string; gname: string; hostIndex: number; guestIndex: number; seen: Set<string> }): DeviceConfig {
  const kind = DEVICE_KINDS[d.type as DeviceKind];
  const devid = (d.devid as number | undefined) ?? kind.defaultDevid(nth);
  const key = `${kind.kind}/${devid}`;
  const guestWhere = `${at.origin}: guest ${at.gname}`;
  const where = `${guestWhere} ${key}`;
  if (at.seen.has(key)) throw new ConfigError(`${guestWhere} has two ${key} devices; give each a distinct devid`);
  at.seen.add(key);
  const mode = (d.mode as DeviceModeConfig | undefined) ?? kind.defaultMode;
  const io = IO_MODES[mode];
  if (!io.kinds.includes(kind.kind)) throw new ConfigError(kind.unsupportedMode(where, mode));
  checkKindKeys(kind.kind, d, guestWhere, where, MODE_CONFIG_KEYS.map((k) => k.key));
  for (const k of MODE_CONFIG_KEYS) if (k.key in d && !io.keys.includes(k)) throw new ConfigError(k.refuse(where, mode));
  const draft = { raw: d, kind: kind.kind, devid, mode, guestWhere, where, hostIndex: at.hostIndex, guestIndex: at.guestIndex };
  return { type: kind.kind, devid, mode, ...io.complete(draft), ...kind.complete(draft) } as DeviceConfig;
}

/** A guest's workloads with their defaults (without a workloads key a guest exercises every device it has). */
function normalizeWorkloads(g: RawObject, devices: DeviceConfig[]): GuestConfig['workloads'] {
  const w = (g.workloads as RawObject | undefined) ?? (Object.fromEntries(devices.flatMap((d) => { const wl = DEVICE_KINDS[d.type].defaultWorkload; return wl ? [[wl, {}] as const] : []; })) as RawObject);
  const b = w.block as RawObject | undefined;
  const io = w.io as RawObject | undefined;
  const u = w.udp as RawObject | undefined;
  const firstVbd = vbdsOf(devices)[0];
  const blockDefaults = (firstVbd && IO_MODES[firstVbd.mode].blockWorkloadDefaults) || { blocks: 256, queueDepth: 8 };
  return {
    ...(b ? { block: { blocks: (b.blocks as number | undefined) ?? blockDefaults.blocks, queueDepth: (b.queueDepth as number | undefined) ?? blockDefaults.queueDepth } } : {}),
    ...(io
      ? {
          io: {
            op: (io.op as 'read' | 'write' | undefined) ?? 'read',
            pattern: (io.pattern as 'random' | 'sequential' | undefined) ?? 'random',
            blockKiB: (io.blockKiB as number | undefined) ?? 4,
            queueDepth: (io.queueDepth as number | undefined) ?? 8,
            regionMiB: (io.regionMiB as number | undefined) ?? firstVbd?.sizeMiB ?? 1,
          },
        }
      : {}),
    ...(u
      ? {
          udp: {
            peers: (u.peers as string[] | 'all' | undefined) ?? 'all',
            payloadBytes: (u.payloadBytes as number | undefined) ?? 512,
            window: (u.window as number | undefined) ?? 16,
            ...(u.mode === 'stream' ? { mode: 'stream' as const, ratePps: (u.ratePps as number | undefined) ?? 0 } : {}),
          },
        }
      : {}),
  };
}

/** A guest's workloads fit its devices (and its udp peers are guests of the cluster). */
function checkWorkloads(g: GuestConfig, origin: string, allNames: ReadonlySet<string>): void {
  const vbd = vbdsOf(g.devices)[0];
  if (g.workloads.block && !vbd) throw new ConfigError(`${origin}: guest ${g.name} runs a block workload but has no vbd`);
  if (g.workloads.block && vbd && g.workloads.block.blocks * 8 > vbd.sizeMiB * 2048)
    throw new ConfigError(`${origin}: guest ${g.name} block workload uses ${g.workloads.block.blocks} blocks but its vbd holds ${vbd.sizeMiB * 256}`);
  const io = g.workloads.io;
  if (io && !vbd) throw new ConfigError(`${origin}: guest ${g.name} runs an io workload but has no vbd`);
  if (io && g.workloads.block) throw new ConfigError(`${origin}: guest ${g.name}: the io workload (a benchmark load) and the block workload (the verifier) would share its first vbd; give it one of them`);
  if (io && vbd && io.regionMiB > vbd.sizeMiB) throw new ConfigError(`${origin}: guest ${g.name} io workload covers ${io.regionMiB} MiB but its vbd holds ${vbd.sizeMiB}`);
  const udp = g.workloads.udp;
  if (udp && vifsOf(g.devices).length === 0) throw new ConfigError(`${origin}: guest ${g.name} runs a udp workload but has no vif`);
  if (udp && Array.isArray(udp.peers))
    for (const p of udp.peers) if (!IPV4_RE.test(p) && (!allNames.has(p) || p === g.name)) throw new ConfigError(`${origin}: guest ${g.name} udp peer "${p}" is not another guest of the cluster`);
}

/** One guest: its devices (each kind counted for default ids), the per-mode rules over them, its workloads. */
function normalizeGuest(g: RawObject, gi: number, hostIndex: number, origin: string): GuestConfig {
  const gname = g.name as string;
  const devs = (g.devices as RawObject[] | undefined) ?? [{ type: 'vbd' }, { type: 'vif' }];
  const seen = new Set<string>();
  // Default device ids count per type, as xl numbers them: xvda, xvdb… (51712 + 16n), vif0, vif1…
  const perKind = new Map<string, number>();
  const devices = devs.map((d) => {
    const nth = perKind.get(d.type as string) ?? 0;
    perKind.set(d.type as string, nth + 1);
    return normalizeDevice(d, nth, { origin, gname, hostIndex, guestIndex: gi, seen });
  });
  for (const m of Object.values(IO_MODES)) m.checkGuest?.(devices, `${origin}: guest ${gname}`);
  return { name: gname, memoryMiB: (g.memoryMiB as number | undefined) ?? 32, devices, workloads: normalizeWorkloads(g, devices) };
}

/** Validate and complete a parsed config object. */
export function normalizeConfig(raw: unknown, origin = 'config', opts: NormalizeOptions = {}): ClusterConfig {
  const diskDir = opts.diskDir ?? '.ringvisor';
  if (!validate(raw)) throw new ConfigError(`${origin} is invalid:\n  ${describeSchemaErrors(validate.errors ?? [])}`);
  const r = raw as unknown as RawObject;
  const allNames = new Set<string>();
  for (const h of r.hosts as RawObject[])
    for (const g of h.guests as RawObject[]) {
      if (allNames.has(g.name as string)) throw new ConfigError(`${origin}: guest name "${g.name as string}" appears twice; names must be unique in the cluster`);
      allNames.add(g.name as string);
    }
  const hostNames = new Set<string>();
  const hosts = (r.hosts as RawObject[]).map((h, position): HostConfig => {
    const hi = (h.index as number | undefined) ?? position;
    const name = (h.name as string | undefined) ?? `host${hi}`;
    if (hostNames.has(name)) throw new ConfigError(`${origin}: host name "${name}" appears twice`);
    hostNames.add(name);
    const guests = (h.guests as RawObject[]).map((g, gi) => normalizeGuest(g, gi, hi, origin));
    for (const g of guests) checkWorkloads(g, origin, allNames);
    const vbdMiB = vbdsOf(guests.flatMap((g) => g.devices)).reduce((a, d) => a + d.sizeMiB, 0);
    const disk = (h.disk as RawObject | undefined) ?? {};
    const sizeMiB = (disk.sizeMiB as number | undefined) ?? Math.max(64, vbdMiB);
    if (vbdMiB > sizeMiB) throw new ConfigError(`${origin}: host ${name}'s guests need ${vbdMiB} MiB of vbds but its disk is ${sizeMiB} MiB`);
    return {
      name,
      index: hi,
      disk: { path: (disk.path as string | undefined) ?? `${diskDir}/${name}/disk.img`, sizeMiB, ...(disk.cache === 'writeback' ? { cache: 'writeback' as const } : {}) },
      nic: { mac: ((h.nic as RawObject | undefined)?.mac as string | undefined) ?? `00:16:3e:${hi.toString(16).padStart(2, '0')}:00:00` },
      dom0MemoryMiB: (h.dom0MemoryMiB as number | undefined) ?? 16,
      svio: { cores: ((h.svio as RawObject | undefined)?.cores as number | undefined) ?? 2 },
      guests,
    };
  });
  return { seed: (r.seed as number | undefined) ?? 1, hosts };
}

export function loadConfigFile(path: string, opts: NormalizeOptions = {}): ClusterConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  return normalizeConfig(raw, path, opts);
}

/**
 * The embedded default: one host, three PV guests (a vbd, a vif, block and UDP workloads each),
 * a fourth whose NIC is an emulated Lance and whose disk an emulated ATA drive, and a fifth
 * assigned a NIC function and a disk function (direct I/O), so `npm start` shows the three
 * designs side by side. The emulated guest's models run in dom0 in the threads transport; over ws
 * (no memory shared with dom0) they run hosted, in a VMApp inside the guest's process.
 */
export function defaultConfig(o: { transport?: 'threads' | 'ws'; emulatedGuest?: boolean; directGuest?: boolean } & NormalizeOptions = {}): ClusterConfig {
  const pv = ['guest1', 'guest2', 'guest3'].map((name) => ({ name, workloads: { block: {}, udp: {} } }));
  const placement = o.transport === 'ws' ? 'hosted' : 'dom0';
  const emulated = {
    name: 'guest4',
    devices: [
      { type: 'vbd', mode: 'emulated', placement, sizeMiB: 4 },
      { type: 'vif', mode: 'emulated', placement, ...(placement === 'hosted' ? { vmmIo: true, sendCombining: true } : {}) },
    ],
    workloads: { block: {}, udp: {} },
  };
  const direct = {
    name: 'guest5',
    devices: [
      { type: 'vbd', mode: 'direct', sizeMiB: 16 },
      { type: 'vif', mode: 'direct' },
    ],
    workloads: { block: {}, udp: {} },
  };
  const guests = [...pv, ...(o.emulatedGuest === false ? [] : [emulated]), ...(o.directGuest === false ? [] : [direct])];
  return normalizeConfig({ hosts: [{ name: 'host0', guests }] }, 'default config', o.diskDir ? { diskDir: o.diskDir } : {});
}
