/**
 * Direct links (ws transport): a guest's process talks to the hardware simulator's process itself
 * for the functions assigned to it — dom0 is not on this path, as dom0 is not on the PCIe path
 * between a guest and its passthrough device.
 *
 * The link is authenticated like every ringvisor link (role `direct`, the guest's domain id, with
 * the key the guest's domain key gives for it — this process derives it from the cluster secret) and
 * admitted only for a domain that has functions assigned by dom0's toolstack, once. What crosses
 * it (shared/transport/domain-link.ts, MachineLinkEnd on both ends):
 *   mem.pages  guest → hw   queue ring updates, driver register stores (CTRL, Q0, Q1), and the
 *                           buffers the driver syncs for the device before a doorbell (streaming DMA)
 *              hw → guest   device register stores (STATUS, GEN, identity), ring updates, and
 *                           every byte the device DMA-wrote, before the interrupt announcing it
 *   evt        guest → hw   a doorbell: {port} is the guest's end of the function's channel
 *              hw → guest   the function's interrupt, after the IOMMU's interrupt remapping
 * Register pages travel as pages `${DOMID_HW}:${requester id}`. The guest's link may write only
 * its own frames and the register pages of functions it owns; the device reads only the driver's
 * registers from a register page, once per doorbell.
 *
 * SV-IO VIFs bound to the domain use the same link (svio/engine.ts): the VIF's register page as
 * `${DOMID_HW}:${SVIO_PAGE_BASE + vif}`, its queue pages and buffers as the guest's frames, its
 * doorbell an `evt` naming the guest's port, its interrupt an `evt` after the core's page updates.
 */
import { DOMID_HW, MachineLinkEnd, RpcPeer, SVIO_PAGE_BASE, VF_REG_COUNT, listen, type Logger, type WsServer } from '@ringvisor/shared';
import type { HardwareSimulator } from '../runtime.js';

export interface DirectLinkServerOptions {
  host: string;
  port: number;
  /** The cluster secret: each guest's key is derived from it for the domain it claims. */
  secret: Uint8Array;
  /** The host this hardware belongs to: guests' keys are bound to their host (auth.ts). */
  domainHost: string;
  log?: Logger;
}

export async function serveDirectLinks(sim: HardwareSimulator, o: DirectLinkServerOptions): Promise<WsServer> {
  const linked = new Set<number>();
  const hasDevices = (domid: number) => sim.functions.ownedBy(domid).length > 0 || sim.vifsBoundTo(domid).length > 0;
  return listen({
    host: o.host,
    port: o.port,
    secret: o.secret,
    domainHost: o.domainHost,
    ...(o.log ? { log: o.log } : {}),
    authorize: (who) => who.role === 'direct' && !linked.has(who.domid) && hasDevices(who.domid),
    onConnection: (link, who) => {
      const domid = who.domid;
      if (linked.has(domid) || !hasDevices(domid)) return link.close('no functions assigned to, nor VIFs bound to, this domain');
      linked.add(domid);
      const peer = new RpcPeer(link, `direct${domid}`);
      const barOf = (rid: number): Uint8Array | undefined => {
        const f = sim.functions.ownedBy(domid).find((x) => x.rid === rid);
        return f ? f.regs.page : undefined;
      };
      const machine: MachineLinkEnd = new MachineLinkEnd(
        peer,
        (d, pfn) => (d === domid ? sim.dma.peek(d, pfn) : d !== DOMID_HW ? undefined : pfn >= SVIO_PAGE_BASE ? sim.vifRegisterPage(domid, pfn - SVIO_PAGE_BASE) : barOf(pfn)),
        (port) => sim.directDoorbell(domid, port),
      );
      sim.attachDirectLink(domid, machine);
      // The guest's copy of each register page starts from the device's.
      for (const f of sim.functions.ownedBy(domid)) machine.wrote(DOMID_HW, f.rid, 0, VF_REG_COUNT * 4);
      machine.mirror.flush();
      link.onClose(() => {
        linked.delete(domid);
        sim.detachDirectLink(domid, machine);
      });
    },
  });
}
