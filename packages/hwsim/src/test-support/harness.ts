/**
 * Test utilities: a test playing dom0 — the hypervisor's event-channel authority, dom0's own
 * event gate, and a minimal driver for one host-interface queue (FrontRing on a dom0 page).
 * Excluded from the build (src/**\/test-support/**).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DOMID_HW,
  EventChannelAuthority,
  EventChannelGate,
  FrontRing,
  createEventMemory,
  createLogger,
  initSharedRing,
  type Logger,
  type RingProtocol,
} from '@ringvisor/shared';

export function tempDir(prefix = 'hwsim-test-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A logger for tests that provoke warnings on purpose (rogue rings …): errors only. */
export function quietLogger(): Logger {
  const log = createLogger('hwsim-test');
  log.level = 'error';
  return log;
}

/** Counts interrupts on one dom0 port and lets a test wait for the next one. */
export class IrqLine {
  count = 0;
  private waiters: Array<() => void> = [];

  constructor(gate: EventChannelGate, readonly port: number) {
    gate.on(port, () => {
      this.count++;
      const w = this.waiters;
      this.waiters = [];
      for (const fn of w) fn();
    });
  }

  /** Resolve once `count` exceeds `seen`; reject after `timeoutMs`. */
  waitBeyond(seen: number, timeoutMs: number): Promise<void> {
    if (this.count > seen) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no interrupt on dom0 port ${this.port} within ${timeoutMs} ms`)), timeoutMs);
      const check = (): void => {
        if (this.count > seen) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }
}

/** The hypervisor side of one host's events, with dom0's gate running. */
export class Dom0Events {
  readonly eventMemory = createEventMemory();
  readonly authority = new EventChannelAuthority(this.eventMemory);
  readonly gate: EventChannelGate;

  constructor() {
    this.authority.createDomain(0);
    this.authority.createDomain(DOMID_HW);
    this.gate = new EventChannelGate(this.eventMemory, 0);
    this.gate.start();
  }

  /** Bind a dom0 ↔ DOMID_HW channel as the hypervisor does for each device. */
  bindDevice(): { dom0Port: number; hwPort: number; irq: IrqLine } {
    const hwPort = this.authority.allocUnbound(DOMID_HW, 0);
    const dom0Port = this.authority.bindInterdomain(0, DOMID_HW, hwPort);
    return { dom0Port, hwPort, irq: new IrqLine(this.gate, dom0Port) };
  }

  close(): void {
    this.gate.stop();
  }
}

/** dom0's driver end of one queue: initialises the page, submits requests, collects responses. */
export class DriverQueue<Req, Rsp> {
  readonly front: FrontRing<Req, Rsp>;
  doorbells = 0;

  constructor(
    readonly page: Uint8Array,
    protocol: RingProtocol<Req, Rsp>,
    private readonly gate: EventChannelGate,
    readonly port: number,
    readonly irq: IrqLine,
  ) {
    initSharedRing(page);
    this.front = new FrontRing(page, protocol);
  }

  /** Queue and publish requests; ring the doorbell only if the device asked. Returns whether it rang. */
  submit(reqs: Req[]): boolean {
    for (const r of reqs) this.front.putRequest(r);
    if (this.front.pushRequests()) {
      this.doorbells++;
      this.gate.send(this.port);
      return true;
    }
    return false;
  }

  /** Collect exactly `n` responses, sleeping on the interrupt between checks (as a real driver does). */
  async collect(n: number, timeoutMs = 3000): Promise<Rsp[]> {
    const out: Rsp[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let r = this.front.takeResponse(); r !== undefined; r = this.front.takeResponse()) out.push(r);
      if (out.length >= n) return out;
      const seen = this.irq.count;
      if (this.front.finalCheckForResponses()) continue;
      await this.irq.waitBeyond(seen, Math.max(1, deadline - Date.now()));
    }
  }
}

/** Resolve when `cond()` holds, polling; reject after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A minimal Ethernet frame: dst, src, ethertype 0x88b5 (local experimental), payload. */
export function ethFrame(dst: string, src: string, payload: Uint8Array | number): Uint8Array {
  const body = typeof payload === 'number' ? Uint8Array.from({ length: payload }, (_, i) => (i * 7 + 3) & 0xff) : payload;
  const f = new Uint8Array(14 + body.byteLength);
  f.set(dst.split(':').map((h) => parseInt(h, 16)), 0);
  f.set(src.split(':').map((h) => parseInt(h, 16)), 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  f.set(body, 14);
  return f;
}
