/**
 * LanceDevice — the AMD Am79C970A (PCnet-PCI II) device model for full emulation.
 *
 * The guest's unmodified pcnet32-style driver reaches it through trapped port I/O (ioRead /
 * ioWrite, one call per trap), and it does the chip's bus-master DMA into the guest's memory
 * through a DmaWindow: the init block, the descriptor rings and the frame buffers. The register
 * interface and the descriptor formats are documented in registers.ts; guest structures are
 * parsed and validated in request.ts.
 *
 * Transmit is demand-driven: TDMD (or STRT) asks the wiring, via `kick()`, to call
 * `transmitPoll()` once it has answered the trap, so the vCPU is not held while the model walks
 * the ring. The real chip also polls its tx ring every ~1.6 ms; this model has no timers (a
 * wiring that wants the poll calls transmitPoll on its own schedule).
 * Receive: the wiring hands each frame from the wire to `receive()`.
 *
 * Guest input never throws and never loops unboundedly: every walk is bounded by the ring length,
 * every DMA address is checked by the window (a miss is MERR), each descriptor is read once into a
 * private copy, and the interrupt line is recomputed after every access, transmit and receive.
 */
import { InvalidArgumentError, StateError } from '../../errors.js';
import { loadRecord, saveRecord, type Device, type DeviceIdentity, type DeviceMetrics, type DeviceStateRecord } from '../../device/index.js';
import { LANCE_RX_QUEUE_MAX, LANCE_STATE, type LanceState } from './state.js';
import { floatingBus, ioMask, type DmaWindow, type IoSize, type PortIoHandler } from '../../trap/index.js';
import { newLanceMetrics, type LanceMetrics } from './metrics.js';
import {
  APROM_SIZE,
  BCR18_DWIO,
  BCR20_CSRPCNET,
  BCR20_RESET_VALUE,
  BCR20_SSIZE32,
  BCR_BSBC,
  BCR_EECAS,
  BCR_FDC,
  BCR_LED1,
  BCR_LED2,
  BCR_LED3,
  BCR_LED_LEDOUT,
  BCR_LED_LNKSTE,
  BCR_LNKST,
  BCR_MC,
  BCR_MSRDA,
  BCR_MSWRA,
  BCR_PCILAT,
  BCR_SWS,
  CHIPID_HI,
  CHIPID_LO,
  CSR0_ERR,
  CSR0_ERR_SOURCES,
  CSR0_IDON,
  CSR0_IENA,
  CSR0_INIT,
  CSR0_INTR,
  CSR0_INTR_SOURCES,
  CSR0_MERR,
  CSR0_MISS,
  CSR0_BABL,
  CSR0_RESET_VALUE,
  CSR0_RINT,
  CSR0_RXON,
  CSR0_STOP,
  CSR0_STRT,
  CSR0_TDMD,
  CSR0_TINT,
  CSR0_TXON,
  CSR0_W1C,
  CSR4_APAD_XMT,
  CSR4_JAB,
  CSR4_JABM,
  CSR4_MFCO,
  CSR4_MFCOM,
  CSR4_RCVCCO,
  CSR4_RCVCCOM,
  CSR4_RESET_VALUE,
  CSR4_TXSTRT,
  CSR4_TXSTRTM,
  CSR4_UINT,
  CSR4_UINTCMD,
  CSR4_W1C,
  CSR5_SPND,
  CSR_BADR_HI,
  CSR_BADR_LO,
  CSR_BADX_HI,
  CSR_BADX_LO,
  CSR_CHIPID_HI,
  CSR_CHIPID_LO,
  CSR_DMA_TC,
  CSR_EXT,
  CSR_FEATURES,
  CSR_IADR_HI,
  CSR_IADR_HI_ALIAS,
  CSR_IADR_LO,
  CSR_IADR_LO_ALIAS,
  CSR_LADRF0,
  CSR_MASKS,
  CSR_MISSED,
  CSR_MODE,
  CSR_PADR0,
  CSR_RCVRC,
  CSR_RCVRL,
  CSR_STATUS,
  CSR_SWSTYLE,
  CSR_TEST,
  CSR_XMTRC,
  CSR_XMTRL,
  DESC_ENP,
  DESC_ERR,
  DESC_SIZE,
  DESC_STP,
  DWIO_BDP,
  DWIO_RAP,
  DWIO_RDP,
  DWIO_RESET,
  ETH_FCS_LEN,
  ETH_MIN_PAYLOAD_FRAME,
  INIT_BLOCK_SIZE,
  LANCE_IO_SIZE,
  LANCE_MAX_FRAME,
  LANCE_MIN_FRAME,
  MODE_DRCVBC,
  MODE_DRCVPA,
  MODE_DRX,
  MODE_DTX,
  MODE_LOOP,
  MODE_PROM,
  RAP_MASK,
  RMD1_BAM,
  RMD1_BUFF,
  RMD1_LAFM,
  RMD1_OFLO,
  RMD1_PAM,
  RMD2_MCNT_MASK,
  SWSTYLE_PCNET_PCI,
  SWSTYLE_PCNET_PCI_II,
  TMD1_DEF,
  TMD1_ONE,
  TMD2_BUFF,
  WIO_BDP,
  WIO_RAP,
  WIO_RDP,
  WIO_RESET,
} from './registers.js';
import {
  DESC_STATUS_HALF,
  descriptorLayout,
  ethernetFcs,
  handBackStatus,
  ladrfAccepts,
  parseDescriptor,
  parseInitBlock,
  u16le,
  u32le,
  type Descriptor,
  type DescriptorLayout,
} from './request.js';

export interface LanceOptions {
  /** Burned-in address (6 bytes, unicast), exposed in APROM 0x00-0x05 and loaded into PADR on reset. */
  mac: Uint8Array;
  /** The guest's memory, as the chip's bus master reaches it. */
  dma: DmaWindow;
  /** The interrupt line: true when INTR && IENA rises, false when it falls. */
  irq(level: boolean): void;
  /** One frame the guest sent (its STP..ENP chain joined), without FCS. */
  transmit(frame: Uint8Array): void;
  /** Ask the wiring to call transmitPoll() soon (after answering the current trap). */
  kick(): void;
  /** The NIC's device id in its guest (identity and the record's instance name); default 0. */
  devid?: number;
}

/** `queued`: held while the chip is quiesced, delivered on resume or restore. */
export type LanceReceiveResult = 'delivered' | 'missed' | 'filtered' | 'stopped' | 'error' | 'queued';

/** CSRs that are plain storage, writable only while stopped or suspended. */
const GATED_STORAGE = new Set<number>([
  CSR_IADR_LO,
  CSR_IADR_HI,
  6,
  CSR_LADRF0,
  CSR_LADRF0 + 1,
  CSR_LADRF0 + 2,
  CSR_LADRF0 + 3,
  CSR_PADR0,
  CSR_PADR0 + 1,
  CSR_PADR0 + 2,
  CSR_MODE,
  CSR_BADR_LO,
  CSR_BADR_HI,
  CSR_BADX_LO,
  CSR_BADX_HI,
  47,
  CSR_DMA_TC,
  82,
  100,
  CSR_MISSED,
  114,
  122,
]);
/** BCRs that are plain storage (BCR18's DWIO bit and the LED outputs are the chip's). */
const BCR_STORAGE = new Set<number>([BCR_MC, BCR_LNKST, BCR_LED1, BCR_LED2, BCR_LED3, BCR_FDC, BCR_BSBC, BCR_EECAS, BCR_PCILAT]);
/** CSR3 bits that exist (masks and feature bits; the rest read 0). */
const CSR3_WRITABLE = 0x5f7c;
/** CSR5 interrupt status bits this model never sets; they read 0. */
const CSR5_UNUSED_STATUS = 0x0a90;
/** The largest ring the CSR76/78 encoding allows. */
const MAX_RING = 0xffff;

/**
 * Persistence (the Device interface): quiesce() refuses port accesses and holds what comes from
 * outside — frames from the wire are queued, a transmit poll is remembered, the interrupt line is
 * left where the host last saw it; save() writes the record (state.ts); `LanceDevice.restore(
 * options, record)` builds a chip with the same options, sets its registers and rings, and
 * catches up: queued frames into the rx ring, a remembered poll through `kick()`, an owed edge.
 */
export class LanceDevice implements PortIoHandler, Device {
  readonly counters: LanceMetrics = newLanceMetrics();
  readonly identity: DeviceIdentity;
  /** quiesce()d (or stopped): accesses refused, frames queued, transmit polls and line changes deferred. */
  private paused = false;
  private stopped = false;
  private rxQueue: Uint8Array[] = [];
  private pollOwed = false;
  private readonly o: LanceOptions;
  private readonly aprom = new Uint8Array(APROM_SIZE);
  private readonly csr = new Uint16Array(128);
  private readonly bcr = new Uint16Array(32);
  private rap = 0;
  private rxLen = 0;
  private txLen = 0;
  private rxIndex = 0;
  private txIndex = 0;
  private irqLevel = false;
  /** Bumped by every reset, STOP and INIT: a walk that sees it change stops (the guest re-entered). */
  private epoch = 0;
  private kickWanted = false;

  constructor(o: LanceOptions) {
    if (!(o.mac instanceof Uint8Array) || o.mac.byteLength !== 6) throw new InvalidArgumentError('Lance MAC must be 6 bytes');
    if (o.mac[0] & 1) throw new InvalidArgumentError('Lance MAC must be a unicast address');
    this.o = o;
    this.identity = { kind: 'net', mode: 'emulated', side: 'dom0', type: LANCE_STATE.type, devid: o.devid ?? 0 };
    this.aprom.set(o.mac, 0);
    this.aprom[9] = 0x11;
    this.aprom[14] = 0x57;
    this.aprom[15] = 0x57;
    // Checksum over bytes 0-11 and 14-15, little-endian at 12 (AMD's APROM convention).
    let sum = 0;
    for (let i = 0; i < APROM_SIZE; i++) if (i !== 12 && i !== 13) sum += this.aprom[i];
    this.aprom[12] = sum & 0xff;
    this.aprom[13] = (sum >> 8) & 0xff;
    this.hardReset();
    this.counters.resets = 0;
  }

  get mac(): Uint8Array {
    return this.aprom.slice(0, 6);
  }

  /** Started (STRT) and not stopped. */
  get running(): boolean {
    return (this.csr[CSR_STATUS] & (CSR0_STRT | CSR0_STOP)) === CSR0_STRT;
  }

  /** Whether the interrupt line is asserted now. */
  get irqAsserted(): boolean {
    return this.irqLevel;
  }

  /** A CSR as the guest would read it, without the access being counted (for views and tests). */
  peekCsr(n: number): number {
    return this.csrValue(n & RAP_MASK) & 0xffff;
  }

  peekBcr(n: number): number {
    return this.bcrValue(n & RAP_MASK);
  }

  /** H_RESET (PCI RST#): every BCR back to its default, WIO mode, then S_RESET. */
  hardReset(): void {
    const b = this.bcr;
    b.fill(0);
    b[BCR_MSRDA] = 0x0005;
    b[BCR_MSWRA] = 0x0005;
    b[BCR_MC] = 0x0002;
    b[BCR_LNKST] = 0x00c0;
    b[BCR_LED1] = 0x0084;
    b[BCR_LED2] = 0x0088;
    b[BCR_LED3] = 0x0090;
    b[BCR_BSBC] = 0x9001;
    b[BCR_EECAS] = 0x0002;
    b[BCR_SWS] = BCR20_RESET_VALUE;
    b[BCR_PCILAT] = 0xff06;
    this.softReset();
    this.update();
  }

  // --- port I/O -------------------------------------------------------------------------------

  ioRead(offset: number, size: IoSize): number {
    this.counters.portReads++;
    if (this.paused) {
      this.counters.refusedWhilePaused++;
      return floatingBus(size);
    }
    if (!this.validAccess(offset, size)) return this.ignored(size);
    if (offset + size <= APROM_SIZE) {
      this.counters.apromReads++;
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = v * 256 + this.aprom[offset + i];
      return v;
    }
    const reg = this.decode(offset, size);
    switch (reg) {
      case 'rdp':
        this.counters.csrReads++;
        return ioMask(this.csrValue(this.rap), size);
      case 'rap':
        return this.rap;
      case 'reset':
        this.softReset();
        this.update();
        return 0;
      case 'bdp':
        this.counters.bcrReads++;
        return this.bcrValue(this.rap);
      default:
        return this.ignored(size);
    }
  }

  ioWrite(offset: number, size: IoSize, value: number): void {
    this.counters.portWrites++;
    if (this.paused) {
      this.counters.refusedWhilePaused++;
      return;
    }
    if (!this.validAccess(offset, size)) {
      this.counters.ignoredAccesses++;
      return;
    }
    const v = ioMask(value, size);
    if (offset < APROM_SIZE) {
      this.counters.ignoredAccesses++; // the APROM is read-only
      return;
    }
    if (!this.dwio && size === 4 && offset === WIO_RDP) {
      this.bcr[BCR_BSBC] |= BCR18_DWIO; // the data sheet's switch to 32-bit I/O; the data is dropped
      return;
    }
    switch (this.decode(offset, size)) {
      case 'rdp':
        this.counters.csrWrites++;
        this.writeCsr(this.rap, v & 0xffff);
        break;
      case 'rap':
        this.counters.rapWrites++;
        this.rap = v & RAP_MASK;
        break;
      case 'bdp':
        this.counters.bcrWrites++;
        this.writeBcr(this.rap, v & 0xffff);
        break;
      default:
        this.counters.ignoredAccesses++; // RESET is read-triggered; writes do nothing
        return;
    }
    this.update();
    this.flushKick();
  }

  private get dwio(): boolean {
    return (this.bcr[BCR_BSBC] & BCR18_DWIO) !== 0;
  }

  private validAccess(offset: number, size: number): boolean {
    return Number.isInteger(offset) && offset >= 0 && (size === 1 || size === 2 || size === 4) && offset + size <= LANCE_IO_SIZE;
  }

  private decode(offset: number, size: number): 'rdp' | 'rap' | 'reset' | 'bdp' | undefined {
    if (this.dwio) {
      if (size !== 4) return undefined;
      return offset === DWIO_RDP ? 'rdp' : offset === DWIO_RAP ? 'rap' : offset === DWIO_RESET ? 'reset' : offset === DWIO_BDP ? 'bdp' : undefined;
    }
    if (size !== 2) return undefined;
    return offset === WIO_RDP ? 'rdp' : offset === WIO_RAP ? 'rap' : offset === WIO_RESET ? 'reset' : offset === WIO_BDP ? 'bdp' : undefined;
  }

  private ignored(size: IoSize): number {
    this.counters.ignoredAccesses++;
    return floatingBus(size);
  }

  // --- the Device interface -------------------------------------------------------------------

  /** Nothing to connect: the wiring maps the ports and carries frames; the chip answers from construction. */
  async attach(): Promise<void> {
    if (this.stopped) throw new StateError(`lance${this.identity.devid}: attach after stop`);
  }

  /** No more accesses, frames or polls: the chip is gone from the guest's bus. */
  async stop(_reason: string): Promise<void> {
    this.stopped = true;
    this.paused = true;
    this.rxQueue = [];
    this.pollOwed = false;
  }

  metrics(): DeviceMetrics {
    const m = this.counters;
    return {
      ops: m.txFrames + m.rxFrames,
      bytes: m.txBytes + m.rxBytes,
      // Frames missed for want of a posted buffer are drops (detail.rxMissed), not errors.
      errors: m.txErrors + m.rxErrors,
      detail: { ...m, rxQueued: this.rxQueue.length },
    };
  }

  /** Nothing of the chip's runs on its own (walks are synchronous): pausing is enough. */
  async quiesce(): Promise<void> {
    this.paused = true;
  }

  resume(): void {
    if (this.stopped) return;
    this.paused = false;
    this.catchUp();
  }

  save(): DeviceStateRecord {
    if (!this.paused) throw new StateError(`lance${this.identity.devid}: save() needs a quiesced chip`);
    const state: LanceState = {
      rap: this.rap,
      csr: Array.from(this.csr),
      bcr: Array.from(this.bcr),
      rxLen: this.rxLen,
      txLen: this.txLen,
      rxIndex: this.rxIndex,
      txIndex: this.txIndex,
      irqLevel: this.irqLevel,
      transmitDemand: this.pollOwed || this.kickWanted,
      rxQueue: this.rxQueue.map((f) => f.slice()),
    };
    return saveRecord(LANCE_STATE, `lance${this.identity.devid}`, state);
  }

  /**
   * A chip built with `options` in the state `record` holds, running: frames it had queued are
   * received, a pending transmit demand kicks the wiring, and the line is driven to its level.
   * The record is untrusted: an inconsistent one is refused (StateRecordError) before any state is set.
   */
  static restore(options: LanceOptions, record: unknown): LanceDevice {
    const s = loadRecord(LANCE_STATE, record);
    const dev = new LanceDevice(options);
    dev.csr.set(s.csr);
    dev.bcr.set(s.bcr);
    dev.rap = s.rap;
    dev.rxLen = s.rxLen;
    dev.txLen = s.txLen;
    dev.rxIndex = s.rxIndex;
    dev.txIndex = s.txIndex;
    dev.irqLevel = s.irqLevel;
    dev.rxQueue = s.rxQueue.map((f) => f.slice());
    dev.pollOwed = s.transmitDemand;
    dev.catchUp();
    return dev;
  }

  private hold(frame: Uint8Array): LanceReceiveResult {
    if (this.stopped || this.rxQueue.length >= LANCE_RX_QUEUE_MAX || frame.byteLength < LANCE_MIN_FRAME || frame.byteLength > LANCE_MAX_FRAME) {
      this.counters.rxDroppedWhilePaused++;
      return 'missed';
    }
    this.rxQueue.push(frame.slice());
    return 'queued';
  }

  /** After a pause or a restore: receive the held frames, drive the line, ask for the owed poll. */
  private catchUp(): void {
    for (const frame of this.rxQueue.splice(0)) this.receive(frame);
    this.update();
    if (this.pollOwed) {
      this.pollOwed = false;
      this.kickWanted = true;
    }
    this.flushKick();
  }

  // --- registers ------------------------------------------------------------------------------

  private get stoppedOrSuspended(): boolean {
    return (this.csr[CSR_STATUS] & CSR0_STOP) !== 0 || (this.csr[CSR_EXT] & CSR5_SPND) !== 0;
  }

  private get swstyle(): number {
    return this.bcr[BCR_SWS] & 0xff;
  }

  private intrActive(): boolean {
    const c0 = this.csr[CSR_STATUS];
    if ((c0 & ~this.csr[CSR_MASKS] & CSR0_INTR_SOURCES) !== 0) return true;
    const c4 = this.csr[CSR_FEATURES];
    return (
      ((c4 & CSR4_JAB) !== 0 && (c4 & CSR4_JABM) === 0) ||
      ((c4 & CSR4_TXSTRT) !== 0 && (c4 & CSR4_TXSTRTM) === 0) ||
      ((c4 & CSR4_RCVCCO) !== 0 && (c4 & CSR4_RCVCCOM) === 0) ||
      ((c4 & CSR4_MFCO) !== 0 && (c4 & CSR4_MFCOM) === 0) ||
      (c4 & CSR4_UINT) !== 0
    );
  }

  private csrValue(n: number): number {
    const c = this.csr;
    switch (n) {
      case CSR_STATUS: {
        let v = c[CSR_STATUS] & ~(CSR0_INTR | CSR0_ERR);
        if (this.intrActive()) v |= CSR0_INTR;
        if (v & CSR0_ERR_SOURCES) v |= CSR0_ERR;
        return v;
      }
      case CSR_MASKS:
      case CSR_FEATURES:
      case CSR_EXT:
      case CSR_TEST:
        return c[n];
      case CSR_IADR_LO_ALIAS:
        return c[CSR_IADR_LO];
      case CSR_IADR_HI_ALIAS:
        return c[CSR_IADR_HI];
      case CSR_SWSTYLE:
        return this.bcr[BCR_SWS];
      case CSR_RCVRC:
        return this.rxIndex;
      case CSR_XMTRC:
        return this.txIndex;
      case CSR_RCVRL:
        return -this.rxLen & 0xffff;
      case CSR_XMTRL:
        return -this.txLen & 0xffff;
      case CSR_CHIPID_LO:
        // In DWIO mode CSR88 reads the whole 32-bit chip id.
        return this.dwio ? ((CHIPID_HI << 16) | CHIPID_LO) >>> 0 : CHIPID_LO;
      case CSR_CHIPID_HI:
        return CHIPID_HI;
      default:
        return GATED_STORAGE.has(n) ? c[n] : 0;
    }
  }

  private writeCsr(n: number, v: number): void {
    const c = this.csr;
    switch (n) {
      case CSR_STATUS:
        this.writeCsr0(v);
        return;
      case CSR_MASKS:
        c[CSR_MASKS] = v & CSR3_WRITABLE;
        return;
      case CSR_FEATURES: {
        const status = c[CSR_FEATURES] & CSR4_W1C & ~v;
        c[CSR_FEATURES] = status | (v & ~CSR4_W1C & ~CSR4_UINTCMD) | (v & CSR4_UINTCMD ? CSR4_UINT : 0);
        return;
      }
      case CSR_EXT: {
        const wasSuspended = (c[CSR_EXT] & CSR5_SPND) !== 0;
        c[CSR_EXT] = v & ~CSR5_UNUSED_STATUS;
        if (wasSuspended && (v & CSR5_SPND) === 0 && this.running) this.kickWanted = true; // resume: poll the tx ring
        return;
      }
      case CSR_TEST:
        c[CSR_TEST] = v;
        return;
    }
    if (!this.stoppedOrSuspended) {
      this.counters.csrWritesDropped++;
      return;
    }
    switch (n) {
      case CSR_IADR_LO_ALIAS:
        c[CSR_IADR_LO] = v;
        return;
      case CSR_IADR_HI_ALIAS:
        c[CSR_IADR_HI] = v;
        return;
      case CSR_SWSTYLE:
        this.writeBcr(BCR_SWS, v);
        return;
      case CSR_RCVRL:
        this.rxLen = -v & MAX_RING;
        this.rxIndex = 0;
        return;
      case CSR_XMTRL:
        this.txLen = -v & MAX_RING;
        this.txIndex = 0;
        return;
    }
    if (GATED_STORAGE.has(n)) c[n] = v;
    else this.counters.csrWritesDropped++;
  }

  private writeCsr0(v: number): void {
    const c = this.csr;
    c[CSR_STATUS] = (c[CSR_STATUS] & ~(v & CSR0_W1C) & ~CSR0_IENA) | (v & CSR0_IENA);
    if (v & CSR0_STOP) {
      this.stopChip(); // STOP wins over INIT and STRT in the same write
      return;
    }
    let initOk = true;
    if (v & CSR0_INIT && !(c[CSR_STATUS] & CSR0_INIT)) initOk = this.init();
    if (v & CSR0_STRT && !(c[CSR_STATUS] & CSR0_STRT) && initOk) this.start();
    if (v & CSR0_TDMD) {
      this.counters.transmitDemands++;
      if (c[CSR_STATUS] & CSR0_TXON) {
        c[CSR_STATUS] |= CSR0_TDMD;
        this.kickWanted = true;
      }
    }
  }

  private bcrValue(n: number): number {
    if (n >= this.bcr.length) return 0;
    const v = this.bcr[n];
    // The link is always up: an LED programmed to show link status is lit.
    if (n >= BCR_LNKST && n <= BCR_LED3) return (v & ~BCR_LED_LEDOUT) | (v & BCR_LED_LNKSTE ? BCR_LED_LEDOUT : 0);
    if (n === BCR_SWS || n === BCR_MSRDA || n === BCR_MSWRA || BCR_STORAGE.has(n)) return v;
    return 0;
  }

  private writeBcr(n: number, v: number): void {
    if (n === BCR_SWS) {
      if (!this.stoppedOrSuspended) {
        this.counters.csrWritesDropped++;
        return;
      }
      const style = v & 0xff;
      let derived = 0;
      if (style === 1 || style === SWSTYLE_PCNET_PCI || style === SWSTYLE_PCNET_PCI_II) derived |= BCR20_SSIZE32;
      if (style === 0 || style === SWSTYLE_PCNET_PCI || style === SWSTYLE_PCNET_PCI_II) derived |= BCR20_CSRPCNET;
      this.bcr[BCR_SWS] = style | derived;
      return;
    }
    if (n === BCR_BSBC) {
      this.bcr[BCR_BSBC] = (v & ~BCR18_DWIO) | (this.bcr[BCR_BSBC] & BCR18_DWIO);
      return;
    }
    if (n === BCR_LNKST || n === BCR_LED1 || n === BCR_LED2 || n === BCR_LED3) {
      this.bcr[n] = v & ~BCR_LED_LEDOUT;
      return;
    }
    if (BCR_STORAGE.has(n)) this.bcr[n] = v;
  }

  // --- state machine --------------------------------------------------------------------------

  /** S_RESET (a read of the RESET port). BCRs keep their values (only H_RESET resets them). */
  private softReset(): void {
    const c = this.csr;
    this.counters.resets++;
    this.epoch++;
    this.rap = 0;
    const iadr = [c[CSR_IADR_LO], c[CSR_IADR_HI]];
    c.fill(0);
    [c[CSR_IADR_LO], c[CSR_IADR_HI]] = iadr;
    c[CSR_STATUS] = CSR0_RESET_VALUE;
    c[CSR_FEATURES] = CSR4_RESET_VALUE;
    for (let i = 0; i < 3; i++) c[CSR_PADR0 + i] = this.aprom[2 * i] | (this.aprom[2 * i + 1] << 8);
    c[CSR_DMA_TC] = 0x1410;
    c[100] = 0x0200;
    this.rxLen = 0;
    this.txLen = 0;
    this.rxIndex = 0;
    this.txIndex = 0;
    this.kickWanted = false;
  }

  private stopChip(): void {
    const c = this.csr;
    this.counters.stops++;
    this.epoch++;
    c[CSR_STATUS] = CSR0_STOP;
    c[CSR_FEATURES] &= ~CSR4_W1C;
    c[CSR_EXT] &= ~CSR5_SPND;
    this.rxIndex = 0;
    this.txIndex = 0;
    this.kickWanted = false;
  }

  /** INIT: read the init block once and load the CSRs from it. False (MERR, no IDON) if it cannot. */
  private init(): boolean {
    const c = this.csr;
    this.counters.inits++;
    const style = this.swstyle;
    const bytes =
      style === SWSTYLE_PCNET_PCI || style === SWSTYLE_PCNET_PCI_II
        ? this.o.dma.read(((c[CSR_IADR_HI] << 16) | c[CSR_IADR_LO]) >>> 0, INIT_BLOCK_SIZE)
        : undefined; // SWSTYLE 0 and 1 layouts are not emulated
    const ib = bytes && parseInitBlock(bytes);
    if (!ib) {
      this.counters.initErrors++;
      this.raiseMerr();
      return false;
    }
    this.epoch++;
    c[CSR_MODE] = ib.mode;
    for (let i = 0; i < 4; i++) c[CSR_LADRF0 + i] = ib.ladrf[2 * i] | (ib.ladrf[2 * i + 1] << 8);
    for (let i = 0; i < 3; i++) c[CSR_PADR0 + i] = ib.padr[2 * i] | (ib.padr[2 * i + 1] << 8);
    c[CSR_BADR_LO] = ib.rdra & 0xffff;
    c[CSR_BADR_HI] = ib.rdra >>> 16;
    c[CSR_BADX_LO] = ib.tdra & 0xffff;
    c[CSR_BADX_HI] = ib.tdra >>> 16;
    c[6] = (Math.min(ib.tlenLog2, 15) << 12) | (Math.min(ib.rlenLog2, 15) << 8);
    this.rxLen = ib.rxRingLength;
    this.txLen = ib.txRingLength;
    this.rxIndex = 0;
    this.txIndex = 0;
    c[CSR_STATUS] = (c[CSR_STATUS] | CSR0_INIT | CSR0_IDON) & ~CSR0_STOP;
    return true;
  }

  private start(): void {
    const c = this.csr;
    this.counters.starts++;
    let s = (c[CSR_STATUS] | CSR0_STRT) & ~CSR0_STOP;
    if (!(c[CSR_MODE] & MODE_DTX)) s |= CSR0_TXON;
    if (!(c[CSR_MODE] & MODE_DRX)) s |= CSR0_RXON;
    c[CSR_STATUS] = s;
    this.kickWanted = true;
  }

  private raiseMerr(): void {
    this.counters.merr++;
    this.csr[CSR_STATUS] |= CSR0_MERR;
  }

  /** Recompute INTR and drive the line on an edge of INTR && IENA. */
  private update(): void {
    if (this.paused) return; // a change of the line is owed: resume() or restore drives it
    const level = (this.csr[CSR_STATUS] & CSR0_IENA) !== 0 && this.intrActive();
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    if (level) this.counters.interrupts++;
    else this.counters.interruptsLowered++;
    this.o.irq(level);
  }

  private flushKick(): void {
    if (!this.kickWanted) return;
    this.kickWanted = false;
    this.counters.kicks++;
    this.o.kick();
  }

  // --- descriptor access ----------------------------------------------------------------------

  private get layout(): DescriptorLayout {
    return descriptorLayout(this.swstyle);
  }

  private get rxBase(): number {
    return ((this.csr[CSR_BADR_HI] << 16) | this.csr[CSR_BADR_LO]) >>> 0;
  }

  private get txBase(): number {
    return ((this.csr[CSR_BADX_HI] << 16) | this.csr[CSR_BADX_LO]) >>> 0;
  }

  /** One descriptor, read once; undefined (and MERR) if the ring leaves the guest's memory. */
  private readDescriptor(base: number, index: number): Descriptor | undefined {
    const bytes = this.o.dma.read(base + index * DESC_SIZE, DESC_SIZE);
    const d = bytes && parseDescriptor(bytes, this.layout);
    if (!d) this.raiseMerr();
    return d;
  }

  /** Hand a descriptor back: word 2 first, then word 1's status half with OWN clear. */
  private handBack(base: number, index: number, status: number, word2: number): void {
    const at = base + index * DESC_SIZE;
    const ok = this.o.dma.write(at + this.layout.miscOffset, u32le(word2)) && this.o.dma.write(at + DESC_STATUS_HALF, u16le(status));
    if (!ok) this.raiseMerr();
  }

  // --- transmit -------------------------------------------------------------------------------

  /**
   * Walk the tx ring from the current index and send every fully owned STP..ENP chain. Bounded by
   * the ring length (each descriptor is consumed at most once per walk). A chain whose next
   * descriptor is not yet owned is left alone until the next demand. Returns frames sent.
   */
  transmitPoll(): number {
    if (this.paused) {
      this.pollOwed = !this.stopped; // the demand is kept for after the pause (or the move)
      return 0;
    }
    this.counters.txPolls++;
    const c = this.csr;
    if (!(c[CSR_STATUS] & CSR0_TXON) || c[CSR_EXT] & CSR5_SPND || this.txLen === 0) {
      c[CSR_STATUS] &= ~CSR0_TDMD;
      this.update();
      return 0;
    }
    const epoch = this.epoch;
    const base = this.txBase;
    const len = this.txLen;
    let consumed = 0;
    let sent = 0;
    let tint = false;
    walk: while (consumed < len) {
      const first = this.readDescriptor(base, this.txIndex);
      this.counters.txDescriptorsRead++;
      if (!first || !first.own) break;
      const chain: Descriptor[] = [first];
      let broken = !first.wellFormed || !first.stp; // missing STP: handed back as an error, alone
      if (!first.wellFormed) this.counters.malformedDescriptors++;
      while (!broken && !chain[chain.length - 1].enp) {
        if (chain.length >= len) break; // no ENP anywhere in the ring: babble, below
        const d = this.readDescriptor(base, (this.txIndex + chain.length) % len);
        this.counters.txDescriptorsRead++;
        if (!d || !d.own) break walk; // MERR, or the guest has not finished the chain: wait
        if (d.stp) {
          broken = true; // a new frame starts before this one ended: return this one as an error
          break;
        }
        chain.push(d);
        if (!d.wellFormed) {
          this.counters.malformedDescriptors++;
          broken = true;
        }
      }
      let frame: Uint8Array | undefined;
      let tmd2 = 0;
      const total = chain.reduce((n, d) => n + d.length, 0);
      if (broken || (chain[chain.length - 1].enp && total < LANCE_MIN_FRAME)) tmd2 = TMD2_BUFF;
      else if (!chain[chain.length - 1].enp || total > LANCE_MAX_FRAME) {
        // Too long, or no ENP in the whole ring: babble. Dropped (the chip would cut it short).
        this.counters.babl++;
        c[CSR_STATUS] |= CSR0_BABL;
      } else frame = this.gather(chain, total, c[CSR_FEATURES] & CSR4_APAD_XMT ? ETH_MIN_PAYLOAD_FRAME : 0); // undefined: MERR
      // Later descriptors first, STP last. ONE/DEF (collision history) are the chip's: none here.
      for (let i = chain.length - 1; i >= 0; i--) {
        const status = handBackStatus(chain[i], frame ? 0 : DESC_ERR, TMD1_ONE | TMD1_DEF);
        this.handBack(base, (this.txIndex + i) % len, status, tmd2);
      }
      this.txIndex = (this.txIndex + chain.length) % len;
      consumed += chain.length;
      tint = true;
      if (!frame) {
        this.counters.txErrors++;
        continue;
      }
      sent++;
      this.counters.txFrames++;
      this.counters.txBytes += frame.byteLength;
      c[CSR_FEATURES] |= CSR4_TXSTRT;
      if (c[CSR_MODE] & MODE_LOOP) {
        this.counters.txLoopback++;
        this.receive(frame);
      } else this.o.transmit(frame);
      if (this.epoch !== epoch) {
        this.update(); // the wiring re-entered and the guest reset or stopped the chip meanwhile
        return sent;
      }
    }
    if (tint && this.epoch === epoch) c[CSR_STATUS] |= CSR0_TINT;
    c[CSR_STATUS] &= ~CSR0_TDMD;
    this.update();
    return sent;
  }

  /** DMA-read a chain's buffers into one frame, padded to `minLength`; undefined on MERR. */
  private gather(chain: Descriptor[], total: number, minLength: number): Uint8Array | undefined {
    const frame = new Uint8Array(Math.max(total, minLength));
    let at = 0;
    for (const d of chain) {
      if (d.length === 0) continue;
      const bytes = this.o.dma.read(d.addr, d.length);
      if (!bytes) {
        this.raiseMerr();
        return undefined;
      }
      frame.set(bytes, at);
      at += d.length;
    }
    return frame;
  }

  // --- receive --------------------------------------------------------------------------------

  /** A frame from the wire (no FCS). Written into the guest's owned rx descriptors, or refused. */
  receive(frame: Uint8Array): LanceReceiveResult {
    if (this.paused) return this.hold(frame);
    const result = this.receiveFrame(frame);
    this.update();
    return result;
  }

  private receiveFrame(frame: Uint8Array): LanceReceiveResult {
    const c = this.csr;
    const m = this.counters;
    if (!(c[CSR_STATUS] & CSR0_RXON) || c[CSR_STATUS] & CSR0_STOP || c[CSR_EXT] & CSR5_SPND) {
      m.rxStopped++;
      return 'stopped';
    }
    if (frame.byteLength < LANCE_MIN_FRAME || frame.byteLength > LANCE_MAX_FRAME) {
      m.rxErrors++;
      return 'error';
    }
    const match = this.filter(frame);
    if (!match) {
      m.rxFiltered++;
      return 'filtered';
    }
    if (this.rxLen === 0) return this.miss();
    const base = this.rxBase;
    const len = this.rxLen;
    const first = this.readDescriptor(base, this.rxIndex);
    if (!first) {
      m.rxErrors++;
      return 'error';
    }
    if (!first.own) return this.miss();
    if (!first.wellFormed) {
      m.malformedDescriptors++;
      m.rxErrors++;
      this.handBack(base, this.rxIndex, (DESC_ERR | RMD1_BUFF) >>> 16, 0);
      this.rxIndex = (this.rxIndex + 1) % len;
      c[CSR_STATUS] |= CSR0_RINT;
      return 'error';
    }
    // The frame as it lands in memory: padded to 60 bytes, then its FCS.
    const body = new Uint8Array(Math.max(frame.byteLength, ETH_MIN_PAYLOAD_FRAME));
    body.set(frame);
    const data = new Uint8Array(body.byteLength + ETH_FCS_LEN);
    data.set(body);
    data.set(ethernetFcs(body), body.byteLength);
    // Chain over further owned descriptors while the frame does not fit, at most the whole ring.
    const chain: Descriptor[] = [first];
    let room = first.length;
    while (room < data.byteLength && chain.length < len) {
      const d = this.readDescriptor(base, (this.rxIndex + chain.length) % len);
      if (!d) break; // MERR: what was collected is returned with an error below
      if (!d.own || !d.wellFormed) break;
      chain.push(d);
      room += d.length;
    }
    let written = 0;
    let used = 0;
    let merr = false;
    for (const d of chain) {
      used++;
      const n = Math.min(d.length, data.byteLength - written);
      if (n > 0 && !this.o.dma.write(d.addr, data.subarray(written, written + n))) {
        this.raiseMerr();
        merr = true;
        break;
      }
      written += n;
      if (written === data.byteLength) break;
    }
    const ok = !merr && written === data.byteLength;
    // Later descriptors first, STP last; MCNT and the match bits only on ENP.
    for (let i = used - 1; i >= 0; i--) {
      let status = i === 0 ? DESC_STP : 0;
      let word2 = 0;
      if (i === used - 1) {
        if (ok) {
          status |= DESC_ENP | match.bits;
          word2 = data.byteLength & RMD2_MCNT_MASK;
        } else status |= DESC_ERR | RMD1_BUFF | (merr ? 0 : RMD1_OFLO);
      }
      this.handBack(base, (this.rxIndex + i) % len, status >>> 16, word2);
    }
    this.rxIndex = (this.rxIndex + used) % len;
    c[CSR_STATUS] |= CSR0_RINT;
    if (!ok) {
      m.rxErrors++;
      return 'error';
    }
    if (used > 1) m.rxChained++;
    m.rxFrames++;
    m.rxBytes += frame.byteLength;
    return 'delivered';
  }

  private miss(): LanceReceiveResult {
    const c = this.csr;
    this.counters.rxMissed++;
    c[CSR_STATUS] |= CSR0_MISS;
    c[CSR_MISSED] = (c[CSR_MISSED] + 1) & 0xffff;
    if (c[CSR_MISSED] === 0) c[CSR_FEATURES] |= CSR4_MFCO; // the missed frame counter wrapped
    return 'missed';
  }

  /** Address filter: which RMD1 match bits the frame earns, or undefined if it is not for us. */
  private filter(frame: Uint8Array): { bits: number } | undefined {
    const c = this.csr;
    const mode = c[CSR_MODE];
    const dest = frame.subarray(0, 6);
    let padr = !(mode & MODE_DRCVPA);
    for (let i = 0; i < 6 && padr; i++) padr = dest[i] === ((c[CSR_PADR0 + (i >> 1)] >> ((i & 1) * 8)) & 0xff);
    const bcast = !(mode & MODE_DRCVBC) && dest.every((b) => b === 0xff);
    let ladr = false;
    if (dest[0] & 1) {
      const ladrf = new Uint8Array(8);
      for (let i = 0; i < 4; i++) {
        ladrf[2 * i] = c[CSR_LADRF0 + i] & 0xff;
        ladrf[2 * i + 1] = c[CSR_LADRF0 + i] >> 8;
      }
      ladr = ladrfAccepts(ladrf, dest);
    }
    if (mode & MODE_PROM) return { bits: 0 };
    if (!padr && !bcast && !ladr) return undefined;
    return { bits: (padr ? RMD1_PAM : 0) | (ladr ? RMD1_LAFM : 0) | (bcast ? RMD1_BAM : 0) };
  }
}
