/**
 * Process exit codes of every ringvisor command and runtime, in one place (README "Exit codes"
 * lists them for users). Scripts and CI read them: a code never changes meaning.
 */
export const EXIT = {
  /** The run ended as asked and every check passed. */
  OK: 0,
  /** A checker failed (integrity, a chaos verdict), a guest failed, or the cluster did not come up. */
  FAILED: 1,
  /** The command line or the config was wrong (the message says what to fix). */
  USAGE: 2,
  /**
   * A runtime died unplanned during the run (the hardware simulator's or a guest's process, not
   * a fault plan's kill) and the cluster carried on: the hardware was restarted, or the guest's
   * domain reclaimed. Every check of what survived passed; the run summary's `crashes` says who.
   */
  RECOVERED: 3,
  /**
   * The exit was forced: a second Ctrl-C / SIGTERM, or the shutdown drain overran its bound.
   * Children were killed by pid; the summary, if written, holds the last figures known.
   */
  FORCED: 4,
  /** A runtime (hardware simulator, guest) lost its dom0 — link closed for good or parent gone — and exited by itself. */
  DOM0_LOST: 5,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/**
 * A runtime started by a parent (dom0's `ringvisor up` spawns the hardware simulator and every
 * guest) has no reason to live once that parent is gone: when the parent dies the kernel hands
 * the child to another process, so `process.ppid` changes. Polled every `intervalMs`; `onGone`
 * is called once. A runtime whose parent is pid 1 (a container's init, or already orphaned)
 * is not watched: its supervisor decides its fate, and its dom0 link is what counts.
 * The returned function stops watching.
 */
export function watchParent(onGone: (parentPid: number) => void, intervalMs = 500): () => void {
  const parent = process.ppid;
  if (parent <= 1) return () => {};
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onGone(parent);
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Whether a process `pid` exists (signal 0; EPERM: it does, under another user). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A runtime's dom0 is gone for good (its link closed, or the parent that started it died): say
 * why in the log and on stderr, and exit with EXIT.DOM0_LOST, leaving no orphan behind.
 * `who` names the runtime in the line ("ringvisor hwsim", "ringvisor domu 3").
 */
export function exitDom0Lost(log: { error(obj: object, msg: string): void }, who: string, why: string): never {
  log.error({ why }, `dom0 lost; ${who} exits`);
  process.stderr.write(`${who}: ${why}; exiting (code ${EXIT.DOM0_LOST})\n`);
  process.exit(EXIT.DOM0_LOST);
}
