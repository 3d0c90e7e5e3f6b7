/**
 * Guest runtime entry as its own process (ws transport): `ringvisor domu --id N --dom0 URL`.
 * It connects to dom0 over an authenticated WebSocket as domain N, asks for its boot spec, and
 * runs until dom0 stops it or the link drops. Flags win over environment variables:
 *   --id N        RINGVISOR_DOMID      the domain this process runs (dom0 must have created it)
 *   --dom0 URL    RINGVISOR_DOM0_URL   ws://host:port of dom0
 *   --key-file F  RINGVISOR_DOMAIN_KEY this domain's key, hex (`ringvisor key --host H --domain N`)
 * A guest holds its domain key and nothing else: never the cluster secret, which would let it act
 * as dom0, the hardware, the control client or any other domain. It refuses to start if
 * RINGVISOR_SECRET is in its environment, so a deployment that leaks it is noticed.
 */
import { parseArgs } from 'node:util';
import { readFileSync, statSync } from 'node:fs';
import { UsageError, ConfigError, EXIT, GuestBootContract, RpcPeer, connectUntilAdmitted, contractClient, createLogger, exitDom0Lost, parseDomainKey, watchParent, type DomainKey } from '@ringvisor/shared';
import { runGuest } from './runtime.js';

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { id: { type: 'string' }, dom0: { type: 'string' }, 'key-file': { type: 'string' } },
    strict: true,
  });
  const domid = Number(values.id ?? process.env.RINGVISOR_DOMID);
  const url = values.dom0 ?? process.env.RINGVISOR_DOM0_URL;
  if (!Number.isInteger(domid) || domid < 1) throw new UsageError('ringvisor domu: --id N (or RINGVISOR_DOMID) must name the guest domain id, e.g. --id 1');
  if (!url || !/^wss?:\/\//.test(url)) throw new UsageError('ringvisor domu: --dom0 ws://host:port (or RINGVISOR_DOM0_URL) is required');
  const domainKey = guestKey(domid, values['key-file']);
  const log = createLogger('domU', { domid });
  /** dom0 is gone for good: say why, and exit with EXIT.DOM0_LOST (a guest without its hypervisor is dead). */
  const lostDom0 = (why: string): never => exitDom0Lost(log, `ringvisor domu ${domid}`, why);
  // Started by `ringvisor up`: when that process (dom0) dies, so does the guest — even before it
  // connected (it would otherwise retry for minutes).
  watchParent((parent) => lostDom0(`parent process ${parent} (dom0) is gone`));
  // dom0 admits a guest only once it has built the domain (after its hardware is attached):
  // until then the claim is refused and the guest retries, as a container restarted would.
  const link = await connectUntilAdmitted({ url, domainKey, role: 'guest', domid, log });
  const peer = new RpcPeer(link, `domU/${domid}`);
  const spec = await contractClient(GuestBootContract, peer).boot();
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
    void runGuest(peer, spec, log.child({ guest: spec.name }), onStopped, { url, domainKey }).catch((e) => {
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

/** This domain's key from --key-file or RINGVISOR_DOMAIN_KEY; the cluster secret is refused outright. */
function guestKey(domid: number, keyFile: string | undefined, env: NodeJS.ProcessEnv = process.env): DomainKey {
  const how = `derive it where the cluster secret is kept: ringvisor key --host HOST --domain ${domid}`;
  if (env.RINGVISOR_SECRET !== undefined)
    throw new ConfigError(
      `ringvisor domu: RINGVISOR_SECRET is set, but a guest must never hold the cluster secret (it could act as dom0, the hardware or any domain). ` +
        `Give the guest only its domain key in RINGVISOR_DOMAIN_KEY (${how})`,
    );
  if (keyFile !== undefined) {
    // Like the cluster secret's file: a key others can read lets them be this domain.
    const mode = statSync(keyFile).mode;
    if (process.platform !== 'win32' && (mode & 0o077) !== 0)
      throw new ConfigError(`key file ${keyFile} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${keyFile}`);
    return parseDomainKey(readFileSync(keyFile, 'utf8'), domid, `key file ${keyFile}`);
  }
  const hex = env.RINGVISOR_DOMAIN_KEY;
  if (hex === undefined || hex.trim() === '') throw new ConfigError(`ringvisor domu: RINGVISOR_DOMAIN_KEY (or --key-file FILE) must hold domain ${domid}'s key; ${how}`);
  return parseDomainKey(hex, domid, 'environment variable RINGVISOR_DOMAIN_KEY');
}
