/**
 * The real worker entry: started the way dom0's launcher starts it, driven over its control port
 * and real event channels, then shut down — the thread must exit by itself.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import {
  GuestMemory,
  HWBLK_OP_FLUSH,
  HWBLK_OP_READ,
  HWBLK_OP_WRITE,
  HW_STATUS_OK,
  PortLink,
  RpcPeer,
  hwBlkProtocol,
  startRuntimeWorker,
} from '@ringvisor/shared';
import type { HwStats } from './runtime.js';
import { Dom0Events, DriverQueue, tempDir } from './test-support/harness.js';

describe('hwsim worker', () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  it('serves disk I/O from a worker thread and exits after hw.shutdown', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.remove);
    const events = new Dom0Events();
    cleanups.push(() => events.close());
    const path = join(tmp.dir, 'disk.img');
    const { port1, port2 } = new MessageChannel();
    const worker = startRuntimeWorker(new URL('./hwsim.worker.ts', import.meta.url), {
      workerData: { control: port2, eventMemory: events.eventMemory, host: 'w1', disk: { path, sizeBytes: 256 * 1024 }, nic: { mac: '52:54:00:aa:bb:cc' } },
      transferList: [port2],
    });
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    const errors: Error[] = [];
    worker.on('error', (e) => errors.push(e));
    cleanups.push(() => void worker.terminate());
    const dom0 = new RpcPeer(new PortLink(port1), 'dom0');

    const dom0Mem = GuestMemory.allocate(0, 4);
    const guest = GuestMemory.allocate(9, 4);
    await dom0.call('hw.attachMemory', { domid: 0, buffer: dom0Mem.buffer }, 20_000);
    await dom0.call('hw.attachMemory', { domid: 9, buffer: guest.buffer });
    const ch = events.bindDevice();
    const q = new DriverQueue(dom0Mem.page(1), hwBlkProtocol, events.gate, ch.dom0Port, ch.irq);
    expect(await dom0.call('hw.disk.attach', { queue: { domid: 0, pfn: 1 }, port: ch.hwPort })).toEqual({ sectors: 512, sectorSize: 512 });

    for (let i = 0; i < 4096; i++) guest.page(1)[i] = (i * 13) & 0xff;
    q.submit([
      { op: HWBLK_OP_WRITE, id: 1, sector: 500n, segments: [{ domid: 9, pfn: 1, firstSect: 0, lastSect: 7 }] },
      { op: HWBLK_OP_FLUSH, id: 2, sector: 0n, segments: [] },
      { op: HWBLK_OP_READ, id: 3, sector: 500n, segments: [{ domid: 9, pfn: 2, firstSect: 0, lastSect: 7 }] },
    ]);
    expect(await q.collect(3, 10_000)).toEqual([
      { id: 1, status: HW_STATUS_OK },
      { id: 2, status: HW_STATUS_OK },
      { id: 3, status: HW_STATUS_OK },
    ]);
    expect(guest.page(2)).toEqual(guest.page(1));
    expect(ch.irq.count).toBeGreaterThanOrEqual(1);

    const stats = await dom0.call<HwStats>('hw.stats', {});
    expect(stats.disk.ops).toEqual({ read: 1, write: 1, flush: 1 });
    expect(stats.host).toBe('w1');

    expect(await dom0.call('hw.shutdown', {})).toBeNull();
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 10_000))]);
    expect(code).toBe(0);
    expect(errors).toEqual([]);
    expect(dom0.closed).toBe(true);
    expect(existsSync(path)).toBe(true);
  });
});
