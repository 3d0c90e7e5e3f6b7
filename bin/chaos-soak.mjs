#!/usr/bin/env node
/**
 * `npm run chaos:soak -- [--duration S] [--seed N] [--scenarios N] [--out FILE]`: a long
 * randomized campaign. Runs seeded random campaigns one after another — alternating the threads
 * transport on the default host and the ws transport on two hosts, a new seed each time — until
 * the duration is spent, then writes a report (every campaign's verdict, faults, checkers,
 * recovery times) and exits 1 if any campaign failed. Each campaign is its own `ringvisor chaos`
 * process, stopped by pid if it overruns.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const root = resolve(import.meta.dirname, '..');
let values;
try {
  ({ values } = parseArgs({ options: { duration: { type: 'string' }, seed: { type: 'string' }, scenarios: { type: 'string' }, out: { type: 'string' } }, strict: true }));
} catch (e) {
  process.stderr.write(`chaos:soak: ${e.message}\nusage: npm run chaos:soak -- [--duration S] [--seed N] [--scenarios N] [--out FILE]\n`);
  process.exit(2);
}
const durationSec = Number(values.duration ?? 600);
const firstSeed = Number(values.seed ?? Date.now() % 100000);
const scenarios = Number(values.scenarios ?? 40);
const out = values.out ?? 'chaos-soak-report.json';
for (const [k, v] of [['--duration', durationSec], ['--seed', firstSeed], ['--scenarios', scenarios]])
  if (!Number.isFinite(v) || v <= 0) {
    process.stderr.write(`chaos:soak: ${k} must be a positive number\n`);
    process.exit(2);
  }

function campaign(seed, transport) {
  const cwd = mkdtempSync(join(tmpdir(), 'rv-soak-'));
  const args = [join(root, 'bin/ringvisor.mjs'), 'chaos', '--random', String(scenarios), '--seed', String(seed), '--transport', transport, '--observe', '127.0.0.1:0', '--json', 'report.json'];
  if (transport === 'ws') args.push('--config', join(root, 'examples/two-hosts-svio.yaml'));
  return new Promise((res) => {
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, LOG_LEVEL: 'error' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
    const limit = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), (scenarios * 0.7 + 120) * 1000);
    child.on('exit', (code, signal) => {
      clearTimeout(limit);
      let report;
      try {
        report = JSON.parse(readFileSync(join(cwd, 'report.json'), 'utf8'));
      } catch {
        /* none: the campaign died */
      }
      rmSync(cwd, { recursive: true, force: true });
      res({ seed, transport, code, signal, report, ...(report ? {} : { stderr }) });
    });
  });
}

const started = Date.now();
const runs = [];
for (let i = 0; Date.now() - started < durationSec * 1000; i++) {
  const transport = i % 2 === 0 ? 'threads' : 'ws';
  const r = await campaign(firstSeed + i, transport);
  runs.push(r);
  const v = r.report?.verdict ?? `crashed (${r.signal ?? r.code})`;
  process.stdout.write(`chaos:soak: #${i + 1} ${transport} seed ${r.seed}: ${v}${r.report?.reasons?.length ? ` — ${r.report.reasons.join('; ')}` : ''}\n`);
}
const failed = runs.filter((r) => r.code !== 0 || r.report?.verdict !== 'pass');
const recovery = runs.flatMap((r) => r.report?.recoveryMs ?? []).sort((a, b) => a - b);
const q = (p) => (recovery.length ? recovery[Math.min(recovery.length - 1, Math.floor(p * recovery.length))] : null);
const report = {
  startedAt: new Date(started).toISOString(),
  durationSec: (Date.now() - started) / 1000,
  campaigns: runs.length,
  scenarios: runs.reduce((a, r) => a + (r.report?.faults.length ?? 0), 0),
  failed: failed.length,
  recoveryMs: { p50: q(0.5), p99: q(0.99), max: recovery.at(-1) ?? null },
  runs,
};
writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
process.stdout.write(`chaos:soak: ${runs.length} campaigns, ${report.scenarios} scenarios, ${failed.length} failed; recovery p50 ${report.recoveryMs.p50} ms, p99 ${report.recoveryMs.p99} ms; report ${out}\n`);
process.exit(failed.length ? 1 : 0);
