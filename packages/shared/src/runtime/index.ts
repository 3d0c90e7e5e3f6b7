/**
 * Starting a runtime as a worker thread by its entry point. From built JS the entry is loaded
 * directly; from TypeScript sources (tests, `tsx`) a tiny bootstrap registers tsx inside the
 * worker first, because Node 20 workers cannot load .ts and `--import tsx` does not reach them.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { InternalError } from '../errors.js';

const BOOTSTRAP = new URL('./ts-worker-bootstrap.mjs', import.meta.url);

export function startRuntimeWorker(entry: URL, options: WorkerOptions & { workerData?: Record<string, unknown> } = {}): Worker {
  const path = fileURLToPath(entry);
  if (path.endsWith('.ts')) {
    return new Worker(BOOTSTRAP, {
      ...options,
      execArgv: [...(options.execArgv ?? []), '--conditions=source'],
      workerData: { ...((options.workerData ?? {}) as Record<string, unknown>), __entry: entry.href },
    });
  }
  return new Worker(entry, options);
}

/** Resolve a sibling entry file of the calling module with the caller's own extension (.ts/.js). */
export function siblingEntry(callerUrl: string, relativeWithoutExt: string): URL {
  const ext = callerUrl.endsWith('.ts') ? '.ts' : '.js';
  return new URL(relativeWithoutExt + ext, callerUrl);
}
export * from './guest.js';

/**
 * The entry file of another runtime package (`hwsim`, `domU`) by path, not by import: runtimes
 * never import each other's code. A caller running from sources gets `src/<name>.ts`, a caller
 * running from a build gets `dist/<name>.js`.
 */
export function runtimeEntry(callerUrl: string, pkg: 'hwsim' | 'dom0' | 'domU', name: string): URL {
  const fromSource = callerUrl.endsWith('.ts');
  const marker = '/packages/';
  const i = callerUrl.lastIndexOf(marker);
  if (i < 0) throw new InternalError(`cannot locate the packages directory from ${callerUrl}`);
  const base = callerUrl.slice(0, i + marker.length);
  return new URL(`${pkg}/${fromSource ? 'src' : 'dist'}/${name}.${fromSource ? 'ts' : 'js'}`, base);
}
export * from './exit.js';
