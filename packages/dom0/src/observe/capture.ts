/**
 * Frame capture to pcapng: every frame crossing a virtual or physical NIC, one capture interface
 * per NIC (named "<domain>/<device>", "<host>/peth0"), Ethernet link type, the time the frame
 * crossed. Directions are the NIC owner's: tx is outbound, rx inbound.
 */
import { openPcapngFile, subscribeTrace, type PcapngWriter } from '@ringvisor/shared';

export interface CapturedFrame {
  t: number;
  host: string;
  iface: string;
  dir: 'tx' | 'rx';
  frame: Uint8Array;
}

export class PcapCapture {
  private readonly writer: PcapngWriter & { close(): void };
  frames = 0;
  readonly perInterface = new Map<string, number>();

  constructor(readonly path: string) {
    this.writer = openPcapngFile(path, { application: 'ringvisor' });
  }

  write(f: CapturedFrame): void {
    const id = this.writer.interfaceId(f.iface, `${f.iface} on ${f.host}`);
    this.writer.packet(id, f.t, f.frame, f.dir === 'tx' ? 'out' : 'in');
    this.frames++;
    this.perInterface.set(f.iface, (this.perInterface.get(f.iface) ?? 0) + 1);
  }

  close(): void {
    this.writer.close();
  }
}

/** Capture this runtime's frames (dom0: every vif and the physical NIC) until the returned stop(). */
export function captureLocalFrames(path: string): { capture: PcapCapture; stop(): void } {
  const capture = new PcapCapture(path);
  const unsubscribe = subscribeTrace(['frame'], (ev) => {
    if (ev.kind === 'frame' && ev.frame) capture.write({ t: ev.t, host: ev.host, iface: ev.iface, dir: ev.dir, frame: ev.frame });
  });
  return {
    capture,
    stop() {
      unsubscribe();
      capture.close();
    },
  };
}
