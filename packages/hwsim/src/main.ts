/**
 * Hardware-side runtimes as processes (ws transport, docker compose):
 *   ringvisor switch [--listen HOST:PORT]   the LAN switch joining hosts' physical NICs
 * The secret comes from RINGVISOR_SECRET (hex) or --secret-file FILE.
 */
import { parseArgs } from 'node:util';
import {
  ConfigError,
  DOMID_HW,
  HardwareBootContract,
  contractClient,
  notify,
  EventMemory,
  MachineLinkEnd,
  RpcPeer,
  connect,
  connectUntilAdmitted,
  exitDom0Lost,
  createEventMemory,
  EXIT,
  createLogger,
  readSecretFile,
  secretFromEnv,
  watchParent,
  UsageError,
} from '@ringvisor/shared';
import { remoteLanPort, runSwitch } from './lan/remote.js';
import { HardwareSimulator } from './runtime.js';
import { serveDirectLinks } from './sriov/direct-link.js';

/**
 * `ringvisor hwsim --dom0 ws://HOST:PORT [--disk PATH]`: the hardware simulator as its own
 * process. It connects to dom0 as the hardware pseudo-domain (retrying while dom0 refuses it, for
 * RINGVISOR_CONNECT_TIMEOUT_MS, 120 s by default), asks for its host's description, and serves
 * dom0's device drivers; machine memory reaches it through streaming DMA mappings. It lives as
 * long as its dom0: exit 0 after hw.shutdown, EXIT.DOM0_LOST (5) when the link closes otherwise
 * or the parent that started it dies.
 */
async function hwsimProcess(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { dom0: { type: 'string' }, disk: { type: 'string' }, 'secret-file': { type: 'string' } }, strict: true });
  const url = values.dom0 ?? process.env.RINGVISOR_DOM0_URL;
  if (!url || !/^wss?:\/\//.test(url)) throw new UsageError('ringvisor hwsim: --dom0 ws://host:port (or RINGVISOR_DOM0_URL) is required');
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const log = createLogger('hwsim');
  // Started by `ringvisor up`: when that process (dom0) dies, so does its hardware.
  watchParent((parent) => exitDom0Lost(log, 'ringvisor hwsim', `parent process ${parent} (dom0) is gone`));
  // dom0 admits a hardware only while it has none attached (at bring-up, after the old one died):
  // until then the claim is refused and this retries, as a container restarted would.
  const link = await connectUntilAdmitted({ url, secret, role: 'hwsim', domid: DOMID_HW, log });
  const peer = new RpcPeer(link, 'hwsim');
  const boot = await contractClient(HardwareBootContract, peer).boot();
  const eventMemory = createEventMemory();
  const events = new EventMemory(eventMemory);
  let sim: HardwareSimulator | undefined;
  const machine = new MachineLinkEnd(peer, (d, p) => sim?.dma.peek(d, p), (port) => void events.setPending(DOMID_HW, port));
  sim = new HardwareSimulator({
    eventMemory,
    host: boot.host,
    disk: { path: values.disk ?? process.env.RINGVISOR_DISK ?? boot.disk.path, sizeBytes: boot.disk.sizeBytes, ...(boot.disk.cache === 'writeback' ? { cache: 'writeback' as const } : {}) },
    nic: boot.nic,
    ...(typeof boot.svioCores === 'number' ? { svioCores: boot.svioCores } : {}),
    eventRouting: machine.routing(),
    logger: log.child({ host: boot.host }),
  });
  sim.dma.link = {
    wrote: (d, p, o, l) => machine.wrote(d, p, o, l),
    ringSync: (f, page, lateWake) => {
      const sync = machine.ringSync(f.pfn, page, f.domid);
      sync.lateWake = lateWake;
      return sync;
    },
  };
  // Whether hw.shutdown powered the hardware off before the link closed (an orderly end) — read
  // before the simulator's own close handler powers off in any case.
  let poweredOffBeforeClose = false;
  link.onClose(() => (poweredOffBeforeClose = sim.closed));
  sim.serve(peer).start();
  // Guests with assigned functions link here directly (dom0 is not on the direct I/O path).
  // RINGVISOR_DIRECT_LISTEN: where to listen (127.0.0.1:0 by default); RINGVISOR_DIRECT_URL: the
  // address guests are told (containers: the service name), default the listener's own.
  const listenAt = /^(.+):(\d+)$/.exec(process.env.RINGVISOR_DIRECT_LISTEN ?? '127.0.0.1:0');
  if (!listenAt) throw new ConfigError(`RINGVISOR_DIRECT_LISTEN must be HOST:PORT, got ${JSON.stringify(process.env.RINGVISOR_DIRECT_LISTEN)}`);
  const direct = await serveDirectLinks(sim, { host: listenAt[1], port: Number(listenAt[2]), secret, domainHost: boot.host, log });
  link.onClose(() => void direct.close());
  const directUrl = process.env.RINGVISOR_DIRECT_URL ?? `ws://${direct.host === '0.0.0.0' ? '127.0.0.1' : direct.host}:${direct.port}`;
  notify(peer, HardwareBootContract.notifications.ready, { directUrl });
  if (boot.lan) {
    const lanLink = await connect({ url: boot.lan.url, secret, role: 'hwsim', domid: boot.lan.hostIndex, log });
    sim.uplink(remoteLanPort(new RpcPeer(lanLink, `${boot.host}/uplink`), 'lan0', log));
    link.onClose(() => lanLink.close('hwsim stopped'));
  }
  const reason = await new Promise<string>((resolve) => link.onClose((r) => resolve(r)));
  // hw.shutdown powered off first: an orderly end. Anything else is dom0 gone (crash, kill -9,
  // its container stopped; the simulator has powered off, the image fsynced): dom0 reattaches
  // hardware only as a new process, so this one goes.
  if (!poweredOffBeforeClose) exitDom0Lost(log, 'ringvisor hwsim', `link to dom0 closed (${reason})`);
  // Whatever still holds the event loop (a core thread stopping), the runtime is done.
  setTimeout(() => process.exit(EXIT.OK), 1000).unref();
  return EXIT.OK;
}


export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'hwsim') return hwsimProcess(rest);
  if (cmd !== 'switch') throw new UsageError(`unknown hardware runtime "${cmd}" (known: hwsim, switch)`);
  const { values } = parseArgs({ args: rest, options: { listen: { type: 'string' }, 'secret-file': { type: 'string' } }, strict: true });
  const listenAt = values.listen ?? process.env.RINGVISOR_LISTEN ?? '127.0.0.1:7100';
  const m = /^(.+):(\d+)$/.exec(listenAt);
  if (!m) throw new UsageError(`--listen must be HOST:PORT (e.g. 0.0.0.0:7100), got ${JSON.stringify(listenAt)}`);
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const log = createLogger('switch');
  const sw = await runSwitch({ host: m[1], port: Number(m[2]), secret, log });
  log.info({ url: sw.server.url }, 'switch listening');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await sw.close();
  return 0;
}
