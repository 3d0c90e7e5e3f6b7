/**
 * The SV-IO access API's register page: one 4 KiB page per VIF, which the toolstack hands the
 * guest the VIF is bound to (with the event port that is its doorbell and interrupt). u32 words,
 * one writer each:
 *
 *   word  name        writer   meaning
 *   0     VIF_ID      device   the VIF's unique id
 *   1     KIND        device   1 network, 2 block, 3 camera
 *   2     STATUS      device   OPEN 1: the queues are attached; ERROR 4: the last open was refused,
 *                              or the engine stopped the VIF (a rogue queue; ERRCODE says which)
 *   3     CTRL        driver   OPEN 1
 *   4     OPEN_ID     driver   the id of the VIF the driver opens ("open a VIF by ID")
 *   5     OUT_PFN     driver   guest frame of the outgoing queue (initialised, queue.ts)
 *   6     IN_PFN      driver   guest frame of the incoming queue
 *   7,8   MAC         device   network: MAC bytes 0..3, 4..5
 *   9,10  SECTORS     device   block: size in 512-byte sectors (low, high)
 *   11    WIDTH       device   camera: frame width
 *   12    HEIGHT      device   camera: frame height
 *   13    FPS         device   camera: frames per second
 *   14    ERRCODE     device   why the last open was refused (SVIO_ERR_*)
 *   15    KICK        driver   the data doorbell once open: the driver adds 1 and wakes the word;
 *                              the VIF's core sleeps on it (Atomics.waitAsync), so a kick reaches
 *                              the core that owns the VIF without passing the engine's thread
 *
 * Open: the driver initialises both queues in its own memory, writes OPEN_ID, OUT_PFN, IN_PFN,
 * then CTRL.OPEN, then rings the doorbell (the event channel: opening and closing go through
 * the engine's thread) — the ordering point; the engine reads the driver's words once, at the
 * doorbell. Once open, the driver kicks the core through KICK (threads; across processes every
 * doorbell is the event, which the engine forwards to the VIF's core). An open naming another
 * VIF's id, or queue frames that are not the bound guest's, is refused (STATUS.ERROR, ERRCODE):
 * a guest can open only VIFs bound to it.
 */
import { RegisterPage } from '../hw/registers.js';

export const SVIO_REG = { VIF_ID: 0, KIND: 1, STATUS: 2, CTRL: 3, OPEN_ID: 4, OUT_PFN: 5, IN_PFN: 6, MAC_LO: 7, MAC_HI: 8, SECTORS_LO: 9, SECTORS_HI: 10, WIDTH: 11, HEIGHT: 12, FPS: 13, ERRCODE: 14, KICK: 15 } as const;
export const SVIO_REG_COUNT = 16;
/**
 * Across a process boundary (ws) a VIF's register page travels on the guest's direct link as the
 * hardware page `DOMID_HW:(SVIO_PAGE_BASE + vif)` — above every requester id (16 bits), so it
 * never names an SR-IOV function's register page.
 */
export const SVIO_PAGE_BASE = 0x10000;
export const SVIO_KIND = { net: 1, blk: 2, cam: 3 } as const;
export type SvioKind = keyof typeof SVIO_KIND;
export const SVIO_STATUS_OPEN = 1;
export const SVIO_STATUS_ERROR = 4;
export const SVIO_CTRL_OPEN = 1;
/** ERRCODE values. */
export const SVIO_ERR_NOT_BOUND = 1;
export const SVIO_ERR_BAD_QUEUE = 2;
/** The engine stopped the VIF: its driver broke the queue protocol (impossible indices). Only a reset brings it back. */
export const SVIO_ERR_ROGUE = 3;

/** One VIF's register page (the layout above). */
export class SvioRegisters extends RegisterPage {
  constructor(page: Uint8Array) {
    super(page, SVIO_REG_COUNT);
  }

  get mac(): string {
    return this.readMac(SVIO_REG.MAC_LO, SVIO_REG.MAC_HI);
  }

  /** u64, exact. */
  get sectors(): bigint {
    return this.read64(SVIO_REG.SECTORS_LO, SVIO_REG.SECTORS_HI);
  }

  /** The driver's data doorbell: bump KICK and wake whoever sleeps on it (the VIF's core). */
  kick(): void {
    Atomics.add(this.words, SVIO_REG.KICK, 1);
    Atomics.notify(this.words, SVIO_REG.KICK);
  }
}
