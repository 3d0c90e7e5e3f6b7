/**
 * Worker-thread entry of the hardware simulator. Started by dom0's launcher with
 * `startRuntimeWorker(runtimeEntry(…, 'hwsim', 'hwsim.worker'), { workerData, transferList: [control] })`.
 *
 * workerData: { control: MessagePort, eventMemory: SharedArrayBuffer, host: string,
 *               disk: { path: string, sizeBytes: number }, nic: { mac: string } }
 *
 * The worker lives as long as the control port is open; after hw.shutdown (or dom0 closing the
 * port) the disk is flushed and closed, the port closes, and the thread exits by itself.
 */
import { workerData } from 'node:worker_threads';
import { PortLink, RpcPeer, connect, createLogger } from '@ringvisor/shared';
import { HardwareSimulator, parseWorkerData } from './runtime.js';
import { remoteLanPort } from './lan/remote.js';

const data = parseWorkerData(workerData);
const sim = new HardwareSimulator({ eventMemory: data.eventMemory, host: data.host, disk: data.disk, nic: data.nic, ...(data.svioCores ? { svioCores: data.svioCores } : {}) });
const control = new RpcPeer(new PortLink(data.control), 'hwsim');
sim.serve(control).start();
// Several hosts share a LAN through a switch runtime: plug this host's segment into it.
const lan = (workerData as { lan?: { url: string; secret: Uint8Array; hostIndex: number } }).lan;
if (lan) {
  const link = await connect({ url: lan.url, secret: lan.secret, role: 'hwsim', domid: lan.hostIndex, log: createLogger('hwsim', { host: data.host }) });
  sim.uplink(remoteLanPort(new RpcPeer(link, `${data.host}/uplink`), 'lan0', createLogger('hwsim', { host: data.host })));
  control.link.onClose(() => link.close('hwsim stopped'));
}
