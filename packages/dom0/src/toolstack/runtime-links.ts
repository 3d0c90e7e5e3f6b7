/**
 * ws: each runtime's link to this dom0 (guests by name, and "hwsim"), every one through a
 * ToxicLink (a no-op until a fault plan sets toxics), for link faults.
 */
import { InvalidStateError, UnsupportedOperationError, type LinkToxics, type ToxicLink } from '@ringvisor/shared';

export class RuntimeLinks {
  readonly byRuntime = new Map<string, ToxicLink>();

  constructor(
    private readonly hostName: string,
    private readonly ws: boolean,
  ) {}

  /** Toxics on a runtime's link (ws transport): latency, bandwidth, partition; `{}` heals. */
  setToxics(runtime: string, toxics: LinkToxics): void {
    const l = this.linkOf(runtime);
    if (Object.keys(toxics).length === 0) l.heal();
    else l.set(toxics);
  }

  /** Reset a runtime's link (a TCP reset): the runtime loses dom0; a guest's domain is reclaimed. */
  reset(runtime: string): void {
    this.linkOf(runtime).reset('connection reset (fault injected)');
  }

  /** Close and forget a runtime's link (its domain was reclaimed). */
  release(runtime: string, reason: string): void {
    const link = this.byRuntime.get(runtime);
    if (!link) return;
    if (!link.closed) link.close(reason);
    this.byRuntime.delete(runtime);
  }

  private linkOf(runtime: string): ToxicLink {
    if (!this.ws) throw new UnsupportedOperationError('link faults need the ws transport (threads runtimes share memory, not links)');
    const l = this.byRuntime.get(runtime);
    if (!l || l.closed) throw new InvalidStateError(`no live link to ${runtime} on ${this.hostName}`);
    return l;
  }
}
