/**
 * AMD Am79C970A (PCnet-PCI II, "Lance"): the register interface as this model decodes it.
 * Sources: the Am79C970A data sheet (AMD 19436); Linux pcnet32 is the driver it must satisfy.
 *
 * I/O window (32 bytes; offsets are what the model's PortIoHandler sees):
 *
 *   WIO mode (after reset; 16-bit accesses)     DWIO mode (32-bit accesses)
 *   0x00-0x0F  APROM   r   station address PROM   0x00-0x0F  APROM
 *   0x10       RDP     r/w CSR[RAP]               0x10       RDP
 *   0x12       RAP     r/w register address       0x14       RAP
 *   0x14       RESET   r   a read is S_RESET      0x18       RESET
 *   0x16       BDP     r/w BCR[RAP]               0x1C       BDP
 *
 * APROM reads at any width (byte, word, dword) as long as the access stays inside 0x00-0x0F;
 * bytes 0-5 are the MAC, 9 is 0x11, 12-13 a checksum, 14-15 are 'WW' (0x57 0x57, which the
 * drivers check). APROM writes are ignored.
 * The mode switch: a 32-bit write to RDP in WIO mode switches the chip to DWIO (its data is
 * discarded), as the data sheet says; only H_RESET switches back (BCR18 bit 7 shows the mode).
 * Any other access of the wrong width for the mode (8-bit to 0x10-0x1F, 32-bit in WIO, 16-bit in
 * DWIO) reads as all ones and is dropped on write, as are 0x18-0x1F in WIO mode.
 *
 * RAP is 7 bits (CSR0-127; the same RAP selects BCRs). CSR and BCR numbers this model does not
 * implement read 0 and drop writes.
 *
 * Who writes what (CSR0, the control and status register):
 *   bit  name  host write                      chip
 *   0    INIT  1: read the init block (CSR1/2)  reads 1 once initialised (until STOP/reset)
 *   1    STRT  1: start (TXON/RXON per MODE)    reads 1 while started
 *   2    STOP  1: stop (a soft reset of CSR0)   reads 1 while stopped; reset value 0x0004
 *   3    TDMD  1: transmit demand (poll now)    cleared once the tx ring was walked; ignored while TXON is off
 *   4    TXON  read-only                        transmitter on
 *   5    RXON  read-only                        receiver on
 *   6    IENA  r/w: interrupt enable            the interrupt line is INTR && IENA
 *   7    INTR  read-only                        any unmasked interrupt source (below)
 *   8    IDON  write 1 to clear                 init block read
 *   9    TINT  write 1 to clear                 tx descriptors handed back
 *   10   RINT  write 1 to clear                 rx descriptors handed back
 *   11   MERR  write 1 to clear                 a DMA address left the guest's memory
 *   12   MISS  write 1 to clear                 a frame was lost: no rx descriptor owned
 *   13   CERR  write 1 to clear                 never set (no collisions; not an INTR source)
 *   14   BABL  write 1 to clear                 a tx frame was too long (dropped here)
 *   15   ERR   read-only                        BABL | CERR | MISS | MERR
 * Writing 0 to a W1C bit leaves it; writing 0 to INIT/STRT/STOP/TDMD does nothing. STOP wins
 * over INIT and STRT in the same write; INIT|STRT together initialise, then start (the start
 * is skipped if the init failed). INIT is acted on only while the chip is not yet initialised
 * (re-initialising needs a STOP first, as the data sheet asks); STRT only while not started.
 *
 * INTR = (CSR0 & ~CSR3 & (BABL|MISS|MERR|RINT|TINT|IDON)) != 0
 *        || CSR4 JAB/TXSTRT/RCVCCO/MFCO with their CSR4 mask bit clear || CSR4 UINT.
 * A masked source still sets its CSR0 bit; only INTR ignores it.
 *
 * Registers written only while stopped (STOP) or suspended (CSR5 SPND), as the data sheet says
 * (writes at other times are dropped): CSR1/2 (init block address; CSR16/17 alias them),
 * CSR8-11 (LADRF), CSR12-14 (PADR), CSR15 (MODE), CSR24/25 (rx ring base), CSR30/31 (tx ring
 * base), CSR76/78 (ring lengths), CSR112 (missed frames), CSR58/BCR20 (SWSTYLE), and the CSRs
 * kept as plain storage (6, 47, 80, 82, 100, 114, 122). The chip itself loads CSR8-15, 24/25,
 * 30/31 and 76/78 from the init block, so a driver may also program them directly and STRT
 * without INIT.
 * Writable any time: CSR0, CSR3 (masks), CSR4 (W1C status bits JAB, TXSTRT, RCVCCO, UINT, MFCO;
 * writing UINTCMD sets UINT; the model sets TXSTRT per frame sent and MFCO when CSR112 wraps),
 * CSR5, CSR124, and the BCRs other than BCR20.
 * Read-only: CSR72/74 (current rx/tx ring index, 0-based; this model's choice of encoding),
 * CSR88/89 (chip id 0x1003/0x0262: ((CSR89<<16|CSR88)>>12)&0xffff = 0x2621 "79C970A").
 * CSR76/78 hold the ring lengths as two's complement, as the data sheet says (CSR76 = -16 for a
 * 16-entry ring); 0 means no ring.
 *
 * Resets. A read of RESET is S_RESET: RAP = 0, CSR0 = 0x0004, CSR3 = 0, CSR4 = 0x0115, CSR5 = 0,
 * MODE, LADRF, ring bases and lengths 0 (no rings), CSR12-14 = the APROM's MAC, CSR112 = 0;
 * CSR1/2 and every BCR keep their values. H_RESET (power-on, hardReset()) also restores the
 * BCR defaults (BCR20 = 0x0200) and WIO mode. STOP: CSR0 = 0x0004, ring indices back to 0,
 * CSR4 status and CSR5 SPND cleared; the other CSRs keep their values.
 *
 * SWSTYLE (BCR20 bits 7:0; CSR58 aliases it): 2 (PCnet-PCI: 32-bit structures, 16-byte
 * descriptors) is what pcnet32 writes; 3 is the same with descriptor words 0 and 2 swapped and is
 * also emulated. 0 (16-bit LANCE) and 1 (ILACC) are not: INIT under them sets MERR, not IDON.
 * BCR20 bit 8 (SSIZE32) and bit 9 (CSRPCNET) follow the style written, as the data sheet says.
 *
 * Init block (SWSTYLE 2/3, 28 bytes, little-endian), read once by INIT from CSR2<<16 | CSR1:
 *   0  MODE u16 (→ CSR15)   2  RLEN u8 (bits 7:4 log2 rx ring size)   3  TLEN u8 (same, tx)
 *   4  PADR 6 bytes (→ CSR12-14)   10 reserved   12 LADRF 8 bytes (→ CSR8-11)
 *   20 RDRA u32 (rx ring base)   24 TDRA u32 (tx ring base)
 * A log2 size of 9 or more means 512 entries (the data sheet's rule).
 *
 * Descriptors (SWSTYLE 2; 16 bytes; word n at byte 4n):
 *   TMD0 buffer address   TMD1 OWN 31 ERR 30 ADD_FCS 29 MORE/LTINT 28 ONE 27 DEF 26 STP 25
 *   ENP 24 BPE 23, ONES 15:12 (must be 1111), BCNT 11:0 (two's complement of the length)
 *   TMD2 BUFF 31 UFLO 30 EXDEF 29 LCOL 28 LCAR 27 RTRY 26 TDR 25:16 TRC 3:0    TMD3 driver's
 *   RMD0 buffer address   RMD1 OWN 31 ERR 30 FRAM 29 OFLO 28 CRC 27 BUFF 26 STP 25 ENP 24
 *   BPE 23 PAM 22 LAFM 21 BAM 20, ONES 15:12, BCNT 11:0   RMD2 RCC 31:24 RPC 23:16 ZEROS 15:12
 *   MCNT 11:0 (frame length including the 4-byte FCS, valid on ENP)   RMD3 driver's
 * Ownership: the driver fills a descriptor and sets OWN last; the chip reads it once, and hands
 * it back by writing word 2 and then the upper half of word 1 with OWN clear (never BCNT or the
 * address). In a chain, the chip hands back the later descriptors first and the STP one last,
 * so a driver that sees STP's OWN clear sees the whole chain done.
 */

/** Bytes of the I/O window. */
export const LANCE_IO_SIZE = 0x20;

// Port offsets.
export const APROM_SIZE = 0x10;
export const WIO_RDP = 0x10;
export const WIO_RAP = 0x12;
export const WIO_RESET = 0x14;
export const WIO_BDP = 0x16;
export const DWIO_RDP = 0x10;
export const DWIO_RAP = 0x14;
export const DWIO_RESET = 0x18;
export const DWIO_BDP = 0x1c;
/** RAP holds a 7-bit register number. */
export const RAP_MASK = 0x7f;

// CSR0 bits.
export const CSR0_INIT = 1 << 0;
export const CSR0_STRT = 1 << 1;
export const CSR0_STOP = 1 << 2;
export const CSR0_TDMD = 1 << 3;
export const CSR0_TXON = 1 << 4;
export const CSR0_RXON = 1 << 5;
export const CSR0_IENA = 1 << 6;
export const CSR0_INTR = 1 << 7;
export const CSR0_IDON = 1 << 8;
export const CSR0_TINT = 1 << 9;
export const CSR0_RINT = 1 << 10;
export const CSR0_MERR = 1 << 11;
export const CSR0_MISS = 1 << 12;
export const CSR0_CERR = 1 << 13;
export const CSR0_BABL = 1 << 14;
export const CSR0_ERR = 1 << 15;
export const CSR0_RESET_VALUE = CSR0_STOP;
/** Status bits a write of 1 clears. */
export const CSR0_W1C = CSR0_IDON | CSR0_TINT | CSR0_RINT | CSR0_MERR | CSR0_MISS | CSR0_CERR | CSR0_BABL;
/** Sources of INTR (CERR is not one). */
export const CSR0_INTR_SOURCES = CSR0_IDON | CSR0_TINT | CSR0_RINT | CSR0_MERR | CSR0_MISS | CSR0_BABL;
/** Bits ERR summarises. */
export const CSR0_ERR_SOURCES = CSR0_MERR | CSR0_MISS | CSR0_CERR | CSR0_BABL;

// CSR numbers.
export const CSR_STATUS = 0;
export const CSR_IADR_LO = 1;
export const CSR_IADR_HI = 2;
export const CSR_MASKS = 3;
export const CSR_FEATURES = 4;
export const CSR_EXT = 5;
export const CSR_LADRF0 = 8;
export const CSR_PADR0 = 12;
export const CSR_MODE = 15;
export const CSR_IADR_LO_ALIAS = 16;
export const CSR_IADR_HI_ALIAS = 17;
export const CSR_BADR_LO = 24;
export const CSR_BADR_HI = 25;
export const CSR_BADX_LO = 30;
export const CSR_BADX_HI = 31;
export const CSR_SWSTYLE = 58;
export const CSR_RCVRC = 72;
export const CSR_XMTRC = 74;
export const CSR_RCVRL = 76;
export const CSR_XMTRL = 78;
export const CSR_DMA_TC = 80;
export const CSR_CHIPID_LO = 88;
export const CSR_CHIPID_HI = 89;
export const CSR_MISSED = 112;
export const CSR_TEST = 124;

/** Chip id: part 0x2621 (Am79C970A), AMD manufacturer id 0x003 in bits 11:0. */
export const CHIPID_LO = 0x1003;
export const CHIPID_HI = 0x0262;
export const CHIP_VERSION_79C970A = 0x2621;

// CSR3 interrupt masks (same bit positions as their CSR0 sources).
export const CSR3_BABLM = 1 << 14;
export const CSR3_MISSM = 1 << 12;
export const CSR3_MERRM = 1 << 11;
export const CSR3_RINTM = 1 << 10;
export const CSR3_TINTM = 1 << 9;
export const CSR3_IDONM = 1 << 8;

// CSR4: status bits with their masks, and features.
export const CSR4_JABM = 1 << 0;
export const CSR4_JAB = 1 << 1;
export const CSR4_TXSTRTM = 1 << 2;
export const CSR4_TXSTRT = 1 << 3;
export const CSR4_RCVCCOM = 1 << 4;
export const CSR4_RCVCCO = 1 << 5;
export const CSR4_UINT = 1 << 6;
export const CSR4_UINTCMD = 1 << 7;
export const CSR4_MFCOM = 1 << 8;
export const CSR4_MFCO = 1 << 9;
export const CSR4_ASTRP_RCV = 1 << 10;
export const CSR4_APAD_XMT = 1 << 11;
export const CSR4_RESET_VALUE = 0x0115;
export const CSR4_W1C = CSR4_JAB | CSR4_TXSTRT | CSR4_RCVCCO | CSR4_UINT | CSR4_MFCO;

// CSR5.
export const CSR5_SPND = 1 << 0;

// CSR15 (MODE).
export const MODE_DRX = 1 << 0;
export const MODE_DTX = 1 << 1;
export const MODE_LOOP = 1 << 2;
export const MODE_DRCVPA = 1 << 13;
export const MODE_DRCVBC = 1 << 14;
export const MODE_PROM = 1 << 15;

// BCRs.
export const BCR_MSRDA = 0;
export const BCR_MSWRA = 1;
export const BCR_MC = 2;
export const BCR_LNKST = 4;
export const BCR_LED1 = 5;
export const BCR_LED2 = 6;
export const BCR_LED3 = 7;
export const BCR_FDC = 9;
export const BCR_BSBC = 18;
export const BCR_EECAS = 19;
export const BCR_SWS = 20;
export const BCR_PCILAT = 22;
export const BCR18_DWIO = 1 << 7;
export const BCR20_SSIZE32 = 1 << 8;
export const BCR20_CSRPCNET = 1 << 9;
export const BCR20_RESET_VALUE = 0x0200;
/** LED registers: bit 6 enables link status, bit 15 shows the LED's state. */
export const BCR_LED_LNKSTE = 1 << 6;
export const BCR_LED_LEDOUT = 1 << 15;

/** The software styles this model emulates. */
export const SWSTYLE_PCNET_PCI = 2;
export const SWSTYLE_PCNET_PCI_II = 3;

// Init block (SWSTYLE 2/3).
export const INIT_BLOCK_SIZE = 28;
export const IB_MODE = 0;
export const IB_RLEN = 2;
export const IB_TLEN = 3;
export const IB_PADR = 4;
export const IB_LADRF = 12;
export const IB_RDRA = 20;
export const IB_TDRA = 24;
/** Largest log2 ring size; larger values mean this one (512 entries). */
export const RING_LOG2_MAX = 9;

// Descriptors (SWSTYLE 2/3).
export const DESC_SIZE = 16;
/** Word 1, upper half (status) bits, as bits of the 32-bit word. */
export const DESC_OWN = 1 << 31;
export const DESC_ERR = 1 << 30;
export const DESC_STP = 1 << 25;
export const DESC_ENP = 1 << 24;
export const DESC_BPE = 1 << 23;
export const TMD1_ADD_FCS = 1 << 29;
export const TMD1_LTINT = 1 << 28;
export const TMD1_ONE = 1 << 27;
export const TMD1_DEF = 1 << 26;
export const RMD1_FRAM = 1 << 29;
export const RMD1_OFLO = 1 << 28;
export const RMD1_CRC = 1 << 27;
export const RMD1_BUFF = 1 << 26;
export const RMD1_PAM = 1 << 22;
export const RMD1_LAFM = 1 << 21;
export const RMD1_BAM = 1 << 20;
/** Word 1, lower half. */
export const DESC_ONES_MASK = 0xf000;
export const DESC_BCNT_MASK = 0x0fff;
export const TMD2_BUFF = 1 << 31;
export const TMD2_UFLO = 1 << 30;
export const TMD2_EXDEF = 1 << 29;
export const TMD2_LCOL = 1 << 28;
export const TMD2_LCAR = 1 << 27;
export const TMD2_RTRY = 1 << 26;
export const RMD2_MCNT_MASK = 0x0fff;

// Ethernet sizes the model applies (frames exclude the FCS unless said otherwise).
export const ETH_FCS_LEN = 4;
/** Shortest frame on the wire before the FCS: receive pads to it, APAD_XMT pads tx to it. */
export const ETH_MIN_PAYLOAD_FRAME = 60;
/** Longest frame on the wire including its FCS; a longer tx frame is babble. */
export const ETH_MAX_WIRE_FRAME = 1518;
/** Longest frame without FCS the model sends or accepts. */
export const LANCE_MAX_FRAME = ETH_MAX_WIRE_FRAME - ETH_FCS_LEN;
/** Shortest frame (an Ethernet header): shorter tx chains come back with ERR|BUFF, shorter rx frames are refused. */
export const LANCE_MIN_FRAME = 14;

/** The two's-complement BCNT field (ONES included) for a buffer of `length` bytes (0..4095). */
export function encodeBcnt(length: number): number {
  return (DESC_ONES_MASK | (-length & DESC_BCNT_MASK)) & 0xffff;
}

/** Buffer length a BCNT field encodes. */
export function decodeBcnt(field: number): number {
  return -field & DESC_BCNT_MASK;
}
