/**
 * Worker-thread entry of the guest's ioreq relay (ioreq-relay.ts), started by startIoReqRelay.
 * workerData: { spec: RelaySpec, report: MessagePort }; the thread posts 'ready' on `report` once
 * its vCPU link to dom0 is up, or 'failed: …'.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { runRelay, type RelaySpec } from './ioreq-relay.js';

const { spec, report } = workerData as { spec: RelaySpec; report: MessagePort };
runRelay(spec, report).catch((e: Error) => report.postMessage(`failed: ${e.message}`));
