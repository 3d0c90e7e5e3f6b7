/**
 * Guest runtime entry as its own process (ws transport): `ringvisor domu --id N --dom0 URL`.
 * It connects to dom0 over an authenticated WebSocket as domain N, asks for its boot spec, and
 * runs until dom0 stops it or the link drops. Flags win over environment variables:
 *   --id N        RINGVISOR_DOMID      the domain this process runs (dom0 must have created it)
 *   --dom0 URL    RINGVISOR_DOM0_URL   ws://host:port of dom0
 *   secret        RINGVISOR_SECRET     hex or base64, or --secret-file FILE
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { EXIT, GUEST_BOOT, RpcPeer, connect, createLogger, parseSecret, secretFromEnv, watchParent, type GuestBootSpec } from '@ringvisor/shared';
import { runGuest } from './runtime.js';

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { id: { type: 'string' }, dom0: { type: 'string' }, 'secret-file': { type: 'string' } },
    strict: true,
  });
  const domid = Number(values.id ?? process.env.RINGVISOR_DOMID);
  const url = values.dom0 ?? process.env.RINGVISOR_DOM0_URL;
  if (!Number.isInteger(domid) || domid < 1) throw new Error('ringvisor domu: --id N (or RINGVISOR_DOMID) must name the guest domain id, e.g. --id 1');
  if (!url || !/^wss?:\/\//.test(url)) throw new Error('ringvisor domu: --dom0 ws://host:port (or RINGVISOR_DOM0_URL) is required');
  const secret = values['secret-file'] ? parseSecret(readFileSync(values['secret-file'], 'utf8'), values['secret-file']) : secretFromEnv();
  const log = createLogger('domU', { domid });
  /** dom0 is gone for good: say why, and exit with EXIT.DOM0_LOST (a guest without its hypervisor is dead). */
  const lostDom0 = (why: string): never => {
    log.error({ why }, 'dom0 lost; the guest exits');
    process.stderr.write(`ringvisor domu ${domid}: ${why}; exiting (code ${EXIT.DOM0_LOST})\n`);
    process.exit(EXIT.DOM0_LOST);
  };
  // Started by `ringvisor up`: when that process (dom0) dies, so does the guest — even before it
  // connected (it would otherwise retry for minutes).
  watchParent((parent) => lostDom0(`parent process ${parent} (dom0) is gone`));
  // dom0 admits a guest only once it has built the domain (after its hardware is attached):
  // until then the claim is refused and the guest retries, as a container restarted would.
  const deadline = Date.now() + Number(process.env.RINGVISOR_CONNECT_TIMEOUT_MS ?? 120_000);
  let link;
  for (;;) {
    try {
      link = await connect({ url, secret, role: 'guest', domid, log });
      break;
    } catch (e) {
      const retriable = /not authorized|ECONNREFUSED|connect/i.test((e as Error).message) && !/authentication failed/.test((e as Error).message);
      if (!retriable || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const peer = new RpcPeer(link, `domU/${domid}`);
  const spec = await peer.call<GuestBootSpec>(GUEST_BOOT, {});
  let lost = false;
  let orderly = false;
  const stopped = new Promise<void>((resolve) => {
    peer.link.onClose((reason) => {
      if (orderly) return resolve();
      // dom0 is gone (reset, crash): a guest without its hypervisor is dead. Its workloads
      // would keep the process alive, so it exits on its own below. It does not reconnect:
      // a new dom0 would not know its domain.
      if (!lost) log.warn({ reason }, 'link to dom0 lost');
      lost = true;
      resolve();
    });
    const onStopped = () => {
      orderly = true;
      resolve();
    };
    void runGuest(peer, spec, log.child({ guest: spec.name }), onStopped, { url, secret }).catch((e) => {
      log.error({ err: e }, 'guest failed');
      peer.close('guest failed');
      resolve();
    });
  });
  await stopped;
  if (lost) lostDom0('link to dom0 closed');
  const code = EXIT.OK;
  // Let the last reply and the close frame leave, then go — whatever timers remain.
  setTimeout(() => process.exit(code), 200).unref();
  return code;
}
