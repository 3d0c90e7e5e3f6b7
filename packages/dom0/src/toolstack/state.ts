/**
 * Where a run keeps its state, so that runs of different configs never trip over each other.
 *
 *   <root>/secret                        the cluster secret, shared by every run here (cli/endpoint.ts)
 *   <root>/control.json                  the running cluster's control endpoint (cli/endpoint.ts)
 *   <root>/<config>/state.json           which config made this state, its disk geometry, its live owner
 *   <root>/<config>/<host>/disk.img      each host's disk image (unless the config names a disk.path)
 *   <root>/<config>.stale-<time>/        state another config (or geometry) left here, set aside
 *   <root>/chaos/<plan>-<time>-<pid>/    one campaign run's own blank disks
 *
 * <root> is `.ringvisor` in the working directory, or $RINGVISOR_DIR. <config> is `default` for the
 * built-in config, else the config file's name and a short hash of its absolute path: two files
 * never share state, while one file keeps its disks across runs (an edited file too — if its
 * geometry changed, the old disks are set aside, never overwritten or deleted).
 *
 * A disk image outlives its run on purpose (a restart finds what was written), but it belongs to
 * the geometry that made it: an image larger than the configured disk cannot be opened, and vbds
 * carved differently would put one guest's old blocks under another's. So state whose manifest
 * does not match the config about to run is renamed aside with a line saying so, and state a
 * live run owns is refused (two runs writing one image would corrupt each other's ledgers).
 * A chaos campaign always starts from blank disks — its ledger knows every block's history — and
 * removes them when it passes; a failed campaign's disks stay for inspection until the next
 * campaign in the same directory.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import { StateError, processAlive } from '@ringvisor/shared';
import type { ClusterConfig } from './config.js';
import { vbdsOf } from './device-kinds.js';

/** The manifest's file name inside a state directory. */
export const STATE_MANIFEST = 'state.json';
/** What the manifest records as the config of the built-in default. */
export const BUILT_IN_CONFIG = 'built-in default';

/** The root of every run's state: `.ringvisor`, or $RINGVISOR_DIR. */
export function stateRoot(): string {
  return process.env.RINGVISOR_DIR ?? '.ringvisor';
}

/** One config's (or one campaign run's) state directory. */
export interface StateLocation {
  /** The directory's name under the root (`default`, `svio-1a2b3c4d`, …). */
  name: string;
  dir: string;
  /** The config's absolute path, or BUILT_IN_CONFIG. */
  config: string;
}

/** One host's disk geometry: what an image's contents depend on. */
export interface HostGeometry {
  host: string;
  diskMiB: number;
  /** Each vbd in carving order, `guest/devid:sizeMiB`. */
  vbds: string[];
}

export interface StateOwner {
  pid: number;
  since: string;
}

/** `<state dir>/state.json`. */
export interface StateManifest {
  format: 1;
  config: string;
  created: string;
  hosts: HostGeometry[];
  /** The run using this state now; absent when none is. */
  owner?: StateOwner;
}

/** A claimed state directory; release() when the run is over. */
export interface ClaimedState {
  dir: string;
  /** Drop ownership; `remove` deletes the directory too (a campaign that passed). */
  release(opts?: { remove?: boolean }): void;
}

const MIB = 1024 * 1024;

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^\.+/, '') || 'config';
}

/** UTC time, file-name safe and sortable: 20261203T165012Z. */
export function stateStamp(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Where a config's state lives: `<root>/default`, or `<root>/<file name>-<hash of its absolute path>`. */
export function configStateLocation(configPath: string | undefined, root = stateRoot()): StateLocation {
  if (configPath === undefined) return { name: 'default', dir: join(root, 'default'), config: BUILT_IN_CONFIG };
  let abs = resolve(configPath);
  try {
    abs = realpathSync(abs); // a symlink and its target are one config
  } catch {
    /* missing: loading it reports that */
  }
  const name = `${safeName(basename(abs).replace(/\.(ya?ml|json)$/i, ''))}-${shortHash(abs)}`;
  return { name, dir: join(root, name), config: abs };
}

/** A campaign run's own directory: `<root>/chaos/<plan>-<time>-<pid>` (unique, so campaigns run side by side). */
export function chaosStateLocation(planName: string, config: string, root = stateRoot(), at = new Date()): StateLocation {
  const name = `${safeName(planName)}-${stateStamp(at)}-${process.pid}`;
  return { name, dir: join(root, 'chaos', name), config };
}

export function geometryOf(config: ClusterConfig): HostGeometry[] {
  return config.hosts.map((h) => ({
    host: h.name,
    diskMiB: h.disk.sizeMiB,
    vbds: h.guests.flatMap((g) => vbdsOf(g.devices).map((d) => `${g.name}/${d.devid}:${d.sizeMiB}`)),
  }));
}

/**
 * Why state found on disk must not be reused by the config about to run (undefined: reuse it).
 * `found` undefined: the directory has no readable manifest. `oversized`: images in it larger
 * than their configured disk.
 */
export function staleReason(
  found: StateManifest | undefined,
  want: { config: string; hosts: HostGeometry[] },
  oversized: Array<{ host: string; bytes: number; configuredBytes: number }> = [],
): string | undefined {
  if (!found) return `it has no readable ${STATE_MANIFEST} (an earlier ringvisor or something else made it)`;
  if (found.config !== want.config) return `it was made by ${found.config}`;
  const names = (hs: HostGeometry[]) => hs.map((h) => h.host).join(', ');
  if (names(found.hosts) !== names(want.hosts)) return `its hosts were ${names(found.hosts)}, this config's are ${names(want.hosts)}`;
  for (const w of want.hosts) {
    const f = found.hosts.find((h) => h.host === w.host)!;
    if (f.diskMiB !== w.diskMiB) return `${w.host}'s disk was ${f.diskMiB} MiB, the config now says ${w.diskMiB} MiB`;
    if (f.vbds.join(' ') !== w.vbds.join(' ')) return `${w.host}'s vbds were carved as ${f.vbds.join(' ') || 'none'}, the config now carves ${w.vbds.join(' ') || 'none'}`;
  }
  const big = oversized[0];
  if (big) return `${big.host}'s image is ${big.bytes} bytes, larger than the configured ${big.configuredBytes}`;
  return undefined;
}

/** The manifest in `dir`, or undefined when missing or unreadable. */
export function readStateManifest(dir: string): StateManifest | undefined {
  try {
    const m = JSON.parse(readFileSync(join(dir, STATE_MANIFEST), 'utf8')) as Partial<StateManifest>;
    if (m.format !== 1 || typeof m.config !== 'string' || !Array.isArray(m.hosts)) return undefined;
    return m as StateManifest;
  } catch {
    return undefined;
  }
}

function writeStateManifest(dir: string, m: StateManifest): void {
  const tmp = join(dir, `${STATE_MANIFEST}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(m, null, 2) + '\n');
  renameSync(tmp, join(dir, STATE_MANIFEST)); // atomic: a reader sees the old manifest or the new
}

/**
 * Whether `pid` is a ringvisor run other than this process. A pid the kernel has given to some
 * other program since (the owner crashed long ago) does not count: on Linux its command line
 * must name ringvisor.
 */
export function ownerRunning(pid: number): boolean {
  if (pid === process.pid || !processAlive(pid)) return false;
  if (!existsSync('/proc/self/cmdline')) return true;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('ringvisor');
  } catch {
    return false;
  }
}

/** Rename `path` to `<path>.stale-<time>` (a free name); returns the new name. */
export function setAside(path: string, at = new Date()): string {
  const base = `${path}.stale-${stateStamp(at)}`;
  let target = base;
  for (let n = 2; existsSync(target); n++) target = `${base}-${n}`;
  try {
    renameSync(path, target);
  } catch (e) {
    throw new StateError(`cannot set ${path} aside as ${target}: ${(e as Error).message}`, { cause: e });
  }
  return target;
}

function inside(path: string, dir: string): boolean {
  const rel = relative(resolve(dir), resolve(path));
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

/**
 * Take `loc` for a run of `config`: state another config or geometry left there is set aside
 * (`say` tells the user), state a live run owns is refused (StateError), and the manifest names
 * this process as the owner. A disk image the config places elsewhere (an explicit disk.path)
 * that is larger than its disk is set aside too; its other contents are the user's business.
 */
export function claimState(loc: StateLocation, config: ClusterConfig, say: (line: string) => void, at = new Date()): ClaimedState {
  const want = { config: loc.config, hosts: geometryOf(config) };
  const images = config.hosts.map((h) => ({ host: h.name, path: resolve(h.disk.path), configuredBytes: h.disk.sizeMiB * MIB }));
  let found: StateManifest | undefined;
  if (existsSync(loc.dir)) {
    found = readStateManifest(loc.dir);
    if (found?.owner && ownerRunning(found.owner.pid))
      throw new StateError(
        `${loc.dir} is in use by another ringvisor run (pid ${found.owner.pid}, since ${found.owner.since}); two runs of one config would write the same disk images. ` +
          `Stop that run first, or start this one from another directory (or with RINGVISOR_DIR=DIR)`,
      );
    const oversized = images.flatMap((i) => {
      const bytes = inside(i.path, loc.dir) ? sizeOf(i.path) : undefined;
      return bytes !== undefined && bytes > i.configuredBytes ? [{ host: i.host, bytes, configuredBytes: i.configuredBytes }] : [];
    });
    const empty = readdirSync(loc.dir).length === 0;
    const reason = empty ? undefined : staleReason(found, want, oversized);
    if (reason) {
      const aside = setAside(loc.dir, at);
      say(`${loc.dir} holds state this config cannot use (${reason}); set it aside as ${aside} and starting from blank disks`);
      found = undefined;
    }
  }
  for (const i of images) {
    if (inside(i.path, loc.dir)) continue;
    const bytes = sizeOf(i.path);
    if (bytes !== undefined && bytes > i.configuredBytes) {
      const aside = setAside(i.path, at);
      say(`${i.path} is ${bytes} bytes, larger than ${i.host}'s configured disk (${i.configuredBytes}); set it aside as ${aside} and starting from a blank disk`);
    }
  }
  try {
    mkdirSync(loc.dir, { recursive: true });
    writeStateManifest(loc.dir, { format: 1, config: loc.config, created: found?.created ?? at.toISOString(), hosts: want.hosts, owner: { pid: process.pid, since: at.toISOString() } });
  } catch (e) {
    throw new StateError(`cannot write the state directory ${loc.dir}: ${(e as Error).message}`, { cause: e });
  }
  return {
    dir: loc.dir,
    release(opts = {}) {
      if (opts.remove) {
        rmSync(loc.dir, { recursive: true, force: true });
        return;
      }
      const m = readStateManifest(loc.dir);
      if (m?.owner?.pid !== process.pid) return; // not ours any more
      delete m.owner;
      try {
        writeStateManifest(loc.dir, m);
      } catch {
        /* the directory went away: nothing left to release */
      }
    },
  };
}

/**
 * Remove what finished campaigns left under `<root>/chaos` (a failed one keeps its disks until
 * now); a campaign still running is left alone. Each removal is said.
 */
export function sweepChaosState(root: string, say: (line: string) => void): void {
  const dir = join(root, 'chaos');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const d = join(dir, name);
    const m = readStateManifest(d);
    if (!m || (m.owner && ownerRunning(m.owner.pid))) continue; // not a campaign's, or still running
    rmSync(d, { recursive: true, force: true });
    say(`removed ${d}, the disks an earlier campaign left${m.owner ? ` (its process ${m.owner.pid} is gone)` : ''}`);
  }
}
