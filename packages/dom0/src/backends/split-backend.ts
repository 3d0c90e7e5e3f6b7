/**
 * What every split-driver backend (blkback, netback) does the same way: the xenbus state
 * machine, mapping the frontend's ring pages and binding its event channel, one scheduled
 * processing pass at a time (an event storm schedules it once), notifications, and teardown.
 * A backend supplies its features, how it attaches its rings, and its processing pass.
 *
 *   frontend state   backend in    backend does
 *   Initialised      waiting       map rings, bind channel, publish, → Connected
 *   Closing/Closed   connected     drain, unmap, close channel, → Closing → Closed
 *   Initialising     closed        offer the device again, → InitWait   (reboot, recovery)
 *
 * Persistence (Device): quiesce() stops consuming the rings and waits for the backing I/O the
 * backend already started (subclass: `drainBacking`); save() writes the port and the rings'
 * private indices with the subclass's queues. A restored backend maps the same ring pages by
 * their grant references (they are in the guest's memory, which the environment keeps), binds
 * the same port, and finds the requests the old one left unconsumed still on the ring.
 */
import {
  errorFields,
  XenbusState,
  DeviceError,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  evtSuppressedChannel,
  traceNow,
  type BackRing,
  type PageSync,
  type DeviceType,
  type GrantMapping,
  type Logger,
} from '@ringvisor/shared';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import { XenbusBackend } from './xenbus-backend.js';

export type BackendState = 'init' | 'waiting' | 'connected' | 'rogue' | 'closing' | 'closed';

/** Counters every backend keeps. */
export interface BackendCounters {
  grantMaps: number;
  notifications: number;
  suppressed: number;
  events: number;
  rogue: number;
}

/** What every saved backend record holds besides its rings (xenbus device, event channel, counters). */
export interface SavedBackendLink {
  frontDomid: number;
  devid: number;
  port: number;
}

export abstract class SplitBackend<M extends BackendCounters> implements Device {
  readonly xb: XenbusBackend;
  state: BackendState = 'init';
  abstract readonly identity: DeviceIdentity;
  /** Set by quiesce(): no pass runs, responses stay private, until resume(). */
  protected quiesced = false;
  protected readonly log: Logger;
  private maps: GrantMapping[] = [];
  private port = -1;
  private scheduled = false;
  /** An admin stopped this backend consuming (its rings keep their contents; see resume). */
  paused = false;
  /**
   * Injected notification faults on this device's channel (fault plans): lost with a
   * probability in either direction, or delivered late. Absent in normal operation.
   */
  eventFault?: { lostToGuest: number; lostToBackend: number; delayMs: number; draw: () => number };
  /** What the injected faults did, so a run can be explained. */
  readonly faultCounters = { lostToGuest: 0, lostToBackend: 0, delayed: 0, spurious: 0 };
  /** "vbd0", "vif1": the device as views and traces name it. */
  readonly device: string;

  constructor(
    readonly hv: Hypervisor,
    type: DeviceType,
    readonly frontDomid: number,
    readonly devid: number,
    /** What this backend counts; `metrics()` maps it onto ops/bytes/errors. */
    readonly counters: M,
    log: Logger,
  ) {
    this.xb = new XenbusBackend(hv.dom0Store, type, frontDomid, devid);
    this.device = `${type}${devid}`;
    this.log = log.child({ backend: type, domid: frontDomid, devid });
  }

  /** Keys written before InitWait (feature-*, …). */
  protected abstract features(): Record<string, string>;
  /** Read the frontend's ring references and attach rings with `mapRing`; throw to reject. */
  protected abstract attachRings(): Promise<void>;
  /** Keys published once rings are attached, before Connected (sectors, …). */
  protected connectedKeys(): Record<string, string> {
    return {};
  }
  /** One bounded processing pass; return true if work remains (yield, then run again). */
  protected abstract process(): boolean;
  /** Stop using the rings: drain what is in flight, release what is queued. */
  protected abstract detachRings(): Promise<void>;
  /** The rings attached now, by name ("blk", "tx", "rx"), for views and traces. */
  abstract rings(): Array<{ name: string; ring: BackRing<unknown, unknown> }>;

  /** Name a ring in trace events (call once it is attached). */
  protected labelRing(ring: BackRing<unknown, unknown>, name: string): void {
    ring.label = { host: this.hv.host, domid: this.frontDomid, device: this.device, ring: name, side: 'back' };
  }

  /** The device's counters mapped onto ops/bytes/errors. */
  abstract metrics(): DeviceMetrics;
  /** Saves a quiesced backend (the subclass's layout). */
  abstract save(): DeviceStateRecord;
  /** Waits for every backing operation this backend started (a disk request) to finish. */
  protected abstract drainBacking(): Promise<void>;

  attach(): Promise<void> {
    return this.start();
  }

  stop(_reason: string): Promise<void> {
    return this.destroy();
  }

  /**
   * Stop consuming the rings and wait for the backing I/O already started; its responses are
   * written to the ring but not pushed (save() records them). Only a connected backend can be
   * quiesced: one mid-handshake has nothing to save yet.
   */
  async quiesce(): Promise<void> {
    if (this.state !== 'connected') throw new DeviceError(`${this.device} of domain ${this.frontDomid}: only a connected backend can be quiesced (state ${this.state})`);
    this.quiesced = true;
    await this.drainBacking();
  }

  /** The link part of a record (save() of a quiesced backend). */
  protected savedLink(): SavedBackendLink {
    if (!this.quiesced || this.state !== 'connected') throw new DeviceError(`${this.device} of domain ${this.frontDomid}: save() needs a quiesced, connected backend`);
    return { frontDomid: this.frontDomid, devid: this.devid, port: this.port };
  }

  /**
   * Takes over a saved backend's link: binds its event-channel port (already bound to the
   * frontend's), is Connected, and follows the frontend again. Comes back quiesced.
   */
  protected async restoreLink(link: SavedBackendLink): Promise<void> {
    this.quiesced = true;
    this.state = 'connected';
    this.xb.state = XenbusState.Connected;
    this.bindPort(link.port);
    await this.xb.watchFrontend((fs) => void this.onFrontendState(fs).catch((e) => this.log.error({ err: e }, 'backend state change failed')));
  }

  /**
   * Drop a saved backend without touching what its restored successor owns (the port stays bound,
   * the ring stays on the guest's page): its store watch and its own mappings of the ring pages
   * go, as they would with the runtime it lived in.
   */
  async abandon(): Promise<void> {
    this.quiesced = true;
    this.state = 'closed';
    await this.xb.stopWatching();
    for (const m of this.maps) {
      try {
        this.hv.grants.unmap(0, m.handle);
      } catch {
        /* guest destroyed: its mappings were already dropped */
      }
    }
    this.maps = [];
    this.port = -1;
  }

  /** Stop consuming requests (as a wedged backend would): requests wait on the ring. */
  pause(): void {
    this.paused = true;
  }

  /** Consume again, starting with whatever waited (after pause(), or quiesce() / a restore). */
  resume(): void {
    if (!this.paused && !this.quiesced) return;
    this.paused = false;
    if (this.quiesced) {
      this.quiesced = false;
      this.resumed();
    }
    this.kick();
  }

  /** After a quiesce: push what was answered meanwhile (subclass). */
  protected resumed(): void {}

  /** Publish features, go to InitWait and follow the frontend (xenbus probe). */
  async start(): Promise<void> {
    for (const [k, v] of Object.entries(this.features())) await this.hv.dom0Store.write(`${this.xb.dir}/${k}`, v);
    await this.xb.setState(XenbusState.InitWait);
    this.state = 'waiting';
    await this.xb.watchFrontend((fs) => void this.onFrontendState(fs).catch((e) => this.log.error({ err: e }, 'backend state change failed')));
  }

  private async onFrontendState(fs: XenbusState): Promise<void> {
    if (this.quiesced) return;
    if (fs === XenbusState.Initialised && this.state === 'waiting') await this.connect();
    else if ((fs === XenbusState.Closing || fs === XenbusState.Closed) && (this.state === 'connected' || this.state === 'rogue')) {
      await this.disconnect();
      await this.xb.setState(XenbusState.Closing);
      await this.xb.setState(XenbusState.Closed);
    } else if (fs === XenbusState.Initialising && this.state === 'closed') {
      this.state = 'waiting';
      await this.xb.setState(XenbusState.InitWait);
    }
  }

  private async connect(): Promise<void> {
    try {
      await this.attachRings();
      this.bindPort(this.hv.evtchn.bindInterdomain(0, this.frontDomid, await this.xb.frontendInt('event-channel')));
    } catch (e) {
      this.log.warn({ err: errorFields(e) }, 'frontend handshake rejected');
      this.release();
      this.state = 'closed';
      await this.xb.setState(XenbusState.Closed);
      return;
    }
    for (const [k, v] of Object.entries(this.connectedKeys())) await this.hv.dom0Store.write(`${this.xb.dir}/${k}`, v);
    this.state = 'connected';
    await this.xb.setState(XenbusState.Connected);
    this.kick();
  }

  private bindPort(port: number): void {
    this.port = port;
    this.hv.dom0Events.on(this.port, (_port, polled) => {
      if (polled) return this.kick(); // a missed-event poll: look, but it is not an event
      const f = this.eventFault;
      if (f && f.lostToBackend > 0 && f.draw() < f.lostToBackend) {
        this.faultCounters.lostToBackend++;
        return;
      }
      this.counters.events++;
      this.kick();
    });
  }

  /** Map a frontend ring page (writable); across a link, its late wakes notify the frontend. */
  protected mapRing(ref: number): { bytes: Uint8Array; sync?: PageSync } {
    const m = this.hv.grants.map(0, this.frontDomid, ref, true);
    this.maps.push(m);
    this.counters.grantMaps++;
    if (m.sync) m.sync.lateWake = () => this.notify(true);
    return m.sync ? { bytes: m.bytes, sync: m.sync } : { bytes: m.bytes };
  }

  /** Schedule one processing pass (idempotent). */
  kick(): void {
    if (this.scheduled || this.state !== 'connected' || this.paused || this.quiesced) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.state !== 'connected' || this.paused || this.quiesced) return;
      const more = this.process();
      for (const r of this.rings()) r.ring.traceConsumed();
      if (more) this.kick();
    });
  }

  /** Notify the frontend if the ring said so (counted either way). */
  protected notify(needed: boolean): void {
    if (needed && this.port >= 0) {
      this.counters.notifications++;
      const f = this.eventFault;
      if (f) {
        if (f.lostToGuest > 0 && f.draw() < f.lostToGuest) return void this.faultCounters.lostToGuest++;
        if (f.delayMs > 0) {
          this.faultCounters.delayed++;
          const port = this.port;
          setTimeout(() => port === this.port && this.hv.dom0Events.send(port), f.delayMs).unref();
          return;
        }
      }
      this.hv.dom0Events.send(this.port);
    } else {
      this.counters.suppressed++;
      if (evtSuppressedChannel.hasSubscribers)
        evtSuppressedChannel.publish({ kind: 'evtchn.suppressed', t: traceNow(), host: this.hv.host, domid: 0, device: this.device, port: this.port });
    }
  }

  /** Fault injection: a notification to the guest that the ring did not call for. */
  spuriousNotify(): void {
    if (this.port < 0) return;
    this.faultCounters.spurious++;
    this.hv.dom0Events.send(this.port);
  }

  /** Fault injection: an event on this backend's port as if the frontend sent it (storms). */
  eventFromFrontend(): void {
    if (this.port >= 0) this.hv.deliverEvent(0, this.port);
  }

  /** A frontend published impossible indices: stop its ring, keep everything else going. */
  protected stopRogue(message: string): void {
    this.state = 'rogue';
    this.counters.rogue++;
    this.log.warn({ err: message }, 'rogue frontend: ring stopped');
  }

  /** Stop taking requests, let in-flight ones finish, then release rings and the channel. */
  async disconnect(): Promise<void> {
    if (this.state === 'closed') return;
    this.quiesced = false;
    this.state = 'closing';
    await this.detachRings();
    this.release();
    this.state = 'closed';
  }

  private release(): void {
    if (this.port >= 0) {
      this.hv.dom0Events.off(this.port);
      try {
        this.hv.evtchn.close(0, this.port);
      } catch {
        /* the guest may already be gone */
      }
      this.port = -1;
    }
    for (const m of this.maps) {
      try {
        this.hv.grants.unmap(0, m.handle);
      } catch {
        /* guest destroyed: its mappings were already dropped */
      }
    }
    this.maps = [];
  }

  /** The toolstack is removing the device (guest shut down or destroyed). */
  async destroy(): Promise<void> {
    await this.xb.stopWatching();
    await this.disconnect();
  }
}
