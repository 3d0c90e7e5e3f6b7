/**
 * ws: dom0's listener. Every other runtime connects to it over an authenticated WebSocket — the
 * hardware simulator, each guest (its domain link, and its vCPU relay when its device models run
 * in dom0), and `ringvisor health` — and is admitted only as what dom0 expects now.
 */
import { ControlContract, DOMID_HW, serveContract, InvalidStateError, RpcPeer, listen, type WsServer } from '@ringvisor/shared';
import type { HostContext } from './host-context.js';
import type { GuestLauncher } from './guest-launcher.js';
import type { HardwareSupervisor } from './hardware-supervisor.js';

export class Dom0Listener {
  private server?: WsServer;

  constructor(
    private readonly ctx: HostContext,
    private readonly hardware: HardwareSupervisor,
    private readonly guests: GuestLauncher,
  ) {}

  get url(): string {
    if (!this.server) throw new InvalidStateError('dom0 is not listening');
    return `ws://${this.server.host === '0.0.0.0' ? '127.0.0.1' : this.server.host}:${this.server.port}`;
  }

  /** Read-only views for CLI commands and healthchecks. */
  private serveControl(peer: RpcPeer): void {
    const { config, registry } = this.ctx;
    serveContract(peer, ControlContract, {
      ping: () => ({
        host: config.name,
        guests: config.guests.length,
        ready: registry.guests.filter((g) => g.isReady).length,
      }),
    });
  }

  async listen(): Promise<void> {
    const { config, log, registry } = this.ctx;
    const ws = this.ctx.opts.ws!;
    this.server = await listen({
      host: ws.host ?? '127.0.0.1',
      port: ws.port ?? 0,
      secret: ws.secret,
      // Guests' keys are bound to this host: a guest of another host with our domain id's number is refused.
      domainHost: config.name,
      log,
      // A connection may act only as a guest domain we created and that has no runtime attached.
      authorize: (who) =>
        (who.role === 'guest' && this.guests.awaits(who.domid)) ||
        // A guest's vCPU relay (models in dom0 across a link), once per domain that has them.
        (who.role === 'vcpu' && registry.platformOf(who.domid)?.awaitsVcpuLink === true) ||
        (who.role === 'control' && who.domid === 0) ||
        (who.role === 'hwsim' && who.domid === DOMID_HW && this.hardware.awaitsConnection()),
      onConnection: (link, who) => {
        if (who.role === 'control') return this.serveControl(new RpcPeer(link, 'control'));
        if (who.role === 'vcpu') {
          const p = registry.platformOf(who.domid);
          if (!p?.awaitsVcpuLink) return link.close('no vCPU link expected for this domain');
          return p.serveVcpuLink(new RpcPeer(link, `vcpu${who.domid}`));
        }
        if (who.role === 'hwsim') return this.hardware.attachLink(link);
        this.guests.attachLink(link, who.domid);
      },
    });
    log.info({ url: this.url }, 'dom0 listening for guests');
  }

  async close(): Promise<void> {
    await this.server?.close();
  }
}
