/**
 * The real CLI in its own process, as a user runs it, for end-to-end tests: every child and
 * temporary directory is tracked so `cleanUp()` (in afterEach) kills the children by pid and
 * removes the directories, pass or fail.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../../../..');
export const CLI = join(ROOT, 'bin/ringvisor.mjs');

const children: ChildProcess[] = [];
const dirs: string[] = [];

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `ringvisor ARGS` in `cwd`; `done` resolves with its exit code and output. */
export function runCli(args: string[], cwd: string, env: Record<string, string> = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((r) => child.on('exit', (code) => r({ code, stdout, stderr })));
  return { child, done };
}

/** A fresh temporary directory, removed by cleanUp(). */
export function tempDir(prefix = 'rv-cli-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Kill (by pid) every child still running and remove every temporary directory. */
export function cleanUp(): void {
  for (const c of children.splice(0))
    if (c.exitCode === null && c.signalCode === null && c.pid)
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** Poll `fn` every 500 ms until it returns something, or fail after `timeoutMs` naming `what`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * A TCP port free on 127.0.0.1 now, for a process the test starts with `--listen` (the kernel
 * picks it; a random number could fall on a port an outgoing connection holds).
 */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
