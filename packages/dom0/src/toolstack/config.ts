/**
 * Cluster configuration: what `ringvisor up` builds. YAML or JSON, validated against a JSON
 * schema (ajv) so a mistake is reported with its path and what was expected; defaults filled in
 * after validation so the rest of the toolstack sees a complete config.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { ConfigError, parseRate } from '@ringvisor/shared';

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
                      type: { enum: ['vbd', 'vif', 'cam'] },
                      width: { type: 'integer', minimum: 1, maximum: 1920 },
                      height: { type: 'integer', minimum: 1, maximum: 1080 },
                      fps: { type: 'integer', minimum: 1, maximum: 240 },
                      devid: { type: 'integer', minimum: 0, maximum: 65535 },
                      mode: { enum: ['pv', 'emulated', 'direct', 'svio'] },
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

/** Fixed, documented addressing: MACs in Xen's 00:16:3e OUI, IPs in the RFC 2544 benchmark range. */
export function guestMac(hostIndex: number, guestIndex: number, devid: number): string {
  const h = (n: number) => n.toString(16).padStart(2, '0');
  return `00:16:3e:${h(hostIndex)}:${h(guestIndex + 1)}:${h(devid)}`;
}

export function guestIp(hostIndex: number, guestIndex: number): string {
  return `198.18.${hostIndex}.${guestIndex + 10}`;
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
    const guestsRaw = h.guests as RawObject[];
    const names = new Set<string>();
    const guests = guestsRaw.map((g, gi): GuestConfig => {
      const gname = g.name as string;
      names.add(gname);
      const devs = (g.devices as RawObject[] | undefined) ?? [{ type: 'vbd' }, { type: 'vif' }];
      const seen = new Set<string>();
      // Default device ids count per type, as xl numbers them: xvda, xvdb… (51712 + 16n), vif0, vif1…
      const perType = { vbd: 0, vif: 0, cam: 0 };
      const devices = devs.map((d): DeviceConfig => {
        const nth = perType[d.type as 'vbd' | 'vif' | 'cam']++;
        const devid = (d.devid as number | undefined) ?? (d.type === 'vbd' ? 51712 + nth * 16 : nth);
        const key = `${String(d.type)}/${devid}`;
        if (seen.has(key)) throw new ConfigError(`${origin}: guest ${gname} has two ${key} devices; give each a distinct devid`);
        seen.add(key);
        const mode = (d.mode as DeviceModeConfig | undefined) ?? (d.type === 'cam' ? 'svio' : 'pv');
        for (const k of ['width', 'height', 'fps']) if (k in d && d.type !== 'cam') throw new ConfigError(`${origin}: guest ${gname} ${key}: "${k}" belongs on a cam`);
        if (d.type === 'cam') {
          if (mode !== 'svio') throw new ConfigError(`${origin}: guest ${gname} ${key}: a camera is reached as an SV-IO VIF only (mode: svio)`);
          for (const k of ['mac', 'ip', 'rate', 'sizeMiB', 'placement', 'iommu', 'vmmIo', 'sendCombining']) if (k in d) throw new ConfigError(`${origin}: guest ${gname} cam: "${k}" does not apply to a camera`);
          return { type: 'cam', devid, mode: 'svio', width: (d.width as number | undefined) ?? 160, height: (d.height as number | undefined) ?? 120, fps: (d.fps as number | undefined) ?? 30, ...(d.weight !== undefined ? { weight: d.weight as number } : {}) };
        }
        if (mode !== 'emulated' && 'placement' in d) throw new ConfigError(`${origin}: guest ${gname} ${key}: "placement" applies to mode: emulated only`);
        const placement = (d.placement as EmulationPlacement | undefined) ?? 'dom0';
        for (const k of ['vmmIo', 'sendCombining'])
          if (k in d && (d.type !== 'vif' || mode !== 'emulated' || placement !== 'hosted'))
            throw new ConfigError(`${origin}: guest ${gname} ${key}: "${k}" is an optimisation of the hosted VMM for an emulated NIC (type: vif, mode: emulated, placement: hosted)`);
        if (mode !== 'direct' && 'iommu' in d) throw new ConfigError(`${origin}: guest ${gname} ${key}: "iommu" applies to mode: direct only`);
        if (mode !== 'svio' && 'weight' in d) throw new ConfigError(`${origin}: guest ${gname} ${key}: "weight" is an SV-IO VIF's QoS share (mode: svio)`);
        if (d.rate !== undefined) {
          if (mode !== 'pv' && mode !== 'svio') throw new ConfigError(`${origin}: guest ${gname} ${key}: "rate" is a credit limit (netback's, or an SV-IO VIF's); a ${mode} device has none (use mode: pv or svio)`);
          if (mode === 'pv' && d.type === 'vbd') throw new ConfigError(`${origin}: guest ${gname} vbd: "rate" belongs on a vif (blkback has no credit limit; an SV-IO vbd has one: mode: svio)`);
          try {
            parseRate(d.rate as string);
          } catch (e) {
            throw new ConfigError(`${origin}: guest ${gname} ${key}: ${(e as Error).message}`);
          }
        }
        const passthrough: { iommu?: 'passthrough'; weight?: number; rate?: string } = {
          ...(d.iommu === 'passthrough' ? { iommu: 'passthrough' as const } : {}),
          ...(d.weight !== undefined ? { weight: d.weight as number } : {}),
          ...(d.rate !== undefined ? { rate: d.rate as string } : {}),
        };
        const emulation = mode === 'emulated' ? { placement, ...(d.vmmIo === true ? { vmmIo: true } : {}), ...(d.sendCombining === true ? { sendCombining: true } : {}) } : {};
        if (d.type === 'vbd') {
          for (const k of ['mac', 'ip']) if (k in d) throw new ConfigError(`${origin}: guest ${gname} vbd: "${k}" belongs on a vif`);
          return { type: 'vbd', devid, mode, ...emulation, ...passthrough, sizeMiB: (d.sizeMiB as number | undefined) ?? 16 };
        }
        if ('sizeMiB' in d) throw new ConfigError(`${origin}: guest ${gname} vif: "sizeMiB" belongs on a vbd`);
        return {
          type: 'vif',
          devid,
          mode,
          ...emulation,
          ...passthrough,
          mac: (d.mac as string | undefined) ?? guestMac(hi, gi, devid),
          ip: (d.ip as string | undefined) ?? guestIp(hi, gi),
        };
      });
      // Without a workloads key a guest exercises every device it has.
      const w = (g.workloads as RawObject | undefined) ?? {
        ...(devices.some((d) => d.type === 'vbd') ? { block: {} } : {}),
        ...(devices.some((d) => d.type === 'vif') ? { udp: {} } : {}),
      };
      const b = w.block as RawObject | undefined;
      const io = w.io as RawObject | undefined;
      const u = w.udp as RawObject | undefined;
      const firstVbd = devices.find((d): d is VbdConfig => d.type === 'vbd');
      const emulatedDisks = devices.filter((d) => d.type === 'vbd' && d.mode === 'emulated').length;
      const placements = new Set(devices.flatMap((d) => (d.mode === 'emulated' ? [d.placement] : [])));
      if (placements.size > 1) throw new ConfigError(`${origin}: guest ${gname} mixes placements ${[...placements].join(' and ')}; one guest's emulated devices share one vCPU and one device-model placement`);
      if (emulatedDisks > 2) throw new ConfigError(`${origin}: guest ${gname} has ${emulatedDisks} emulated vbds; an emulated PC has two ATA channels (use mode: pv for the rest)`);
      // PIO moves a sector with 256 trapped accesses: an emulated disk's default workload is smaller.
      const blockEmulated = devices.find((d) => d.type === 'vbd')?.mode === 'emulated';
      return {
        name: gname,
        memoryMiB: (g.memoryMiB as number | undefined) ?? 32,
        devices,
        workloads: {
          ...(b ? { block: { blocks: (b.blocks as number | undefined) ?? (blockEmulated ? 32 : 256), queueDepth: (b.queueDepth as number | undefined) ?? (blockEmulated ? 1 : 8) } } : {}),
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
        },
      };
    });
    for (const g of guests) {
      const vbd = g.devices.find((d): d is VbdConfig => d.type === 'vbd');
      if (g.workloads.block && !vbd) throw new ConfigError(`${origin}: guest ${g.name} runs a block workload but has no vbd`);
      if (g.workloads.block && vbd && g.workloads.block.blocks * 8 > vbd.sizeMiB * 2048)
        throw new ConfigError(`${origin}: guest ${g.name} block workload uses ${g.workloads.block.blocks} blocks but its vbd holds ${vbd.sizeMiB * 256}`);
      const io = g.workloads.io;
      if (io && !vbd) throw new ConfigError(`${origin}: guest ${g.name} runs an io workload but has no vbd`);
      if (io && g.workloads.block) throw new ConfigError(`${origin}: guest ${g.name}: the io workload (a benchmark load) and the block workload (the verifier) would share its first vbd; give it one of them`);
      if (io && vbd && io.regionMiB > vbd.sizeMiB) throw new ConfigError(`${origin}: guest ${g.name} io workload covers ${io.regionMiB} MiB but its vbd holds ${vbd.sizeMiB}`);
      const udp = g.workloads.udp;
      if (udp && !g.devices.some((d) => d.type === 'vif')) throw new ConfigError(`${origin}: guest ${g.name} runs a udp workload but has no vif`);
      if (udp && Array.isArray(udp.peers))
        for (const p of udp.peers) if (!IPV4_RE.test(p) && (!allNames.has(p) || p === g.name)) throw new ConfigError(`${origin}: guest ${g.name} udp peer "${p}" is not another guest of the cluster`);
    }
    const vbdMiB = guests.flatMap((g) => g.devices).reduce((a, d) => a + (d.type === 'vbd' ? d.sizeMiB : 0), 0);
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
