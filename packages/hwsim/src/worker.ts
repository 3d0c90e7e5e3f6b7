/**
 * Worker-thread entry of the hardware simulator. Started by dom0's launcher with
 * `startRuntimeWorker(new URL('./worker.ts' | './worker.js', …), { workerData, transferList: [control] })`.
 *
 * workerData: { control: MessagePort, eventMemory: SharedArrayBuffer, host: string,
 *               disk: { path: string, sizeBytes: number }, nic: { mac: string } }
 *
 * The worker lives as long as the control port is open; after hw.shutdown (or dom0 closing the
 * port) the disk is flushed and closed, the port closes, and the thread exits by itself.
 */
import { workerData } from 'node:worker_threads';
import { PortLink, RpcPeer } from '@ringvisor/shared';
import { HardwareSimulator, parseWorkerData } from './runtime.js';

const data = parseWorkerData(workerData);
const sim = new HardwareSimulator({ eventMemory: data.eventMemory, host: data.host, disk: data.disk, nic: data.nic });
sim.serve(new RpcPeer(new PortLink(data.control), 'hwsim')).start();
