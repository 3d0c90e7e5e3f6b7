/**
 * A throw-away network of Linux network namespaces for tests that run real processes on a real
 * (virtual) network, the way containers on a bridge network see each other:
 *
 *   fabric namespace  <id>-fabric          every bridge and every switch-side veth end lives here
 *     br0             the core segment (hosts placed on no machine attach here)
 *     brm<j>          one bridge per machine, joined to br0 by a trunk veth pair tm<j> <-> tc<j>
 *   host namespaces   <id>-<host>          one per host: lo, and eth0 (a veth whose peer vh<i>
 *                                          is a port of its machine's bridge, or of br0)
 *
 * Addresses come from 192.0.2.0/24 (TEST-NET-1, RFC 5737): documentation space, obviously
 * synthetic, and only ever configured inside namespaces this module created. Nothing is done to
 * the caller's network namespace: no interface, route or address there is created or touched.
 * Host names resolve through /etc/netns/<ns>/hosts, which `ip netns exec` bind-mounts over
 * /etc/hosts for the processes it starts.
 *
 * A partition is a link taken down: a host's veth (that host alone is cut off) or a machine's
 * trunk (every host on the machine still reaches the others on it, none reaches anything else).
 *
 * Processes are started with `ip netns exec <ns> [setpriv --pdeathsig KILL --] <program> …`;
 * each execs the next, so the ChildProcess pid is the program's own pid, and (with util-linux's
 * setpriv, when present) the kernel kills the program should the test process die without
 * running any cleanup at all (SIGKILL). cleanup() stops every one of them by that pid
 * (SIGTERM, then SIGKILL after a grace period), deletes the namespaces (which destroys every
 * veth and bridge in them) and the /etc/netns/<ns> directories. It is idempotent, and also runs
 * (synchronously, SIGKILL at once) when the test process exits or is killed by a signal.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The first three octets of the lab's /24: TEST-NET-1. */
const SUBNET = '192.0.2';
const FIRST_HOST = 10;
const NETNS_ETC = '/etc/netns';

/** Where `ip` is, or undefined. */
export function findIp(): string | undefined {
  return findProgram('ip');
}

function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/**
 * Whether namespaces can be made here: root, iproute2, and a probe namespace that can be
 * created and deleted again (a container without CAP_SYS_ADMIN fails that last step).
 */
export function netnsSupport(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `network namespaces need Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root (run the tests as root)' };
  const ip = findIp();
  if (!ip) return { ok: false, reason: '`ip` (iproute2) is not installed: apt-get install -y --no-install-recommends iproute2' };
  const probe = `rvprobe-${process.pid}-${randomBytes(3).toString('hex')}`;
  const add = spawnSync(ip, ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.status !== 0) return { ok: false, reason: `\`ip netns add\` failed: ${(add.stderr || add.error?.message || '').trim()}` };
  spawnSync(ip, ['netns', 'del', probe]);
  return { ok: true };
}

export interface LabHost {
  /** A host name (a compose service name): resolvable from every namespace of the lab. */
  name: string;
  /** The machine the host runs on: hosts of one machine share a bridge, which a trunk joins to the core. */
  machine?: string;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

interface HostState {
  name: string;
  ns: string;
  ip: string;
  /** The switch-side veth end, in the fabric namespace. */
  port: string;
  machine?: string;
}

/** Labs not yet cleaned up; the exit/signal hooks, installed only while there is one, clean these. */
const live = new Set<NetnsLab>();
const onExit = () => {
  for (const lab of [...live]) lab.cleanupSync();
};
const onSignal = (sig: NodeJS.Signals) => {
  onExit();
  // Then die of the signal, as the process would have without the hook.
  unhook();
  process.kill(process.pid, sig);
};
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
function hook(lab: NetnsLab): void {
  if (live.size === 0) {
    process.on('exit', onExit);
    for (const s of SIGNALS) process.on(s, onSignal);
  }
  live.add(lab);
}
function unhook(lab?: NetnsLab): void {
  if (lab) live.delete(lab);
  if (live.size > 0 && lab) return;
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

export class NetnsLab {
  /** Unique per lab: prefixes every namespace (`rv<6 hex>-…`). */
  readonly id = `rv${randomBytes(3).toString('hex')}`;
  readonly fabric = `${this.id}-fabric`;
  private readonly ipCmd: string;
  private readonly setpriv = findProgram('setpriv');
  private readonly hosts = new Map<string, HostState>();
  /** machine -> [machine-side trunk end, core-side trunk end] (both in the fabric namespace). */
  private readonly trunks = new Map<string, [string, string]>();
  private readonly namespaces: string[] = [];
  private readonly etcDirs: string[] = [];
  private createdNetnsEtc = false;
  private readonly children = new Set<ChildProcess>();
  private cleaned = false;
  private cleaning?: Promise<void>;

  constructor() {
    const ip = findIp();
    if (!ip) throw new Error('`ip` (iproute2) is not installed');
    this.ipCmd = ip;
  }

  private ip(...args: string[]): void {
    try {
      execFileSync(this.ipCmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? '').trim() || err.message}`);
    }
  }

  private addNamespace(ns: string): void {
    this.ip('netns', 'add', ns);
    this.namespaces.push(ns);
    this.ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  /**
   * Build the network: the fabric, one namespace per host with its address, and every host's
   * /etc/netns/<ns>/hosts naming every host. On any failure, whatever was made is removed.
   */
  create(hosts: LabHost[]): this {
    if (this.namespaces.length) throw new Error('create() runs once per lab');
    if (hosts.length > 250 - FIRST_HOST) throw new Error('too many hosts for one /24');
    hook(this);
    try {
      this.addNamespace(this.fabric);
      this.ip('-n', this.fabric, 'link', 'add', 'br0', 'type', 'bridge');
      this.ip('-n', this.fabric, 'link', 'set', 'br0', 'up');
      const machines = [...new Set(hosts.flatMap((h) => (h.machine ? [h.machine] : [])))];
      machines.forEach((m, j) => {
        const [tm, tc] = [`tm${j}`, `tc${j}`];
        this.ip('-n', this.fabric, 'link', 'add', `brm${j}`, 'type', 'bridge');
        this.ip('-n', this.fabric, 'link', 'set', `brm${j}`, 'up');
        this.ip('-n', this.fabric, 'link', 'add', tm, 'type', 'veth', 'peer', 'name', tc);
        this.ip('-n', this.fabric, 'link', 'set', tm, 'master', `brm${j}`, 'up');
        this.ip('-n', this.fabric, 'link', 'set', tc, 'master', 'br0', 'up');
        this.trunks.set(m, [tm, tc]);
      });
      hosts.forEach((h, i) => {
        if (this.hosts.has(h.name)) throw new Error(`host ${h.name} twice`);
        if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i.test(h.name)) throw new Error(`host name ${JSON.stringify(h.name)} is not a valid hostname`);
        const ns = `${this.id}-${h.name}`;
        const ip = `${SUBNET}.${FIRST_HOST + i}`;
        const port = `vh${i}`;
        this.addNamespace(ns);
        this.ip('-n', this.fabric, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
        const bridge = h.machine ? `brm${machines.indexOf(h.machine)}` : 'br0';
        this.ip('-n', this.fabric, 'link', 'set', port, 'master', bridge, 'up');
        this.ip('-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
        this.ip('-n', ns, 'link', 'set', 'eth0', 'up');
        this.hosts.set(h.name, { name: h.name, ns, ip, port, ...(h.machine ? { machine: h.machine } : {}) });
      });
      // `ip netns exec` bind-mounts each file of /etc/netns/<ns> over /etc: a complete hosts file.
      if (!existsSync(NETNS_ETC)) {
        try {
          mkdirSync(NETNS_ETC, { mode: 0o755 });
          this.createdNetnsEtc = true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // another lab made it just now
        }
      }
      const table = [
        '127.0.0.1\tlocalhost',
        '::1\tlocalhost ip6-localhost ip6-loopback',
        ...[...this.hosts.values()].map((h) => `${h.ip}\t${h.name}`),
      ];
      for (const h of this.hosts.values()) {
        const dir = join(NETNS_ETC, h.ns);
        mkdirSync(dir, { recursive: true });
        this.etcDirs.push(dir);
        writeFileSync(join(dir, 'hosts'), [...table, `# ${h.name} (namespace ${h.ns}, lab ${this.id})`, ''].join('\n'));
      }
    } catch (e) {
      this.cleanupSync();
      throw e;
    }
    return this;
  }

  private host(name: string): HostState {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in lab ${this.id}`);
    return h;
  }

  /** The namespace of a host. */
  nsOf(host: string): string {
    return this.host(host).ns;
  }

  /** The address of a host. */
  addressOf(host: string): string {
    return this.host(host).ip;
  }

  /** Every namespace this lab made (the fabric's included). */
  get namespaceNames(): string[] {
    return [...this.namespaces];
  }

  /**
   * Start `file args…` in a host's namespace with exactly `env` (nothing inherited). stdout and
   * stderr are pipes. The pid is the program's own (`ip netns exec` execs it).
   */
  exec(host: string, file: string, args: string[], opts: ExecOptions = {}): ChildProcess {
    if (this.cleaned || this.cleaning) throw new Error(`lab ${this.id} is cleaned up`);
    const guard = this.setpriv ? [this.setpriv, '--pdeathsig', 'KILL', '--'] : [];
    const child = spawn(this.ipCmd, ['netns', 'exec', this.host(host).ns, ...guard, file, ...args], {
      env: opts.env ?? {},
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    // A spawn failure (no such file) is reported by 'exit' with a code; keep 'error' from throwing.
    child.once('error', () => this.children.delete(child));
    return child;
  }

  /** Run to completion (bounded: killed by pid after timeoutMs), collecting the output. */
  run(host: string, file: string, args: string[], opts: ExecOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
    const child = this.exec(host, file, args, opts);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      killPid(child, 'SIGKILL');
    }, opts.timeoutMs ?? 10_000);
    return new Promise((resolve) => {
      child.once('error', (e) => {
        clearTimeout(timer);
        resolve({ code: null, signal: null, stdout, stderr: stderr + e.message, timedOut });
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, timedOut });
      });
    });
  }

  /** The fabric-side interface that cuts `target` off when down. */
  private linkOf(target: { host: string } | { machine: string }): string {
    if ('host' in target) return this.host(target.host).port;
    const t = this.trunks.get(target.machine);
    if (!t) throw new Error(`no machine ${target.machine} in lab ${this.id}`);
    return t[0];
  }

  /**
   * Take a link down: a host's veth (its eth0 loses carrier) or a machine's trunk (the machine's
   * hosts keep reaching each other, and nothing else). Frames are dropped, not refused: peers
   * across the cut see silence, as with a cable pulled.
   */
  linkDown(target: { host: string } | { machine: string }): void {
    this.ip('-n', this.fabric, 'link', 'set', this.linkOf(target), 'down');
  }

  linkUp(target: { host: string } | { machine: string }): void {
    this.ip('-n', this.fabric, 'link', 'set', this.linkOf(target), 'up');
  }

  /** Whether a link is administratively up. */
  linkIsUp(target: { host: string } | { machine: string }): boolean {
    const out = execFileSync(this.ipCmd, ['-n', this.fabric, '-o', 'link', 'show', this.linkOf(target)], { encoding: 'utf8' });
    return /<[^>]*\bUP\b[^>]*>/.test(out);
  }

  /** Processes started by exec()/run() that have not exited. */
  get running(): ChildProcess[] {
    return [...this.children].filter((c) => c.exitCode === null && c.signalCode === null);
  }

  /**
   * Stop every process (SIGTERM, SIGKILL after graceMs, each by its pid), then delete the
   * namespaces, veths, bridges and /etc/netns entries. Idempotent; safe after a partial create().
   */
  cleanup(graceMs = 3_000): Promise<void> {
    if (this.cleaned) return Promise.resolve();
    this.cleaning ??= (async () => {
      const procs = this.running;
      for (const c of procs) killPid(c, 'SIGTERM');
      await Promise.all(procs.map((c) => exited(c, graceMs)));
      for (const c of this.running) killPid(c, 'SIGKILL');
      await Promise.all(this.running.map((c) => exited(c, 2_000)));
      this.cleanupSync();
    })();
    return this.cleaning;
  }

  /** cleanup() without waiting: SIGKILL now, then remove everything. For exit hooks. */
  cleanupSync(): void {
    if (this.cleaned) return;
    for (const c of this.running) killPid(c, 'SIGKILL');
    const errors: string[] = [];
    // Host namespaces first, the fabric last: deleting a namespace destroys the veths in it
    // (and so their peers in the fabric), and deleting the fabric destroys the bridges.
    for (const ns of [...this.namespaces].reverse()) {
      const r = spawnSync(this.ipCmd, ['netns', 'del', ns], { encoding: 'utf8' });
      if (r.status !== 0 && !/No such file/.test(r.stderr ?? '')) errors.push(`ip netns del ${ns}: ${(r.stderr ?? '').trim()}`);
    }
    this.namespaces.length = 0;
    for (const d of this.etcDirs.splice(0)) rmSync(d, { recursive: true, force: true });
    if (this.createdNetnsEtc) {
      try {
        rmdirSync(NETNS_ETC); // only if empty: another lab may be using it
      } catch {
        /* not empty */
      }
      this.createdNetnsEtc = false;
    }
    this.cleaned = true;
    unhook(this);
    if (errors.length) process.stderr.write(`netns lab ${this.id} cleanup: ${errors.join('; ')}\n`);
  }
}

/** Signal one child by its pid, unless it already exited (its pid may belong to another process by now). */
function killPid(c: ChildProcess, sig: NodeJS.Signals): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(c.pid, sig);
  } catch {
    /* gone */
  }
}

function exited(c: ChildProcess, ms: number): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    c.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
