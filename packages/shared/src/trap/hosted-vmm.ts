/**
 * The hosted VMM (VMware Workstation's design, Sugerman et al., USENIX ATC 2001): the part of the
 * hypervisor that runs in the guest's world and sees every trapped port access first. It cannot
 * do I/O itself, so by default it forwards each access to the VMApp — a runtime in the host world
 * that owns the device models — which is a world switch out and one back. Two optimisations the
 * paper measured can be switched on per Lance:
 *
 *  vmmIo           handle in the VMM the accesses that need no host I/O: the register address
 *                  port (RAP) is kept as a shadow and travels with the next forwarded data-port
 *                  access (the ioreq slot's pre-write), and reads of CSR0, CSR3 and CSR4 are
 *                  answered from a status mirror the VMApp publishes after every change
 *  sendCombining   the transmit demand (CSR0 ← IENA|TDMD, the last OUT of pcnet32's transmit) is
 *                  queued instead of forwarded; queued transmits go out at the next switch the
 *                  VMApp handles anyway (a forwarded access, an interrupt it raises), when 3 are
 *                  queued (forced), or after a bounded delay (the VMApp's timer)
 *
 * Shared VMM/VMApp state, one 32-byte record (Int32 words) per Lance, in `shared`:
 *
 *   word 0  csr0     status mirror (VMApp writes after every change; VMM reads)
 *   word 1  csr3
 *   word 2  csr4
 *   word 3  flags    bit 0: mirror valid and the chip in 16-bit I/O mode (the only mode the VMM
 *                    understands; otherwise it forwards everything)
 *   word 4  txq      transmits queued by the VMM (VMM adds; VMApp takes with exchange → 0)
 *
 * The VMApp publishes the mirror before it answers the forwarded access that changed it, so a
 * read the VMM answers after a write it forwarded always sees that write. A mirror read racing
 * with a frame arriving in the VMApp reads the register a moment earlier — as any read does.
 */
import { IO_DIR_IN, IO_DIR_OUT, PortIoInstructions, type IoSize } from './index.js';
import type { VcpuPortIo } from './ioreq.js';

export const VMM_LANCE_WORDS = 8;
export const VMM_CSR0 = 0;
export const VMM_CSR3 = 1;
export const VMM_CSR4 = 2;
export const VMM_FLAGS = 3;
export const VMM_TXQ = 4;
export const VMM_FLAG_MIRROR_WIO = 1;

/** Transmits queued before the VMM forces a switch (the paper's figure). */
export const SEND_COMBINING_MAX = 3;

const LANCE_WINDOW = 0x20;
const RDP = 0x10;
const RAP = 0x12;
const RESET = 0x14;
const BDP = 0x16;
const RAP_MASK = 0x7f;
const CSR0_TDMD = 0x0008;
const CSR0_IENA = 0x0040;
const MIRRORED: ReadonlyMap<number, number> = new Map([
  [0, VMM_CSR0],
  [3, VMM_CSR3],
  [4, VMM_CSR4],
]);

export function createVmmShared(lances: number): SharedArrayBuffer {
  return new SharedArrayBuffer(Math.max(1, lances) * VMM_LANCE_WORDS * 4);
}

export interface HostedLance {
  base: number;
  /** Index of this Lance's record in the shared VMM state. */
  index: number;
  vmmIo: boolean;
  sendCombining: boolean;
}

export interface HostedVmmCounters {
  /** Every port access of the vCPU (each one a trap into the VMM). */
  traps: number;
  /** Accesses the VMM answered itself (no world switch). */
  handledInVmm: number;
  /** Accesses forwarded to the VMApp: a world switch out and one back each. */
  forwarded: number;
  worldSwitches: number;
  /** RAP writes kept as a shadow and carried by a later forwarded access. */
  deferredRap: number;
  /** Transmit demands queued (send combining), and switches forced by a full queue. */
  combinedTransmits: number;
  forcedFlushes: number;
}

interface LanceState extends HostedLance {
  words: Int32Array;
  shadowRap: number;
  modelRap: number;
}

export class HostedVmm extends PortIoInstructions {
  readonly counters: HostedVmmCounters = { traps: 0, handledInVmm: 0, forwarded: 0, worldSwitches: 0, deferredRap: 0, combinedTransmits: 0, forcedFlushes: 0 };
  private readonly lances: LanceState[];

  constructor(
    private readonly vcpu: VcpuPortIo,
    shared: SharedArrayBuffer,
    lances: HostedLance[],
  ) {
    super();
    this.lances = lances.map((l) => ({ ...l, words: new Int32Array(shared, l.index * VMM_LANCE_WORDS * 4, VMM_LANCE_WORDS), shadowRap: 0, modelRap: 0 }));
  }

  protected access(port: number, size: IoSize, dir: number, value: number): number {
    this.counters.traps++;
    const l = this.lances.find((x) => port >= x.base && port < x.base + LANCE_WINDOW);
    if (!l) return this.forward(port, size, dir, value);
    const off = port - l.base;
    const wio = (Atomics.load(l.words, VMM_FLAGS) & VMM_FLAG_MIRROR_WIO) !== 0;
    const word = size === 2 && wio;
    if (l.vmmIo && word && off === RAP) {
      this.counters.handledInVmm++;
      if (dir === IO_DIR_IN) return l.shadowRap;
      l.shadowRap = value & RAP_MASK;
      this.counters.deferredRap++;
      return 0;
    }
    if (l.vmmIo && word && off === RDP && dir === IO_DIR_IN) {
      const m = MIRRORED.get(l.shadowRap);
      if (m !== undefined) {
        this.counters.handledInVmm++;
        return Atomics.load(l.words, m) & 0xffff;
      }
    }
    if (l.sendCombining && word && off === RDP && dir === IO_DIR_OUT && l.shadowRap === 0 && (value & 0xffff) === (CSR0_IENA | CSR0_TDMD)) {
      // pcnet32's transmit kick. IENA is already set (else this write matters): queue it.
      if (Atomics.load(l.words, VMM_CSR0) & CSR0_IENA) {
        const queued = Atomics.add(l.words, VMM_TXQ, 1) + 1;
        this.counters.combinedTransmits++;
        if (queued < SEND_COMBINING_MAX) {
          this.counters.handledInVmm++;
          return 0;
        }
        this.counters.forcedFlushes++; // forwarded below: the VMApp sends everything queued
      }
    }
    // Forward. A data-port access carries the shadow RAP if the model's is stale.
    let pre: { port: number; data: number } | undefined;
    if ((off === RDP || off === BDP) && l.shadowRap !== l.modelRap) {
      pre = { port: l.base + RAP, data: l.shadowRap };
      l.modelRap = l.shadowRap;
    }
    const r = this.forward(port, size, dir, value, pre);
    if (word && off === RAP && dir === IO_DIR_OUT) l.shadowRap = l.modelRap = value & RAP_MASK;
    if (word && off === RESET && dir === IO_DIR_IN) l.shadowRap = l.modelRap = 0; // a reset clears RAP
    return r;
  }

  private forward(port: number, size: IoSize, dir: number, value: number, pre?: { port: number; data: number }): number {
    this.counters.forwarded++;
    this.counters.worldSwitches += 2;
    return this.vcpu.access(port, size, dir, value, pre);
  }

}
