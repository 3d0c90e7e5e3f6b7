/** What every module of a host's toolstack shares: its config, the hypervisor core, the registry, the lock. */
import type { Logger } from '@ringvisor/shared';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { HostConfig } from './config.js';
import type { HostOptions } from './host-types.js';
import type { HostRegistry } from './registry.js';
import type { CrashLog } from './crash-log.js';
import type { LifecycleLock } from './runtime-util.js';
import type { RuntimeLinks } from './runtime-links.js';

export interface HostContext {
  readonly config: HostConfig;
  readonly opts: HostOptions;
  readonly hv: Hypervisor;
  readonly log: Logger;
  readonly registry: HostRegistry;
  readonly crashLog: CrashLog;
  readonly lock: LifecycleLock;
  readonly links: RuntimeLinks;
  /** Shutdown has begun: runtimes' deaths are expected, nothing is restarted or reclaimed. */
  stopping: boolean;
}

/** A `process` trace event for this host (the dashboard's timeline). */
export type RuntimeTracer = (runtime: string, role: string, state: 'up' | 'down', domid: number, pid?: number, code?: number) => void;
