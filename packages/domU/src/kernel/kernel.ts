/**
 * The guest kernel's view of the machine: its own memory and frame allocator, the granting side
 * of its grant table, its event channels, the store, and hypercalls (a link to the hypervisor,
 * bound by the hypervisor to this domain's id).
 */
import {
  HypercallContract,
  contractClient,
  type ContractClient,
  EventChannelGate,
  FrameAllocator,
  GuestLinkEnd,
  type PageSync,
  GrantTable,
  GuestMemory,
  RemoteStoreClient,
  type Logger,
  type RpcPeer,
  type StoreClient,
  type RingLabel,
  EventChannelError,
} from '@ringvisor/shared';

export interface GuestKernelOptions {
  domid: number;
  memory: SharedArrayBuffer;
  grantTable: SharedArrayBuffer;
  eventMemory: SharedArrayBuffer;
  hypercalls: RpcPeer;
  log: Logger;
  /** The host this guest runs on (labels in trace events). */
  host?: string;
  /**
   * True when dom0 is across a link with no shared memory (ws transport): grants, ring pages
   * and events then travel on the hypercall link (shared/transport/domain-link.ts).
   */
  linked?: boolean;
}

export class GuestKernel {
  readonly domid: number;
  readonly memory: GuestMemory;
  readonly frames: FrameAllocator;
  readonly grants: GrantTable;
  readonly events: EventChannelGate;
  readonly store: StoreClient;
  /** The control link to dom0 (hypercalls, guest control, VMApp relaying). */
  readonly hypercalls: RpcPeer;
  /** Typed hypercalls on it (HypercallContract). */
  readonly hv: ContractClient<typeof HypercallContract>;
  readonly log: Logger;
  readonly link?: GuestLinkEnd;
  readonly host: string;

  /** Name a frontend ring in trace events. */
  labelRing(ring: { label?: RingLabel }, device: string, name: string): void {
    ring.label = { host: this.host, domid: this.domid, device, ring: name, side: 'front' };
  }

  constructor(o: GuestKernelOptions) {
    this.domid = o.domid;
    this.memory = new GuestMemory(o.domid, o.memory);
    this.frames = new FrameAllocator(this.memory);
    this.grants = new GrantTable(o.grantTable, o.domid);
    if (o.linked) this.link = new GuestLinkEnd(o.hypercalls, o.domid, this.memory, this.grants, () => this.events.mem);
    this.events = new EventChannelGate(o.eventMemory, o.domid, this.link?.routing());
    this.host = o.host ?? '';
    this.events.traceHost = this.host;
    this.hypercalls = o.hypercalls;
    this.hv = contractClient(HypercallContract, o.hypercalls);
    this.store = new RemoteStoreClient(o.hypercalls, o.domid);
    this.log = o.log;
    this.events.start();
    // Missed-interrupt polling: a lost notification delays this guest by at most 500 ms.
    this.events.startMissedEventPoll(500);
  }

  /**
   * The PageSync for a ring this guest builds on its frame `pfn` (undefined on shared memory).
   * `lateWake` runs when the peer armed its event index behind our producer index.
   */
  ringSync(pfn: number, lateWake: () => void): PageSync | undefined {
    if (!this.link) return undefined;
    const sync = this.link.ringSync(pfn, this.memory.page(pfn));
    sync.lateWake = lateWake;
    return sync;
  }

  /**
   * Notify the backend on `port`. False when its end is closed (it is going away or restarting):
   * the notification has nobody to reach, as notify_remote_via_irq on a closed channel, and the
   * backend's state change follows — a driver counts it and carries on.
   */
  notifyRemote(port: number): boolean {
    try {
      this.events.send(port);
      return true;
    } catch (e) {
      if (!(e instanceof EventChannelError)) throw e;
      return false;
    }
  }

  /** EVTCHNOP_alloc_unbound: a port the given remote domain may bind to. */
  allocUnboundPort(remoteDom: number): Promise<number> {
    return this.hv.evtchnAllocUnbound({ remoteDom });
  }

  async closePort(port: number): Promise<void> {
    this.events.off(port);
    await this.hv.evtchnClose({ port });
  }

  shutdown(): void {
    this.events.stop();
  }
}
