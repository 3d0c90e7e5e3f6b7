/**
 * System tools tests drive (tshark, chromium). On a developer's laptop a missing tool skips
 * its tests; under CI=true it is a failure, so CI can never go green by skipping.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export function hasTool(pathOrName: string): boolean {
  if (pathOrName.startsWith('/')) return existsSync(pathOrName);
  return spawnSync('sh', ['-c', `command -v ${pathOrName}`], { encoding: 'utf8' }).status === 0;
}

/** true: run the tests; false: skip them. Throws under CI when the tool is missing. */
export function toolForTests(pathOrName: string, debianPackage: string): boolean {
  if (hasTool(pathOrName)) return true;
  if (process.env.CI === 'true') throw new Error(`${pathOrName} is required under CI; apt-get install ${debianPackage}`);
  return false;
}

export interface TsharkRow {
  iface: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** Read a capture with tshark: every frame's interface, addresses and UDP ports, and the malformed count. */
export function tsharkRead(file: string): { rows: TsharkRow[]; malformed: number; raw: string } {
  const r = spawnSync(
    'tshark',
    ['-r', file, '-o', 'ip.check_checksum:TRUE', '-T', 'fields', '-E', 'separator=\t', '-e', 'frame.interface_name', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'udp.srcport', '-e', 'udp.dstport'],
    { encoding: 'utf8', maxBuffer: 1 << 30 },
  );
  if (r.status !== 0) throw new Error(`tshark failed (${r.status}): ${r.stderr}`);
  const rows = r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [iface, src, dst, sport, dport] = l.split('\t');
      return { iface, src, dst, sport: Number(sport), dport: Number(dport) };
    });
  const bad = spawnSync('tshark', ['-r', file, '-o', 'ip.check_checksum:TRUE', '-Y', '_ws.malformed || _ws.expert.severity == error', '-T', 'fields', '-e', 'frame.number'], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  if (bad.status !== 0) throw new Error(`tshark failed (${bad.status}): ${bad.stderr}`);
  return { rows, malformed: bad.stdout.split('\n').filter(Boolean).length, raw: r.stdout };
}
