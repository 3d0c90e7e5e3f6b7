/**
 * The simulator in-process, driven over a real RpcPeer pair (MessageChannel) by a test playing
 * dom0: the control contract, the NIC's queues over real event channels, the LAN uplink.
 */
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  GuestMemory,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_EIO,
  HW_STATUS_OK,
  HardwareContract,
  PortLink,
  RpcPeer,
  contractClient,
  hwBlkProtocol,
  hwNicRxProtocol,
  hwNicTxProtocol,
  initSharedRing,
  type RingvisorError,
} from '@ringvisor/shared';
import { LanSegment } from './lan/segment.js';
import { HW_RPC, HardwareSimulator, parseWorkerData, type HwStats } from './runtime.js';
import { Dom0Events, DriverQueue, ethFrame, quietLogger, tempDir, waitFor } from './test-support/harness.js';

const MAC = '52:54:00:12:34:56';
const PEER = '02:00:00:00:00:99';

async function rpcError(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as RingvisorError).code;
  }
  throw new Error('call unexpectedly succeeded');
}

describe('HardwareSimulator over RPC', () => {
  let tmp: ReturnType<typeof tempDir>;
  let events: Dom0Events;
  let sim: HardwareSimulator;
  let dom0: RpcPeer;
  let dom0Mem: GuestMemory;
  let guestMem: GuestMemory;

  beforeEach(() => {
    dom0Mem = GuestMemory.allocate(0, 64);
    guestMem = GuestMemory.allocate(3, 16);
    tmp = tempDir();
    events = new Dom0Events();
    sim = new HardwareSimulator({
      eventMemory: events.eventMemory,
      host: 'h1',
      disk: { path: join(tmp.dir, 'disk.img'), sizeBytes: 64 * 1024 },
      nic: { mac: MAC },
      logger: quietLogger(),
    });
    const { port1, port2 } = new MessageChannel();
    sim.serve(new RpcPeer(new PortLink(port2), 'hwsim')).start();
    dom0 = new RpcPeer(new PortLink(port1), 'dom0');
  });

  afterEach(() => {
    sim.shutdown();
    dom0.close();
    events.close();
    tmp.remove();
  });

  it('answers the control contract, validating every parameter', async () => {
    expect(await dom0.call(HW_RPC.attachMemory, { domid: 0, buffer: dom0Mem.buffer })).toBeNull();
    expect(await dom0.call('hw.attachMemory', { domid: 3, buffer: guestMem.buffer })).toBeNull();
    const disk = events.bindDevice();
    const nic = events.bindDevice();
    for (const pfn of [1, 2, 3]) initSharedRing(dom0Mem.page(pfn));
    expect(await dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 1 }, port: disk.hwPort })).toEqual({ sectors: 128, sectorSize: 512 });
    expect(await dom0.call('hw.nic.attach', { tx: { domid: 0, pfn: 2 }, rx: { domid: 0, pfn: 3 }, port: nic.hwPort })).toEqual({ mac: MAC });

    expect(await rpcError(dom0.call('hw.attachMemory', { domid: 4, buffer: new ArrayBuffer(4096) }))).toBe('RV_ERR_INVALID_ARG');
    expect(await rpcError(dom0.call('hw.attachMemory', { domid: -1, buffer: new SharedArrayBuffer(4096) }))).toBe('RV_ERR_INVALID_ARG');
    expect(await rpcError(dom0.call('hw.disk.attach', { queue: { domid: 0 }, port: disk.hwPort }))).toBe('RV_ERR_INVALID_ARG');
    expect(await rpcError(dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 1 }, port: 700 }))).toBe('RV_ERR_DEVICE'); // not bound
    expect(await rpcError(dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 64 }, port: disk.hwPort }))).toBe('RV_ERR_DEVICE'); // DMA fault
    expect(await rpcError(dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 1 }, port: nic.hwPort }))).toBe('RV_ERR_INVALID_ARG');
    expect(await rpcError(dom0.call('hw.nic.link', { up: 'yes' }))).toBe('RV_ERR_INVALID_ARG');
    expect(await rpcError(dom0.call('hw.nope', {}))).toBe('RV_ERR_PROTOCOL');
    expect(await dom0.call('hw.nic.link', { up: false })).toEqual({ link: 'down' });
    expect(await dom0.call('hw.nic.link', { up: true })).toEqual({ link: 'up' });

    const stats = await dom0.call<HwStats>('hw.stats', {});
    expect(JSON.parse(JSON.stringify(stats))).toEqual(stats); // plain JSON
    expect(stats.host).toBe('h1');
    expect(stats.disk).toMatchObject({ sectors: 128, closed: false, queue: { port: disk.hwPort, stopped: false } });
    expect(stats.nic).toMatchObject({ mac: MAC, port: nic.hwPort, link: 'up' });
    expect(stats.dma.attachedDomains).toEqual([0, 3]);
    expect(stats.dma.faults).toBe(1);
    // The PF and each NIC virtual function are stations on the NIC's embedded switch.
    expect(Object.keys(stats.lan.ports)).toEqual(['h1:nic0', 'h1:nic0vf1', 'h1:nic0vf2', 'h1:nic0vf3', 'h1:nic0vf4']);
    expect(stats.sriov.functions.map((f) => f.rid)).toEqual(['00:03.1', '00:03.2', '00:03.3', '00:03.4', '00:04.1', '00:04.2', '00:04.3', '00:04.4']);
    expect(stats.sriov.functions.every((f) => f.owner === null)).toBe(true);

    expect(await dom0.call('hw.shutdown', {})).toBeNull();
    await waitFor(() => dom0.closed, 2000, 'control link to close after hw.shutdown');
    expect(sim.closed).toBe(true);
    expect(sim.disk.closed).toBe(true);
  });

  it('answers every refusal of its real handlers with a specific code its contract declares (typed client)', async () => {
    const hw = contractClient(HardwareContract, dom0);
    await hw.attachMemory({ domid: 0, buffer: dom0Mem.buffer });
    await hw.attachMemory({ domid: 3, buffer: guestMem.buffer });
    const unbound = 700;
    const bound = events.bindDevice();
    type Key = keyof typeof HardwareContract.methods;
    const cases: Array<[Key, () => Promise<unknown>, string]> = [
      ['vfReclaim', () => hw.vfReclaim({ rid: '00:09.7' }), 'RV_ERR_INVALID_ARG'], // unknown rid
      ['vfAssign', () => hw.vfAssign({ kind: 'nic', domid: 5, frames: 1, port: bound.hwPort, guestPort: 9 }), 'RV_ERR_DEVICE'], // no memory attached
      ['vfAssign', () => hw.vfAssign({ kind: 'disk', domid: 3, frames: 1, port: unbound, guestPort: 9 }), 'RV_ERR_DEVICE'], // port not bound to a driver
      ['vfAssign', () => hw.vfAssign({ kind: 'nic', domid: 3, frames: 999, port: bound.hwPort, guestPort: 9 }), 'RV_ERR_INVALID_ARG'], // more frames than memory
      ['svioDestroy', () => hw.svioDestroy({ vif: 99 }), 'RV_ERR_INVALID_ARG'], // unknown vif
      ['svioQos', () => hw.svioQos({ vif: 99, weight: 10 }), 'RV_ERR_INVALID_ARG'], // unknown vif
      ['svioCreate', () => hw.svioCreate({ kind: 'net', domid: 5, port: bound.hwPort, mac: PEER }), 'RV_ERR_DEVICE'], // no memory attached
      ['lanFaults', () => hw.lanFaults({ faults: { drop: 0.5 } }), 'RV_ERR_DEVICE'], // no uplink on a single host
      ['diskAttach', () => hw.diskAttach({ queue: { domid: 0, pfn: 1 }, port: unbound }), 'RV_ERR_DEVICE'],
      ['diskAttach', () => hw.diskAttach({ queue: { domid: 0, pfn: 64 }, port: bound.hwPort }), 'RV_ERR_DEVICE'], // queue outside memory
      ['diskFaults', () => hw.diskFaults({ rules: [{ id: 'x', op: 'flush', error: 'bitflip' }] }), 'RV_ERR_INVALID_ARG'],
      ['irqFaults', () => hw.irqFaults({ domid: 3, fault: { lostToGuest: 0.5, delayMs: -1, seed: 1 } }), 'RV_ERR_INVALID_ARG'],
      ['nicLink', () => dom0.call('hw.nic.link', { up: 'yes' }), 'RV_ERR_INVALID_ARG'],
    ];
    for (const [key, call, code] of cases) {
      const got = await rpcError(call());
      expect({ key, got }).toEqual({ key, got: code });
      expect([...HardwareContract.methods[key].errors, 'RV_ERR_INVALID_ARG']).toContain(got);
    }
    // A refusal names the field: the schema's path.
    await expect(dom0.call('hw.svio.qos', { vif: 1, weight: 5000 })).rejects.toThrow(/\/weight/);
    // After power-off every method answers RV_ERR_CLOSED (from the hardware, or the link it closed).
    sim.shutdown();
    for (const key of ['nicLink', 'detachMemory'] as const) {
      const got = await rpcError(key === 'nicLink' ? hw.nicLink({ up: true }) : hw.detachMemory({ domid: 3 }));
      expect(got).toBe('RV_ERR_CLOSED');
      expect(HardwareContract.methods[key].errors).toContain(got);
    }
  });

  it('serves disk I/O after attach over RPC, doorbell and IRQ on real event channels', async () => {
    await dom0.call('hw.attachMemory', { domid: 0, buffer: dom0Mem.buffer });
    await dom0.call('hw.attachMemory', { domid: 3, buffer: guestMem.buffer });
    const ch = events.bindDevice();
    const q = new DriverQueue(dom0Mem.page(5), hwBlkProtocol, events.gate, ch.dom0Port, ch.irq);
    await dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 5 }, port: ch.hwPort });
    guestMem.page(1).fill(0xab);
    q.submit([{ op: HWBLK_OP_WRITE, id: 1, sector: 127n, segments: [{ domid: 3, pfn: 1, firstSect: 0, lastSect: 0 }] }]);
    q.submit([{ op: HWBLK_OP_READ, id: 2, sector: 127n, segments: [{ domid: 3, pfn: 2, firstSect: 7, lastSect: 7 }] }]);
    expect((await q.collect(2)).map((r) => r.status)).toEqual([HW_STATUS_OK, HW_STATUS_OK]);
    expect(guestMem.page(2).subarray(3584).every((b) => b === 0xab)).toBe(true);
    expect(guestMem.page(2)[3583]).toBe(0);
    expect(ch.irq.count).toBeGreaterThanOrEqual(1);
    expect((await dom0.call<HwStats>('hw.stats')).events.received).toBeGreaterThanOrEqual(1); // doorbells arrived as events
  });

  it('installs disk fault rules over RPC (hw.disk.faults), validating each, and reports them in hw.stats', async () => {
    expect((await dom0.call<HwStats>(HW_RPC.stats)).disk.faults).toEqual([]);
    const rules = [
      { id: 'eio-w', op: 'write', sectors: [0, 64], error: 'eio', times: 1 },
      { id: 'rot-r', op: 'read', error: 'bitflip', probability: 0.5, seed: 11 },
    ];
    expect(await dom0.call(HW_RPC.diskFaults, { rules })).toEqual([
      { id: 'eio-w', hits: 0, spent: false },
      { id: 'rot-r', hits: 0, spent: false },
    ]);

    await dom0.call('hw.attachMemory', { domid: 0, buffer: dom0Mem.buffer });
    await dom0.call('hw.attachMemory', { domid: 3, buffer: guestMem.buffer });
    const ch = events.bindDevice();
    const q = new DriverQueue(dom0Mem.page(5), hwBlkProtocol, events.gate, ch.dom0Port, ch.irq);
    await dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 5 }, port: ch.hwPort });
    q.submit([1, 2].map((id) => ({ op: HWBLK_OP_WRITE, id, sector: 8n, segments: [{ domid: 3, pfn: 1, firstSect: 0, lastSect: 0 }] })));
    expect((await q.collect(2)).map((r) => r.status)).toEqual([HW_STATUS_EIO, HW_STATUS_OK]);
    const stats = await dom0.call<HwStats>(HW_RPC.stats);
    expect(stats.disk.faults).toEqual([
      { id: 'eio-w', hits: 1, spent: true },
      { id: 'rot-r', hits: 0, spent: false },
    ]);
    expect(stats.disk.injected).toEqual({ eio: 1, bitflip: 0 });

    // A bad rule is refused and leaves the installed rules in place.
    const bad: Array<[unknown, RegExp]> = [
      [{}, /\/rules: expected required property/i],
      [{ rules: [{ id: 'x', op: 'erase', error: 'eio' }] }, /rules\[0\]: .*\.op/],
      [{ rules: [{ id: 'x', op: 'read', error: 'eio' }, { id: 'x', op: 'write', error: 'eio' }] }, /duplicate id "x"/],
      [{ rules: [{ id: 'x', op: 'read', error: 'eio', probability: 7 }] }, /probability/],
      [{ rules: [{ id: 'x', op: 'flush', sectors: [0, 8], error: 'eio' }] }, /flush has no sectors/],
    ];
    for (const [params, message] of bad) {
      const err = await dom0.call(HW_RPC.diskFaults, params).then(
        () => undefined,
        (e: unknown) => e as RingvisorError,
      );
      expect(err?.code).toBe('RV_ERR_INVALID_ARG');
      expect(err?.message).toMatch(message);
    }
    expect((await dom0.call<HwStats>(HW_RPC.stats)).disk.faults).toHaveLength(2);

    expect(await dom0.call(HW_RPC.diskFaults, { rules: [] })).toEqual([]);
    expect((await dom0.call<HwStats>(HW_RPC.stats)).disk.faults).toEqual([]);
  });

  it('moves frames between the NIC queues and the LAN, with doorbell and IRQ on one channel', async () => {
    await dom0.call('hw.attachMemory', { domid: 0, buffer: dom0Mem.buffer });
    const probe = sim.lan.attach('peer');
    const heard: Uint8Array[] = [];
    probe.onFrame((f) => heard.push(f));
    const ch = events.bindDevice();
    const tx = new DriverQueue(dom0Mem.page(10), hwNicTxProtocol, events.gate, ch.dom0Port, ch.irq);
    const rx = new DriverQueue(dom0Mem.page(11), hwNicRxProtocol, events.gate, ch.dom0Port, ch.irq);
    await dom0.call('hw.nic.attach', { tx: { domid: 0, pfn: 10 }, rx: { domid: 0, pfn: 11 }, port: ch.hwPort });
    rx.submit([0, 1, 2].map((id) => ({ domid: 0, id, pfn: 20 + id, offset: 128, len: 1600 })));
    // attach kicked once; the rx post rings the doorbell again (an event on the NIC's port)
    await waitFor(() => sim.stats().nic.doorbells >= 2, 2000, 'rx post doorbell');

    const inbound = ethFrame(MAC, PEER, 200);
    probe.send(inbound);
    const [r] = await rx.collect(1);
    expect(r).toEqual({ id: 0, status: 214 });
    expect(dom0Mem.page(20).slice(128, 128 + 214)).toEqual(inbound);

    const outbound = ethFrame(PEER, MAC, 64);
    dom0Mem.page(30).set(outbound, 100);
    tx.submit([{ domid: 0, id: 7, pfn: 30, offset: 100, len: outbound.byteLength }]);
    expect(await tx.collect(1)).toEqual([{ id: 7, status: HW_STATUS_OK }]);
    expect(heard).toEqual([outbound]);
    const s = sim.stats();
    expect(s.nic).toMatchObject({ txPackets: 1, rxPackets: 1, rxMissed: 0 });
    expect(s.lan.counters.forwarded).toBe(1); // the NIC's reply went to the learned peer port only
  });

  it('detaching the memory that holds the queues stops them', async () => {
    await dom0.call('hw.attachMemory', { domid: 0, buffer: dom0Mem.buffer });
    const d = events.bindDevice();
    const n = events.bindDevice();
    for (const pfn of [1, 2, 3]) initSharedRing(dom0Mem.page(pfn));
    await dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 1 }, port: d.hwPort });
    await dom0.call('hw.nic.attach', { tx: { domid: 0, pfn: 2 }, rx: { domid: 0, pfn: 3 }, port: n.hwPort });
    await dom0.call('hw.detachMemory', { domid: 0 });
    const s = sim.stats();
    expect(s.disk.queue).toMatchObject({ stopped: true, stopReason: 'memory of domain 0 detached' });
    expect(s.nic.queues.attached).toBe(false);
    expect(s.dma.attachedDomains).toEqual([]);
  });

  it('patches an external LAN port into the host segment (uplink)', () => {
    const remote = new LanSegment({ name: 'switch' });
    const far = remote.attach('far-host');
    const heard: Uint8Array[] = [];
    far.onFrame((f) => heard.push(f));
    const local = sim.uplink(remote.attach('to-h1'));
    expect(local.name).toBe('uplink:to-h1');
    const probe = sim.lan.attach('local-probe');
    const f = ethFrame('ff:ff:ff:ff:ff:ff', PEER, 30);
    probe.send(f);
    expect(heard).toEqual([f]);
    expect(sim.stats().lan.ports['uplink:to-h1'].framesOut).toBe(1);
  });

  it('shuts itself down (disk flushed and closed) when the control link closes', async () => {
    dom0.close('dom0 gone');
    await waitFor(() => sim.closed, 2000, 'simulator to shut down');
    expect(sim.disk.closed).toBe(true);
  });

  it('validates worker data', () => {
    const { port1 } = new MessageChannel();
    const good = { control: port1, eventMemory: new SharedArrayBuffer(8), host: 'h', disk: { path: '/x', sizeBytes: 512 }, nic: { mac: MAC } };
    expect(parseWorkerData({ ...good, __entry: 'file:///x' })).toEqual(good);
    expect(() => parseWorkerData({ ...good, control: null })).toThrow(/MessagePort/);
    expect(() => parseWorkerData({ ...good, disk: { path: '/x' } })).toThrow(/disk/);
    port1.close();
  });
});

