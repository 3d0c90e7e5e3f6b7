/**
 * docker-compose.yml *run*, without Docker: every service of the default profile is started with
 * the compose file's own command (behind the image's ENTRYPOINT) and environment, as a process in
 * its own network namespace; service names resolve through /etc/netns/<ns>/hosts; services start
 * in depends_on order, `service_healthy` meaning the service's own healthcheck command passed.
 *
 * The network follows the file's placement: services pinned to machine a (dom0-a, hwsim-a, guests
 * a*) share a bridge, those pinned to b share another, and each machine's bridge is cabled by a
 * trunk veth to the core segment where the switch (pinned nowhere) sits. The partition takes
 * machine b's trunk down: host b's physical NIC uplink (hwsim-b -> switch) is cut while host b
 * itself keeps working (dom0-b <-> hwsim-b <-> guest-b1 stay connected, as on one machine), and
 * host a never loses its uplink. (Downing hwsim-b's own veth would also cut hwsim-b from dom0-b,
 * i.e. pull host b's hardware out from under its dom0: a different failure.) Nothing crosses the
 * cut but frames dropped on the floor, so both ends only notice the silence.
 *
 * The run: bring-up -> both dom0s report every guest ready -> traffic across hosts -> partition
 * (~3 s) -> heal -> traffic across hosts again -> SIGTERM each dom0 (clean shutdown, run summary)
 * -> every other runtime exits on its own (the switch on SIGTERM). Then the summaries, the
 * runtimes' logs and their per-second tables are checked.
 *
 * Addresses: 192.0.2.0/24 (TEST-NET-1), only inside namespaces this test makes (support/netns.ts).
 * Everything started is stopped by pid, and every namespace removed, pass or fail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { normalizeConfig, type HostConfig } from '../src/toolstack/config.js';
import { interpolateDeep, parseCompose } from './support/compose-schema.js';
import { composeGuestKeys } from './support/compose-keys.js';
import { NetnsLab, findIp, netnsSupport } from './support/netns.js';

const ROOT = resolve(import.meta.dirname, '../../..');
const COMPOSE_FILE = join(ROOT, 'docker-compose.yml');
/** How long the partition lasts: well past the LAN carrier timeout (1 s) and the UDP loss timeout (1 s). */
const PARTITION_MS = 3_500;

// ---- the compose file, as compose reads it ------------------------------------------------------

interface Service {
  command?: unknown;
  environment?: Record<string, unknown> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: unknown; disable?: boolean; start_period?: string; interval?: string; retries?: number };
  profiles?: string[];
  configs?: (string | { source: string; target?: string })[];
  volumes?: (string | { type?: string; source?: string; target: string })[];
  tmpfs?: string | string[];
  deploy?: { placement?: { constraints?: string[] } };
}
interface ComposeFile {
  services: Record<string, Service>;
  configs?: Record<string, { file?: string }>;
  volumes?: Record<string, unknown>;
}

/** The final stage of the Dockerfile: what every service's container starts from. */
interface Image {
  workdir: string;
  env: Record<string, string>;
  entrypoint: string[];
}

function readImage(): Image {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stage = text.slice(text.lastIndexOf('\nFROM '));
  const workdir = /^WORKDIR\s+(\S+)/m.exec(stage)?.[1];
  const entry = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(stage)?.[1];
  if (!workdir || !entry) throw new Error('Dockerfile: the final stage needs a WORKDIR and an exec-form ENTRYPOINT');
  const env: Record<string, string> = {};
  for (const m of stage.matchAll(/^ENV\s+(.*)$/gm)) for (const kv of m[1].matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) env[kv[1]] = kv[2].replace(/^"|"$/g, '');
  return { workdir, env, entrypoint: JSON.parse(entry) as string[] };
}

function envOf(s: Service): Record<string, string> {
  if (Array.isArray(s.environment)) return Object.fromEntries(s.environment.map((kv) => [kv.split('=')[0], kv.slice(kv.indexOf('=') + 1)]));
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v ?? '')]));
}
function commandOf(name: string, s: Service): string[] {
  if (!Array.isArray(s.command)) throw new Error(`service ${name}: command must be a list (exec form)`);
  return s.command.map(String);
}
function dependsOn(s: Service): Record<string, { condition?: string }> {
  if (!s.depends_on) return {};
  if (Array.isArray(s.depends_on)) return Object.fromEntries(s.depends_on.map((d) => [d, {}]));
  return s.depends_on;
}
function flag(cmd: string[], name: string): string | undefined {
  const i = cmd.indexOf(name);
  return i >= 0 ? cmd[i + 1] : undefined;
}
/** The machine a service is pinned to (`node.labels.ringvisor.host == X`), if any. */
function machineOf(s: Service): string | undefined {
  for (const c of s.deploy?.placement?.constraints ?? []) {
    const m = /^node\.labels\.ringvisor\.host\s*==\s*(\S+)$/.exec(c);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * A service's container file system, on this machine: compose configs are their files, named
 * volumes are directories of the run shared by every service mounting them, tmpfs mounts are
 * per-service directories, and the rest of WORKDIR is the image's /app — this repository (the
 * Dockerfile copies it there).
 */
class Container {
  readonly cwd: string;
  constructor(
    readonly name: string,
    readonly s: Service,
    private readonly doc: ComposeFile,
    private readonly image: Image,
    private readonly runDir: string,
  ) {
    // WORKDIR: a directory of its own, with the mounts under it linked in, so relative paths
    // (the host config's `.ringvisor/host-a/disk.img`) land on the volume as in the container.
    this.cwd = join(runDir, 'containers', name, image.workdir);
    mkdirSync(this.cwd, { recursive: true });
    for (const m of this.mounts()) {
      const rel = posix.relative(image.workdir, m.target);
      if (rel.startsWith('..') || posix.isAbsolute(rel) || rel === '') continue;
      mkdirSync(join(this.cwd, posix.dirname(rel)), { recursive: true });
      if (!existsSync(join(this.cwd, rel))) symlinkSync(m.dir, join(this.cwd, rel));
    }
  }

  private mounts(): { target: string; dir: string }[] {
    const out: { target: string; dir: string }[] = [];
    for (const v of this.s.volumes ?? []) {
      const [source, target] = typeof v === 'string' ? v.split(':') : [v.source, v.target];
      if (!source || !target) throw new Error(`${this.name}: anonymous volumes are not supported`);
      if (/^[./~]/.test(source)) out.push({ target, dir: resolve(ROOT, source) });
      else {
        if (!(source in (this.doc.volumes ?? {}))) throw new Error(`${this.name}: volume ${source} is not declared`);
        const dir = join(this.runDir, 'volumes', source);
        mkdirSync(dir, { recursive: true });
        out.push({ target, dir });
      }
    }
    for (const t of typeof this.s.tmpfs === 'string' ? [this.s.tmpfs] : (this.s.tmpfs ?? [])) {
      const dir = join(this.runDir, 'tmpfs', this.name, t.split(':')[0]);
      mkdirSync(dir, { recursive: true });
      out.push({ target: t.split(':')[0], dir });
    }
    return out;
  }

  /** The file on this machine that the container sees at `p` (absolute, or relative to WORKDIR). */
  hostPath(p: string): string {
    const abs = posix.resolve(this.image.workdir, p);
    for (const c of this.s.configs ?? []) {
      const source = typeof c === 'string' ? c : c.source;
      const target = typeof c === 'string' || !c.target ? `/${source}` : c.target;
      if (target !== abs) continue;
      const file = this.doc.configs?.[source]?.file;
      if (!file) throw new Error(`${this.name}: config ${source} has no file`);
      return resolve(ROOT, file);
    }
    // The most specific mount wins, as in the container.
    const mounts = this.mounts().sort((a, b) => b.target.length - a.target.length);
    for (const m of mounts) {
      const rel = posix.relative(m.target, abs);
      if (!rel.startsWith('..') && !posix.isAbsolute(rel)) return join(m.dir, rel);
    }
    const rel = posix.relative(this.image.workdir, abs);
    if (!rel.startsWith('..') && !posix.isAbsolute(rel)) return join(ROOT, rel);
    throw new Error(`${this.name}: ${p} is neither in the image's ${this.image.workdir}, a config nor a mount`);
  }

  /**
   * An exec-form argv as this machine runs it: `node` is this Node; arguments that are container
   * paths (absolute ones, and the entrypoint's script) become the files they are here.
   */
  translate(argv: string[], relativeArePaths: boolean): [string, string[]] {
    const [program, ...args] = argv;
    if (program !== 'node') throw new Error(`${this.name}: only node programs can run here, got ${program}`);
    return [process.execPath, args.map((a) => (a.startsWith('/') || (relativeArePaths && /^[\w.-]+\//.test(a)) ? this.hostPath(a) : a))];
  }

  /** ENTRYPOINT + command. */
  argv(extra: string[] = []): [string, string[]] {
    const [file, entry] = this.translate(this.image.entrypoint, true);
    const [, cmd] = this.translate(['node', ...commandOf(this.name, this.s)], false);
    return [file, [...entry, ...cmd, ...extra]];
  }

  /** The healthcheck test (exec form), or undefined. */
  healthcheck(): [string, string[]] | undefined {
    const t = this.s.healthcheck;
    if (!t?.test || t.disable) return undefined;
    const test = (t.test as unknown[]).map(String);
    if (test[0] !== 'CMD') throw new Error(`${this.name}: only exec-form (CMD) healthchecks are supported`);
    return this.translate(test.slice(1), false);
  }

  /** What the process sees: the image's ENV, then the service's environment. Nothing of ours leaks in. */
  env(): Record<string, string> {
    return { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...this.image.env, ...envOf(this.s) };
  }
}

// ---- running it ---------------------------------------------------------------------------------

/** One line a runtime wrote, and when the test read it. */
interface Line {
  at: number;
  text: string;
}
interface Running {
  name: string;
  child: ChildProcess;
  stdout: Line[];
  stderr: Line[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set when the test stops it on purpose. */
  stopping: boolean;
}

function collect(name: string, child: ChildProcess): Running {
  const r: Running = { name, child, stdout: [], stderr: [], stopping: false, exit: undefined as never };
  for (const [stream, into] of [
    [child.stdout!, r.stdout],
    [child.stderr!, r.stderr],
  ] as const) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      const at = Date.now();
      for (const text of lines) into.push({ at, text });
    });
  }
  r.exit = new Promise((res) => child.once('close', (code, signal) => res({ code, signal })));
  return r;
}

/** pino JSON lines of a runtime's stderr. */
function logs(r: Running): Array<{ at: number; level: number; msg: string; [k: string]: unknown }> {
  return r.stderr.flatMap((l) => {
    try {
      const j = JSON.parse(l.text) as { level: number; msg: string };
      return typeof j.msg === 'string' ? [{ ...j, at: l.at }] : [];
    } catch {
      return [];
    }
  });
}

/** One row of dom0's per-second table (stdout when not a TTY): `[Ns] NAME ID STATE MEM VBD_OPS VBD_RD VBD_WR VBD/s NET_TX NET_RX NET/s CHECKED FAIL`. */
interface TopSample {
  at: number;
  name: string;
  state: string;
  vbdOps: number;
  netTx: number;
  netRx: number;
  checked: number;
  fail: number;
}
function topSamples(r: Running, guest: string): TopSample[] {
  const re = /^\[\d+s\]\s+(\S+)\s+\d+\s+(\S+)\s+\d+\s+(\d+)\s+\S+\s+\S+\s+-?\d+\s+(\d+)\s+(\d+)\s+-?\d+\s+(\d+)\s+(\d+)\s*$/;
  return r.stdout.flatMap((l) => {
    const m = re.exec(l.text);
    return m && m[1] === guest ? [{ at: l.at, name: m[1], state: m[2], vbdOps: +m[3], netTx: +m[4], netRx: +m[5], checked: +m[6], fail: +m[7] }] : [];
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string | (() => string), deadline: number, probe: () => T | undefined | Promise<T | undefined>, everyMs = 200): Promise<T> {
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(everyMs);
  }
}

interface Summary {
  guests: Array<{
    name: string;
    host: string;
    ops: number;
    errors: number;
    state: string;
    devices: Array<{ type: string; ops: number }>;
    udp: { sent: number; echoed: number; lost: number; late: number; corrupted: number };
  }>;
  integrity: { checked: number; failures: number };
  dom0: Record<string, { nic: { txFrames: number; rxFrames: number }; uplink?: { carrier: boolean; outages: number; longestOutageMs: number } }>;
}

// ---- the test -----------------------------------------------------------------------------------

const support = netnsSupport();
const runnable = support.ok;

describe('docker-compose.yml, run in network namespaces (no Docker)', () => {
  if (!support.ok && process.env.CI)
    it('can make network namespaces', () => {
      expect.fail(`CI must run this test: ${support.reason} (see .ci/run)`);
    });

  let lab: NetnsLab | undefined;
  let runDir: string | undefined;
  // Build once, outside the test's time budget: every runtime would otherwise check (and maybe
  // all start a build) at once. (`npm test` has built already; then this is a no-op.)
  beforeAll(() => {
    if (runnable) execFileSync(process.execPath, [join(ROOT, 'bin/ensure-built.mjs')], { stdio: 'inherit' });
  }, 180_000);
  afterAll(async () => {
    await lab?.cleanup(2_000);
    if (runDir) rmSync(runDir, { recursive: true, force: true });
  });

  it.skipIf(!runnable)(
    'both hosts come up in compose order, guests exchange traffic across hosts, a partition of host b is reported and survived, traffic resumes after it',
    async () => {
      const t0 = Date.now();
      // Every wait ends by itself well inside the test's 60 s, leaving time to stop everything
      // and say why (vitest's own timeout would only say that it timed out).
      const budgetEnd = t0 + 50_000;
      const deadline = (ms: number) => Math.min(Date.now() + ms, budgetEnd);

      const secret = randomBytes(32).toString('hex');
      const raw = parseCompose(readFileSync(COMPOSE_FILE, 'utf8')) as unknown as ComposeFile;
      // .env as docs/deploy.md has it: the secret for trusted runtimes, one domain key per guest.
      const doc = interpolateDeep(raw, { RINGVISOR_SECRET: secret, ...composeGuestKeys(raw, secret, ROOT) });
      const image = readImage();
      // The default profile: what `docker compose up` starts.
      const names = Object.keys(doc.services).filter((n) => !doc.services[n].profiles?.length);
      runDir = mkdtempSync(join(tmpdir(), 'rv-compose-netns-'));
      const containers = new Map(names.map((n) => [n, new Container(n, doc.services[n], doc, image, runDir!)]));
      const kind = (n: string) => commandOf(n, doc.services[n])[0];
      const dom0s = names.filter((n) => kind(n) === 'dom0');
      const switchName = names.find((n) => kind(n) === 'switch');
      expect(dom0s.length, 'two hosts').toBe(2);
      expect(switchName).toBeDefined();

      // What each dom0 serves, from the config file compose hands it.
      const hostConfigs = new Map(
        dom0s.map((d) => {
          const c = containers.get(d)!;
          const file = c.hostPath(flag(commandOf(d, c.s), '--config')!);
          return [d, normalizeConfig(parseYaml(readFileSync(file, 'utf8')), file).hosts[0]] as const;
        }),
      );
      // Host b: the second dom0 (the one whose machine's trunk goes down).
      const [dom0A, dom0B] = dom0s;
      const hostA = hostConfigs.get(dom0A)!;
      const hostB = hostConfigs.get(dom0B)!;
      // Traffic across hosts comes from UDP flows whose peer (by IP) is a guest of the other host;
      // without one, nothing but ARP would ever cross the LAN and there is nothing to partition.
      const flows = crossHostFlows([...hostConfigs.values()]);
      expect(
        flows.map((f) => `${f.from} -> ${f.to}`),
        `no guest of ${hostA.name} or ${hostB.name} streams UDP to a guest of the other host: give one a \`udp: { peers: [<IP of a guest on the other host>] }\` in its host config`,
      ).not.toEqual([]);
      // The guest on host b whose frames the test watches: one that is an end of a cross-host flow.
      const guestB = flows.map((f) => (f.toHost === hostB.name ? f.to : f.fromHost === hostB.name ? f.from : undefined)).find((g) => g)!;
      const machineB = machineOf(doc.services[dom0B]);
      expect(machineB, `${dom0B} must be pinned to a machine`).toBeDefined();
      const hwsimB = names.find((n) => kind(n) === 'hwsim' && flag(commandOf(n, doc.services[n]), '--dom0')?.includes(`//${dom0B}:`))!;
      expect(machineOf(doc.services[hwsimB]), `${hwsimB} runs on ${dom0B}'s machine`).toBe(machineB);
      expect(machineOf(doc.services[switchName!]), 'the switch is on no host machine').toBeUndefined();
      const uplinkPortB = `host${hostB.index}`; // the switch names a host's port by its index

      lab = new NetnsLab().create(names.map((n) => ({ name: n, ...(machineOf(doc.services[n]) ? { machine: machineOf(doc.services[n]) } : {}) })));
      const running = new Map<string, Running>();
      const summaries = new Map(dom0s.map((d) => [d, join(runDir!, `${d}.summary.json`)]));

      const start = (n: string): Running => {
        const c = containers.get(n)!;
        // compose's dom0 command writes no run summary; the test appends --json to read it.
        const [file, args] = c.argv(kind(n) === 'dom0' ? ['--json', summaries.get(n)!] : []);
        const r = collect(n, lab!.exec(n, file, args, { env: c.env(), cwd: c.cwd }));
        running.set(n, r);
        // No restart policy here: a runtime that exits before the test stops it is a failure.
        void r.exit.then((e) => {
          if (!r.stopping) failures.push(`${n} exited on its own (${e.code ?? e.signal}):\n${r.stderr.slice(-15).map((l) => l.text).join('\n')}`);
        });
        return r;
      };
      const failures: string[] = [];
      const check = () => {
        if (failures.length) throw new Error(failures.join('\n\n'));
      };
      /** Run a service's healthcheck in its namespace until it passes (compose probes every 5 s; this every 250 ms). */
      const healthy = new Map<string, Promise<void>>();
      const started = new Map<string, Promise<void>>();
      const bringUp = deadline(25_000);
      const whenStarted = (n: string): Promise<void> => {
        if (!started.has(n))
          started.set(
            n,
            (async () => {
              for (const [dep, d] of Object.entries(dependsOn(doc.services[n]))) {
                if (!names.includes(dep)) throw new Error(`${n} depends on ${dep}, which the default profile does not start`);
                await (d.condition === 'service_healthy' ? whenHealthy(dep) : whenStarted(dep));
              }
              start(n);
            })(),
          );
        return started.get(n)!;
      };
      const whenHealthy = (n: string): Promise<void> => {
        if (!healthy.has(n))
          healthy.set(
            n,
            (async () => {
              await whenStarted(n);
              const hc = containers.get(n)!.healthcheck();
              if (!hc) throw new Error(`${n} is waited on as service_healthy but has no healthcheck`);
              let last = '';
              await until(() => `${n} to be healthy (last probe: ${last || 'no output'})`, bringUp, async () => {
                check();
                const r = await lab!.run(n, hc[0], hc[1], { env: containers.get(n)!.env(), cwd: containers.get(n)!.cwd, timeoutMs: 5_000 });
                last = (r.stderr || r.stdout).trim();
                return r.code === 0 ? true : undefined;
              }, 250);
            })(),
          );
        return healthy.get(n)!;
      };

      try {
        await Promise.all(names.map(whenStarted));
        const upAt = Date.now();

        // Ready: each dom0 answers its healthcheck with every guest of its config ready.
        for (const d of dom0s) {
          const [file, args] = containers.get(d)!.healthcheck()!;
          await until(`${d}: every guest ready`, deadline(15_000), async () => {
            check();
            const r = await lab!.run(d, file, args, { env: containers.get(d)!.env(), timeoutMs: 5_000 });
            const m = /ok (\S+): (\d+)\/(\d+) guests ready/.exec(r.stdout);
            return m && m[2] === m[3] && +m[3] === hostConfigs.get(d)!.guests.length ? m[0] : undefined;
          }, 250);
        }
        const readyAt = Date.now();

        // The control endpoint in the ws transport: from inside each dom0's namespace, as an
        // operator with the cluster secret, `ringvisor rings --json` lists every guest's rings.
        for (const d of dom0s) {
          const [file, hcArgs] = containers.get(d)!.healthcheck()!;
          const bin = hcArgs.findIndex((x) => x.endsWith('bin/ringvisor.mjs'));
          const observe = containers.get(d)!.argv()[1].find((x, i, all) => all[i - 1] === '--observe')!;
          const args = [...hcArgs.slice(0, bin + 1), 'rings', '--json', '--url', `http://127.0.0.1:${observe.split(':').at(-1)}`];
          // Generous: under the full suite on two cores a CLI start alone can take seconds.
          const rings = await until(`${d}: rings on its control endpoint`, deadline(20_000), async () => {
            const r = await lab!.run(d, file, args, { env: containers.get(d)!.env(), timeoutMs: 8_000 });
            if (r.code !== 0) return undefined;
            const rows = JSON.parse(r.stdout) as Array<{ domain: string; ring: string; mode: string; verdict: string }>;
            return rows.length > 0 ? rows : undefined;
          }, 500);
          const host = hostConfigs.get(d)!;
          // A PV guest's rings are dom0's to watch; a direct guest's queues are between it and the hardware.
          for (const g of host.guests) {
            const pv = g.devices.every((x) => x.mode === 'pv');
            expect(rings.filter((r) => r.domain === g.name).map((r) => r.ring).sort(), `${d}/${g.name}`).toEqual(pv ? ['blk', 'rx', 'tx'] : []);
          }
          expect(rings.every((r) => r.mode === 'pv' && r.verdict !== 'STUCK'), JSON.stringify(rings)).toBe(true);
        }

        // Traffic across hosts: the host-b end of a cross-host flow receives frames (dom0-b's
        // per-second table, NET_RX). Then a few seconds of it.
        const dB = running.get(dom0B)!;
        const rxB = () => topSamples(dB, guestB).at(-1)?.netRx ?? 0;
        const flowsB = flows.filter((f) => f.to === guestB || f.from === guestB).map((f) => `${f.fromHost}/${f.from} -> ${f.toHost}/${f.to}`);
        const first = await until(`${guestB} receiving frames from the other host (flows ${flowsB.join(', ')})`, deadline(15_000), () => (check(), rxB() > 0 ? rxB() : undefined));
        await sleep(2_000);
        check();
        const beforePartition = topSamples(dB, guestB).at(-1)!;
        expect(beforePartition.netRx, `${guestB}'s frames received keep increasing before the partition`).toBeGreaterThan(first);
        const rxRateBefore = rxRatePerSec(topSamples(dB, guestB), beforePartition.at - 2_000, beforePartition.at);

        // The partition: machine b's trunk down. Only the silence tells the two sides.
        const sw = running.get(switchName!)!;
        const downAt = Date.now();
        lab.linkDown({ machine: machineB! });
        expect(lab.linkIsUp({ machine: machineB! })).toBe(false);
        const lost = await until(`the switch to report ${uplinkPortB}'s carrier lost`, deadline(PARTITION_MS), () =>
          logs(sw).find((l) => l.at >= downAt && /carrier lost/.test(l.msg) && l.port === uplinkPortB),
        );
        await sleep(Math.max(0, downAt + PARTITION_MS - Date.now()));
        // Frames already past the cut are through within a second; after that, nothing may arrive.
        const cutSamples = topSamples(dB, guestB).filter((s) => s.at >= downAt + 1_000);
        const upAt2 = Date.now();
        lab.linkUp({ machine: machineB! });
        expect(lab.linkIsUp({ machine: machineB! })).toBe(true);

        // Heal: the same connections carry on (TCP retransmits what the cut swallowed).
        const restored = await until(`the switch to report ${uplinkPortB}'s carrier restored`, deadline(12_000), () =>
          logs(sw).find((l) => l.at >= upAt2 && /carrier restored/.test(l.msg) && l.port === uplinkPortB),
        );
        const rxAtHeal = topSamples(dB, guestB).filter((s) => s.at <= upAt2).at(-1)!.netRx;
        const resumed = await until(`${guestB} receiving frames again after the heal`, deadline(12_000), () =>
          topSamples(dB, guestB).find((s) => s.at > upAt2 && s.netRx > rxAtHeal),
        );
        await sleep(2_000);
        check();
        const afterHeal = topSamples(dB, guestB).at(-1)!;

        // Stop: SIGTERM each dom0 (a clean shutdown: guests quiesced and stopped, blocks read back,
        // summary written); its hwsim and guests then exit on their own. The switch last.
        const stopAt = Date.now();
        for (const r of running.values()) r.stopping = true;
        for (const d of dom0s) process.kill(running.get(d)!.child.pid!, 'SIGTERM');
        const ends = new Map<string, { code: number | null; signal: NodeJS.Signals | null }>();
        for (const n of names.filter((n) => n !== switchName)) ends.set(n, await raceTimeout(running.get(n)!.exit, Math.max(8_000, t0 + 55_000 - Date.now()), `${n} to exit after its dom0 stopped`));
        process.kill(running.get(switchName!)!.child.pid!, 'SIGTERM');
        ends.set(switchName!, await raceTimeout(running.get(switchName!)!.exit, 3_000, 'the switch to exit on SIGTERM'));
        const stoppedAt = Date.now();
        check();

        // ---- what happened -------------------------------------------------------------------
        for (const [n, e] of ends) expect(e, `${n} exit:\n${running.get(n)!.stderr.slice(-10).map((l) => l.text).join('\n')}`).toEqual({ code: 0, signal: null });
        const s = new Map(dom0s.map((d) => [d, JSON.parse(readFileSync(summaries.get(d)!, 'utf8')) as Summary]));
        for (const [d, sum] of s) {
          const host = hostConfigs.get(d)!;
          expect(sum.guests.map((g) => `${g.host}/${g.name}`).sort(), d).toEqual(host.guests.map((g) => `${host.name}/${g.name}`).sort());
          for (const g of sum.guests) {
            expect(g.state, `${g.host}/${g.name}`).toBe('stopped');
            expect(g.errors, `${g.host}/${g.name}`).toBe(0);
            expect(g.devices.find((x) => x.type === 'vbd')?.ops, `${g.host}/${g.name}: block I/O`).toBeGreaterThan(0);
            expect(g.devices.find((x) => x.type === 'vif')?.ops, `${g.host}/${g.name}: network I/O`).toBeGreaterThan(0);
            expect(g.udp.corrupted, `${g.host}/${g.name}`).toBe(0);
          }
          expect(sum.integrity.checked, d).toBeGreaterThan(0);
          expect(sum.integrity.failures, d).toBe(0);
        }
        const nicA = s.get(dom0A)!.dom0[hostA.name];
        const nicB = s.get(dom0B)!.dom0[hostB.name];
        // Cross-host frames, both ways: out of one host's physical NIC, into the other's.
        expect(nicA.nic.txFrames, `${hostA.name} NIC sent`).toBeGreaterThan(0);
        expect(nicB.nic.rxFrames, `${hostB.name} NIC received`).toBeGreaterThan(0);
        expect(nicB.nic.txFrames, `${hostB.name} NIC sent`).toBeGreaterThan(0);
        expect(nicA.nic.rxFrames, `${hostA.name} NIC received`).toBeGreaterThan(0);
        // Guests on the two hosts exchanged UDP: each cross-host flow got echoes back (its
        // datagrams and their echoes crossed the switch).
        const udpB = s.get(dom0B)!.guests.reduce((a, g) => a + g.udp.echoed, 0);
        const udpA = s.get(dom0A)!.guests.reduce((a, g) => a + g.udp.echoed, 0);
        const guestSummary = (host: string, name: string) => [...s.values()].flatMap((x) => x.guests).find((g) => g.host === host && g.name === name)!;
        for (const f of flows) {
          const g = guestSummary(f.fromHost, f.from);
          expect(g.udp.echoed, `${f.from} (streams to ${f.to} on ${f.toHost}): echoes`).toBeGreaterThan(0);
          // Datagrams sent into the cut went unanswered past the loss timeout (1 s): dropped once
          // the hardware saw the carrier go (lost), or held in the uplink's TCP stream until the
          // heal and echoed after their timeout (late, which is not loss).
          expect(g.udp.lost + g.udp.late, `${f.from} (streams to ${f.to} on ${f.toHost}): datagrams lost or late in the partition`).toBeGreaterThan(0);
        }

        // The partition was real: nothing reached host b's guest while the trunk was down…
        expect(cutSamples.length, `${dom0B} kept reporting (its guests are on its side of the cut)`).toBeGreaterThanOrEqual(2);
        expect(cutSamples.at(-1)!.netRx - cutSamples[0].netRx, `${guestB} received frames through a cut link`).toBe(0);
        // …it was reported (switch log, and host b's own hardware in its run summary)…
        expect(lost).toBeDefined();
        expect(restored.outageMs as number, 'outage the switch measured').toBeGreaterThanOrEqual(PARTITION_MS - 1_000);
        expect(nicB.uplink, `${hostB.name}: the run summary reports its uplink`).toBeDefined();
        expect(nicB.uplink!.outages, `${hostB.name}: outages`).toBeGreaterThanOrEqual(1);
        expect(nicB.uplink!.longestOutageMs).toBeGreaterThanOrEqual(PARTITION_MS - 1_000);
        expect(nicB.uplink!.carrier, `${hostB.name}: carrier back at the end`).toBe(true);
        expect(nicA.uplink?.outages ?? 0, `${hostA.name} never lost its uplink`).toBe(0);
        const carrierLogs = (n: string) => logs(running.get(n)!).filter((l) => /LAN carrier lost/.test(l.msg)).map((l) => l.port);
        expect(carrierLogs(hwsimB), `${hwsimB} noticed the partition from its side`).toHaveLength(1);
        expect(carrierLogs(switchName!), 'the switch saw exactly host b go silent').toEqual([uplinkPortB]);
        for (const n of names.filter((n) => kind(n) === 'hwsim' && n !== hwsimB)) expect(carrierLogs(n), n).toEqual([]);
        // …and survived: no runtime exited, no link was dropped and re-made (the switch would
        // log `host uplink lost`, and a hwsim does not reconnect), no guest failed (above).
        expect(logs(sw).filter((l) => l.at < stopAt && /host uplink lost/.test(l.msg)), 'uplinks dropped during the run').toEqual([]);
        // Traffic resumed after the heal, at a rate like before the partition.
        expect(resumed.netRx).toBeGreaterThan(rxAtHeal);
        const rxRateAfter = rxRatePerSec(topSamples(dB, guestB), afterHeal.at - 2_000, afterHeal.at);
        expect(rxRateAfter, `${guestB} frames/s after the heal vs ${rxRateBefore.toFixed(0)}/s before`).toBeGreaterThan(rxRateBefore * 0.25);

        const ms = (a: number, b: number) => `${((b - a) / 1000).toFixed(1)} s`;
        process.stdout.write(
          `compose-netns (lab ${lab.id}): started ${ms(t0, upAt)}, ready ${ms(upAt, readyAt)}, partition ${ms(downAt, upAt2)} (carrier lost after ${ms(downAt, lost.at)}), ` +
            `resumed ${ms(upAt2, resumed.at)} after heal, shutdown ${ms(stopAt, stoppedAt)}; ${guestB} rx/s ${rxRateBefore.toFixed(0)} before, ${rxRateAfter.toFixed(0)} after; ` +
            `udp echoed ${hostA.name} ${udpA}, ${hostB.name} ${udpB}; lost ${[...s.values()].flatMap((x) => x.guests).map((g) => `${g.name}=${g.udp.lost}`).join(' ')}\n`,
        );
      } catch (e) {
        // What each runtime said last, to tell why.
        const tails = [...running.values()].map((r) => `--- ${r.name} (pid ${r.child.pid}):\n${[...r.stderr.slice(-8), ...r.stdout.slice(-4)].map((l) => l.text).join('\n')}`);
        throw new Error(`${(e as Error).message}\n${failures.join('\n')}\n${tails.join('\n')}`, { cause: e });
      } finally {
        await lab.cleanup(2_000);
      }
      // Nothing left behind: processes, namespaces, /etc/netns entries.
      for (const r of running.values()) expect(() => process.kill(r.child.pid!, 0), `${r.name} still running`).toThrow();
      const left = execFileSync(findIp()!, ['netns', 'list'], { encoding: 'utf8' });
      expect(left).not.toContain(lab.id);
      expect(existsSync(join('/etc/netns', lab.nsOf(switchName!)))).toBe(false);
    },
    60_000,
  );
});

/** UDP flows from a guest of one host to a guest (named by IP) of another. */
function crossHostFlows(hosts: HostConfig[]): { from: string; fromHost: string; to: string; toHost: string }[] {
  const byIp = new Map(hosts.flatMap((h) => h.guests.flatMap((g) => g.devices.flatMap((d) => (d.type === 'vif' ? [[d.ip, { guest: g.name, host: h.name }] as const] : [])))));
  return hosts.flatMap((h) =>
    h.guests.flatMap((g) => {
      const peers = g.workloads.udp?.peers;
      return Array.isArray(peers)
        ? peers.flatMap((p) => {
            const to = byIp.get(p);
            return to && to.host !== h.name ? [{ from: g.name, fromHost: h.name, to: to.guest, toHost: to.host }] : [];
          })
        : [];
    }),
  );
}

function rxRatePerSec(samples: TopSample[], from: number, to: number): number {
  const w = samples.filter((s) => s.at >= from && s.at <= to);
  if (w.length < 2) return 0;
  return ((w.at(-1)!.netRx - w[0].netRx) * 1000) / Math.max(1, w.at(-1)!.at - w[0].at);
}

function raceTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms)))]).finally(() => clearTimeout(t));
}
