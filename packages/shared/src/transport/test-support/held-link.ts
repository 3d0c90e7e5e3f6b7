/**
 * An in-memory MessageLink for deterministic interleaving tests: what one end sends waits in the
 * other end's inbox until the test delivers it, so every message order a test needs is exact.
 */
import type { MessageLink, WireMessage } from '../rpc.js';

export class HeldLink implements MessageLink {
  readonly inbox: unknown[] = [];
  peer?: HeldLink;
  private cb: (m: unknown) => void = () => {};

  /** Two ends, each the other's peer. */
  static pair(): [HeldLink, HeldLink] {
    const a = new HeldLink();
    const b = new HeldLink();
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  send(msg: WireMessage): void {
    this.peer!.inbox.push(msg);
  }
  onMessage(cb: (m: unknown) => void): void {
    this.cb = cb;
  }
  onClose(): void {}
  close(): void {}

  /** Delivers what is queued now, in order (messages sent meanwhile wait for the next call). */
  deliver(): void {
    for (const m of this.inbox.splice(0)) this.cb(m);
  }

  /** Delivers the oldest message queued here; false if none. */
  deliverOne(): boolean {
    const m = this.inbox.shift();
    if (m === undefined) return false;
    this.cb(m);
    return true;
  }
}
