#!/usr/bin/env node
// Build the packages (tsc -b, incremental) when any source is newer than its build output.
// Lets `npm start` and `npx ringvisor` work straight after `npm install` on a fresh clone.
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const packages = ['shared', 'hwsim', 'dom0', 'domU'];

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = e.name === 'test-support' ? t : Math.max(t, newest(p));
    else if (/\.(ts|mjs|json)$/.test(e.name) && !e.name.endsWith('.test.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

export function ensureBuilt() {
  const stale = packages.some((p) => {
    // tsc -b leaves .tsbuildinfo untouched when nothing changed, so we keep our own stamp.
    const info = join(root, 'packages', p, 'dist', '.built');
    if (!existsSync(info)) return true;
    const built = statSync(info).mtimeMs;
    return newest(join(root, 'packages', p, 'src')) > built || statSync(join(root, 'packages', p, 'tsconfig.json')).mtimeMs > built;
  });
  if (!stale) return;
  process.stderr.write('ringvisor: building packages (tsc -b)…\n');
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-b', ...packages.map((p) => join(root, 'packages', p))], { stdio: 'inherit', cwd: root });
  for (const p of packages) writeFileSync(join(root, 'packages', p, 'dist', '.built'), new Date().toISOString() + '\n');
}

if (import.meta.url === `file://${process.argv[1]}`) ensureBuilt();
