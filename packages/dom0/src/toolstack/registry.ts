/**
 * Who is on this host: the guests the toolstack launched (by name) and the domains it created
 * (with their devices per mode). Lookups by name throw a typed error rather than each caller
 * searching the lists itself.
 */
import { NoSuchGuestError } from '@ringvisor/shared';
import type { Domain } from '../hypervisor/hypervisor.js';
import type { EmulatedPlatform } from '../devicemodels/platform.js';
import type { CreatedDomain, GuestHandle } from './host-types.js';

export class HostRegistry {
  /** Every guest launched on this host, in config order (a reboot replaces its entry in place). */
  readonly guests: GuestHandle[] = [];
  /** Every domain the toolstack created on this host, booted or not (reclaimed ones leave). */
  readonly created: CreatedDomain[] = [];

  constructor(private readonly hostName: string) {}

  /** The guest named `name`; throws NoSuchGuestError (RV_ERR_NO_SUCH_GUEST) when there is none. */
  guest(name: string): GuestHandle {
    const g = this.guests.find((x) => x.config.name === name);
    if (!g) throw new NoSuchGuestError(`no guest ${name} on ${this.hostName}`);
    return g;
  }

  /** The guest named `name` whose runtime is up and connected; throws NoSuchGuestError otherwise. */
  runningGuest(name: string): GuestHandle & { peer: NonNullable<GuestHandle['peer']> } {
    const g = this.guests.find((x) => x.config.name === name);
    if (!g || !g.peer || g.down) throw new NoSuchGuestError(`no running guest ${name} on ${this.hostName}`);
    return g as GuestHandle & { peer: NonNullable<GuestHandle['peer']> };
  }

  /** The index of the guest named `name` in `guests`; throws NoSuchGuestError when there is none. */
  guestIndex(name: string): number {
    const i = this.guests.findIndex((g) => g.config.name === name);
    if (i < 0) throw new NoSuchGuestError(`no guest ${name} on ${this.hostName}`);
    return i;
  }

  /** The guest launched in `domain`, if it was launched (a domain is created before its guest boots). */
  guestIn(domain: Domain): GuestHandle | undefined {
    return this.guests.find((g) => g.domain === domain);
  }

  /** The name of the guest in domain `domid`, or "guestN" before it is known. */
  guestName(domid: number): string {
    return this.guests.find((g) => g.domain.domid === domid)?.config.name ?? `guest${domid}`;
  }

  /**
   * The created domain named `name`; throws NoSuchGuestError when there is none (never created,
   * or reclaimed). `message` words the error as the operation's caller expects it.
   */
  domainNamed(name: string, message = `no domain ${name} on ${this.hostName}`): CreatedDomain {
    const c = this.findDomain(name);
    if (!c) throw new NoSuchGuestError(message);
    return c;
  }

  /** The created domain named `name`, if there is one (for questions, not operations). */
  findDomain(name: string): CreatedDomain | undefined {
    return this.created.find((x) => x.domain.name === name);
  }

  /** The created domain `domid`, if it still exists. */
  domainOf(domid: number): CreatedDomain | undefined {
    return this.created.find((c) => c.domain.domid === domid);
  }

  /** The emulated platform of a domain (its ioreq server and device models), if it has one. */
  platformOf(domid: number): EmulatedPlatform | undefined {
    return this.domainOf(domid)?.platform;
  }

  platforms(): EmulatedPlatform[] {
    return this.created.flatMap((c) => (c.platform ? [c.platform] : []));
  }
}
