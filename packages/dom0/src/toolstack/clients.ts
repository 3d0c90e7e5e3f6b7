/**
 * The typed clients the toolstack calls other runtimes through: the hardware's RPC and a guest's
 * control surface, each checked against its contract (shared/contracts). One client per link,
 * kept as long as the link (a restarted runtime is a new link, so a new client).
 */
import { GuestControlContract, HardwareContract, contractClient, type ContractClient, type RpcPeer } from '@ringvisor/shared';

export type HardwareClient = ContractClient<typeof HardwareContract>;
export type GuestControlClient = ContractClient<typeof GuestControlContract>;

const hardwareClients = new WeakMap<RpcPeer, HardwareClient>();
const guestClients = new WeakMap<RpcPeer, GuestControlClient>();

/** The hardware simulator's RPC on `peer`. */
export function hardware(peer: RpcPeer): HardwareClient {
  let c = hardwareClients.get(peer);
  if (!c) hardwareClients.set(peer, (c = contractClient(HardwareContract, peer)));
  return c;
}

/** A guest's control surface on `peer`: what it answers is checked (a guest is untrusted). */
export function guestControl(peer: RpcPeer): GuestControlClient {
  let c = guestClients.get(peer);
  if (!c) guestClients.set(peer, (c = contractClient(GuestControlContract, peer)));
  return c;
}
