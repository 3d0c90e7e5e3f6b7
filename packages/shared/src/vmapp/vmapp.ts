/**
 * The VMApp (VMware Workstation's hosted design): one per guest, in the host world, owning that
 * guest's device models. Here it is a worker thread (vmapp.worker.ts), started by dom0's toolstack in the threads
 * transport or by the guest's own process over ws (shared/trap/vmapp.ts `startVmApp`). It maps the
 * guest's memory (the models DMA into it directly, as VMware's VMApp does), serves the accesses
 * the guest's VMM forwards through the vCPU's ioreq slot, raises the guest's virtual interrupts,
 * and reaches the host's devices only through dom0 — its VMNet bridge port for frames, dom0's
 * physical disk driver for sectors — over its control link:
 *
 *   guest vCPU ─trap─► VMM (guest world) ─world switch─► VMApp: Lance/ATA model ─VMNet write─► dom0 bridge
 *                      ◄──────────────── world switch ◄─┘      └─ virtual IRQ (event) ──► guest
 *
 * The VMApp sleeps on the slot's doorbell (`Atomics.waitAsync`); the ioreq server then polls for
 * bursts as in dom0. After every access it serves, and after every frame, transmit and interrupt,
 * it publishes each Lance's status mirror (shared/trap/hosted-vmm.ts) for the VMM's fast path,
 * and sends whatever transmits the VMM queued (send combining).
 */
import { EventChannelGate, EventMemory } from '../evtchn/index.js';
import { GuestMemoryDma } from '../trap/index.js';
import { IOREQ_DOORBELL_WORD, IOREQ_SLOT_BYTES } from '../trap/ioreq.js';
import { VMM_CSR0, VMM_CSR3, VMM_CSR4, VMM_FLAGS, VMM_FLAG_MIRROR_WIO, VMM_LANCE_WORDS, VMM_TXQ } from '../trap/hosted-vmm.js';
import type { VmAppSpec, VmAppStats } from '../trap/vmapp.js';
import { VmAppContract, VmAppHostContract } from '../contracts/vmapp.js';
import { contractClient, notify, onNotify, serveContract, type ContractClient } from '../contracts/contract.js';
import { InterruptFaults, parseInterruptFault } from '../hw/irq-faults.js';
import type { Logger } from '../log/index.js';
import type { RpcPeer } from '../transport/rpc.js';
import { IoReqServer } from '../trap/ioreq-server.js';
import { LanceDevice } from '../devicemodels/lance/index.js';
import { AtaDevice, type AtaBacking } from '../devicemodels/ata/index.js';

/** Longest a queued transmit waits when nothing else causes a switch (send combining's bound). */
const SEND_COMBINING_DELAY_MS = 2;
/**
 * Longest the VMApp sleeps on the doorbell: a lost kick (a fault, or a bug) costs at most this,
 * as the missed-event poll bounds a lost notification elsewhere.
 */
const DOORBELL_WAIT_MS = 500;

export class VmApp {
  private readonly server: IoReqServer;
  private readonly dma: GuestMemoryDma;
  /** Deliver one of the guest's virtual IRQs (see VmAppSpec.localInterrupts). */
  private readonly deliver: (port: number) => void;
  /** An injected event fault (vmapp.faults) on this guest's IRQs and the VMM's kicks. */
  private readonly faults = new InterruptFaults();
  private readonly lances: Array<{ name: string; model: LanceDevice; mirror: Int32Array }> = [];
  private readonly disks: Array<{ name: string; model: AtaDevice }> = [];
  private readonly vmnet = { writes: 0, bytesOut: 0, reads: 0, bytesIn: 0 };
  private readonly combined = { sent: 0, flushes: 0, timerFlushes: 0 };
  private readonly doorbell: Int32Array;
  private running = true;
  private timer?: NodeJS.Timeout;
  /** The VMApp's host on its link (dom0, or the guest's process relaying): the guest's disk region. */
  private readonly host: ContractClient<typeof VmAppHostContract>;

  constructor(
    private readonly spec: VmAppSpec,
    private readonly peer: RpcPeer,
    private readonly log: Logger,
  ) {
    this.dma = new GuestMemoryDma(new Uint8Array(spec.memory));
    this.host = contractClient(VmAppHostContract, peer);
    if (spec.localInterrupts) {
      // In the guest's own process: set the guest's pending bit and raise its upcall, as the
      // hypervisor's delivery would.
      const mem = new EventMemory(spec.eventMemory);
      this.deliver = (port) => void mem.setPending(spec.domid, port);
    } else {
      // Send only: raise the interrupts on dom0's ends of the IRQ channels. This thread never
      // dispatches dom0's ports (dom0's own loop does).
      const gate = new EventChannelGate(spec.eventMemory, 0);
      this.deliver = (port) => void gate.send(port);
    }
    this.doorbell = new Int32Array(spec.slot, 0, IOREQ_SLOT_BYTES / 4);
    this.server = new IoReqServer({
      domid: spec.domid,
      slot: spec.slot,
      log,
      ...(spec.pollUs !== undefined ? { pollUs: spec.pollUs } : {}),
      // Every forwarded access is a switch into the VMApp: what the VMM queued goes out first,
      // and the mirror is current before the VMM gets its answer.
      beforeAccess: () => this.flushCombined(false),
      afterAccess: () => this.publish(),
    });
    for (const n of spec.nics) this.addLance(n);
    for (const d of spec.disks) this.addDisk(d);
    onNotify(peer, VmAppContract.notifications.frame, ({ devid, frame }) => {
      const l = this.lances[spec.nics.findIndex((n) => n.devid === devid)];
      if (!l) return;
      this.vmnet.reads++;
      this.vmnet.bytesIn += frame.byteLength;
      l.model.receive(frame);
      this.publish();
    });
    serveContract(peer, VmAppContract, {
      stats: () => this.stats(),
      faults: (f) => {
        this.faults.set(spec.domid, parseInterruptFault(f, VmAppContract.methods.faults.wire));
        return this.faults.countsOf(spec.domid);
      },
      stop: () => {
        this.stop();
        return true;
      },
    });
    peer.link.onClose(() => this.stop());
  }

  private addLance(n: VmAppSpec['nics'][number]): void {
    const mirror = new Int32Array(this.spec.vmmShared, n.index * VMM_LANCE_WORDS * 4, VMM_LANCE_WORDS);
    let transmitScheduled = false;
    const model: LanceDevice = new LanceDevice({
      mac: Uint8Array.from(n.mac.split(':').map((h) => parseInt(h, 16))),
      dma: this.dma,
      irq: (level) => {
        this.publish();
        if (!level) return;
        this.raise(n.irqPort);
        // An interrupt-driven switch: send what the VMM queued (once the model is done with
        // the operation that raised the interrupt).
        queueMicrotask(() => this.flushCombined(false));
      },
      // The last OUT of a transmit becomes a write to VMNet.
      transmit: (frame) => {
        this.vmnet.writes++;
        this.vmnet.bytesOut += frame.byteLength;
        notify(this.peer, VmAppContract.notifications.frame, { devid: n.devid, frame });
      },
      kick: () => {
        if (transmitScheduled) return;
        transmitScheduled = true;
        setImmediate(() => {
          transmitScheduled = false;
          if (!this.running) return;
          model.transmitPoll();
          this.publish();
        });
      },
    });
    this.server.map({ name: n.name, base: n.base, length: 0x20, handler: model });
    this.lances.push({ name: n.name, model, mirror });
    this.publish();
  }

  private addDisk(d: VmAppSpec['disks'][number]): void {
    // The host-side file the VMApp reads and writes: the guest's region, through dom0's disk driver.
    const backing: AtaBacking = {
      sectors: d.sectors,
      read: async (lba, count) => {
        const r = await this.host.disk({ devid: d.devid, op: 'read', lba, count });
        return r.status === 0 && r.data ? r.data : r.status || -1;
      },
      write: async (lba, data) => (await this.host.disk({ devid: d.devid, op: 'write', lba, data })).status,
      flush: async () => (await this.host.disk({ devid: d.devid, op: 'flush' })).status,
    };
    const model = new AtaDevice({ backing, irq: () => this.raise(d.irqPort), serial: `RV${this.spec.domid}-${d.devid}`, model: 'ringvisor ATA disk' });
    this.server.map({ name: `${d.name}.cmd`, base: d.commandBase, length: 8, handler: model.commandBlock });
    this.server.map({ name: `${d.name}.ctl`, base: d.controlBase, length: 1, handler: model.controlBlock });
    this.disks.push({ name: d.name, model });
  }

  /** Raise a virtual IRQ — unless an injected fault loses or delays it (drivers recover as on hardware). */
  private raise(port: number): void {
    this.faults.deliver(this.spec.domid, () => this.running && this.deliver(port));
  }

  /** Each Lance's status mirror, for the VMM's fast path. */
  private publish(): void {
    for (const l of this.lances) {
      const m = l.model;
      Atomics.store(l.mirror, VMM_CSR0, m.peekCsr(0));
      Atomics.store(l.mirror, VMM_CSR3, m.peekCsr(3));
      Atomics.store(l.mirror, VMM_CSR4, m.peekCsr(4));
      // The VMM understands the 16-bit register map only (BCR18 DWIO bit clear).
      Atomics.store(l.mirror, VMM_FLAGS, m.peekBcr(18) & 0x80 ? 0 : VMM_FLAG_MIRROR_WIO);
    }
  }

  /** Send the transmits the VMM queued (a transmit demand, as TDMD would). */
  private flushCombined(byTimer: boolean): void {
    for (const l of this.lances) {
      const n = Atomics.exchange(l.mirror, VMM_TXQ, 0);
      if (n === 0) continue;
      this.combined.flushes++;
      if (byTimer) this.combined.timerFlushes++;
      this.combined.sent += n;
      l.model.transmitPoll();
    }
  }

  /** Serve the slot: sleep on the doorbell, serve (and poll) the accesses, publish, repeat. */
  start(): void {
    void this.loop();
    // Send combining's bounded delay: a queued transmit never waits longer than this.
    this.timer = setInterval(() => this.flushCombined(true), SEND_COMBINING_DELAY_MS);
  }

  private async loop(): Promise<void> {
    let seen = Atomics.load(this.doorbell, IOREQ_DOORBELL_WORD);
    while (this.running) {
      const r = Atomics.waitAsync(this.doorbell, IOREQ_DOORBELL_WORD, seen, DOORBELL_WAIT_MS);
      const rang = r.async ? (await r.value) === 'ok' : r.value !== 'timed-out';
      seen = Atomics.load(this.doorbell, IOREQ_DOORBELL_WORD);
      if (!this.running) break;
      // A lost kick: the wake-up is dropped; the access waits in its slot for the bounded wait.
      if (rang && this.faults.dropKick(this.spec.domid)) continue;
      this.server.wake();
    }
  }

  stats(): VmAppStats {
    return {
      ioreq: { ...this.server.counters },
      perRange: Object.fromEntries(this.server.perRange),
      dma: { bytesRead: this.dma.bytesRead, bytesWritten: this.dma.bytesWritten },
      vmnet: { ...this.vmnet },
      combined: { ...this.combined },
      busyMs: performance.eventLoopUtilization().active,
      devices: [
        ...this.lances.map((l) => ({ name: l.name, kind: 'nic' as const, metrics: { ...l.model.counters } })),
        ...this.disks.map((d) => ({ name: d.name, kind: 'disk' as const, metrics: { ...d.model.counters } })),
      ],
    };
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.timer);
    this.server.close();
    Atomics.notify(this.doorbell, IOREQ_DOORBELL_WORD);
    this.log.debug({ guest: this.spec.guest }, 'vmapp stopped');
  }
}
