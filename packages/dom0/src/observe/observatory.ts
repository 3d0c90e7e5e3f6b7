/**
 * The Observatory: dom0's one sampler of the cluster. Once a second it reads the counters every
 * mechanism keeps — ring indices straight from the shared pages, backend and event-channel
 * counters, grant counters, the ioreq servers' trap counts and the device models' own counters
 * for emulated devices, each guest's own stats — and turns two samples into rates and
 * ring verdicts. Views (CLI, dashboard, /metrics) read its latest snapshot; none of them costs
 * the data path anything.
 *
 * Ring verdicts follow xen-ringwatch: watch both halves of a ring over an interval; a half with
 * entries waiting whose consumer did not move is STUCK.
 *   requests:  req_prod ≠ req_cons (backend's private index) and req_cons did not advance.
 *   responses: rsp_prod passed rsp_event (the frontend asked to be told, so it has responses to
 *              read) and neither rsp_event, rsp_prod nor req_prod moved: the frontend did nothing.
 * Otherwise BUSY when anything moved or waits, IDLE when nothing does.
 */
import { EventEmitter } from 'node:events';
import {
  REQ_EVENT,
  REQ_PROD,
  RSP_EVENT,
  RSP_PROD,
  TIMELINE_KINDS,
  XENBUS_STATE_NAMES,
  subscribeTrace,
  type BackRing,
  type GuestStats,
  type TraceEvent,
} from '@ringvisor/shared';
import { directDeviceName, type AssignedFunction, type Host } from '../toolstack/host.js';
import type { Domain } from '../hypervisor/hypervisor.js';
import { vifDeviceName } from '../toolstack/host-types.js';
import type { DeviceModeConfig } from '../toolstack/config.js';
import type { DeviceKind } from '../toolstack/device-kinds.js';
import { IO_MODES } from '../toolstack/attach/modes.js';
import type { SplitBackend, BackendCounters } from '../backends/split-backend.js';
import { LANCE_IO_SIZE, type EmulatedPlatform, type PlatformStats } from '../devicemodels/platform.js';
import type { ClusterSnapshot, DeviceRow, DomainRow, HostRow, RingEntries, RingRow, RuntimeRow, TimelineEntry } from './model.js';

const TIMELINE_LIMIT = 500;

interface RingSample {
  t: number;
  reqProd: number;
  rspProd: number;
  reqCons: number;
  rspEvent: number;
}

type AnyBackend = SplitBackend<BackendCounters>;

type GuestDeviceStats = GuestStats['devices'][number];
interface AssignedFunctions {
  assigned: AssignedFunction[];
  hw: Array<Record<string, unknown> & { rid: string }>;
}
type GuestDriverRow = (row: DomainRow, key: string, dev: GuestDeviceStats, functions: AssignedFunctions, now: number) => void;

/** What a device of each kind adds to its domain's I/O totals (a camera's frames are not among them). */
const ADD_TO_DOMAIN_TOTALS: Partial<Record<DeviceKind, (row: DomainRow, m: Readonly<Record<string, number | undefined>>) => void>> = {
  vbd: (row, m) => {
    row.vbdReads += m.reads ?? 0;
    row.vbdWrites += m.writes ?? 0;
    row.vbdSectorsRead += m.sectorsRead ?? 0;
    row.vbdSectorsWritten += m.sectorsWritten ?? 0;
  },
  vif: (row, m) => {
    row.netTxPackets += m.txPackets ?? 0;
    row.netTxBytes += m.txBytes ?? 0;
    row.netRxPackets += m.rxPackets ?? 0;
    row.netRxBytes += m.rxBytes ?? 0;
  },
};

export class Observatory extends EventEmitter<{ snapshot: [ClusterSnapshot] }> {
  private timer?: NodeJS.Timeout;
  private unsubscribe?: () => void;
  private readonly timeline: TimelineEntry[] = [];
  private readonly ringPrev = new Map<string, RingSample>();
  private readonly counterPrev = new Map<string, { t: number; v: number }>();
  private readonly busyPrev = new Map<string, { t: number; busy: number }>();
  private latest?: ClusterSnapshot;
  /** Every guest's latest stats, per host (the top view renders from these). */
  readonly guestStats = new Map<Host, GuestStats[]>();
  /** SV-IO VIFs bound to each domain ("host/domain"), for their names in views. */
  private readonly vifIdsOf = new Map<string, Array<{ kind: 'net' | 'blk' | 'cam'; devid: number; vif: number }>>();

  private vifIds(key: string, name: string): number | undefined {
    return this.vifIdsOf.get(key)?.find((v) => vifDeviceName(v) === name)?.vif;
  }

  /** The hardware's functions (direct I/O), by host, as of the last sample. */
  readonly functionStats = new Map<Host, Awaited<ReturnType<Host['functionStats']>>>();
  private readonly t0 = Date.now();
  private sampling = false;

  constructor(
    readonly hosts: Host[],
    readonly transport: 'threads' | 'ws',
    readonly intervalMs = 1000,
  ) {
    super();
  }

  /** Start sampling and keep the timeline (rare events only: states, faults, runtimes). */
  start(): void {
    this.unsubscribe = subscribeTrace(TIMELINE_KINDS, (ev) => this.addTimeline(ev));
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
    void this.sample();
  }

  stop(): void {
    clearInterval(this.timer);
    this.unsubscribe?.();
  }

  /** The latest snapshot (taken at most one interval ago). */
  snapshot(): ClusterSnapshot {
    // Counters are as of the last sample; the timeline is as of now (a fault just injected shows).
    return this.latest ? { ...this.latest, timeline: this.timeline.slice(-200) } : this.build();
  }

  /** Take a sample now (also what the interval does). */
  async sample(): Promise<ClusterSnapshot> {
    if (this.sampling && this.latest) return this.latest;
    this.sampling = true;
    try {
      await Promise.all([
        ...this.hosts.map(async (h) => this.guestStats.set(h, await h.guestStats().catch(() => this.guestStats.get(h) ?? []))),
        // Direct I/O: the functions' own counters come from the hardware (dom0 is not on their path).
        ...this.hosts
          .filter((h) => h.config.guests.some((g) => g.devices.some((d) => IO_MODES[d.mode].assignsFunctions === true)))
          .map(async (h) => this.functionStats.set(h, await h.functionStats().catch(() => this.functionStats.get(h) ?? []))),
        // Hosted models' counters come from their VMApps (a no-op for models in dom0).
        ...this.hosts.flatMap((h) => h.platforms().map((p) => p.refresh())),
      ]);
      this.latest = this.build();
      this.emit('snapshot', this.latest);
      return this.latest;
    } finally {
      this.sampling = false;
    }
  }

  private addTimeline(ev: TraceEvent): void {
    let text: string;
    switch (ev.kind) {
      case 'xenbus.state':
        text = `${ev.side === 'front' ? 'frontend' : 'backend'} ${ev.device} → ${ev.stateName}`;
        break;
      case 'process':
        text = `${ev.role} ${ev.runtime} ${ev.state}${ev.pid ? ` (pid ${ev.pid})` : ''}${ev.code !== undefined ? ` exit ${ev.code}` : ''}`;
        break;
      case 'fault':
        text = `fault ${ev.fault} ${JSON.stringify(ev.detail)}`;
        break;
      case 'iommu.fault':
        text = `IOMMU fault at 0x${ev.address.toString(16)}: ${ev.reason}`;
        break;
      case 'direct': // mode-branches: a trace event's kind (a function assigned, reset or reclaimed), not a device's mode
        text = `${ev.device ?? 'device'}: function ${ev.function} ${ev.action === 'assign' ? 'assigned' : ev.action === 'flr' ? 'reset (FLR)' : 'reclaimed'}`;
        break;
      default:
        text = ev.kind;
    }
    this.timeline.push({ t: ev.t, kind: ev.kind, host: ev.host, domid: ev.domid, ...(ev.device ? { device: ev.device } : {}), text });
    if (this.timeline.length > TIMELINE_LIMIT) this.timeline.splice(0, this.timeline.length - TIMELINE_LIMIT);
  }

  /** Per-second rate of a monotonically growing counter, keyed by `key`. */
  private rate(key: string, value: number, now: number): number {
    const p = this.counterPrev.get(key);
    this.counterPrev.set(key, { t: now, v: value });
    if (!p || now <= p.t) return 0;
    return Math.max(0, ((value - p.v) * 1000) / (now - p.t));
  }

  /** Find a backend by domain name (or id) and device name ("vbd0", "vif0"). */
  findBackend(domain: string, device: string): { host: Host; backend: AnyBackend } | undefined {
    for (const host of this.hosts)
      for (const b of [...host.blkBackends(), ...host.netBackends()] as AnyBackend[]) {
        const d = host.hv.domains.get(b.frontDomid);
        if ((d?.name === domain || String(b.frontDomid) === domain) && b.device === device) return { host, backend: b };
      }
    return undefined;
  }

  private ringById(id: string): { ring: BackRing<unknown, unknown> } | undefined {
    const [hostName, domain, device, ringName] = id.split('/');
    const host = this.hosts.find((h) => h.config.name === hostName);
    if (!host) return undefined;
    const found = this.findBackend(domain, device);
    if (!found || found.host !== host) return undefined;
    const r = found.backend.rings().find((x) => x.name === ringName);
    return r ? { ring: r.ring } : undefined;
  }

  /**
   * A ring's latest entries as the backend took and answered them (its private copies: the
   * shared slots may already hold the frontend's next requests), plus the indices now.
   */
  ringEntries(id: string): RingEntries | undefined {
    const found = this.ringById(id);
    if (!found) return undefined;
    const { ring } = found;
    const flat = (xs: Array<{ index: number; entry: unknown }>) => xs.map((x) => ({ index: x.index, ...(x.entry as object) }));
    return {
      id,
      protocol: ring.protocol.name,
      reqProd: ring.page.load(REQ_PROD),
      rspProd: ring.page.load(RSP_PROD),
      requests: flat(ring.recent('req')),
      responses: flat(ring.recent('rsp')),
    };
  }

  private build(): ClusterSnapshot {
    const now = Date.now();
    const hosts: HostRow[] = [];
    const runtimes: RuntimeRow[] = [];
    const domains: DomainRow[] = [];
    const rings: RingRow[] = [];
    const kind = this.transport === 'ws' ? 'process' : 'thread';
    for (const host of this.hosts) {
      const hn = host.config.name;
      const stats = this.guestStats.get(host) ?? [];
      runtimes.push({ host: hn, name: `${hn}/dom0`, role: 'dom0', kind: 'process', pid: process.pid, state: 'up' });
      if (host.hwsim) runtimes.push({ host: hn, name: `${hn}/hwsim`, role: 'hwsim', kind, ...(host.hwsim.pid ? { pid: host.hwsim.pid } : {}), state: host.hwsimDown ? 'down' : 'up' });
      let evIn = 0;
      let notif = 0;
      let supp = 0;
      // Accesses served by hosted models (VMApps): the hypervisor's counters never see them.
      const hosted = { traps: 0, worldSwitches: 0 };
      const backends = [...host.blkBackends(), ...host.netBackends()] as AnyBackend[];
      domains.push(this.dom0Row(host, now));
      for (const [domid, d] of host.hv.domains) {
        if (domid === 0) continue;
        const g = host.guests.find((x) => x.domain.domid === domid);
        if (g) runtimes.push({ host: hn, name: `${hn}/${g.config.name}`, role: 'guest', kind, ...(g.pid ? { pid: g.pid } : {}), state: g.down || !g.isReady ? 'down' : 'up' });
        const st = stats.find((s) => s?.domid === domid);
        const cpuPct = st?.busyMs !== undefined ? this.cpuPercent(`${hn}/${domid}`, st.busyMs, now) : 0;
        const row: DomainRow = {
          ...domainRow(hn, d, now, cpuPct),
          integrityChecked: st?.integrity.checked ?? 0,
          integrityFailures: st?.integrity.failures ?? 0,
          ...(g?.pid ? { pid: g.pid } : {}),
        };
        for (const b of backends.filter((x) => x.frontDomid === domid)) {
          const m = b.counters as BackendCounters & Record<string, number>;
          const key = `${hn}/${d.name}/${b.device}`;
          const dev: DeviceRow = {
            type: b.device.startsWith('vbd') ? 'vbd' : 'vif',
            devid: b.devid,
            name: b.device,
            mode: 'pv',
            backendState: b.paused ? `${b.state} (paused)` : b.state,
            frontendState: XENBUS_STATE_NAMES[Number(host.hv.store.tryRead(0, `${b.xb.frontDir}/state`) ?? 0)] ?? 'Unknown',
            eventsPerSec: Math.round(this.rate(`${key}/events`, m.events, now)),
            notificationsPerSec: Math.round(this.rate(`${key}/notifications`, m.notifications, now)),
            suppressedPerSec: Math.round(this.rate(`${key}/suppressed`, m.suppressed, now)),
            events: m.events,
            notifications: m.notifications,
            suppressed: m.suppressed,
          };
          row.devices.push(dev);
          row.eventsPerSec += dev.eventsPerSec;
          evIn += dev.eventsPerSec;
          notif += dev.notificationsPerSec;
          supp += dev.suppressedPerSec;
          // Backend counts from dom0's side: its tx is the guest's tx.
          ADD_TO_DOMAIN_TOTALS[dev.type]?.(row, m);
          for (const { name, ring } of b.rings()) rings.push(this.ringRow(hn, d.name, domid, b, name, ring, now));
        }
        if (st) {
          this.vifIdsOf.set(`${hn}/${d.name}`, host.vifsOf(domid));
          this.addDirect(row, `${hn}/${d.name}`, st, host.functionsOf(domid), this.functionStats.get(host) ?? [], now);
        }
        const platform = host.platformOf(domid);
        if (platform) {
          const served = this.addEmulated(row, `${hn}/${d.name}`, platform, now);
          if (platform.placement === 'hosted') {
            hosted.traps += served.traps;
            hosted.worldSwitches += served.worldSwitches;
          }
        }
        domains.push(row);
      }
      // A guest whose runtime crashed: its domain is reclaimed, but it is listed as crashed (with
      // how its process ended) until it is rebooted, as `xl list` keeps a crashed domain.
      for (const { handle, crash } of host.crashedGuests()) {
        const listed = domains.find((r) => r.host === hn && r.domid === handle.domain.domid && r.name === handle.config.name);
        if (listed) {
          // Still being reclaimed.
          listed.state = 'crashed';
          listed.exit = crash.exit;
          continue;
        }
        const st = stats.find((s) => s?.domid === handle.domain.domid);
        runtimes.push({ host: hn, name: `${hn}/${handle.config.name}`, role: 'guest', kind, ...(handle.pid ? { pid: handle.pid } : {}), state: 'down' });
        domains.push({
          ...domainRow(hn, handle.domain, now, 0),
          state: 'crashed',
          uptimeSec: Math.round((crash.at - handle.domain.createdAt) / 1000),
          integrityChecked: st?.integrity.checked ?? 0,
          integrityFailures: st?.integrity.failures ?? 0,
          ...(handle.pid ? { pid: handle.pid } : {}),
          exit: crash.exit,
        });
      }
      const gc = [...host.hv.grants.counters.values()].reduce(
        (a, c) => ({ maps: a.maps + c.maps, unmaps: a.unmaps + c.unmaps, copies: a.copies + c.copies, bytesCopied: a.bytesCopied + c.bytesCopied }),
        { maps: 0, unmaps: 0, copies: 0, bytesCopied: 0 },
      );
      const traps = host.hv.counters.traps + hosted.traps;
      const worldSwitches = host.hv.counters.worldSwitches + hosted.worldSwitches;
      hosts.push({
        name: hn,
        transport: this.transport,
        eventsPerSec: evIn,
        notificationsPerSec: notif,
        suppressedPerSec: supp,
        trapsPerSec: Math.round(this.rate(`${hn}/traps`, traps, now)),
        worldSwitchesPerSec: Math.round(this.rate(`${hn}/worldSwitches`, worldSwitches, now)),
        grantOpsPerSec: Math.round(this.rate(`${hn}/grantOps`, gc.maps + gc.unmaps + gc.copies, now)),
        traps,
        worldSwitches,
        grantMaps: gc.maps,
        grantUnmaps: gc.unmaps,
        grantCopies: gc.copies,
        bytesCopied: gc.bytesCopied,
      });
    }
    return { time: now, uptimeSec: Math.round((now - this.t0) / 1000), transport: this.transport, hosts, runtimes, domains, rings, timeline: this.timeline.slice(-200) };
  }

  /**
   * A guest's emulated devices: no rings and no xenbus. What crosses is the vCPU's traps (counted
   * per port range by whoever serves them; an ATA drive decodes two, "ata0.cmd" and "ata0.ctl")
   * and the model's interrupts; the models' own counters give the I/O totals. Read through
   * stats(), which covers both placements (models in dom0, or hosted in a VMApp: as last fetched;
   * there a trap is an access the guest's VMM forwarded, those it handles itself never leave the
   * guest's world). Returns the accesses the models served and the world switches they cost.
   */
  private addEmulated(row: DomainRow, key: string, p: EmulatedPlatform, now: number): { traps: number; worldSwitches: number } {
    let st: PlatformStats | undefined;
    try {
      st = p.stats();
    } catch {
      // A hosted platform whose VMApp has not answered yet has no figures: show its devices at zero.
    }
    const perRange = st?.perRange ?? {};
    const owns = (dev: string, range: string) => range === dev || range.startsWith(`${dev}.`);
    const metricsOf = (name: string): object => st?.devices.find((x) => x.name === name)?.metrics ?? {};
    const device = (type: DeviceRow['type'], devid: number, name: string, state: string, interrupts: number, ports: string[]): DeviceRow => {
      let traps = 0;
      for (const [range, n] of Object.entries(perRange)) if (owns(name, range)) traps += n;
      return {
        type,
        devid,
        name,
        mode: 'emulated',
        placement: p.placement,
        backendState: state,
        frontendState: '-',
        eventsPerSec: 0,
        notificationsPerSec: 0,
        suppressedPerSec: 0,
        events: 0,
        notifications: 0,
        suppressed: 0,
        traps,
        trapsPerSec: Math.round(this.rate(`${key}/${name}/traps`, traps, now)),
        interrupts,
        interruptsPerSec: Math.round(this.rate(`${key}/${name}/interrupts`, interrupts, now)),
        ports,
      };
    };
    // A hosted model's state lives in its VMApp; only its counters come back.
    const hostedState = 'in VMApp';
    for (const n of p.nics) {
      const m = metricsOf(n.name);
      const state = n.model ? (n.model.running ? 'running' : 'stopped') : hostedState;
      row.devices.push(device('vif', n.devid, n.name, state, counter(m, 'interrupts'), [portSpan(n.base, LANCE_IO_SIZE)]));
      // The model's tx is the guest's tx, as the PV backend's counters are.
      row.netTxPackets += counter(m, 'txFrames');
      row.netTxBytes += counter(m, 'txBytes');
      row.netRxPackets += counter(m, 'rxFrames');
      row.netRxBytes += counter(m, 'rxBytes');
    }
    for (const d of p.disks) {
      const m = metricsOf(d.name);
      const ds = d.model?.state;
      const state = ds ? (ds.busyWith ? `${ds.phase} (${ds.busyWith})` : ds.phase) : hostedState;
      row.devices.push(device('vbd', d.devid, d.name, state, counter(m, 'irqs'), [portSpan(d.channel.command, 8), portSpan(d.channel.control, 1)]));
      row.vbdReads += counter(m, 'commands', 'read');
      row.vbdWrites += counter(m, 'commands', 'write');
      row.vbdSectorsRead += counter(m, 'sectorsRead');
      row.vbdSectorsWritten += counter(m, 'sectorsWritten');
    }
    const served = { traps: st?.ioreq.traps ?? 0, worldSwitches: st?.ioreq.worldSwitches ?? 0 };
    row.traps = served.traps;
    row.trapsPerSec = Math.round(this.rate(`${key}/traps`, served.traps, now));
    return served;
  }

  /**
   * A guest's direct devices: no backend, no xenbus, no traps — the guest's driver and the
   * function talk through the function's queues. Figures come from the guest's driver (doorbells,
   * interrupts, I/O totals) and the hardware's function (requester id, state, DMA blocked).
   */
  private addDirect(row: DomainRow, key: string, st: GuestStats, assigned: AssignedFunction[], hw: Array<Record<string, unknown> & { rid: string }>, now: number): void {
    for (const dev of st.devices) this.guestDriverRows[dev.mode as DeviceModeConfig]?.(row, key, dev, { assigned, hw }, now);
  }

  /** The rows of the modes whose figures come from the guest's driver (and the hardware), by mode. */
  private readonly guestDriverRows: Partial<Record<DeviceModeConfig, GuestDriverRow>> = {
    svio: (row, key, dev, _functions, now) => this.addSvioVif(row, key, dev, now),
    direct: (row, key, dev, functions, now) => this.addDirectFunction(row, key, dev, functions, now),
  };

  /** An SV-IO VIF: the same figures from the guest's VIF driver; the VIF's id for a name. */
  private addSvioVif(row: DomainRow, key: string, dev: GuestDeviceStats, now: number): void {
    const name = `${dev.type}${dev.devid}`;
    const m = dev.detail;
    const vif = this.vifIds(key, name);
    row.devices.push({
      type: dev.type,
      devid: dev.devid,
      name,
      mode: 'svio',
      ...(vif !== undefined ? { rid: `vif ${vif}` } : {}),
      backendState: 'open',
      frontendState: '-',
      eventsPerSec: Math.round(this.rate(`${key}/${name}/doorbells`, m.doorbells ?? 0, now)),
      notificationsPerSec: Math.round(this.rate(`${key}/${name}/interrupts`, m.interrupts ?? 0, now)),
      suppressedPerSec: Math.round(this.rate(`${key}/${name}/suppressed`, m.suppressed ?? 0, now)),
      events: m.doorbells ?? 0,
      notifications: m.interrupts ?? 0,
      suppressed: m.suppressed ?? 0,
      interrupts: m.interrupts ?? 0,
    });
    ADD_TO_DOMAIN_TOTALS[dev.type]?.(row, m);
  }

  /** A function assigned to the guest: the guest driver's figures and the hardware's function (requester id, state, DMA blocked). */
  private addDirectFunction(row: DomainRow, key: string, dev: GuestDeviceStats, { assigned, hw }: AssignedFunctions, now: number): void {
    const name = `${dev.type}${dev.devid}`;
    const a = assigned.find((f) => directDeviceName(f) === name);
    const fn = a ? hw.find((f) => f.rid === a.rid) : undefined;
    const c = (fn?.counters ?? {}) as Record<string, number>;
    const m = dev.detail;
    const state = !a ? 'reclaimed' : fn ? (fn.error ? `error: ${String(fn.error)}` : fn.enabled ? 'enabled' : 'assigned') : 'assigned';
    const irqsPerSec = Math.round(this.rate(`${key}/${name}/interrupts`, m.interrupts ?? 0, now));
    row.devices.push({
      type: dev.type,
      devid: dev.devid,
      name,
      mode: 'direct',
      ...(a ? { rid: a.rid } : {}),
      backendState: state,
      frontendState: '-',
      // A direct device's "events" are its doorbells (guest → hardware) and its interrupts.
      eventsPerSec: Math.round(this.rate(`${key}/${name}/doorbells`, m.doorbells ?? 0, now)),
      notificationsPerSec: irqsPerSec,
      suppressedPerSec: Math.round(this.rate(`${key}/${name}/suppressed`, m.suppressed ?? 0, now)),
      events: m.doorbells ?? 0,
      notifications: m.interrupts ?? 0,
      suppressed: m.suppressed ?? 0,
      interrupts: m.interrupts ?? 0,
      interruptsPerSec: irqsPerSec,
      dmaFaults: c.dmaFaults ?? 0,
    });
    ADD_TO_DOMAIN_TOTALS[dev.type]?.(row, m);
  }


  /** Share of one CPU a runtime's event loop was busy since the last sample (busy: cumulative ms). */
  private cpuPercent(key: string, busy: number, now: number): number {
    const p = this.busyPrev.get(key);
    this.busyPrev.set(key, { t: now, busy });
    return p && now > p.t ? Math.min(100, Math.max(0, ((busy - p.busy) * 100) / (now - p.t))) : 0;
  }

  /** Domain-0 as xl list shows it: dom0's own thread is its vCPU here. */
  private dom0Row(host: Host, now: number): DomainRow {
    const d = host.hv.dom0;
    const key = `${host.config.name}/0`;
    const cpuPct = this.cpuPercent(key, performance.eventLoopUtilization().active, now);
    return {
      ...domainRow(host.config.name, d, now, cpuPct),
      ...(this.transport === 'ws' ? { pid: process.pid } : {}),
      netTxPackets: host.nic?.counters.txFrames ?? 0,
      netTxBytes: host.nic?.counters.txBytes ?? 0,
      netRxPackets: host.nic?.counters.rxFrames ?? 0,
      netRxBytes: host.nic?.counters.rxBytes ?? 0,
      eventsPerSec: Math.round(this.rate(`${key}/received`, host.hv.dom0Events.counters.received, now)),
    };
  }

  private ringRow(host: string, domain: string, domid: number, b: AnyBackend, name: string, ring: BackRing<unknown, unknown>, now: number): RingRow {
    const id = `${host}/${domain}/${b.device}/${name}`;
    const cur: RingSample = { t: now, reqProd: ring.page.load(REQ_PROD), rspProd: ring.page.load(RSP_PROD), reqCons: ring.reqCons, rspEvent: ring.page.load(RSP_EVENT) };
    const prev = this.ringPrev.get(id);
    this.ringPrev.set(id, cur);
    const u32 = (a: number, b2: number) => (a - b2) >>> 0;
    const pendingRequests = u32(cur.reqProd, cur.reqCons);
    const occupancy = Math.min(u32(cur.reqProd, cur.rspProd), ring.size);
    // Responses the frontend asked to hear about (rsp_prod reached rsp_event) and has not taken.
    const responsesWaiting = u32(cur.rspProd, (cur.rspEvent - 1) >>> 0);
    let verdict: RingRow['verdict'] = 'IDLE';
    let stuck: RingRow['stuck'];
    let reqRate = 0;
    let rspRate = 0;
    if (prev) {
      const dt = (now - prev.t) / 1000;
      reqRate = dt > 0 ? u32(cur.reqProd, prev.reqProd) / dt : 0;
      rspRate = dt > 0 ? u32(cur.rspProd, prev.rspProd) / dt : 0;
      const moved = cur.reqProd !== prev.reqProd || cur.rspProd !== prev.rspProd || cur.reqCons !== prev.reqCons || cur.rspEvent !== prev.rspEvent;
      if (pendingRequests > 0 && u32(prev.reqProd, prev.reqCons) > 0 && cur.reqCons === prev.reqCons) stuck = 'requests';
      else if (responsesWaiting > 0 && responsesWaiting <= ring.size && !moved) stuck = 'responses';
      verdict = stuck ? 'STUCK' : moved || pendingRequests > 0 ? 'BUSY' : 'IDLE';
    } else verdict = pendingRequests > 0 ? 'BUSY' : 'IDLE';
    return {
      id,
      host,
      domid,
      domain,
      device: b.device,
      ring: name,
      mode: 'pv',
      size: ring.size,
      reqProd: cur.reqProd,
      reqEvent: ring.page.load(REQ_EVENT),
      rspProd: cur.rspProd,
      rspEvent: cur.rspEvent,
      reqCons: cur.reqCons,
      occupancy,
      pendingRequests,
      requestsPerSec: Math.round(reqRate),
      responsesPerSec: Math.round(rspRate),
      requests: ring.stats.consumed,
      responses: ring.stats.produced,
      verdict,
      ...(stuck ? { stuck } : {}),
      paused: b.paused,
    };
  }
}

/** A counter out of a device model's metrics (plain JSON, from dom0's model or a VMApp's); 0 if absent. */
function counter(metrics: object, ...path: string[]): number {
  let v: unknown = metrics;
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[k] : undefined;
  return typeof v === 'number' ? v : 0;
}

/** An I/O port range as "0x1f0-0x1f7" (one port: "0x3f6"). */
function portSpan(base: number, length: number): string {
  const hex = (n: number) => `0x${n.toString(16)}`;
  return length > 1 ? `${hex(base)}-${hex(base + length - 1)}` : hex(base);
}

/** A domain's row with its identity filled in and every I/O figure at zero (callers add theirs). */
function domainRow(host: string, d: Domain, now: number, cpuPct: number): DomainRow {
  return {
    host,
    domid: d.domid,
    name: d.name,
    state: d.state,
    memKiB: d.memory.buffer.byteLength / 1024,
    vcpus: 1,
    uptimeSec: Math.round((now - d.createdAt) / 1000),
    cpuPct: Math.round(cpuPct * 10) / 10,
    netTxPackets: 0,
    netTxBytes: 0,
    netRxPackets: 0,
    netRxBytes: 0,
    vbdReads: 0,
    vbdWrites: 0,
    vbdSectorsRead: 0,
    vbdSectorsWritten: 0,
    eventsPerSec: 0,
    integrityChecked: 0,
    integrityFailures: 0,
    devices: [],
  };
}
