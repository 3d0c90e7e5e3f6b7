/**
 * The guest-side carrier of trapped port I/O when the device models run in dom0 and no memory is
 * shared with it (ws transport; shared/trap/ioreq-link.ts has the protocol). It runs in its own
 * thread of the guest's process because the vCPU thread is blocked for the whole trap: it sleeps
 * on the slot's doorbell, claims the request, ships it with the ranges the driver synced for the
 * device, applies the device's writes to guest memory, and only then answers the vCPU. Virtual
 * interrupts arrive on the same link, after the writes they announce.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import {
  ClosedError,
  DmaSyncList,
  EventMemory,
  IoReqLinkContract,
  contractClient,
  onNotify,
  IOREQ_DOORBELL_WORD,
  IOREQ_SLOT_BYTES,
  IoReqSlotServer,
  RpcPeer,
  applyGuestWrites,
  connect,
  createDmaSyncList,
  createIoReqSlot,
  createLogger,
  floatingBus,
  siblingEntry,
  startRuntimeWorker,
  type DomainKey,
  type IoReq,
} from '@ringvisor/shared';
import type { GuestKernel } from './kernel.js';

export interface RelaySpec {
  url: string;
  /** This domain's key: it opens our vCPU link and nothing else. */
  domainKey: DomainKey;
  domid: number;
  slot: SharedArrayBuffer;
  syncList: SharedArrayBuffer;
  memory: SharedArrayBuffer;
  eventMemory: SharedArrayBuffer;
}

/** Relay thread body (ioreq-relay.worker.ts): connect as this domain's vCPU link, then carry requests until the link closes. */
export async function runRelay(spec: RelaySpec, report: MessagePort): Promise<void> {
  const log = createLogger('ioreq-relay', { domid: spec.domid });
  const link = await connect({ url: spec.url, domainKey: spec.domainKey, role: 'vcpu', domid: spec.domid, log });
  const peer = new RpcPeer(link, `vcpu/${spec.domid}`);
  const mem = new Uint8Array(spec.memory);
  const events = new EventMemory(spec.eventMemory);
  const slot = new IoReqSlotServer(spec.slot);
  const sync = new DmaSyncList(spec.syncList);
  const doorbell = new Int32Array(spec.slot, 0, IOREQ_SLOT_BYTES / 4);
  onNotify(
    peer,
    IoReqLinkContract.notifications.dma,
    ({ writes }) => {
      if (!applyGuestWrites(mem, writes)) log.warn('device writes outside this guest\'s memory from dom0 dropped');
    },
    (e) => log.warn({ err: e }, 'malformed device writes from dom0 dropped'),
  );
  onNotify(peer, IoReqLinkContract.notifications.irq, ({ port }) => void events.setPending(spec.domid, port));
  const dom0 = contractClient(IoReqLinkContract, peer);
  let open = true;
  link.onClose(() => {
    open = false;
    Atomics.notify(doorbell, IOREQ_DOORBELL_WORD);
  });
  report.postMessage('ready');
  let seen = Atomics.load(doorbell, IOREQ_DOORBELL_WORD);
  while (open) {
    const r = Atomics.waitAsync(doorbell, IOREQ_DOORBELL_WORD, seen, 1000);
    if (r.async) await r.value;
    seen = Atomics.load(doorbell, IOREQ_DOORBELL_WORD);
    for (let req: IoReq | undefined; open && (req = slot.claim()); ) {
      const pages = sync.take().flatMap(({ gpa, len }) => (gpa + len <= mem.byteLength ? [{ gpa, data: mem.slice(gpa, gpa + len) }] : []));
      try {
        const res = await dom0.access({ ...req, pages });
        applyGuestWrites(mem, res.writes);
        slot.complete(res.data);
      } catch {
        slot.complete(floatingBus(req.size)); // dom0 gone: the access reads as nothing there
      }
    }
  }
}

export interface IoReqRelay {
  slot: SharedArrayBuffer;
  syncList: DmaSyncList;
  stop(): Promise<void>;
}

/** Start the relay thread for this guest's vCPU and wait until its link to dom0 is up. */
export async function startIoReqRelay(kernel: GuestKernel, link: { url: string; domainKey: DomainKey }): Promise<IoReqRelay> {
  const slot = createIoReqSlot();
  const syncList = createDmaSyncList();
  const { port1, port2 } = new MessageChannel();
  const spec: RelaySpec = { url: link.url, domainKey: link.domainKey, domid: kernel.domid, slot, syncList, memory: kernel.memory.buffer, eventMemory: kernel.events.mem.buffer };
  const worker = startRuntimeWorker(siblingEntry(import.meta.url, './ioreq-relay.worker'), { workerData: { role: 'ioreq-relay', spec, report: port1 }, transferList: [port1], name: 'ioreq-relay' });
  const first = await new Promise<string>((resolve) => {
    port2.once('message', (m: string) => resolve(m));
    worker.once('error', (e) => resolve(`failed: ${e.message}`));
  });
  port2.close();
  if (first !== 'ready') {
    await worker.terminate();
    throw new ClosedError(`ioreq relay: ${first}`);
  }
  return { slot, syncList: new DmaSyncList(syncList), stop: async () => void (await worker.terminate()) };
}
