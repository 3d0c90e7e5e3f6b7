/**
 * Test peer for ioreq.test.ts: a guest vCPU in its own worker thread. It runs a fixed program of
 * port accesses through VcpuPortIo (each one blocks this thread until dom0's IoReqServer
 * answers) and posts what it read and its trap counters.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { EventChannelGate, VcpuPortIo } from '@ringvisor/shared';

export interface VcpuProgramResult {
  mismatches: number;
  unassignedReads: number[];
  counters: VcpuPortIo['counters'];
}

const d = workerData as { role?: string; slot: SharedArrayBuffer; eventMemory: SharedArrayBuffer; domid: number; port: number; count: number; deadlineMs: number };
if (d.role === 'vcpu-peer') {
  const events = new EventChannelGate(d.eventMemory, d.domid);
  const io = new VcpuPortIo(d.slot, () => events.send(d.port), d.deadlineMs);
  let mismatches = 0;
  // Register file at 0x100..0x10f: write a value, read it back, byte, word and dword wide.
  for (let i = 0; i < d.count; i++) {
    const reg = 0x100 + (i % 4) * 4;
    const v = (i * 2654435761) >>> 0;
    if (i % 3 === 0) {
      io.outb(reg, v);
      if (io.inb(reg) !== (v & 0xff)) mismatches++;
    } else if (i % 3 === 1) {
      io.outw(reg, v);
      if (io.inw(reg) !== (v & 0xffff)) mismatches++;
    } else {
      io.outl(reg, v);
      if (io.inl(reg) !== v) mismatches++;
    }
  }
  const unassignedReads = [io.inb(0x500), io.inw(0x500), io.inl(0x500)];
  const result: VcpuProgramResult = { mismatches, unassignedReads, counters: { ...io.counters } };
  parentPort!.postMessage(result);
}
