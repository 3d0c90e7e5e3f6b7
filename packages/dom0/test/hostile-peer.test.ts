/**
 * A hostile guest *process* over the ws transport: it holds its own domain key, as every guest
 * does — which dom0 refuses for any identity but that domain's (control, hardware, another
 * guest) — authenticates as its own domain, then abuses the domain link and the hypercalls —
 * writing another domain's pages, forging grants, sending events on ports it does not own,
 * claiming another domain's store paths, calling methods that do not exist, and finally sending
 * garbage. dom0 rejects each (counted), closes the garbage sender's connection, and the
 * well-behaved guest process beside it keeps doing verified I/O throughout. Then a stranger
 * without the secret tries what used to stop dom0 before authentication — a few hundred bytes of
 * shared references standing for 2^30 values, a 15 MiB frame, a flood of half-open connections
 * from another address — and a health check gets in meanwhile.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect as connectTcp } from 'node:net';
import { Packr, Unpackr } from 'msgpackr';
import { WebSocket } from 'ws';
import {
  DL_END,
  DL_EVENT,
  DL_GRANT,
  DL_PAGES,
  GUEST_BOOT,
  GUEST_QUIESCE,
  GUEST_READY,
  GUEST_START,
  GUEST_STATS,
  GUEST_STOP,
  CONTROL_PING,
  DOMID_HW,
  RpcPeer,
  computeMac,
  connect,
  createLogger,
  deriveDomainKey,
  formatDomainKey,
  identityKey,
  parseChallenge,
  type DomainKey,
  type GuestBootSpec,
  type Identity,
  type GuestStats,
} from '@ringvisor/shared';
import { Host } from '../src/toolstack/host.js';
import { normalizeConfig } from '../src/toolstack/config.js';

const ROOT = resolve(import.meta.dirname, '../../..');
const dir = mkdtempSync(join(tmpdir(), 'rv-peer-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children)
    if (c.exitCode === null && c.signalCode === null && c.pid)
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
  rmSync(dir, { recursive: true, force: true });
});

/** A runtime process with exactly one credential: the cluster secret (hwsim) or a domain key (a guest). */
function runtime(args: string[], credential: { secret: Uint8Array } | { domainKey: DomainKey }): ChildProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'error' };
  delete env.RINGVISOR_SECRET;
  if ('secret' in credential) env.RINGVISOR_SECRET = Buffer.from(credential.secret).toString('hex');
  else env.RINGVISOR_DOMAIN_KEY = formatDomainKey(credential.domainKey);
  const c = spawn(process.execPath, [join(ROOT, 'bin/ringvisor.mjs'), ...args], { env, stdio: 'ignore' });
  children.push(c);
  return c;
}

/** A hello for `claim` MACed under `key`, on a raw socket: how dom0 answers (welcome, or the close). */
async function forgedHello(url: string, claim: Identity, key: Uint8Array): Promise<string> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => {});
  const closed = new Promise<string>((r) => ws.once('close', (code, reason) => r(`${code} ${reason.toString()}`)));
  const first = new Promise<unknown>((r) => ws.once('message', (d) => r(new Unpackr({ useRecords: false }).unpack(d as Buffer))));
  try {
    const ch = parseChallenge(await first);
    const nonce = new Uint8Array(randomBytes(32));
    ws.send(new Packr({ useRecords: false }).pack({ t: 'hello', v: 1, ...claim, nonce, mac: computeMac(key, 'client', claim, ch.nonce, nonce) }));
    return await Promise.race([closed, new Promise<string>((r) => ws.once('message', () => r('welcomed')))]);
  } finally {
    ws.terminate();
  }
}

describe('a hostile guest process on the ws transport', () => {
  it('is contained: every abuse rejected, garbage closes only its link, the other guest keeps doing verified I/O', async () => {
    const secret = new Uint8Array(randomBytes(32));
    const config = normalizeConfig({
      hosts: [{ disk: { path: join(dir, 'disk.img'), sizeMiB: 64 }, guests: [{ name: 'good', workloads: { block: {} } }, { name: 'evil', workloads: {} }] }],
    }).hosts[0];
    const host = new Host(config, { seed: 1, log: createLogger('test'), ws: { secret, spawn: false } });
    const started = host.start();
    // The hardware and the good guest are real processes; the evil guest is this test.
    await new Promise((r) => setTimeout(r, 300));
    const url = host.wsUrl;
    runtime(['hwsim', '--dom0', url], { secret });
    runtime(['domu', '--id', '1', '--dom0', url], { domainKey: deriveDomainKey(secret, config.name, 1) });

    const evilDomid = 2;
    const evilKey = deriveDomainKey(secret, config.name, evilDomid);
    let link;
    for (let i = 0; i < 100 && !link; i++) {
      link = await connect({ url, domainKey: evilKey, role: 'guest', domid: evilDomid }).catch(() => undefined);
      if (!link) await new Promise((r) => setTimeout(r, 200));
    }
    expect(link).toBeDefined();
    const evil = new RpcPeer(link!, 'evil');
    const stats = (): GuestStats => ({
      name: 'evil',
      domid: evilDomid,
      state: 'running',
      devices: [],
      integrity: { checked: 0, failures: 0, kinds: {} },
      udp: { sent: 0, echoed: 0, lost: 0, late: 0, duplicated: 0, reordered: 0, corrupted: 0 },
    });
    for (const m of [GUEST_STATS, GUEST_QUIESCE, GUEST_STOP]) evil.handle(m, () => stats());
    // It boots by the contract (dom0 checks what a guest answers: a malformed ready is dropped), then abuses.
    evil.handle(GUEST_START, () => null);
    const spec = await evil.call<GuestBootSpec>(GUEST_BOOT, {});
    expect(spec.domid).toBe(evilDomid);
    expect(spec.shared).toBeUndefined();
    evil.notify(GUEST_READY, { domid: evilDomid });
    await started;

    // 0. Its key, and every key it can compute from it, is refused for any other identity —
    // including ones dom0 would admit from a holder of the cluster secret (control).
    const evilKeys = [evilKey.key, ...(['guest', 'vcpu', 'direct'] as const).map((role) => identityKey(evilKey, { role, domid: evilDomid }))];
    for (const claim of [
      { role: 'control', domid: 0 },
      { role: 'hwsim', domid: DOMID_HW },
      { role: 'dom0', domid: 0 },
      { role: 'guest', domid: 1 },
      { role: 'vcpu', domid: 1 },
    ] satisfies Identity[])
      for (const key of evilKeys) expect(await forgedHello(url, claim, key), `${claim.role}/${claim.domid}`).toBe('1008 authentication failed');
    // (dom0 does admit control from a holder of the cluster secret: the refusals above are the keys')
    expect(await forgedHello(url, { role: 'control', domid: 0 }, identityKey(secret, { role: 'control', domid: 0 }))).toBe('welcomed');

    const good = host.guests.find((g) => g.config.name === 'good')!;
    const evilLink = host.hv.domains.get(evilDomid)!.link!;
    const goodMemory = host.hv.domains.get(1)!.memory;
    const before = (await good.peer!.call<GuestStats>(GUEST_STATS, {})).devices[0].ops;

    // 1. Write into the good guest's frames (and nonsense page ids) through the page mirror.
    evil.notify(DL_PAGES, [{ page: `1:5`, bytes: [[0, new Uint8Array(4096).fill(0xee)]], indices: [] }]);
    evil.notify(DL_PAGES, [{ page: `0:1`, bytes: [[0, new Uint8Array(16).fill(0xee)]], indices: [[0, 7]] }]);
    evil.notify(DL_PAGES, [{ page: 'x', bytes: 'no', indices: null }, 17, null]);
    // 2. Forge grants: out-of-range refs and frames, wrong sizes; end refs that do not exist.
    evil.notify(DL_GRANT, { ref: 1e9, remoteDom: 0, pfn: 1, readonly: false, data: new Uint8Array(4096) });
    evil.notify(DL_GRANT, { ref: 10, remoteDom: 0, pfn: 1e9, readonly: false, data: new Uint8Array(4096) });
    evil.notify(DL_GRANT, { ref: 11, remoteDom: 0, pfn: 2, readonly: false, data: new Uint8Array(3) });
    evil.notify(DL_END, { ref: -4 });
    // 3. Events on ports it does not have, and nonsense.
    for (const port of [1, 5, 900, 1023, 5000]) evil.notify(DL_EVENT, { port });
    evil.notify(DL_EVENT, { port: 'all' });
    // 4. Hypercalls as another domain, or that do not exist.
    await expect(evil.call('store.write', { path: '/local/domain/1/device/vbd/51712/ring-ref', value: '8' })).rejects.toMatchObject({ code: 'RV_ERR_STORE' });
    await expect(evil.call('store.read', { path: '/local/domain/0/backend/vbd/1/51712/params' })).rejects.toMatchObject({ code: 'RV_ERR_STORE' });
    await expect(evil.call('evtchn.close', { port: 1 })).rejects.toMatchObject({ code: 'RV_ERR_EVTCHN' });
    await expect(evil.call('hw.shutdown', {})).rejects.toMatchObject({ code: 'RV_ERR_PROTOCOL' });
    await new Promise((r) => setTimeout(r, 200));

    expect(evilLink.counters.rejected).toBeGreaterThanOrEqual(12);
    // Nothing of the good guest's memory (as dom0 sees it) was touched by the forged page.
    expect(goodMemory.page(5).subarray(0, 16).every((b) => b === 0xee)).toBe(false);

    // 5. Garbage on the wire closes the hostile link — only it.
    link!.ws.send(Buffer.from([0xc1, 0xff, 0x00, 0x13]));
    await new Promise((r) => setTimeout(r, 300));
    expect(link!.closed).toBe(true);

    // 6. A stranger, before authenticating: each frame is refused with a code and a reason.
    let dag: unknown = [1];
    for (let i = 0; i < 30; i++) dag = [dag, dag]; // 2^30 leaves through shared references
    const bomb = new Packr({ structuredClone: true }).pack({ t: 'hello', v: 1, role: 'guest', domid: 1, nonce: dag });
    expect(bomb.byteLength).toBeLessThan(512);
    const strangerFrames: Array<[Uint8Array, number, RegExp]> = [
      [bomb, 1008, /^malformed message: msgpack extension/],
      [new Uint8Array(15 * 1024 * 1024), 1009, /^message too big \(limit 512 bytes before authentication\)$/],
    ];
    for (const [frame, code, why] of strangerFrames) {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      ws.on('error', () => {});
      const closed = new Promise<[number, string]>((r) => ws.once('close', (c, reason) => r([c, reason.toString()])));
      await new Promise<void>((r) => ws.once('open', () => r()));
      ws.send(frame);
      const [c, reason] = await closed;
      expect(c).toBe(code);
      expect(reason).toMatch(why);
    }
    // A half-open flood from another address does not lock out a health check from this one.
    const port = Number(new URL(url).port);
    const flood = Array.from({ length: 40 }, () => connectTcp({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }).on('error', () => {}));
    try {
      await expect.poll(() => flood.every((s) => !s.connecting)).toBe(true);
      const health = await connect({ url, secret, role: 'control', domid: 0 });
      expect(await new RpcPeer(health, 'health').call(CONTROL_PING, {})).toMatchObject({ guests: 2 });
      health.close('done');
    } finally {
      for (const s of flood) s.destroy();
    }

    // The good guest kept (and keeps) doing verified block I/O.
    await new Promise((r) => setTimeout(r, 1000));
    const after = await good.peer!.call<GuestStats>(GUEST_STATS, {});
    expect(after.devices[0].ops).toBeGreaterThan(before);
    const finals = await host.stop();
    const g = finals.find((f) => f?.name === 'good')!;
    expect(g.state).toBe('stopped');
    expect(g.integrity.checked).toBeGreaterThan(0);
    expect(g.integrity.failures).toBe(0);
  }, 90_000);
});
