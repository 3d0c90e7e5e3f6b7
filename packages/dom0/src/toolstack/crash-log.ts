/**
 * Runtimes that died unplanned during the run and what was done about each (the run summary's
 * `crashes`, `list`'s "crashed"), told to whoever watches (`up` prints a line).
 */
import type { Logger } from '@ringvisor/shared';
import type { RuntimeCrash } from './host-types.js';

export class CrashLog {
  readonly crashes: RuntimeCrash[] = [];
  /** Called when a runtime's unplanned death is noticed and when its recovery ends. */
  onCrash?: (crash: RuntimeCrash, phase: 'noticed' | 'recovered') => void;

  constructor(private readonly log: Logger) {}

  /** A death noticed: on the record (before anything is done about it). */
  record(crash: RuntimeCrash): void {
    this.crashes.push(crash);
  }

  /** Tells the watcher a recorded death was noticed (its recovery is starting). */
  noticed(crash: RuntimeCrash): void {
    this.onCrash?.(crash, 'noticed');
  }

  /** Records how a crash's recovery ended (the summary's `crashes`) and tells `onCrash`. */
  recover(crash: RuntimeCrash, done: 'restarted' | 'reclaimed', recovery: Promise<void>): void {
    void recovery.then(
      () => {
        crash.recovery = done;
        crash.recoveryMs = Date.now() - crash.at;
        this.log.warn({ runtime: crash.name, ms: crash.recoveryMs }, `${crash.name} ${done} after an unplanned death`);
        this.onCrash?.(crash, 'recovered');
      },
      (e: Error) => {
        crash.recovery = 'failed';
        crash.error = e.message;
        crash.recoveryMs = Date.now() - crash.at;
        this.log.error({ runtime: crash.name, err: e }, `${crash.name}: recovery after an unplanned death failed`);
        this.onCrash?.(crash, 'recovered');
      },
    );
  }

  /** A recovery given up before it began (a crash loop): recorded as failed, and told. */
  failed(crash: RuntimeCrash, error: string): void {
    crash.recovery = 'failed';
    crash.error = error;
    this.onCrash?.(crash, 'noticed');
    this.onCrash?.(crash, 'recovered');
  }
}
