/**
 * Worker-thread entry of a VMApp (hosted device models for one guest). Started by `startVmApp`
 * (shared/trap/vmapp.ts) — from dom0's toolstack (threads) or a guest's process (ws) — with
 * `{ workerData: { control: MessagePort, spec: VmAppSpec }, transferList: [control] }`. It lives as long as its
 * control port is open.
 */
import { workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { PortLink, RpcPeer } from '../transport/rpc.js';
import { createLogger } from '../log/index.js';
import { serveTraceForwarding } from '../trace/forward.js';
import type { VmAppSpec } from '../trap/vmapp.js';
import { VmApp } from './vmapp.js';

const { control, spec } = workerData as { control: MessagePort; spec: VmAppSpec };
const peer = new RpcPeer(new PortLink(control), `vmapp/${spec.guest}`);
const app = new VmApp(spec, peer, createLogger('vmapp', { guest: spec.guest }));
// Its trap events live in this thread: forwarded while someone traces (dom0, or the guest's process that runs it).
serveTraceForwarding(peer);
app.start();
peer.link.onClose(() => {
  app.stop();
  control.close();
});
