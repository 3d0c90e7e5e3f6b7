/**
 * Small pieces the toolstack's modules share: signalling and waiting for runtimes, the
 * one-at-a-time lock on lifecycle operations, and the `process` trace event.
 */
import type { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { publishTrace, traceNow } from '@ringvisor/shared';

/** Signals a process that may have died meanwhile (a late signal must not throw in dom0); SIGKILL by default. */
export function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

/** Resolves with a worker thread's exit code. */
export function exitOf(w: Worker): Promise<number> {
  return new Promise((r) => w.once('exit', r));
}

/** A timer that does not keep the process alive. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Whether `p` has settled already (given a turn of the event loop to say so). */
export async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

/** The repository's CLI entry (bin/ringvisor.mjs), found from this module's location. */
export function repoBin(callerUrl: string): string {
  const i = callerUrl.lastIndexOf('/packages/');
  return fileURLToPath(new URL('bin/ringvisor.mjs', callerUrl.slice(0, i + 1)));
}

/** Cluster-wide credentials a guest process must never inherit from dom0's environment. */
const CLUSTER_CREDENTIALS = ['RINGVISOR_SECRET', 'RINGVISOR_READ_TOKEN'] as const;

/**
 * A guest process's environment: dom0's, minus every cluster credential (whatever the operator
 * had exported), plus the guest's own domain key — the only key it gets (auth.ts).
 */
export function guestEnvironment(parent: NodeJS.ProcessEnv, domainKeyHex: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...parent };
  for (const name of CLUSTER_CREDENTIALS) delete env[name];
  env.RINGVISOR_DOMAIN_KEY = domainKeyHex;
  return env;
}

/**
 * The toolstack takes one runtime-lifecycle operation (a restart, kill or revive of the hardware
 * or of dom0's I/O stack, a freeze of the hardware, a VIF reset or its heal) at a time, as libxl
 * locks per domain: a kill that arrives while a restart is still re-attaching devices waits for
 * it instead of tearing it down half-way.
 */
export class LifecycleLock {
  private tail: Promise<void> = Promise.resolve();

  run<T>(op: () => Promise<T>): Promise<T> {
    const run = this.tail.then(op, op);
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Settles when every operation taken so far has ended (however it ended). */
  idle(): Promise<void> {
    return this.tail;
  }
}

/** A runtime came up or went away: a `process` trace event (the dashboard's timeline). */
export function traceRuntime(host: string, runtime: string, role: string, state: 'up' | 'down', domid: number, pid?: number, code?: number): void {
  publishTrace({
    kind: 'process',
    t: traceNow(),
    host,
    domid,
    runtime,
    role,
    state,
    ...(pid !== undefined ? { pid } : {}),
    ...(code !== undefined ? { code } : {}),
  });
}
