/**
 * A guest that turns its own vCPU against its emulated Lance (fault plans' device kinds, and the
 * hostile-driver tests): everything an unmodified but buggy or malicious driver can do through
 * port I/O and its own memory. The device model must answer with device errors (MERR, BABL,
 * floating reads) and nothing may reach dom0 or another guest.
 *
 *   port-garbage   random reads and writes of random widths across the chip's 32-byte window,
 *                  and to ports nothing decodes
 *   wild-dma       an init block and descriptors pointing outside the guest's memory, absurd ring
 *                  lengths, BCNT without its ONES nibble, chains with no ENP
 *   irq-storm      re-initialise the chip over and over with IENA set, so every INIT raises IDON
 *
 * Afterwards the guest's own driver re-opens the chip (reset, init) and carries on.
 */
import { SplitMix32, type FrameAllocator, type GuestMemory, type PortIo } from '@ringvisor/shared';

export type LanceAttack = 'port-garbage' | 'wild-dma' | 'irq-storm';
export const LANCE_ATTACKS: readonly LanceAttack[] = ['port-garbage', 'wild-dma', 'irq-storm'];

export interface PortAttackOutcome {
  /** Port accesses the attack made (each one a trap). */
  accesses: number;
  /** CSR0 bits the chip reported while under attack (MERR, BABL, …), OR-ed together. */
  errorBits: number;
  /** The driver came back (re-opened) afterwards. */
  recovered: boolean;
}

const RDP = 0x10;
const RAP = 0x12;
const RESET = 0x14;
const BDP = 0x16;
const CSR0_INIT = 0x0001;
const CSR0_STRT = 0x0002;
const CSR0_STOP = 0x0004;
const CSR0_TDMD = 0x0008;
const CSR0_IENA = 0x0040;
const CSR0_IDON = 0x0100;
const CSR0_ERRORS = 0xf800;

export function lanceAttack(o: { io: PortIo; base: number; memory: GuestMemory; frames: FrameAllocator }, attack: LanceAttack, count: number, seed: number): PortAttackOutcome {
  const { io, base, memory } = o;
  const rng = new SplitMix32(seed);
  let accesses = 0;
  let errorBits = 0;
  // Register access in whichever I/O mode the chip is in (a 32-bit write may have switched it).
  let dwio = false;
  const rap = (n: number) => (accesses++, dwio ? io.outl(base + 0x14, n) : io.outw(base + RAP, n));
  const csr = (n: number, v?: number): number => {
    rap(n);
    accesses++;
    if (v === undefined) return dwio ? io.inl(base + RDP) & 0xffff : io.inw(base + RDP);
    if (dwio) io.outl(base + RDP, v);
    else io.outw(base + RDP, v);
    return 0;
  };
  const bcr = (n: number, v: number) => {
    rap(n);
    accesses++;
    if (dwio) io.outl(base + 0x1c, v);
    else io.outw(base + BDP, v);
  };
  const reset = () => {
    accesses++;
    if (dwio) io.inl(base + 0x18);
    else io.inw(base + RESET);
  };
  const findMode = () => {
    dwio = false;
    reset();
    if (csr(0) === CSR0_STOP) return;
    dwio = true;
    reset();
  };
  const sample = () => {
    const v = csr(0);
    if (v !== 0xffff) errorBits |= v & CSR0_ERRORS;
  };
  if (attack === 'port-garbage') {
    for (let i = 0; i < count * 32; i++) {
      const off = rng.nextU32() % 0x20;
      const size = [1, 2, 4][rng.nextU32() % 3];
      const port = rng.nextU32() % 8 === 0 ? rng.nextU32() % 0x10000 : base + off;
      const write = rng.nextU32() % 2 === 0;
      const v = rng.nextU32();
      accesses++;
      if (size === 1) write ? io.outb(port, v) : io.inb(port);
      else if (size === 2) write ? io.outw(port, v) : io.inw(port);
      else write ? io.outl(port, v) : io.inl(port);
    }
  } else if (attack === 'wild-dma') {
    const pfn = o.frames.alloc();
    try {
      const block = pfn * 4096;
      const end = memory.bytes.byteLength;
      const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);
      findMode();
      for (let i = 0; i < count; i++) {
        reset();
        csr(58, 2); // SWSTYLE 2
        // Init block: rings of 512 entries, rx ring outside memory, tx ring in this frame.
        view.setUint16(block, 0, true);
        view.setUint8(block + 2, 9 << 4);
        view.setUint8(block + 3, 9 << 4);
        view.setUint32(block + 20, i % 2 === 0 ? end + 4096 : 0xfffffff0, true);
        view.setUint32(block + 24, block + 64, true);
        // Descriptors: buffers outside memory, BCNT without ONES, no ENP anywhere.
        for (let d = 0; d < 200; d++) {
          const at = block + 64 + d * 16;
          view.setUint32(at, d % 2 === 0 ? end + d * 4096 : 0xffff0000, true);
          view.setUint32(at + 4, (0x8200_0000 | (rng.nextU32() & 0xffff)) >>> 0, true); // OWN|STP, garbage BCNT
          view.setUint32(at + 8, 0, true);
        }
        csr(0, CSR0_STOP);
        csr(1, block & 0xffff);
        csr(2, block >>> 16);
        csr(0, CSR0_INIT | CSR0_STRT | CSR0_IENA);
        csr(0, CSR0_IENA | CSR0_TDMD);
        sample();
        // Point the chip at the far end of the 4 GiB space directly.
        csr(0, CSR0_STOP);
        csr(1, 0xfff0);
        csr(2, 0xffff);
        csr(0, CSR0_INIT);
        sample();
        bcr(20, rng.nextU32() & 0xffff); // a random software style
      }
    } finally {
      o.frames.release(pfn);
    }
  } else {
    // Interrupt storm: each INIT with IENA raises IDON; acknowledging re-arms the next edge.
    findMode();
    for (let i = 0; i < count * 16; i++) {
      csr(0, CSR0_STOP);
      csr(0, CSR0_INIT | CSR0_IENA);
      csr(0, CSR0_IDON | CSR0_IENA);
    }
    sample();
  }
  return { accesses, errorBits, recovered: false };
}
