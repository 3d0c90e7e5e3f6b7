/**
 * One measurement window on a real host, as the I/O benchmarks take it: start the host, let it
 * warm up, tell the device under test's guest a window starts (it forgets its latency samples),
 * sample, wait, sample again, stop the host — whatever happens.
 */
import { GUEST_MARK, createLogger } from '@ringvisor/shared';
import { Host } from '../toolstack/host.js';
import type { HostConfig } from '../toolstack/config.js';

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function sampleWindow<S>(
  config: HostConfig,
  o: { seed: number; warmupSec: number; windowSec: number; dut?: string },
  sample: (host: Host, dutDomid: number) => Promise<S>,
): Promise<[S, S]> {
  const host = new Host(config, { seed: o.seed, log: createLogger('bench') });
  try {
    await host.start();
    const dut = host.guests.find((g) => g.config.name === (o.dut ?? 'dut'))!;
    await delay(o.warmupSec * 1000);
    await dut.peer!.call(GUEST_MARK, {});
    const a = await sample(host, dut.domain.domid);
    await delay(o.windowSec * 1000);
    const b = await sample(host, dut.domain.domid);
    return [a, b];
  } finally {
    await host.stop();
  }
}
