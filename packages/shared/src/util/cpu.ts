import { isMainThread } from 'node:worker_threads';

/**
 * CPU time of this process (user + system, all its threads) in ms — when this runtime is a
 * process of its own (the ws transport). Undefined in a worker thread, whose own figure is its
 * event loop's busy time (performance.eventLoopUtilization).
 */
export function processCpuMs(): number | undefined {
  if (!isMainThread) return undefined;
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
