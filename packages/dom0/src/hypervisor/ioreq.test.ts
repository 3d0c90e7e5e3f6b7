/**
 * Trapped port I/O between real threads: a worker vCPU blocks on every access until dom0's
 * IoReqServer (this thread, on its event loop) has run the device model and answered.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Worker } from 'node:worker_threads';
import {
  EventChannelAuthority,
  EventChannelGate,
  createEventMemory,
  createIoReqSlot,
  createLogger,
  IoReqServer,
  startRuntimeWorker,
  type IoSize,
  type PortIoHandler,
} from '@ringvisor/shared';
import type { VcpuProgramResult } from './test-support/vcpu-peer.worker.js';

/** 16 bytes of little-endian registers: what is written is read back, at any width. */
class RegisterFile implements PortIoHandler {
  readonly bytes = new Uint8Array(16);
  writes = 0;
  ioRead(off: number, size: IoSize): number {
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + this.bytes[off + i];
    return v;
  }
  ioWrite(off: number, size: IoSize, value: number): void {
    this.writes++;
    for (let i = 0; i < size; i++) this.bytes[off + i] = (value >>> (8 * i)) & 0xff;
  }
}

const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

function setup(pollUs: number) {
  const eventMemory = createEventMemory();
  const authority = new EventChannelAuthority(eventMemory);
  authority.createDomain(0);
  authority.createDomain(1);
  const dom0Port = authority.allocUnbound(0, 1);
  const guestPort = authority.bindInterdomain(1, 0, dom0Port);
  const events = new EventChannelGate(eventMemory, 0);
  events.start();
  const slot = createIoReqSlot();
  const global = { traps: 0, worldSwitches: 0 };
  const server = new IoReqServer({ domid: 1, slot, events, port: dom0Port, log: createLogger('test', {}), global, pollUs });
  const regs = new RegisterFile();
  server.map({ name: 'regs', base: 0x100, length: 16, handler: regs });
  const run = (count: number, deadlineMs = 10_000): Promise<VcpuProgramResult> => {
    const w = startRuntimeWorker(new URL('./test-support/vcpu-peer.worker.ts', import.meta.url), {
      workerData: { role: 'vcpu-peer', slot, eventMemory, domid: 1, port: guestPort, count, deadlineMs },
    });
    workers.push(w);
    return new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
  };
  return { server, regs, global, events, run };
}

describe('trapped port I/O (ioreq slot between threads)', () => {
  it('every access blocks the vCPU until the device model answered, and is counted once', async () => {
    const { server, regs, global, events, run } = setup(50);
    const r = await run(3000);
    events.stop();
    expect(r.mismatches).toBe(0);
    expect(r.unassignedReads).toEqual([0xff, 0xffff, 0xffffffff]);
    const traps = 3000 * 2 + 3;
    expect(r.counters.traps).toBe(traps);
    expect(server.counters.traps).toBe(traps);
    expect(server.counters.worldSwitches).toBe(2 * traps);
    expect(global).toEqual({ traps, worldSwitches: 2 * traps });
    expect(regs.writes).toBe(3000);
    expect(server.counters.unassigned).toBe(3);
    // Every access either kicked the server or found it polling.
    expect(r.counters.kicks + r.counters.kicksSuppressed).toBe(traps);
    expect(r.counters.timeouts).toBe(0);
  });

  it('without polling, every access kicks the server', async () => {
    const { server, events, run } = setup(0);
    const r = await run(200);
    events.stop();
    expect(r.mismatches).toBe(0);
    expect(r.counters.kicksSuppressed).toBe(0);
    expect(r.counters.kicks).toBe(r.counters.traps);
    expect(server.counters.polled).toBe(0);
    expect(server.counters.traps).toBe(r.counters.traps);
  });

  it('a vCPU whose device model is gone reads a floating bus after its deadline instead of hanging', async () => {
    const { server, events, run } = setup(50);
    server.close();
    const r = await run(1, 100);
    events.stop();
    expect(r.counters.timeouts).toBeGreaterThan(0);
    expect(r.unassignedReads).toEqual([0xff, 0xffff, 0xffffffff]);
  });
});
