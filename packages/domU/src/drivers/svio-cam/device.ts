/**
 * SvioCamDriver — the guest's VIF driver for an SV-IO camera: a few frame buffers (consecutive
 * frames of the guest's own memory) queued with CAM_BUF, the stream started with CAM_STREAM,
 * each CAM_FRAME checked by the camera consumer (order, gaps, the frame's own checksums and
 * pattern) and its buffer queued again. The camera keeps its own rate: a guest slower than it
 * sees gaps, never a stall.
 */
import { PAGE_SIZE, SVIO_REG, VIF_CAM_BUF, VIF_CAM_FRAME, VIF_CAM_STREAM, cameraFrameSize, vifMessage, type CameraFormat, type FrameAllocator, type GuestMemory } from '@ringvisor/shared';
import { VifDriver, drainIncoming, pushOutgoing, type OpenVif } from '../../kernel/svio.js';
import { CameraConsumer } from '../../workloads/camera-consumer.js';

const BUFFERS = 4;

export interface VifCamMetrics {
  frames: number;
  bufferErrors: number;
  unexpected: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
}

export class SvioCamDriver extends VifDriver {
  readonly format: CameraFormat;
  readonly fps: number;
  readonly consumer: CameraConsumer;
  readonly counters: VifCamMetrics = { frames: 0, bufferErrors: 0, unexpected: 0, doorbells: 0, suppressed: 0, interrupts: 0 };
  private readonly buffers: Array<{ pfn: number; pages: number }> = [];
  private readonly toQueue: number[] = [];

  private streaming = false;

  constructor(
    vif: OpenVif,
    private readonly memory: GuestMemory,
    frames: FrameAllocator,
  ) {
    super(vif);
    this.format = { width: vif.regs.read(SVIO_REG.WIDTH), height: vif.regs.read(SVIO_REG.HEIGHT) };
    this.fps = vif.regs.read(SVIO_REG.FPS);
    this.consumer = new CameraConsumer(this.format);
    const pages = Math.ceil(cameraFrameSize(this.format) / PAGE_SIZE);
    for (let i = 0; i < BUFFERS; i++) {
      this.buffers.push({ pfn: frames.allocRun(pages), pages });
      this.toQueue.push(i);
    }
  }

  /** STREAM_START with every buffer queued. */
  start(): void {
    this.streaming = true;
    this.pump(true);
  }

  /**
   * The camera VIF was created again (a device reset, a hardware restart): every buffer is ours
   * again, queued on the new VIF, and the stream restarts if it ran; the consumer starts a new
   * sequence. Frames the old device had not delivered are gaps the guest never sees.
   */
  reattach(vif: OpenVif): void {
    this.attachVif(vif);
    this.toQueue.length = 0;
    this.buffers.forEach((_, i) => this.toQueue.push(i));
    this.consumer.restart();
    if (this.streaming) this.pump(true);
  }

  /** STREAM_STOP. */
  stop(): void {
    this.streaming = false;
    this.vif.out.put(vifMessage({ type: VIF_CAM_STREAM, len: 0 }));
    this.push();
  }

  private pump(start = false): void {
    const { out } = this.vif;
    while (this.toQueue.length > 0 && out.free() > (start ? 1 : 0)) {
      const id = this.toQueue.shift()!;
      const b = this.buffers[id];
      out.put(vifMessage({ type: VIF_CAM_BUF, id, gfn: b.pfn, len: b.pages }));
    }
    if (start) out.put(vifMessage({ type: VIF_CAM_STREAM, len: 1 }));
    this.push();
  }

  private push(): void {
    pushOutgoing(this.vif, this.counters);
  }

  protected onInterrupt(): void {
    this.counters.interrupts++;
    drainIncoming(
      this.vif,
      (m) => {
        const b = m.type === VIF_CAM_FRAME ? this.buffers[m.id] : undefined;
        if (!b) {
          this.counters.unexpected++;
          return;
        }
        if (m.status !== 0) this.counters.bufferErrors++;
        else {
          this.counters.frames++;
          this.consumer.check(new Uint8Array(this.memory.buffer, b.pfn * PAGE_SIZE, b.pages * PAGE_SIZE), m.used);
        }
        this.toQueue.push(m.id);
      },
      this.counters,
    );
    this.pump();
  }
}
