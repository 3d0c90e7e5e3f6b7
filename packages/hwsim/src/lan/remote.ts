/**
 * A LAN cable over a link: a host's hardware simulator and a switch runtime in another thread,
 * process or container exchange Ethernet frames as `lan.frame` notifications (one binary frame
 * per Ethernet frame). Either side dropping the link is a cable pulled: frames stop, counted.
 */
import { CONTROL_PING, listen, type Logger, RpcPeer, type WsServer } from '@ringvisor/shared';
import type { LanPort } from './lan-port.js';
import { LanSegment } from './segment.js';

export const LAN_FRAME = 'lan.frame';
const MAX_FRAME = 1514;

/** The local end of a cable whose far end is across `peer`. */
export function remoteLanPort(peer: RpcPeer, name: string): LanPort & { readonly dropped: number } {
  let dropped = 0;
  return {
    name,
    get dropped() {
      return dropped;
    },
    send(frame) {
      if (peer.closed) {
        dropped++;
        return;
      }
      peer.notify(LAN_FRAME, frame.slice());
    },
    onFrame(cb) {
      peer.on(LAN_FRAME, (f) => {
        // Frames from the wire are untrusted: only sane Ethernet sizes reach the segment.
        if (f instanceof Uint8Array && f.byteLength >= 14 && f.byteLength <= MAX_FRAME) cb(new Uint8Array(f));
        else dropped++;
      });
    },
  };
}

export interface SwitchRuntime {
  readonly segment: LanSegment;
  readonly server: WsServer;
  close(): Promise<void>;
}

/**
 * The LAN switch runtime: a learning switch whose ports are hosts' uplinks. A host connects as
 * role `hwsim` with its host index as id; one connection per host.
 */
export async function runSwitch(o: { host?: string; port: number; secret: Uint8Array; name?: string; log?: Logger }): Promise<SwitchRuntime> {
  const segment = new LanSegment({ name: o.name ?? 'lan0' });
  const attached = new Set<number>();
  const server = await listen({
    host: o.host ?? '127.0.0.1',
    port: o.port,
    secret: o.secret,
    ...(o.log ? { log: o.log } : {}),
    authorize: (who) => (who.role === 'hwsim' && !attached.has(who.domid)) || (who.role === 'control' && who.domid === 0),
    onConnection: (link, who) => {
      if (who.role === 'control') {
        // Healthchecks: the switch is up; how many hosts are cabled to it.
        new RpcPeer(link, 'switch/control').handle(CONTROL_PING, () => ({ host: `switch ${segment.name}`, guests: attached.size, ready: attached.size }));
        return;
      }
      attached.add(who.domid);
      const name = `host${who.domid}`;
      const peer = new RpcPeer(link, `switch/${name}`);
      const port = segment.attach(name);
      const wire = remoteLanPort(peer, name);
      port.onFrame((f) => wire.send(f));
      wire.onFrame((f) => port.send(f));
      o.log?.info({ port: name }, 'host uplink connected');
      link.onClose((reason) => {
        attached.delete(who.domid);
        segment.detach(name);
        o.log?.warn({ port: name, reason }, 'host uplink lost');
      });
    },
  });
  return { segment, server, close: () => server.close() };
}
