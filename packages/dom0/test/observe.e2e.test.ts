/**
 * Watching a running cluster, end to end, as a user does: `ringvisor up` in its own process
 * (the default host, whatever guests its config holds), then the view commands in their own
 * processes against its control endpoint — list, top, rings (STUCK while a backend is paused,
 * BUSY after), trace as JSON Lines, trace --pcap read back by tshark, /metrics, and every way
 * to be refused. Emulated devices in detail: observe-emulation.e2e.test.ts.
 * Every process started here is killed by pid when the tests end, pass or fail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { deriveReadToken, parseSecret, signAdminRequest } from '@ringvisor/shared';
import { defaultConfig } from '../src/toolstack/config.js';
import type { ClusterSnapshot, RingRow } from '../src/observe/model.js';
import { until } from './support/cli.js';
import { toolForTests, tsharkRead } from './support/tools.js';

const ROOT = resolve(import.meta.dirname, '../../..');
const CLI = join(ROOT, 'bin/ringvisor.mjs');
const haveTshark = toolForTests('tshark', 'tshark');

let cwd: string;
let cluster: ChildProcess;
let url: string;
let token: string;
let secret: Uint8Array;
const clusterOut: string[] = [];

function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const kill = setTimeout(() => child.pid && child.exitCode === null && process.kill(child.pid, 'SIGKILL'), timeoutMs);
  return new Promise((r) =>
    child.on('exit', (code) => {
      clearTimeout(kill);
      r({ code, stdout, stderr });
    }),
  );
}

async function snapshot(): Promise<ClusterSnapshot> {
  const r = await cli(['top', '-b', '-n', '1', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as ClusterSnapshot;
}

async function getSnapshotHttp(): Promise<ClusterSnapshot> {
  const res = await fetch(`${url}/api/snapshot`, { headers: { authorization: `Bearer ${token}` } });
  return (await res.json()) as ClusterSnapshot;
}

async function ringsJson(): Promise<RingRow[]> {
  const r = await cli(['rings', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as RingRow[];
}


beforeAll(async () => {
  cwd = mkdtempSync(join(tmpdir(), 'rv-observe-'));
  // The cluster lives until afterAll stops it: a fixed lifetime ran out before the last tests on a
  // loaded machine. The long duration is only a backstop should the test process itself vanish.
  cluster = spawn(process.execPath, [CLI, 'up', '--duration', '3600', '--observe', '127.0.0.1:0'], {
    cwd,
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cluster.stderr!.on('data', (d) => clusterOut.push(String(d)));
  const line = await new Promise<string>((res, rej) => {
    let buf = '';
    const t = setTimeout(() => rej(new Error(`cluster did not print its dashboard URL: ${buf}${clusterOut.join('')}`)), 45_000);
    cluster.stdout!.on('data', (d) => {
      buf += d;
      const m = /ringvisor: dashboard (\S+)/.exec(buf);
      if (m) {
        clearTimeout(t);
        res(m[1]);
      }
    });
    cluster.once('exit', (code) => rej(new Error(`cluster exited (${code}): ${clusterOut.join('')}`)));
  });
  const u = new URL(line);
  url = u.origin;
  token = u.searchParams.get('token')!;
  secret = parseSecret(readFileSync(join(cwd, '.ringvisor/secret'), 'utf8'), 'secret file');
}, 60_000);

afterAll(async () => {
  if (cluster?.pid && cluster.exitCode === null) {
    const exited = new Promise((r) => cluster.once('exit', r));
    process.kill(cluster.pid, 'SIGINT');
    const t = setTimeout(() => cluster.exitCode === null && process.kill(cluster.pid!, 'SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }
  rmSync(cwd, { recursive: true, force: true });
}, 40_000);

describe('views of a running cluster', () => {
  it('the printed URL carries the read token the cluster secret derives (ringvisor token prints it)', async () => {
    expect(token).toBe(deriveReadToken(secret));
    const r = await cli(['token']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(token);
  });

  it('ringvisor list shows every domain with its id, memory and state', async () => {
    const r = await cli(['list']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^Name\s+ID\s+Mem\(MiB\)\s+VCPUs\s+State\s+Time\(s\)/);
    expect(lines[1]).toMatch(/^Domain-0\s+0\s+\d+\s+1\s+running/);
    for (const [i, g] of defaultConfig().hosts[0].guests.entries()) {
      const row = lines.find((l) => l.startsWith(g.name + ' '));
      expect(row, r.stdout).toBeDefined();
      expect(row!.split(/\s+/).slice(0, 5)).toEqual([g.name, String(i + 1), String(g.memoryMiB), '1', 'running']);
    }
  });

  it('ringvisor top -b -n 2 prints two iterations with live rates', async () => {
    const r = await cli(['top', '-b', '-n', '2', '-d', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.match(/^ringvisor top — /gm)).toHaveLength(2);
    const s = await until('non-zero rates', async () => {
      const x = await snapshot();
      return x.rings.some((g) => g.requestsPerSec > 0) && x.domains.every((d) => d.domid === 0 || d.vbdReads + d.vbdWrites > 0) ? x : undefined;
    });
    const guests = defaultConfig().hosts[0].guests;
    expect(s.domains.map((d) => d.name).sort()).toEqual(['Domain-0', ...guests.map((g) => g.name)].sort());
    for (const d of s.domains.filter((x) => x.domid > 0)) {
      // A PV guest's figures come from its backends, an emulated guest's from its device models.
      expect(d.netTxPackets).toBeGreaterThan(0);
      const g = guests.find((x) => x.name === d.name)!;
      expect(d.devices.map((x) => x.mode).sort(), d.name).toEqual(g.devices.map((x) => x.mode).sort());
    }
    expect(s.hosts[0].grantMaps).toBeGreaterThan(0);
  });

  it('ringvisor rings: a ring whose backend is paused is STUCK, and BUSY again once it resumes', async () => {
    const id = 'host0/guest1/vbd51712/blk';
    const before = (await ringsJson()).find((r) => r.id === id);
    expect(before?.verdict).toBe('BUSY');
    const p = await cli(['backend', 'pause', 'guest1', 'vbd51712']);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toContain('backend paused');
    try {
      const stuck = await until('STUCK', async () => (await ringsJson()).find((r) => r.id === id && r.verdict === 'STUCK'));
      expect(stuck.stuck).toBe('requests');
      expect(stuck.paused).toBe(true);
      expect(stuck.pendingRequests).toBeGreaterThan(0);
      // Nobody else is affected: every other ring keeps moving.
      const others = (await ringsJson()).filter((r) => r.id !== id);
      expect(others.every((r) => r.verdict !== 'STUCK'), JSON.stringify(others)).toBe(true);
      const text = await cli(['rings']);
      expect(text.stdout).toMatch(new RegExp(`${id}.*STUCK \\(requests\\) paused`));
    } finally {
      const r = await cli(['backend', 'resume', 'guest1', 'vbd51712']);
      expect(r.code, r.stderr).toBe(0);
    }
    const busy = await until('BUSY', async () => (await ringsJson()).find((r) => r.id === id && r.verdict === 'BUSY' && !r.paused));
    expect(busy.requestsPerSec).toBeGreaterThan(0);
  });

  it('ringvisor direct: the direct guest\'s functions, reclaimed (VFIO order) and assigned again by an admin, and the IOMMU\'s fault records', async () => {
    type Row = { domain: string; name: string; rid?: string; backendState: string; events: number; interrupts?: number };
    const rows = async () => JSON.parse((await cli(['direct', 'list', '--json'])).stdout) as Row[];
    const first = await until('direct devices enabled', async () => {
      const r = await rows();
      return r.length === 2 && r.every((x) => x.backendState === 'enabled' && x.events > 0) ? r : undefined;
    });
    expect(first.map((r) => [r.domain, r.name]).sort()).toEqual([
      ['guest5', 'vbd51712'],
      ['guest5', 'vif0'],
    ]);
    expect(first.find((r) => r.name === 'vif0')!.rid).toMatch(/^00:03\.\d$/);
    expect(first.find((r) => r.name === 'vbd51712')!.rid).toMatch(/^00:04\.\d$/);
    const text = await cli(['direct', 'list']);
    expect(text.stdout).toMatch(/^HOST\s+DOMAIN\s+DEVICE\s+RID\s+STATE/);
    const reclaim = await cli(['direct', 'reclaim', 'guest5', 'vif0']);
    expect(reclaim.code, reclaim.stderr).toBe(0);
    expect(reclaim.stdout).toMatch(/function 00:03\.\d reclaimed \(bus-master-off, flr, context-cleared, released\)/);
    await until('vif0 reclaimed in the views', async () => ((await rows()).find((r) => r.name === 'vif0')?.backendState === 'reclaimed' ? true : undefined));
    const again = await cli(['direct', 'reclaim', 'guest5', 'vif0']);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/has no assigned function vif0/);
    const assign = await cli(['direct', 'assign', 'guest5', 'vif0']);
    expect(assign.code, assign.stderr).toBe(0);
    expect(assign.stdout).toMatch(/function 00:03\.\d assigned/);
    await until('vif0 enabled again', async () => ((await rows()).find((r) => r.name === 'vif0')?.backendState === 'enabled' ? true : undefined));
    const faults = await cli(['direct', 'faults', '--json']);
    expect(faults.code, faults.stderr).toBe(0);
    const hosts = JSON.parse(faults.stdout) as Array<{ host: string; faults: unknown[] }>;
    expect(hosts.map((h) => h.host)).toEqual(['host0']);
    expect(Array.isArray(hosts[0].faults)).toBe(true);
    const bad = await cli(['direct', 'reclaim', 'guest5']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/usage: ringvisor direct list \| faults \| reclaim\|assign DOMAIN DEVICE/);
  });

  it('ringvisor trace streams JSON Lines filtered at the source, ring entries decoded', async () => {
    const r = await cli(['trace', '--kind', 'ring.push', '--domain', 'guest2', '--ring', 'blk', '--count', '40']);
    expect(r.code, r.stderr).toBe(0);
    // A decoded blkif entry as a JSON line carries it (u64s as decimal strings).
    type Entry = { index: number; id: string; operation: number; nrSegments: number; handle: number; sectorNumber: string; status: number };
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown> & { entries: Entry[] });
    expect(events).toHaveLength(40);
    for (const e of events) {
      // Both ends of guest2's blk ring: the frontend pushes requests, the backend responses.
      expect(e).toMatchObject({ kind: 'ring.push', host: 'host0', domid: 2, device: 'vbd51712', ring: 'blk' });
      expect(e.side === 'front' ? 'req' : 'rsp').toBe(e.half);
      const n = ((e.after as number) - (e.before as number)) >>> 0;
      expect(e.entries).toHaveLength(Math.min(n, 32));
      for (const x of e.entries) {
        // u64 fields leave the process as exact decimal strings (JSON has no bigint).
        expect(x.id).toMatch(/^\d+$/);
        expect(BigInt(x.id)).toBeLessThan(2n ** 64n);
        // A response carries a BLKIF status; a request an operation, its sector and segments.
        if (e.half === 'rsp') expect([0, -1, -2]).toContain(x.status);
        else {
          // Decoded from the slots just before the frontend published them (after it, the
          // backend may already have put a response in the same slot): what blkfront sends.
          expect([0, 1, 3]).toContain(x.operation); // READ, WRITE, FLUSH
          expect(x.nrSegments).toBeGreaterThanOrEqual(x.operation === 3 ? 0 : 1);
          expect(x.nrSegments).toBeLessThanOrEqual(11);
          expect(x.handle).toBe(51712);
          expect(x.sectorNumber).toMatch(/^\d+$/);
          expect(BigInt(x.sectorNumber)).toBeLessThan(2n ** 32n); // within guest2's vbd
        }
      }
      expect(e.entries[e.entries.length - 1].index).toBe(((e.after as number) - 1) >>> 0);
    }
    // Unfiltered, the stream carries every layer: dom0's backends and grant ops, and — forwarded
    // over their control links while a stream is open — the guests' frontends and the device's DMA.
    const all = await cli(['trace', '--duration', '2']);
    expect(all.code, all.stderr).toBe(0);
    const evs = all.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; side?: string; domid: number });
    const kinds = new Set(evs.map((e) => e.kind));
    for (const k of ['ring.push', 'ring.consume', 'grant.map', 'grant.unmap', 'grant.copy', 'evtchn.send', 'evtchn.deliver', 'dma']) expect(kinds).toContain(k);
    expect(evs.some((e) => e.kind === 'ring.push' && e.side === 'front' && e.domid > 0)).toBe(true);
    expect(evs.some((e) => e.kind === 'ring.push' && e.side === 'back')).toBe(true);
  });

  it.skipIf(!haveTshark)('ringvisor trace --pcap writes every NIC as its own pcapng interface; tshark reads it with no malformed packets and the expected UDP flows', async () => {
    const file = join(cwd, 'trace.pcapng');
    const r = await cli(['trace', '--pcap', file, '--duration', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/captured \d+ frames on \d+ interfaces/);
    const { rows, malformed } = tsharkRead(file);
    expect(malformed).toBe(0);
    const guests = defaultConfig().hosts[0].guests;
    for (const g of guests) {
      const vif = g.devices.find((d) => d.type === 'vif')!;
      if (vif.type !== 'vif') throw new Error('no vif');
      // An emulated NIC is captured at its model in dom0, as `<guest>/lance<devid>`.
      const mine = rows.filter((x) => x.iface === `${g.name}/${vif.mode === 'emulated' ? 'lance' : 'vif'}${vif.devid}`);
      expect(mine.length, `${g.name}: ${rows.length} rows`).toBeGreaterThan(0);
      // Every UDP frame on a guest's vif is to or from that guest; it sends to and is echoed by each peer.
      const udp = mine.filter((x) => x.sport > 0);
      expect(udp.every((x) => x.src === vif.ip || x.dst === vif.ip)).toBe(true);
      const peers = guests.filter((p) => p !== g).map((p) => (p.devices.find((d) => d.type === 'vif') as { ip: string }).ip);
      for (const ip of peers) {
        expect(udp.some((x) => x.src === vif.ip && x.dst === ip)).toBe(true);
        expect(udp.some((x) => x.src === ip && x.dst === vif.ip)).toBe(true);
      }
    }
  });

  it('/metrics serves Prometheus text with the same counters', async () => {
    const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const body = await res.text();
    const value = (re: RegExp) => Number(re.exec(body)?.[1]);
    expect(body).toContain('# TYPE ringvisor_ring_requests_total counter');
    expect(value(/^ringvisor_ring_requests_total\{host="host0",domain="guest3",device="vbd51712",ring="blk",mode="pv"\} (\d+)$/m)).toBeGreaterThan(0);
    expect(value(/^ringvisor_vif_tx_packets_total\{host="host0",domain="guest1"\} (\d+)$/m)).toBeGreaterThan(0);
    expect(value(/^ringvisor_notifications_suppressed_total\{host="host0",domain="guest2",device="vif0",mode="pv"\} (\d+)$/m)).toBeGreaterThanOrEqual(0);
    expect(value(/^ringvisor_runtime_up\{host="host0",runtime="host0\/hwsim",role="hwsim"\} (\d)$/m)).toBe(1);
  });

  it('refuses reads without the read token and actions without the admin secret, changing nothing', async () => {
    for (const path of ['/api/snapshot', '/metrics', '/api/ring?id=x', '/']) {
      expect((await fetch(url + path)).status).toBe(401);
      expect((await fetch(url + path, { headers: { authorization: 'Bearer ' + 'ab'.repeat(32) } })).status).toBe(401);
    }
    const body = JSON.stringify({ domain: 'guest3', device: 'vif0' });
    const post = (signed?: Record<string, string>) =>
      fetch(`${url}/api/backend/pause`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...signed }, body });
    expect((await post()).status).toBe(403);
    expect((await post(signAdminRequest(new Uint8Array(randomBytes(32)), 'POST', '/api/backend/pause', body))).status).toBe(403);
    expect((await post(signAdminRequest(secret, 'POST', '/api/backend/resume', body))).status).toBe(403); // signed for another action
    expect((await post(signAdminRequest(secret, 'POST', '/api/backend/pause', body, Date.now() - 3_600_000))).status).toBe(403); // stale
    // A signature is good once: the same signed request again is refused as replayed.
    const once = signAdminRequest(secret, 'POST', '/api/backend/pause', JSON.stringify({ domain: 'nobody', device: 'vif0' }));
    const replay = () => fetch(`${url}/api/backend/pause`, { method: 'POST', headers: { 'content-type': 'application/json', ...once }, body: JSON.stringify({ domain: 'nobody', device: 'vif0' }) });
    expect((await replay()).status).toBe(404); // accepted, no such backend: nothing changes
    const again = await replay();
    expect(again.status).toBe(403);
    expect(await again.text()).toMatch(/replayed/);
    const ring = (await ringsJson()).find((r) => r.id === 'host0/guest3/vif0/tx');
    expect(ring?.paused).toBe(false);
    // A reader holding only the read token cannot act; the CLI says what it needs.
    const r = await cli(['backend', 'pause', 'guest3', 'vif0'], { RINGVISOR_READ_TOKEN: token, RINGVISOR_DIR: join(cwd, 'elsewhere'), RINGVISOR_CONTROL_URL: url });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/needs the cluster secret/);
    const denied = await new Promise<number>((res) => {
      const ws = new WebSocket(`${url.replace('http', 'ws')}/api/live`);
      ws.on('unexpected-response', (_q, resp) => res(resp.statusCode ?? 0));
      ws.on('open', () => res(101));
      ws.on('error', () => {});
    });
    expect(denied).toBe(401);
  });

  it('a viewer that misbehaves is disconnected with a reason; other viewers keep their stream', async () => {
    const open = () => new WebSocket(`${url.replace('http', 'ws')}/api/live`, { headers: { authorization: `Bearer ${token}` } });
    const good = open();
    const bad = open();
    const closed = new Promise<{ code: number; reason: string }>((r) => bad.on('close', (code, reason) => r({ code, reason: String(reason) })));
    await new Promise((r) => bad.once('open', r));
    bad.send('{"type":"subscribe", "all": true}');
    expect(await closed).toEqual({ code: 1008, reason: 'this endpoint takes no messages' });
    let snapshots = 0;
    good.on('message', () => snapshots++);
    await until('snapshots for the good viewer', async () => (snapshots >= 2 ? true : undefined), 10_000);
    good.close();
    const r = await cli(['trace', '--kind', 'nonsense']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown event kind.*ring\.push/);
  });

  it('ringvisor fault and chaos --attach act on the running cluster through its control endpoint', async () => {
    const inj = await cli(['fault', 'inject', '{"id":"wedge","who":{"domain":"guest3","device":"vbd51712"},"what":{"kind":"backend.pause"}}']);
    expect(inj.code, inj.stderr).toBe(0);
    const listed = await cli(['fault', 'list']);
    expect(listed.stdout).toMatch(/wedge#0@\d+\s+backend\.pause\s+host0/);
    await until('guest3 STUCK', async () => (await ringsJson()).find((r) => r.id === 'host0/guest3/vbd51712/blk' && r.verdict === 'STUCK'));
    const healed = await cli(['fault', 'heal']);
    expect(healed.stdout).toMatch(/healed 1 fault/);
    // The fault is in the same history as the I/O: the timeline carries its inject and heal.
    const tl = (await getSnapshotHttp()).timeline.filter((e) => e.kind === 'fault');
    expect(tl.length).toBeGreaterThanOrEqual(2);
    const plan = join(cwd, 'attach.yaml');
    writeFileSync(
      plan,
      `name: attached
duration: 3
settle: 3
faults:
  - { id: lost, who: { domain: guest1 }, what: { kind: evtchn.lost, probability: 0.9 }, when: { at: 0.5, for: 1 } }
  - { id: junk, who: { domain: guest2, device: vbd51712 }, what: { kind: ring.garbage, count: 8 }, when: { at: 1.5 } }
`,
    );
    const r = await cli(['chaos', '--plan', plan, '--attach', url, '--json', join(cwd, 'attach.json')], {}, 60_000);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rep = JSON.parse(readFileSync(join(cwd, 'attach.json'), 'utf8')) as { verdict: string; mode: string; faults: Array<{ id: string; key?: string }>; livenessMs: number | null };
    expect(rep).toMatchObject({ verdict: 'pass', mode: 'attached' });
    expect(rep.faults.map((f) => [f.id, typeof f.key])).toEqual([
      ['lost', 'string'],
      ['junk', 'string'],
    ]);
    expect(rep.livenessMs).not.toBeNull();
    // Without the cluster secret nothing is injected.
    const denied = await cli(['fault', 'list'], { RINGVISOR_READ_TOKEN: token, RINGVISOR_DIR: join(cwd, 'elsewhere'), RINGVISOR_CONTROL_URL: url });
    expect(denied.code).toBe(2);
  }, 90_000);

  it('ringvisor views say what to do when no cluster is running', async () => {
    const r = await cli(['list'], { RINGVISOR_DIR: join(cwd, 'nothing-here') });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no running cluster found .*ringvisor up/);
    const s = await cli(['top', '-n', 'x', '--url', url]);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/-n must be a positive whole number/);
  });
});
