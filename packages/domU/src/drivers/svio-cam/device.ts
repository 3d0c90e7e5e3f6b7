/**
 * SvioCamDriver — the guest's VIF driver for an SV-IO camera: a few frame buffers (consecutive
 * frames of the guest's own memory) queued with CAM_BUF, the stream started with CAM_STREAM,
 * each CAM_FRAME checked by the camera consumer (order, gaps, the frame's own checksums and
 * pattern) and its buffer queued again. The camera keeps its own rate: a guest slower than it
 * sees gaps, never a stall.
 */
import {
  PAGE_SIZE,
  SVIO_REG,
  VIF_CAM_BUF,
  VIF_CAM_FRAME,
  VIF_CAM_STREAM,
  cameraFrameSize,
  vifMessage,
  loadRecord,
  saveRecord,
  StateError,
  StateRecordError,
  type CameraFormat,
  type Device,
  type DeviceIdentity,
  type DeviceMetrics,
  type DeviceStateRecord,
  type FrameAllocator,
  type GuestMemory,
} from '@ringvisor/shared';
import { VifDriver, drainIncoming, pushOutgoing, type OpenVif } from '../../kernel/svio.js';
import { CameraConsumer } from '../../workloads/camera-consumer.js';
import { svioCamDriverLayout } from './state.js';

const BUFFERS = 4;

export interface VifCamMetrics {
  frames: number;
  bufferErrors: number;
  unexpected: number;
  doorbells: number;
  suppressed: number;
  interrupts: number;
}

/**
 * Persistence (Device, state.ts): quiesce() stops the driver acting — frames announced meanwhile
 * wait on the incoming queue (the camera drops what finds no buffer, as it always does); save()
 * writes the record; `SvioCamDriver.restore` builds a fresh driver on the same arguments (taking
 * the record's buffers, allocating none), which attach() starts.
 */
export class SvioCamDriver extends VifDriver implements Device {
  /** Set while restore() builds an instance: the constructor then allocates nothing. */
  private static restoring = false;

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
    if (SvioCamDriver.restoring) {
      this.quiesced = true;
      return;
    }
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

  get identity(): DeviceIdentity {
    return { kind: 'cam', mode: 'svio', side: 'guest', type: 'svio-cam-driver', devid: this.vif.spec.devid };
  }

  /** The VIF is open when the driver is built; a restored driver starts here. */
  async attach(): Promise<void> {
    if (!this.quiesced) return;
    this.resume();
    this.vif.doorbell(); // the device may sleep on an event index set before the save
  }

  /** The stream stops (STREAM_STOP); the buffers stay the guest's. */
  async stop(reason: string): Promise<void> {
    void reason;
    this.quiesced = false;
    if (this.streaming) this.stopStream();
  }

  /** ops: frames the consumer checked; errors: frames that failed it, buffers refused, stray answers. */
  metrics(): DeviceMetrics {
    const c = this.consumer.stats;
    const m = this.counters;
    return {
      ops: c.frames,
      bytes: c.bytes,
      errors: c.corrupted + c.reordered + m.bufferErrors + m.unexpected,
      detail: { ...m, consumed: c.frames, corrupted: c.corrupted, gaps: c.gaps, reordered: c.reordered, lastSeq: c.lastSeq },
    };
  }

  async quiesce(): Promise<void> {
    this.quiesced = true;
  }

  resume(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.interrupt();
    this.pump();
  }

  save(): DeviceStateRecord {
    if (!this.quiesced) throw new StateError(`VIF ${this.vif.spec.vif}: save() needs the driver quiesced first`);
    const c = this.consumer.stats;
    return saveRecord(svioCamDriverLayout, `dom/svio-cam/${this.vif.spec.devid}`, {
      ...this.queueIndices(),
      buffers: this.buffers.map((b) => ({ ...b })),
      toQueue: [...this.toQueue],
      streaming: this.streaming,
      consumer: { frames: c.frames, bytes: c.bytes, corrupted: c.corrupted, gaps: c.gaps, reordered: c.reordered, lastSeq: c.lastSeq, restarts: c.restarts, failures: c.failures.slice(0, 64) },
      counters: { ...this.counters },
    });
  }

  /** A fresh driver on `args` (the constructor's) carrying on the saved one; attach() starts it. */
  static restore(args: ConstructorParameters<typeof SvioCamDriver>, record: unknown): SvioCamDriver {
    const s = loadRecord(svioCamDriverLayout, record);
    const [vif, memory] = args;
    VifDriver.checkQueues(vif, s);
    const frameSize = cameraFrameSize({ width: vif.regs.read(SVIO_REG.WIDTH), height: vif.regs.read(SVIO_REG.HEIGHT) });
    for (const b of s.buffers)
      if (!memory.hasFrame(b.pfn) || !memory.hasFrame(b.pfn + b.pages - 1) || b.pages * PAGE_SIZE < frameSize)
        throw new StateRecordError(`VIF ${vif.spec.vif}: frame buffer at ${b.pfn} (${b.pages} pages) of the record does not fit the guest or a frame`);
    SvioCamDriver.restoring = true;
    let d: SvioCamDriver;
    try {
      d = new SvioCamDriver(...args);
    } finally {
      SvioCamDriver.restoring = false;
    }
    d.buffers.push(...s.buffers.map((b) => ({ ...b })));
    d.toQueue.push(...s.toQueue);
    d.streaming = s.streaming;
    Object.assign(d.consumer.stats, { ...s.consumer, failures: [...s.consumer.failures] });
    Object.assign(d.counters, s.counters);
    return d;
  }

  /** STREAM_STOP. */
  stopStream(): void {
    this.streaming = false;
    this.vif.out.put(vifMessage({ type: VIF_CAM_STREAM, len: 0 }));
    this.push();
  }

  private pump(start = false): void {
    if (this.quiesced) return;
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
