/**
 * The deployment files, checked without a Docker engine:
 *  (a) docker-compose (v1.29, Debian's `docker-compose`) parses and interpolates the file;
 *  (b) the file conforms to the Compose Specification JSON schema — and a broken copy does not;
 *  (c) the cluster it describes hangs together: dependencies, healthchecks, commands, listeners,
 *      the secret (trusted runtimes) and the domain keys (each guest only its own), the host
 *      configs (through normalizeConfig), guests ↔ domain ids, addresses.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, relative, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseSecret } from '@ringvisor/shared';
import { normalizeConfig, type ClusterConfig } from '../src/toolstack/config.js';
import { composeGuestKeys, domainKeyVar } from './support/compose-keys.js';
import { composeValidator, describeErrors, interpolate, interpolateDeep, parseCompose } from './support/compose-schema.js';

const ROOT = resolve(import.meta.dirname, '../../..');
const COMPOSE_FILE = join(ROOT, 'docker-compose.yml');
const RAW_TEXT = readFileSync(COMPOSE_FILE, 'utf8');
/** A fresh secret per run: whatever ends up in a service's environment came from interpolation. */
const TEST_SECRET = randomBytes(32).toString('hex');

/** ringvisor subcommands a service may run (bin/ringvisor.mjs + the toolstack CLI). */
const SUBCOMMANDS = new Set(['dom0', 'domu', 'hwsim', 'switch', 'chaos', 'health', 'up']);
/** Subcommands that accept connections, and so must be told to bind 0.0.0.0 in a container. */
const LISTENERS = new Set(['dom0', 'switch']);
/** Profiles the file may use; anything else is a typo that silently hides a service. */
const PROFILES = new Set(['faults']);
/**
 * Files a service may reference before they exist, with why. Allowed only for services behind a
 * profile, so a plain `docker compose up` never needs them.
 */
const PENDING_FILES = new Map<string, string>();

interface Service {
  image?: string;
  command?: unknown;
  environment?: Record<string, unknown> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: unknown; disable?: boolean };
  profiles?: string[];
  configs?: (string | { source: string; target?: string })[];
  volumes?: (string | { type?: string; source?: string; target: string })[];
  ports?: (string | number | { host_ip?: string; published?: string | number; target: number })[];
  restart?: string;
  deploy?: { replicas?: number; mode?: string; placement?: { constraints?: string[] } };
  scale?: number;
}
interface ComposeFile {
  services: Record<string, Service>;
  configs?: Record<string, { file?: string }>;
  volumes?: Record<string, unknown>;
  networks?: Record<string, unknown>;
}

const rawDoc = parseCompose(RAW_TEXT) as unknown as ComposeFile;

/**
 * Each guest container's domain key comes from its own .env variable, named after the service.
 * The test fills each with the key that guest's host and domain id derive, so a service reading
 * another guest's variable is caught below.
 */
const GUEST_KEYS = composeGuestKeys(rawDoc, TEST_SECRET, ROOT);
const ENV: Record<string, string> = { RINGVISOR_SECRET: TEST_SECRET, ...GUEST_KEYS };
const doc = interpolateDeep(rawDoc, ENV);
const services = Object.entries(doc.services);

function envOf(s: Service): Record<string, string> {
  if (Array.isArray(s.environment)) return Object.fromEntries(s.environment.map((kv) => [kv.split('=')[0], kv.slice(kv.indexOf('=') + 1)]));
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v ?? '')]));
}
function commandOf(name: string, s: Service): string[] {
  if (!Array.isArray(s.command)) throw new Error(`service ${name}: command must be a list (exec form, no shell), got ${JSON.stringify(s.command)}`);
  return s.command.map(String);
}
function flag(cmd: string[], name: string): string | undefined {
  const i = cmd.indexOf(name);
  return i >= 0 ? cmd[i + 1] : cmd.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}
function dependsOn(s: Service): Record<string, { condition?: string }> {
  if (!s.depends_on) return {};
  if (Array.isArray(s.depends_on)) return Object.fromEntries(s.depends_on.map((d) => [d, {}]));
  return s.depends_on;
}
function hostPort(name: string, at: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(at);
  if (!m) throw new Error(`service ${name}: listen address ${at} is not HOST:PORT`);
  return { host: m[1], port: Number(m[2]) };
}
/** Where a listener binds: `--listen HOST:PORT`, else RINGVISOR_LISTEN. */
function listenOf(name: string, s: Service): { host: string; port: number } | undefined {
  const at = flag(commandOf(name, s), '--listen') ?? envOf(s).RINGVISOR_LISTEN;
  return at === undefined ? undefined : hostPort(name, at);
}
/** Every listener of a service: the main one, and a hardware simulator's direct-I/O listener. */
function listenersOf(name: string, s: Service): Array<{ host: string; port: number }> {
  const direct = envOf(s).RINGVISOR_DIRECT_LISTEN;
  return [listenOf(name, s), direct === undefined ? undefined : hostPort(name, direct)].filter((x): x is { host: string; port: number } => x !== undefined);
}
/** The container WORKDIR of the runtime image (relative paths in host configs resolve against it). */
function workdir(): string {
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const m = /^WORKDIR\s+(\S+)/m.exec(finalStage);
  if (!m) throw new Error('Dockerfile: the final stage sets no WORKDIR');
  return m[1];
}
/** The file on this machine that a container path of service `s` shows (a compose config or a bind mount). */
function hostFileFor(name: string, s: Service, containerPath: string): string | undefined {
  for (const c of s.configs ?? []) {
    const source = typeof c === 'string' ? c : c.source;
    const target = typeof c === 'string' || !c.target ? `/${source}` : c.target;
    if (target === containerPath) {
      const file = doc.configs?.[source]?.file;
      if (!file) throw new Error(`service ${name}: config ${source} is not defined at top level with a file`);
      return resolve(ROOT, file);
    }
  }
  for (const v of s.volumes ?? []) {
    const [source, target] = typeof v === 'string' ? v.split(':') : [v.source, v.target];
    if (!source || !/^[./~]/.test(source)) continue; // named volume, not a file of ours
    const rel = posix.relative(target, containerPath);
    if (!rel.startsWith('..') && !posix.isAbsolute(rel)) return resolve(ROOT, source, rel);
  }
  return undefined;
}
/** Named-volume mounts of a service. */
function namedVolumes(s: Service): { source: string; target: string }[] {
  return (s.volumes ?? []).flatMap((v) => {
    const [source, target] = typeof v === 'string' ? v.split(':') : [v.source, v.target];
    return source && !/^[./~]/.test(source) ? [{ source, target }] : [];
  });
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('docker-compose config (no engine needed)', () => {
  const probe = spawnSync('docker-compose', ['version', '--short'], { encoding: 'utf8' });
  const present = !probe.error && probe.status === 0;
  if (!present && process.env.CI)
    it('docker-compose is installed', () => {
      expect.fail('docker-compose is not installed: CI must run `apt-get install -y --no-install-recommends docker-compose` (see .ci/run)');
    });

  /** docker-compose with only the variables we give it (none of the caller's RINGVISOR_ or COMPOSE_ settings, no repo .env). */
  function compose(args: string[], env: Record<string, string>) {
    const dir = mkdtempSync(join(tmpdir(), 'rv-compose-'));
    dirs.push(dir);
    const envFile = join(dir, '.env');
    writeFileSync(envFile, Object.entries(env).map(([k, v]) => `${k}=${v}\n`).join(''), { mode: 0o600 });
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(RINGVISOR_|COMPOSE_|DOCKER_)/.test(k)));
    return spawnSync('docker-compose', ['--env-file', envFile, '-f', COMPOSE_FILE, ...[...PROFILES].flatMap((p) => ['--profile', p]), ...args], {
      cwd: ROOT,
      env: { ...base, ...env },
      encoding: 'utf8',
      timeout: 60_000,
    });
  }

  it.skipIf(!present)('`docker-compose config -q` accepts the file when RINGVISOR_SECRET is set (every profile enabled)', () => {
    const r = compose(['config', '-q'], ENV);
    expect(r.stderr.replace(/^.*'configs' key, which will be ignored.*$/m, '').trim(), 'stderr').toBe('');
    expect(r.status, r.stderr).toBe(0);
  });

  it.skipIf(!present)('and refuses to run without the secret, saying where to set it', () => {
    const r = compose(['config', '-q'], GUEST_KEYS);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/RINGVISOR_SECRET/);
    expect(r.stderr).toMatch(/\.env/);
  });

  it.skipIf(!present)("and without a guest's domain key, saying where to set it", () => {
    const [missing] = Object.keys(GUEST_KEYS);
    const r = compose(['config', '-q'], { ...ENV, [missing]: '' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(missing);
    expect(r.stderr).toMatch(/\.env/);
  });

  it.skipIf(!present)("compose's own reading of the file (merge keys, interpolation) is the one these tests check", () => {
    const r = compose(['config'], ENV);
    expect(r.status, r.stderr).toBe(0);
    const theirs = parseYaml(r.stdout) as ComposeFile;
    expect(Object.keys(theirs.services).sort()).toEqual(Object.keys(doc.services).sort());
    for (const [name, s] of services) {
      const t = theirs.services[name];
      expect(t.command, name).toEqual(s.command);
      expect(envOf(t), name).toEqual(envOf(s));
      expect(t.healthcheck?.test, name).toEqual(s.healthcheck?.test);
      expect(Object.keys(dependsOn(t)).sort(), name).toEqual(Object.keys(dependsOn(s)).sort());
    }
  });
});

describe('Compose Specification schema', () => {
  const validate = composeValidator();

  it('the file conforms', () => {
    const ok = validate(rawDoc);
    expect(ok, describeErrors(validate.errors)).toBe(true);
  });

  it('YAML merge keys were resolved (no literal "<<" reaches the checks)', () => {
    expect(JSON.stringify(rawDoc)).not.toContain('"<<"');
  });

  it('a broken copy does not: a depends_on condition Compose does not know', () => {
    const broken = structuredClone(rawDoc);
    (broken.services['guest-a1'].depends_on as Record<string, { condition: string }>)['dom0-a'].condition = 'service_ready';
    expect(validate(broken)).toBe(false);
    expect(describeErrors(validate.errors)).toMatch(/\/services\/guest-a1\/depends_on\/dom0-a\/condition .*service_healthy/);
  });

  it('a broken copy does not: a misspelt healthcheck key', () => {
    const broken = structuredClone(rawDoc);
    (broken.services['dom0-a'].healthcheck as Record<string, unknown>).intervall = '5s';
    expect(validate(broken)).toBe(false);
    expect(describeErrors(validate.errors)).toMatch(/intervall/);
  });
});

describe('the cluster the file describes', () => {
  it('every depends_on target is a service, and no default service waits on a profile-only one', () => {
    for (const [name, s] of services)
      for (const target of Object.keys(dependsOn(s))) {
        expect(doc.services[target], `${name} depends on unknown service ${target}`).toBeDefined();
        if (!s.profiles?.length) expect(doc.services[target].profiles ?? [], `${name} (default profile) depends on ${target}, which only runs under a profile`).toEqual([]);
      }
  });

  it('every service_healthy dependency has a healthcheck that runs `ringvisor health` against its own listener', () => {
    let checked = 0;
    for (const [name, s] of services)
      for (const [target, d] of Object.entries(dependsOn(s))) {
        if (d.condition !== 'service_healthy') continue;
        const t = doc.services[target];
        expect(t.healthcheck?.test, `${name} waits for ${target} to be healthy, but ${target} has no healthcheck`).toBeDefined();
        expect(t.healthcheck?.disable, target).not.toBe(true);
        const test = (t.healthcheck!.test as string[]).map(String);
        expect(test[0], `${target}: use the exec form`).toBe('CMD');
        const i = test.findIndex((a) => a.endsWith('bin/ringvisor.mjs'));
        expect(i, `${target}: healthcheck must run bin/ringvisor.mjs`).toBeGreaterThan(0);
        expect(test[i + 1]).toBe('health');
        const at = listenOf(target, t);
        expect(at, `${target} is waited on but has no --listen`).toBeDefined();
        expect(flag(test, '--url'), `${target}: the healthcheck must probe its own listener`).toBe(`ws://127.0.0.1:${at!.port}`);
        checked++;
      }
    expect(checked).toBeGreaterThan(0);
  });

  it("every service runs one image and a known ringvisor subcommand (exec form)", () => {
    const images = new Set(services.map(([, s]) => s.image));
    expect(images.size, `one image for every runtime, got ${[...images].join(', ')}`).toBe(1);
    for (const [name, s] of services) expect(SUBCOMMANDS, `${name} runs ${commandOf(name, s)[0]}`).toContain(commandOf(name, s)[0]);
  });

  it('every listener binds 0.0.0.0 explicitly; ports are published on 127.0.0.1 only', () => {
    for (const [name, s] of services) {
      const cmd = commandOf(name, s);
      const at = listenOf(name, s);
      if (LISTENERS.has(cmd[0])) expect(at, `${name} (${cmd[0]}) must say --listen 0.0.0.0:PORT: the default 127.0.0.1 is unreachable from other containers`).toBeDefined();
      for (const l of listenersOf(name, s)) expect(l.host, name).toBe('0.0.0.0');
      for (const p of s.ports ?? []) {
        const [hostIp, published, target] = typeof p === 'object' ? [p.host_ip, String(p.published), p.target] : (() => {
          const parts = String(p).split(':');
          return parts.length === 3 ? [parts[0], parts[1], Number(parts[2].split('/')[0])] : [undefined, parts[0], Number(parts.at(-1))];
        })();
        expect(hostIp, `${name} publishes ${published} on every interface; bind it to 127.0.0.1`).toBe('127.0.0.1');
        // A dom0 has two listeners: its runtime endpoint (--listen) and its control endpoint (--observe).
        const observe = flag(cmd, '--observe');
        const listening = [at?.port, observe ? Number(observe.split(':').at(-1)) : undefined];
        expect(listening, `${name} publishes a port nothing listens on`).toContain(target);
        if (observe) expect(observe.startsWith('0.0.0.0:'), `${name}: --observe must bind 0.0.0.0 to be reachable through the published port`).toBe(true);
      }
    }
  });

  it('every ws:// URL names a service and the port it listens on', () => {
    let checked = 0;
    for (const [name, s] of services) {
      const strings = [...commandOf(name, s), ...Object.values(envOf(s))];
      for (const str of strings)
        for (const m of str.matchAll(/wss?:\/\/([^:/\s]+):(\d+)/g)) {
          const target = doc.services[m[1]];
          expect(target, `${name} refers to ${m[0]}, but there is no service ${m[1]}`).toBeDefined();
          expect(listenersOf(m[1], target).map((l) => l.port), `${name} refers to ${m[0]}`).toContain(Number(m[2]));
          checked++;
        }
    }
    expect(checked).toBeGreaterThan(0);
  });

  it('secrets are never in the file: trusted runtimes take the cluster secret from ${RINGVISOR_SECRET:?…}, each guest only its own domain key', () => {
    expect(RAW_TEXT, 'a hex run long enough to be a secret').not.toMatch(/[0-9a-f]{32,}/i);
    // (a run of base64 characters with both letters and digits: comment rulers like ---- are fine)
    expect(RAW_TEXT, 'a base64 run long enough to be a secret').not.toMatch(/(?=[A-Za-z0-9+/_-]{24,})(?=[A-Za-z+/_-]*\d)(?=[\d+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{24,}/);
    for (const line of RAW_TEXT.split('\n').filter((l) => /RINGVISOR_SECRET\s*[:=]/.test(l) && !/^\s*#/.test(l)))
      expect(line.trim(), 'RINGVISOR_SECRET may only be set by interpolation').toMatch(/^RINGVISOR_SECRET:\s*\$\{RINGVISOR_SECRET:\?[^}]+\}$/);
    for (const line of RAW_TEXT.split('\n').filter((l) => /RINGVISOR_DOMAIN_KEY\s*[:=]/.test(l) && !/^\s*#/.test(l)))
      expect(line.trim(), 'RINGVISOR_DOMAIN_KEY may only be set by interpolation').toMatch(/^RINGVISOR_DOMAIN_KEY:\s*\$\{RINGVISOR_DOMAIN_KEY_[A-Z0-9_]+:\?[^}]+\}$/);
    let guests = 0;
    for (const [name, s] of services) {
      const env = envOf(s);
      if (commandOf(name, s)[0] === 'domu') {
        guests++;
        // A guest holding the cluster secret could act as dom0, the hardware or any domain.
        expect(Object.keys(env).filter((k) => /SECRET|TOKEN/.test(k)), `${name} must not get the cluster secret`).toEqual([]);
        expect(env.RINGVISOR_DOMAIN_KEY, `${name} gets its own domain key, from ${domainKeyVar(name)}`).toBe(GUEST_KEYS[domainKeyVar(name)]);
      } else {
        expect(env.RINGVISOR_SECRET, `${name} needs the cluster secret`).toBe(TEST_SECRET);
        expect(env.RINGVISOR_DOMAIN_KEY, name).toBeUndefined();
      }
      expect(commandOf(name, s).some((a) => /^--(secret|key)(=|$)/.test(a)), `${name}: a secret on the command line shows in ps`).toBe(false);
    }
    expect(guests).toBeGreaterThan(0);
    expect(new Set(Object.values(GUEST_KEYS)).size, 'one key per guest').toBe(guests);
    expect(() => interpolateDeep(rawDoc, GUEST_KEYS), 'compose must refuse to start without the secret').toThrow(/RINGVISOR_SECRET/);
    for (const v of Object.keys(GUEST_KEYS))
      expect(() => interpolateDeep(rawDoc, { ...ENV, [v]: '' }), `compose must refuse to start without ${v}`).toThrow(new RegExp(v));
  });

  const hostConfigs = new Map<string, { file: string; config: ClusterConfig }>();
  it('every referenced file exists; every --config passes normalizeConfig with exactly one host', () => {
    for (const [name, s] of services) {
      const cmd = commandOf(name, s);
      const refs: [string, string][] = [];
      const config = flag(cmd, '--config') ?? envOf(s).RINGVISOR_CONFIG;
      if (config) refs.push(['--config', config]);
      const plan = flag(cmd, '--plan');
      if (plan) refs.push(['--plan', plan]);
      for (const [kind, containerPath] of refs) {
        const file = hostFileFor(name, s, containerPath);
        expect(file, `${name}: ${kind} ${containerPath} is neither a compose config nor inside a bind mount`).toBeDefined();
        const rel = relative(ROOT, file!);
        if (!existsSync(file!)) {
          expect(PENDING_FILES.has(rel), `${name}: ${kind} ${containerPath} is ${rel}, which does not exist`).toBe(true);
          expect((s.profiles ?? []).length, `${name} needs the missing ${rel}, so it must not run by default`).toBeGreaterThan(0);
          continue;
        }
        if (kind !== '--config') continue;
        const parsed = rel.endsWith('.json') ? JSON.parse(readFileSync(file!, 'utf8')) : parseYaml(readFileSync(file!, 'utf8'));
        const normalized = normalizeConfig(parsed, rel);
        expect(normalized.hosts, rel).toHaveLength(1);
        hostConfigs.set(name, { file: rel, config: normalized });
      }
    }
    expect(hostConfigs.size).toBeGreaterThan(0);
  });

  it('each dom0 has one guest service per guest in its config, with the matching domain id', () => {
    expect(hostConfigs.size, 'runs after the config check').toBeGreaterThan(0);
    const claimed = new Map<string, string>();
    for (const [name, s] of services) {
      const cmd = commandOf(name, s);
      if (cmd[0] !== 'domu') continue;
      const id = Number(flag(cmd, '--id') ?? envOf(s).RINGVISOR_DOMID);
      const dom0 = dom0Of(name, s);
      expect(dom0 && doc.services[dom0] && commandOf(dom0, doc.services[dom0])[0], `${name}: --dom0 does not name a dom0 service`).toBe('dom0');
      const host = hostConfigs.get(dom0!)!;
      const guests = host.config.hosts[0].guests;
      expect(Number.isInteger(id) && id >= 1 && id <= guests.length, `${name}: --id ${id}, but ${host.file} has ${guests.length} guests (ids 1..${guests.length})`).toBe(true);
      const key = `${dom0}/${id}`;
      expect(claimed.get(key), `${name} and ${claimed.get(key)} both claim domain ${id} of ${dom0}`).toBeUndefined();
      claimed.set(key, name);
      // A guest's domid is fixed: several replicas of one service would fight over one domain.
      expect(s.deploy?.replicas ?? 1, `${name}: scale guests by adding services, not replicas`).toBe(1);
      expect(s.deploy?.mode ?? 'replicated', name).toBe('replicated');
      expect(s.scale ?? 1, name).toBe(1);
      expect(s.profiles ?? [], `${name}: its dom0 waits for it, so it must run whenever the dom0 does`).toEqual(doc.services[dom0!].profiles ?? []);
    }
    // dom0 waits (30 s, then fails) for every guest its config lists.
    for (const [dom0, { file, config }] of hostConfigs)
      config.hosts[0].guests.forEach((g, i) => expect(claimed.has(`${dom0}/${i + 1}`), `${file}: guest ${g.name} (domain ${i + 1}) has no domu service connecting to ${dom0}`).toBe(true));
  });

  /** The dom0 service a client service (domu, hwsim) connects to. */
  function dom0Of(name: string, s: Service): string | undefined {
    const url = flag(commandOf(name, s), '--dom0') ?? envOf(s).RINGVISOR_DOM0_URL;
    return /^wss?:\/\/([^:/]+):/.exec(url ?? '')?.[1];
  }

  it('each dom0 has exactly one hardware simulator, and its guests wait for both', () => {
    const dom0s = services.filter(([name, s]) => commandOf(name, s)[0] === 'dom0').map(([name]) => name);
    expect(dom0s.length).toBeGreaterThan(0);
    for (const d of dom0s) {
      // dom0 attaches one hardware connection and creates no domain before it has it.
      const hw = services.filter(([name, s]) => commandOf(name, s)[0] === 'hwsim' && dom0Of(name, s) === d);
      expect(hw.map(([n]) => n), `${d} needs exactly one hwsim service (--dom0 ws://${d}:PORT)`).toHaveLength(1);
      expect(dependsOn(hw[0][1])[d]?.condition, `${hw[0][0]} must wait for ${d} to listen`).toBe('service_healthy');
      for (const [name, s] of services.filter(([n, sv]) => commandOf(n, sv)[0] === 'domu' && dom0Of(n, sv) === d)) {
        expect(dependsOn(s)[d]?.condition, `${name} must wait for ${d} to listen`).toBe('service_healthy');
        expect(dependsOn(s)[hw[0][0]], `${name} must start after ${hw[0][0]}`).toBeDefined();
      }
    }
  });

  it('the hosts share one LAN: every dom0 is cabled to the same switch, under distinct host indexes', () => {
    expect(hostConfigs.size, 'runs after the config check').toBeGreaterThan(0);
    const lans = new Set<string | undefined>();
    const indexes = new Map<number, string>();
    for (const [dom0, { file, config }] of hostConfigs) {
      const s = doc.services[dom0];
      const lan = flag(commandOf(dom0, s), '--lan') ?? envOf(s).RINGVISOR_LAN_URL;
      lans.add(lan);
      if (hostConfigs.size > 1) expect(lan, `${dom0}: several hosts but no --lan ws://SWITCH:PORT`).toBeDefined();
      if (lan) expect(commandOf(/^wss?:\/\/([^:/]+):/.exec(lan)![1], doc.services[/^wss?:\/\/([^:/]+):/.exec(lan)![1]])[0], `${dom0}: --lan ${lan} is not a switch`).toBe('switch');
      // The switch accepts one uplink per host index.
      const idx = config.hosts[0].index;
      expect(indexes.get(idx), `${file} and ${indexes.get(idx)} both use host index ${idx}`).toBeUndefined();
      indexes.set(idx, file);
    }
    expect(lans.size, 'every dom0 on the same switch').toBe(1);
  });

  it('hosts on the shared LAN have distinct names, MACs and IPs; each disk image lives on a named volume', () => {
    const names = new Set<string>();
    const macs = new Map<string, string>();
    const ips = new Map<string, string>();
    const wd = workdir();
    for (const [dom0, { file, config }] of hostConfigs) {
      const h = config.hosts[0];
      expect(names.has(h.name), `${file}: host name ${h.name} is used twice`).toBe(false);
      names.add(h.name);
      const own: [string, string][] = [[h.nic.mac, `${h.name} nic`]];
      for (const g of h.guests) for (const d of g.devices) if (d.type === 'vif') own.push([d.mac, `${h.name}/${g.name}`]);
      for (const [mac, who] of own) {
        expect(macs.get(mac), `${who} and ${macs.get(mac)} share MAC ${mac}`).toBeUndefined();
        macs.set(mac, who);
      }
      for (const g of h.guests)
        for (const d of g.devices)
          if (d.type === 'vif') {
            expect(ips.get(d.ip), `${h.name}/${g.name} and ${ips.get(d.ip)} share IP ${d.ip}`).toBeUndefined();
            ips.set(d.ip, `${h.name}/${g.name}`);
          }
      // dom0 resolves the path against its working directory and creates the directory; its
      // hwsim opens the image at that path: both need it on the same named volume.
      const disk = posix.resolve(wd, h.disk.path);
      const hw = services.filter(([n, sv]) => commandOf(n, sv)[0] === 'hwsim' && dom0Of(n, sv) === dom0).map(([n]) => n);
      const volumes = new Set<string>();
      for (const who of [dom0, ...hw]) {
        const mounts = namedVolumes(doc.services[who]);
        const on = mounts.find((m) => !posix.relative(m.target, disk).startsWith('..'));
        expect(on, `${who}: disk ${disk} is not on a named volume (mounts: ${mounts.map((m) => m.target).join(', ') || 'none'}); it would vanish with the container`).toBeDefined();
        expect(Object.keys(doc.volumes ?? {}), `${who}: volume ${on!.source} is not declared at top level`).toContain(on!.source);
        volumes.add(on!.source);
      }
      expect([...volumes], `${dom0} and its hwsim must see the same disk volume`).toHaveLength(1);
    }
  });

  it('profiles are the known ones; chaos only runs under `faults`', () => {
    for (const [name, s] of services) for (const p of s.profiles ?? []) expect(PROFILES, `${name}: unknown profile ${p}`).toContain(p);
    const chaos = services.filter(([name, s]) => commandOf(name, s)[0] === 'chaos');
    expect(chaos.length).toBeGreaterThan(0);
    for (const [name, s] of chaos) expect(s.profiles, name).toEqual(['faults']);
  });

  it('.env.example documents the secret with a placeholder, not a secret', () => {
    const example = readFileSync(join(ROOT, '.env.example'), 'utf8');
    const line = example.split('\n').find((l) => l.startsWith('RINGVISOR_SECRET='));
    expect(line).toBeDefined();
    // Empty (compose then refuses to start) or something no runtime accepts as a key: a
    // placeholder that parses as base64 would quietly become everyone's shared "secret".
    const placeholder = line!.slice('RINGVISOR_SECRET='.length).trim();
    if (placeholder !== '') expect(() => parseSecret(placeholder, '.env.example')).toThrow();
    expect(() => interpolate('${RINGVISOR_SECRET:?unset}', { RINGVISOR_SECRET: placeholder }), 'compose must refuse the placeholder').toThrow();
    expect(example).toMatch(/openssl rand -hex 32/);
    // Every guest's key variable is listed, empty (compose refuses to start until it is set).
    for (const v of Object.keys(GUEST_KEYS)) expect(example.split('\n'), v).toContain(`${v}=`);
    expect(readFileSync(join(ROOT, '.dockerignore'), 'utf8')).toMatch(/^\.env$/m);
  });

  it('interpolation behaves like Compose', () => {
    expect(interpolate('a${X:-d}b$${Y}', {})).toBe('ad' + 'b${Y}');
    expect(interpolate('${X:-d}', { X: '' })).toBe('d');
    expect(interpolate('${X-d}', { X: '' })).toBe('');
    expect(() => interpolate('${X:?set X}', {})).toThrow(/set X/);
    expect(interpolate('${X:?set X}', { X: 'v' })).toBe('v');
  });
});
