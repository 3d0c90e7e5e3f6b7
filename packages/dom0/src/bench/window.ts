/**
 * One measurement window on a real host (either transport), as the I/O benchmarks take it: start the host, let it
 * warm up, tell the device under test's guest a window starts (it forgets its latency samples),
 * sample, wait, sample again, stop the host — whatever happens.
 */
import { randomBytes } from 'node:crypto';
import { GuestControlContract, contractClient, createLogger } from '@ringvisor/shared';
import { Host } from '../toolstack/host.js';
import type { HostConfig } from '../toolstack/config.js';

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function sampleWindow<S>(
  config: HostConfig,
  o: {
    seed: number;
    warmupSec: number;
    windowSec: number;
    dut?: string;
    transport?: 'threads' | 'ws';
    /**
     * The same rule for every mode: the window lasts `windowSec`, and longer (up to
     * `maxWindowSec`) until `enough(first, latest)` — a slow device is measured over enough
     * operations to mean something, not over a fixed time that may hold none.
     */
    enough?: (a: S, b: S) => boolean;
    maxWindowSec?: number;
  },
  sample: (host: Host, dutDomid: number) => Promise<S>,
): Promise<[S, S]> {
  // ws: every runtime its own process on loopback, with a secret of this run's.
  const host = new Host(config, { seed: o.seed, log: createLogger('bench'), ...(o.transport === 'ws' ? { ws: { secret: new Uint8Array(randomBytes(32)) } } : {}) });
  try {
    await host.start();
    const dut = host.guests.find((g) => g.config.name === (o.dut ?? 'dut'))!;
    await delay(o.warmupSec * 1000);
    await contractClient(GuestControlContract, dut.peer!).mark();
    const a = await sample(host, dut.domain.domid);
    const t0 = performance.now();
    await delay(o.windowSec * 1000);
    let b = await sample(host, dut.domain.domid);
    while (o.enough && !o.enough(a, b) && performance.now() - t0 < (o.maxWindowSec ?? o.windowSec) * 1000) {
      await delay(250);
      b = await sample(host, dut.domain.domid);
    }
    return [a, b];
  } finally {
    await host.stop();
  }
}
