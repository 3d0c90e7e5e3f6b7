/**
 * `ringvisor` — the toolstack CLI (as `xl` lives in dom0).
 *
 *   ringvisor up [--config FILE] [--duration S] [--json FILE] [--seed N]
 *
 * Mistakes print what was wrong and how to fix it, and exit 2.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import {
  CONTROL_PING,
  ConfigError,
  RingvisorError,
  RpcPeer,
  connect,
  createLogger,
  generateSecretFile,
  readSecretFile,
  runtimeEntry,
  secretFromEnv,
  startRuntimeWorker,
} from '@ringvisor/shared';
import { randomBytes } from 'node:crypto';
import { defaultConfig, loadConfigFile, type ClusterConfig } from '../config.js';
import { Host, type HostOptions } from '../host.js';
import { renderTop, summarize, type TopRow } from '../summary.js';
import type { GuestStats } from '@ringvisor/shared';

const USAGE = `usage: ringvisor <command> [options]

commands:
  up        start a cluster (default: one host, three para-virtualized guests) and run its workloads
  help      show this text

ringvisor up options:
  --config FILE     cluster config (YAML or JSON); default: the embedded three-guest host
  --duration S      run for S seconds, then shut down cleanly (default: until Ctrl-C)
  --json FILE       write the run summary (per guest, per device ops/bytes/errors, integrity) at exit
  --seed N          seed for every workload (same seed, same schedule)
  --transport T     threads (default: every runtime a thread of this process, real shared memory)
                    or ws (every guest its own process on an authenticated WebSocket to dom0)
  --secret-file F   ws: the cluster secret (created, mode 0600, if missing; default .ringvisor/secret)

runtimes (ws transport; started by \`up --transport ws\` or by docker compose):
  dom0 --config FILE [--listen HOST:PORT] [--lan ws://SWITCH:PORT]
                                            this host's dom0 and hardware; waits for the config's guests
  switch [--listen HOST:PORT]               the LAN switch joining several hosts' physical NICs
  domu --id N --dom0 ws://HOST:PORT         a guest
  health [--url ws://HOST:PORT]             exit 0 when dom0 answers an authenticated ping
  (the cluster secret comes from RINGVISOR_SECRET, hex, or --secret-file FILE)
`;

class UsageError extends RingvisorError {
  override readonly code = 'RV_ERR_USAGE';
}

function parseUp(argv: string[]): { config: ClusterConfig; durationSec: number; json?: string; transport: 'threads' | 'ws'; secretFile: string } {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        duration: { type: 'string' },
        json: { type: 'string' },
        seed: { type: 'string' },
        transport: { type: 'string' },
        'secret-file': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${USAGE}`);
  }
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds, got ${JSON.stringify(values.duration)}`);
  const transport = values.transport ?? 'threads';
  if (transport !== 'threads' && transport !== 'ws') throw new UsageError(`--transport must be "threads" or "ws", got ${JSON.stringify(transport)}`);
  const config = values.config ? loadConfigFile(values.config) : defaultConfig();
  if (values.seed !== undefined) {
    const seed = Number(values.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a non-negative integer, got ${JSON.stringify(values.seed)}`);
    config.seed = seed;
  }
  return { config, durationSec, transport, secretFile: values['secret-file'] ?? '.ringvisor/secret', ...(values.json ? { json: values.json } : {}) };
}

async function up(argv: string[]): Promise<number> {
  const { config, durationSec, json, transport, secretFile } = parseUp(argv);
  let ws: HostOptions['ws'];
  if (transport === 'ws') {
    mkdirSync(dirname(secretFile), { recursive: true });
    ws = { secret: await generateSecretFile(secretFile) };
  }
  return runHost({ config, durationSec, transport, ...(json ? { json } : {}), ...(ws ? { ws } : {}) });
}

/** `ringvisor dom0`: this host's dom0 and hardware as a service; guests are started elsewhere. */
async function dom0(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, listen: { type: 'string' }, lan: { type: 'string' }, json: { type: 'string' }, 'secret-file': { type: 'string' }, duration: { type: 'string' } },
      strict: true,
    }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${USAGE}`);
  }
  const configPath = values.config ?? process.env.RINGVISOR_CONFIG;
  if (!configPath) throw new UsageError('ringvisor dom0: --config FILE (or RINGVISOR_CONFIG) is required');
  const listenAt = values.listen ?? process.env.RINGVISOR_LISTEN ?? '127.0.0.1:7000';
  const m = /^(.+):(\d+)$/.exec(listenAt);
  if (!m) throw new UsageError(`--listen must be HOST:PORT (e.g. 0.0.0.0:7000), got ${JSON.stringify(listenAt)}`);
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds`);
  const lanUrl = values.lan ?? process.env.RINGVISOR_LAN_URL;
  return runHost({
    config: loadConfigFile(configPath),
    durationSec,
    transport: 'ws',
    ws: { secret, host: m[1], port: Number(m[2]), spawn: false },
    ...(lanUrl ? { lan: { url: lanUrl, secret } } : {}),
    ...(values.json ? { json: values.json } : {}),
  });
}

/** `ringvisor health --url ws://…`: exit 0 when a dom0 answers an authenticated ping (for healthchecks). */
async function health(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { url: { type: 'string' }, 'secret-file': { type: 'string' }, timeout: { type: 'string' } }, strict: true });
  const url = values.url ?? process.env.RINGVISOR_DOM0_URL ?? 'ws://127.0.0.1:7000';
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const timeoutMs = Number(values.timeout ?? 3000);
  try {
    const link = await connect({ url, secret, role: 'control', domid: 0, timeoutMs });
    const peer = new RpcPeer(link, 'health');
    const info = await peer.call<{ host: string; guests: number; ready: number }>(CONTROL_PING, {}, timeoutMs);
    process.stdout.write(`ok ${info.host}: ${info.ready}/${info.guests} guests ready\n`);
    link.close('done');
    return 0;
  } catch (e) {
    process.stderr.write(`unhealthy: ${(e as Error).message}\n`);
    return 1;
  }
}

interface RunOptions {
  config: ClusterConfig;
  durationSec: number;
  transport: 'threads' | 'ws';
  json?: string;
  ws?: HostOptions['ws'];
  /** A switch runtime started elsewhere (docker compose) to cable this host's NIC to. */
  lan?: { url: string; secret: Uint8Array };
}

async function runHost(o: RunOptions): Promise<number> {
  const { config, durationSec, json, transport, ws } = o;
  const log = createLogger('dom0');
  // Several hosts in one run share a LAN through a switch runtime (a worker here, by entry point).
  let lanSwitch: { url: string; secret: Uint8Array; stop(): Promise<void> } | undefined;
  if (o.lan) lanSwitch = { ...o.lan, stop: async () => {} };
  else if (config.hosts.length > 1) lanSwitch = await startSwitchWorker(ws?.secret ?? new Uint8Array(randomBytes(32)));
  const clusterIps = new Map<string, string>();
  for (const h of config.hosts) for (const g of h.guests) for (const d of g.devices) if (d.type === 'vif') clusterIps.set(g.name, d.ip);
  const hosts = config.hosts.map(
    (hc) =>
      new Host(hc, {
        seed: config.seed,
        log: log.child({ host: hc.name }),
        clusterIps,
        ...(ws ? { ws } : {}),
        ...(lanSwitch ? { lan: { url: lanSwitch.url, secret: lanSwitch.secret, hostIndex: hc.index } } : {}),
      }),
  );
  const tty = process.stdout.isTTY === true;
  let stopRequested: (() => void) | undefined;
  const stopped = new Promise<void>((r) => (stopRequested = r));
  const onSignal = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    stopRequested?.();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const t0 = Date.now();
  let exitCode = 0;
  const finals: GuestStats[][] = [];
  try {
    // Workloads start only once every host is up: no flow starts towards a guest still booting.
    for (const h of hosts) await h.start(false);
    for (const h of hosts) await h.startWorkloads();
    if (!tty) for (const h of hosts) process.stdout.write(`ringvisor: host ${h.config.name} up with ${h.guests.length} guests (${transport} transport)\n`);
    const timer = Number.isFinite(durationSec) ? setTimeout(() => stopRequested?.(), durationSec * 1000) : undefined;
    let prev: GuestStats[][] = [];
    const view = setInterval(() => {
      void Promise.all(hosts.map((h) => h.guestStats())).then((all) => {
        const up = Math.round((Date.now() - t0) / 1000);
        const tables = hosts.map((h, hi) => {
          const rows: TopRow[] = h.guests.map((g, i) => ({
            name: g.config.name,
            domid: g.domain.domid,
            state: g.domain.state,
            memKiB: g.config.memoryMiB * 1024,
            stats: all[hi][i],
            prev: prev[hi]?.[i],
          }));
          return renderTop(h.config.name, up, rows, 1);
        });
        if (tty) process.stdout.write('\x1b[H\x1b[2J' + tables.join('\n\n') + '\n');
        else process.stdout.write(tables.map((t) => t.split('\n').slice(2).map((l) => `[${up}s] ${l}`).join('\n')).join('\n') + '\n');
        prev = all;
      });
    }, 1000);
    await stopped;
    clearInterval(view);
    if (timer) clearTimeout(timer);
  } catch (e) {
    exitCode = 1;
    log.error({ err: e }, 'cluster failed');
    process.stderr.write(`ringvisor: ${(e as Error).message}\n`);
  } finally {
    // Quiesce every host before any closes, so cross-host flows drain too.
    for (const h of hosts) await h.quiesce().catch(() => {});
    for (const h of hosts)
      finals.push(
        await h.stop().catch((e) => {
          exitCode = 1;
          log.error({ err: e }, 'shutdown failed');
          return [] as GuestStats[];
        }),
      );
    await lanSwitch?.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const summary = summarize(
    transport,
    (Date.now() - t0) / 1000,
    hosts.map((h, i) => ({
      host: h.config.name,
      guests: finals[i] ?? [],
      pids: new Map(h.guests.flatMap((g) => (g.pid ? [[g.config.name, g.pid] as [string, number]] : []))),
    })),
    Object.fromEntries(
      hosts.map((h) => [
        h.config.name,
        {
          disk: h.disk?.counters,
          nic: h.nic?.counters,
          bridge: h.bridge?.counters,
          grants: Object.fromEntries(h.hv.grants.counters),
          ...(h.hardwareStats?.uplink ? { uplink: h.hardwareStats.uplink } : {}),
        },
      ]),
    ),
  );
  if (json) writeFileSync(json, JSON.stringify(summary, null, 2) + '\n');
  process.stdout.write(
    `ringvisor: ${summary.guests.length} guests, ${summary.guests.reduce((a, g) => a + g.ops, 0)} ops, integrity checked ${summary.integrity.checked}, failures ${summary.integrity.failures}\n`,
  );
  if (summary.integrity.failures > 0 || summary.guests.some((g) => g.state === 'failed')) exitCode = 1;
  return exitCode;
}

/** The LAN switch as a worker thread, started by its entry point in the hwsim package. */
async function startSwitchWorker(secret: Uint8Array): Promise<{ url: string; secret: Uint8Array; stop(): Promise<void> }> {
  const worker = startRuntimeWorker(runtimeEntry(import.meta.url, 'hwsim', 'switch-worker'), { workerData: { secret } });
  const url = await new Promise<string>((resolve, reject) => {
    worker.once('message', (m: { url: string }) => resolve(m.url));
    worker.once('error', reject);
  });
  return {
    url,
    secret,
    stop: async () => {
      worker.postMessage('stop');
      await Promise.race([new Promise((r) => worker.once('exit', r)), new Promise((r) => setTimeout(r, 3000).unref())]);
      await worker.terminate();
    },
  };
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'up':
        return await up(rest);
      case 'dom0':
        return await dom0(rest);
      case 'health':
        return await health(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return 0;
      default:
        throw new UsageError(`unknown command "${cmd}"\n\n${USAGE}`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) {
      process.stderr.write(`ringvisor: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
