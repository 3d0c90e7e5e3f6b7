/**
 * End to end, as a user runs it: the real CLI in its own process (`bin/ringvisor.mjs up`), the
 * default five-guest host, real worker threads, a real disk image. The child is always killed
 * by pid when a test ends, pass or fail.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfigFile } from '../src/toolstack/config.js';
import { toolForTests, tsharkRead } from './support/tools.js';
import { deriveDomainKey, formatDomainKey, parseSecret } from '@ringvisor/shared';
import { ROOT, cleanUp, freePort, runCli, tempDir, until } from './support/cli.js';

const haveTshark = toolForTests('tshark', 'tshark');

afterEach(cleanUp);

const run = runCli;

/** Live descendants of `pid` (Linux /proc), with their argv. */
function childProcesses(pid: number): Array<{ pid: number; argv: string[] }> {
  const out: Array<{ pid: number; argv: string[] }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push({ pid: Number(entry), argv: readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0') });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** A process's environment as the kernel holds it (/proc/PID/environ), or undefined if it is gone. */
function environOf(pid: number): Record<string, string> | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
    return Object.fromEntries(raw.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  } catch {
    return undefined;
  }
}

interface Summary {
  transport: string;
  guests: Array<{ name: string; host: string; ops: number; bytes: number; errors: number; state: string; udp: { sent: number; echoed: number; lost: number }; devices: Array<{ type: string; mode: string; ops: number; bytes: number; errors: number }> }>;
  integrity: { checked: number; failures: number };
}

describe('ringvisor up', () => {
  it('runs the default host for a fixed time: every guest does block and network I/O (three PV, one emulated, one direct), no integrity failures', async () => {
    const cwd = tempDir();
    const { done } = run(['up', '--duration', '4', '--json', 'out.json'], cwd);
    const { code, stderr } = await done;
    expect(code, stderr).toBe(0);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary;
    expect(s.transport).toBe('threads');
    expect(s.guests.map((g) => g.name).sort()).toEqual(['guest1', 'guest2', 'guest3', 'guest4', 'guest5']);
    const modeOf = (name: string) => (name === 'guest4' ? 'emulated' : name === 'guest5' ? 'direct' : 'pv');
    for (const g of s.guests) {
      expect(g.state).toBe('stopped');
      const vbd = g.devices.find((d) => d.type === 'vbd')!;
      const vif = g.devices.find((d) => d.type === 'vif')!;
      expect(vbd.mode).toBe(modeOf(g.name));
      expect(vif.mode).toBe(modeOf(g.name));
      expect(vbd.ops).toBeGreaterThan(0);
      expect(vbd.bytes).toBeGreaterThan(0);
      expect(vif.ops).toBeGreaterThan(0);
      expect(g.errors).toBe(0);
    }
    expect(s.integrity.checked).toBeGreaterThan(0);
    expect(s.integrity.failures).toBe(0);
  }, 120_000);

  it('runs two hosts over ws: every guest its own process, UDP across hosts through the switch, same checks, no process left behind', async () => {
    const cwd = tempDir();
    const config = join(ROOT, 'examples/two-hosts.yaml');
    // RINGVISOR_SECRET (and a read token) exported in the operator's shell must not reach guests either.
    const exported = { RINGVISOR_SECRET: randomBytes(32).toString('hex'), RINGVISOR_READ_TOKEN: 'exported-token' };
    const up = run(['up', '--transport', 'ws', '--config', config, '--duration', '4', '--json', 'out.json', '--pcap', 'run.pcapng'], cwd, exported);
    // While it runs: each guest process's environment holds its own domain key and no cluster credential.
    const guestEnvs = await until('three guest processes', async () => {
      const envs = childProcesses(up.child.pid!).filter((p) => p.argv.includes('domu')).map((p) => ({ ...p, env: environOf(p.pid) }));
      return envs.length === 3 && envs.every((p) => p.env !== undefined) ? envs : undefined;
    }, 60_000);
    const { code, stderr, stdout } = await up.done;
    expect(code, stderr).toBe(0);
    const secret = parseSecret(readFileSync(join(cwd, '.ringvisor/secret'), 'utf8'), 'secret');
    const hostNames = loadConfigFile(config).hosts.map((h) => h.name);
    const keys = new Set<string>();
    for (const g of guestEnvs) {
      const env = g.env!;
      expect(Object.keys(env).filter((k) => /SECRET|TOKEN/.test(k)), `guest ${g.pid}`).toEqual([]);
      const domid = Number(g.argv[g.argv.indexOf('--id') + 1]);
      expect(hostNames.map((h) => formatDomainKey(deriveDomainKey(secret, h, domid)))).toContain(env.RINGVISOR_DOMAIN_KEY);
      keys.add(env.RINGVISOR_DOMAIN_KEY!);
    }
    expect(keys.size, 'one key per guest').toBe(3);
    expect(stdout).toMatch(/captured \d+ frames on \d+ interfaces to run\.pcapng/);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary & {
      guests: Array<{ pid?: number; udp: { sent: number; echoed: number; lost: number } }>;
      dom0: Record<string, { nic: { txFrames: number; rxFrames: number } }>;
    };
    expect(s.transport).toBe('ws');
    expect(s.guests.map((g) => `${g.host}/${g.name}`).sort()).toEqual(['hostA/a1', 'hostA/a2', 'hostB/b1']);
    // Cross-host datagrams left one host's physical NIC and arrived at the other's.
    expect(s.dom0.hostA.nic.txFrames).toBeGreaterThan(0);
    expect(s.dom0.hostB.nic.rxFrames).toBeGreaterThan(0);
    expect(s.dom0.hostB.nic.txFrames).toBeGreaterThan(0);
    expect(s.dom0.hostA.nic.rxFrames).toBeGreaterThan(0);
    if (haveTshark) {
      // up --pcap: every vif and both physical NICs, each its own interface; tshark reads it
      // cleanly, and a cross-host flow shows on the sender's vif, both physical NICs and the
      // receiver's vif.
      const cfg = loadConfigFile(config);
      const ip = new Map(cfg.hosts.flatMap((h) => h.guests.map((g) => [g.name, (g.devices.find((d) => d.type === 'vif') as { ip: string }).ip] as const)));
      const { rows, malformed } = tsharkRead(join(cwd, 'run.pcapng'));
      expect(malformed).toBe(0);
      expect(new Set(rows.map((r) => r.iface))).toEqual(new Set(['a1/vif0', 'a2/vif0', 'b1/vif0', 'hostA/peth0', 'hostB/peth0']));
      for (const iface of ['a1/vif0', 'hostA/peth0', 'hostB/peth0', 'b1/vif0'])
        expect(rows.some((r) => r.iface === iface && r.src === ip.get('a1') && r.dst === ip.get('b1') && r.sport > 0), iface).toBe(true);
    }
    // b1 streams to a1 and a2, both on the other host: every datagram echoed back.
    const b1 = s.guests.find((g) => g.name === 'b1')!;
    expect(b1.udp.echoed).toBeGreaterThan(0);
    expect(b1.udp.lost).toBe(0);
    for (const g of s.guests) {
      expect(g.state).toBe('stopped');
      expect(g.devices.find((d) => d.type === 'vbd')!.ops).toBeGreaterThan(0);
      expect(g.devices.find((d) => d.type === 'vif')!.ops).toBeGreaterThan(0);
      expect(g.errors).toBe(0);
      // The guest ran in its own process, and that process is gone.
      expect(g.pid).toBeGreaterThan(0);
      expect(() => process.kill(g.pid!, 0)).toThrow(/ESRCH/);
    }
    expect(s.integrity.checked).toBeGreaterThan(0);
    expect(s.integrity.failures).toBe(0);
    // The generated cluster secret is readable by its owner only.
    expect(statSync(join(cwd, '.ringvisor/secret')).mode & 0o077).toBe(0);
  }, 120_000);

  it('runs dom0 as a service that guests started elsewhere join; health answers; a second claim of a domain id is refused', async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, 'host.yaml'), 'hosts:\n  - name: a\n    guests:\n      - name: g1\n      - name: g2\n');
    const env = { RINGVISOR_SECRET: randomBytes(32).toString('hex') };
    const port = await freePort();
    const url = `ws://127.0.0.1:${port}`;
    const dom0 = run(['dom0', '--config', 'host.yaml', '--listen', `127.0.0.1:${port}`, '--duration', '6', '--json', 'out.json'], cwd, env);
    let h = { code: 1 as number | null, stdout: '' };
    for (let i = 0; i < 50 && h.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      h = await run(['health', '--url', url], cwd, env).done;
    }
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/ok a: 0\/2 guests ready/);
    // The hardware simulator is its own process too, and joins the same way.
    const hw = run(['hwsim', '--dom0', url, '--disk', join(cwd, 'disk.img')], cwd, env);
    // A guest gets only its domain key, derived where the secret is (`ringvisor key`), never the secret.
    const keyOf = async (id: number) => {
      const k = await run(['key', '--host', 'a', '--domain', String(id)], cwd, env).done;
      expect(k.code, k.stderr).toBe(0);
      return k.stdout.trim();
    };
    const g1 = run(['domu', '--id', '1', '--dom0', url], cwd, { RINGVISOR_DOMAIN_KEY: await keyOf(1) });
    const g2 = run(['domu', '--id', '2', '--dom0', url], cwd, { RINGVISOR_DOMAIN_KEY: await keyOf(2) });
    // With a wrong key (here: another domain's), or holding the cluster secret, a guest is turned away.
    const wrong = await run(['domu', '--id', '3', '--dom0', url], cwd, { RINGVISOR_DOMAIN_KEY: await keyOf(2) }).done;
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/authentication failed/);
    const leaked = await run(['domu', '--id', '3', '--dom0', url], cwd, { ...env, RINGVISOR_DOMAIN_KEY: await keyOf(3) }).done;
    expect(leaked.code).toBe(2);
    expect(leaked.stderr).toMatch(/a guest must never hold the cluster secret/);
    const d = await Promise.race([dom0.done, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('dom0 did not finish')), 60_000))]).catch(async (e) => {
      cleanUp();
      const outs = await Promise.all([dom0.done, hw.done, g1.done, g2.done]);
      throw new Error(`${(e as Error).message}\n${outs.map((o) => o.stderr.slice(-1500)).join('\n----\n')}`);
    });
    expect(d.code, d.stderr).toBe(0);
    expect((await g1.done).code).toBe(0);
    expect((await g2.done).code).toBe(0);
    expect((await hw.done).code).toBe(0);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary;
    expect(s.guests.map((g) => g.state)).toEqual(['stopped', 'stopped']);
    expect(s.guests.every((g) => g.ops > 0)).toBe(true);
    expect(s.integrity.failures).toBe(0);
  }, 120_000);

  it('shuts down cleanly on SIGINT: frontends close, the summary is written, exit 0', async () => {
    const cwd = tempDir();
    const { child, done } = run(['up', '--json', 'out.json'], cwd);
    let out = '';
    await new Promise<void>((r, rej) => {
      const t = setTimeout(() => rej(new Error('cluster did not come up')), 60_000);
      child.stdout!.on('data', (d) => {
        out += d;
        if (/guest3/.test(out)) {
          clearTimeout(t);
          r();
        }
      });
    });
    process.kill(child.pid!, 'SIGINT');
    const { code, stderr } = await done;
    expect(code, stderr).toBe(0);
    const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary;
    expect(s.guests.every((g) => g.state === 'stopped')).toBe(true);
    expect(s.integrity.failures).toBe(0);
  }, 120_000);

  it('reports config mistakes with the path and exits 2', async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, 'bad.yaml'), 'hosts:\n  - guests:\n      - name: a\n        memoryMB: 32\n');
    const { code, stderr } = await run(['up', '--config', 'bad.yaml'], cwd).done;
    expect(code).toBe(2);
    expect(stderr).toMatch(/\/hosts\/0\/guests\/0: unknown key "memoryMB"/);
    const r2 = await run(['up', '--duration', 'soon'], cwd).done;
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/--duration must be a positive number/);
    const r3 = await run(['frobnicate'], cwd).done;
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/unknown command "frobnicate"/);
  }, 60_000);
});
