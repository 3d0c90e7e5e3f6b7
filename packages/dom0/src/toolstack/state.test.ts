/**
 * Each config's state in its own directory, and a leftover recognised: a manifest that does not
 * match the config about to run (another config, another geometry, none at all) gets the
 * directory set aside — renamed, never deleted — with a line saying so; a live owner is refused;
 * what finished campaigns left is swept.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateError } from '@ringvisor/shared';
import { defaultConfig, normalizeConfig, type ClusterConfig } from './config.js';
import {
  BUILT_IN_CONFIG,
  STATE_MANIFEST,
  chaosStateLocation,
  claimState,
  configStateLocation,
  geometryOf,
  ownerRunning,
  readStateManifest,
  staleReason,
  sweepChaosState,
  type StateLocation,
  type StateManifest,
} from './state.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function temp(): string {
  const d = mkdtempSync(join(tmpdir(), 'rv-state-'));
  dirs.push(d);
  return d;
}

/** A process that stays up until killed; `tag` lands in its command line. */
async function liveProcess(tag: string): Promise<ChildProcess & { pid: number }> {
  const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', tag], { stdio: 'ignore' });
  children.push(c);
  await new Promise<void>((r, j) => (c.once('spawn', r), c.once('error', j)));
  return c as ChildProcess & { pid: number };
}

async function deadPid(): Promise<number> {
  const c = await liveProcess('ringvisor-gone');
  const exited = new Promise((r) => c.once('exit', r));
  process.kill(c.pid, 'SIGKILL');
  await exited;
  return c.pid;
}

/** A one-host config whose disks live in `loc`, with a vbd of `vbdMiB` and a disk of `diskMiB`. */
function hostConfig(loc: StateLocation, diskMiB: number, vbdMiB = 16): ClusterConfig {
  return normalizeConfig({ hosts: [{ name: 'h', disk: { sizeMiB: diskMiB }, guests: [{ name: 'g', devices: [{ type: 'vbd', sizeMiB: vbdMiB }] }] }] }, 'test', { diskDir: loc.dir });
}

function image(c: ClusterConfig): string {
  return c.hosts[0].disk.path;
}

/** Create a host's disk image the way the hardware does: sparse, at its configured size. */
function makeImage(path: string, bytes: number, mark = 'old blocks'): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, mark);
  truncateSync(path, bytes);
}

const MIB = 1024 * 1024;

describe('state directories', () => {
  it('each config file gets its own directory (name + hash of its path), the built-in default a stable one', () => {
    const root = temp();
    const a = join(temp(), 'cluster.yaml');
    const b = join(temp(), 'cluster.yaml');
    writeFileSync(a, 'hosts: []\n');
    writeFileSync(b, 'hosts: []\n');
    const link = join(temp(), 'other-name.yaml');
    symlinkSync(a, link);
    expect(configStateLocation(undefined, root)).toEqual({ name: 'default', dir: join(root, 'default'), config: BUILT_IN_CONFIG });
    const la = configStateLocation(a, root);
    expect(la.name).toMatch(/^cluster-[0-9a-f]{8}$/);
    expect(la.config).toBe(a);
    expect(configStateLocation(a, root)).toEqual(la); // stable across runs
    expect(configStateLocation(b, root).name).not.toBe(la.name); // same file name, another file
    expect(configStateLocation(link, root)).toEqual(la); // a symlink is the file it points to
    // The default config's disks land in its directory; a config's too.
    expect(defaultConfig({ diskDir: join(root, 'default') }).hosts[0].disk.path).toBe(join(root, 'default', 'host0', 'disk.img'));
    // Campaign runs: each its own directory under chaos/.
    const c1 = chaosStateLocation('power-loss', BUILT_IN_CONFIG, root, new Date(Date.UTC(2026, 11, 3, 16, 50, 12)));
    expect(c1.dir).toBe(join(root, 'chaos', `power-loss-20261203T165012Z-${process.pid}`));
  });

  it('staleReason: reuse only what this config made with this geometry', () => {
    const want = { config: '/x/a.yaml', hosts: [{ host: 'h', diskMiB: 64, vbds: ['g/51712:16'] }] };
    const m = (over: Partial<StateManifest>): StateManifest => ({ format: 1, config: '/x/a.yaml', created: 't', hosts: want.hosts, ...over });
    expect(staleReason(m({}), want)).toBeUndefined();
    expect(staleReason(undefined, want)).toMatch(/no readable state\.json/);
    expect(staleReason(m({ config: '/y/b.yaml' }), want)).toBe('it was made by /y/b.yaml');
    expect(staleReason(m({ hosts: [{ host: 'h0', diskMiB: 64, vbds: ['g/51712:16'] }] }), want)).toMatch(/hosts were h0, this config's are h/);
    expect(staleReason(m({ hosts: [{ host: 'h', diskMiB: 68, vbds: ['g/51712:16'] }] }), want)).toBe("h's disk was 68 MiB, the config now says 64 MiB");
    expect(staleReason(m({ hosts: [{ host: 'h', diskMiB: 64, vbds: ['g/51712:8'] }] }), want)).toMatch(/vbds were carved as g\/51712:8, the config now carves g\/51712:16/);
    expect(staleReason(m({}), want, [{ host: 'h', bytes: 71303168, configuredBytes: 67108864 }])).toMatch(/71303168 bytes, larger than the configured 67108864/);
  });

  it('the same config again reuses its disks; an edited geometry sets the old state aside (renamed, contents intact) with a line', async () => {
    const root = temp();
    const loc = configStateLocation(join(root, 'mine.yaml'), root);
    const lines: string[] = [];
    const say = (l: string) => lines.push(l);
    const first = hostConfig(loc, 68);
    const c1 = claimState(loc, first, say, new Date(Date.UTC(2026, 0, 1)));
    const m1 = readStateManifest(loc.dir)!;
    expect(m1).toMatchObject({ format: 1, config: loc.config, hosts: geometryOf(first), owner: { pid: process.pid } });
    makeImage(image(first), 68 * MIB);
    c1.release();
    expect(readStateManifest(loc.dir)!.owner).toBeUndefined();

    // Run 2, same config: nothing said, the image and the creation time kept.
    claimState(loc, hostConfig(loc, 68), say).release();
    expect(lines).toEqual([]);
    expect(statSync(image(first)).size).toBe(68 * MIB);
    expect(readStateManifest(loc.dir)!.created).toBe(m1.created);

    // Run 3: the file now says 64 MiB — the 68 MiB image could not even be opened.
    const smaller = hostConfig(loc, 64);
    claimState(loc, smaller, say, new Date(Date.UTC(2026, 0, 2, 3, 4, 5))).release();
    const aside = `${loc.dir}.stale-20260102T030405Z`;
    expect(lines).toEqual([`${loc.dir} holds state this config cannot use (h's disk was 68 MiB, the config now says 64 MiB); set it aside as ${aside} and starting from blank disks`]);
    expect(readFileSync(join(aside, 'h', 'disk.img')).subarray(0, 10).toString()).toBe('old blocks');
    expect(readStateManifest(aside)!.hosts[0].diskMiB).toBe(68);
    expect(existsSync(image(smaller))).toBe(false); // blank: the hardware creates it
    expect(readStateManifest(loc.dir)!.hosts[0].diskMiB).toBe(64);

    // Run 4: the vbds carved differently, same disk size — set aside too, under a free name.
    lines.length = 0;
    makeImage(image(smaller), 64 * MIB);
    claimState(loc, hostConfig(loc, 64, 8), say, new Date(Date.UTC(2026, 0, 2, 3, 4, 5))).release();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`${aside}-2`);
    expect(existsSync(join(`${aside}-2`, 'h', 'disk.img'))).toBe(true);
  });

});

describe('state directories: what is set aside, and who owns it', () => {
  it('a state directory with images but no manifest (made by hand, or by something else) is recognised and set aside', () => {
    const root = temp();
    const loc = configStateLocation(undefined, root);
    makeImage(join(loc.dir, 'host0', 'disk.img'), 71303168);
    const lines: string[] = [];
    claimState(loc, defaultConfig({ diskDir: loc.dir }), (l) => lines.push(l)).release();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/has no readable state\.json/);
    const stale = readdirSync(root).filter((n) => n.startsWith('default.stale-'));
    expect(stale).toHaveLength(1);
    expect(statSync(join(root, stale[0], 'host0', 'disk.img')).size).toBe(71303168);
    expect(readdirSync(loc.dir)).toEqual([STATE_MANIFEST]);
  });

  it('a manifest that matches but an image larger than its disk (state.json edited, or half-written) is set aside', () => {
    const root = temp();
    const loc = configStateLocation(undefined, root);
    const cfg = hostConfig(loc, 64);
    claimState(loc, cfg, () => {}).release();
    makeImage(image(cfg), 68 * MIB);
    const lines: string[] = [];
    claimState(loc, cfg, (l) => lines.push(l)).release();
    expect(lines.join()).toMatch(/h's image is 71303168 bytes, larger than the configured 67108864/);
  });

  it('an explicit disk.path larger than its disk is set aside beside itself; a smaller one is left to grow', () => {
    const root = temp();
    const loc = configStateLocation(undefined, root);
    const path = join(temp(), 'mine.img');
    const cfg = normalizeConfig({ hosts: [{ name: 'h', disk: { path, sizeMiB: 64 }, guests: [{ name: 'g' }] }] }, 'test', { diskDir: loc.dir });
    makeImage(path, 32 * MIB);
    const lines: string[] = [];
    claimState(loc, cfg, (l) => lines.push(l)).release();
    expect(lines).toEqual([]);
    truncateSync(path, 68 * MIB);
    claimState(loc, cfg, (l) => lines.push(l), new Date(Date.UTC(2026, 0, 1))).release();
    expect(lines).toEqual([`${path} is 71303168 bytes, larger than h's configured disk (67108864); set it aside as ${path}.stale-20260101T000000Z and starting from a blank disk`]);
    expect(existsSync(path)).toBe(false);
    expect(statSync(`${path}.stale-20260101T000000Z`).size).toBe(68 * MIB);
  });

  it('state a live run owns is refused (both would write one image); once that run is gone it is taken over', async () => {
    const root = temp();
    const loc = configStateLocation(undefined, root);
    const cfg = hostConfig(loc, 64);
    claimState(loc, cfg, () => {}).release();
    makeImage(image(cfg), 64 * MIB);
    const owner = await liveProcess('ringvisor-owner');
    const m = readStateManifest(loc.dir)!;
    writeFileSync(join(loc.dir, STATE_MANIFEST), JSON.stringify({ ...m, owner: { pid: owner.pid, since: 'earlier' } }));
    expect(ownerRunning(owner.pid)).toBe(true);
    let err: unknown;
    try {
      claimState(loc, cfg, () => {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateError);
    expect((err as StateError).code).toBe('RV_ERR_STATE');
    expect((err as Error).message).toContain(`in use by another ringvisor run (pid ${owner.pid}`);
    expect(readStateManifest(loc.dir)!.owner!.pid).toBe(owner.pid); // untouched
    // The owner dies without releasing (kill -9): its state is reused as it is.
    const exited = new Promise((r) => owner.once('exit', r));
    process.kill(owner.pid, 'SIGKILL');
    await exited;
    const lines: string[] = [];
    const claim = claimState(loc, cfg, (l) => lines.push(l));
    expect(lines).toEqual([]);
    expect(readStateManifest(loc.dir)!.owner!.pid).toBe(process.pid);
    expect(statSync(image(cfg)).size).toBe(64 * MIB);
    claim.release({ remove: true });
    expect(existsSync(loc.dir)).toBe(false);
  });

  it.runIf(process.platform === 'linux')('a live pid that is not a ringvisor run (the dead owner\'s pid reused) does not hold the state', async () => {
    const other = await liveProcess('something-else');
    expect(ownerRunning(other.pid)).toBe(false);
    expect(ownerRunning(process.pid)).toBe(false); // this run itself
  });

  it('campaigns: finished ones\' leftovers are swept with a line, running ones and foreign directories are left alone', async () => {
    const root = temp();
    const cfg = (loc: StateLocation) => hostConfig(loc, 64);
    const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
    // A failed campaign: released, disks kept.
    const failed = chaosStateLocation('a', BUILT_IN_CONFIG, root, at(1));
    claimState(failed, cfg(failed), () => {}).release();
    // A campaign killed outright: its dead pid still the owner.
    const killed = chaosStateLocation('b', BUILT_IN_CONFIG, root, at(2));
    claimState(killed, cfg(killed), () => {});
    const m = readStateManifest(killed.dir)!;
    const gone = await deadPid();
    writeFileSync(join(killed.dir, STATE_MANIFEST), JSON.stringify({ ...m, owner: { pid: gone, since: 'x' } }));
    // A campaign running now (another process).
    const running = chaosStateLocation('c', BUILT_IN_CONFIG, root, at(3));
    claimState(running, cfg(running), () => {});
    const live = await liveProcess('ringvisor-campaign');
    writeFileSync(join(running.dir, STATE_MANIFEST), JSON.stringify({ ...readStateManifest(running.dir)!, owner: { pid: live.pid, since: 'x' } }));
    // Something that is not a campaign's.
    mkdirSync(join(root, 'chaos', 'notes'));
    const lines: string[] = [];
    sweepChaosState(root, (l) => lines.push(l));
    expect(lines.sort()).toEqual([`removed ${failed.dir}, the disks an earlier campaign left`, `removed ${killed.dir}, the disks an earlier campaign left (its process ${gone} is gone)`].sort());
    expect(readdirSync(join(root, 'chaos')).sort()).toEqual([running.name, 'notes'].sort());
    sweepChaosState(temp(), () => expect.unreachable()); // no chaos/ at all
  });
});
