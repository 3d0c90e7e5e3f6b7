/**
 * The README's commands one after another in ONE working directory, as a new user types them:
 * `npm start` (here `up` with a short --duration), `ringvisor list` while it runs, then fault
 * plans with `ringvisor chaos`. Each run keeps its state apart (.ringvisor/<config>/,
 * .ringvisor/chaos/<run>/), so what one left never fails the next — before, the default host's
 * 68 MiB image made dom0-restart.yaml and power-loss.yaml fail at once ("disk image … is 71303168
 * bytes, larger than the configured 67108864").
 *
 * The default suite runs `up`, `list` and the two plans that failed; `npm run test:readme` runs
 * every plan in examples/faults/ and the README's other chaos lines in the same directory.
 * Every child is killed by pid when a test ends, pass or fail; the directory is removed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { cpSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, cleanUp, runCli, tempDir, until, type CliResult } from './support/cli.js';

afterEach(cleanUp);

/** A working directory that looks like the checkout to the commands: examples/ and nothing else. */
function checkout(): string {
  const cwd = tempDir('rv-readme-');
  cpSync(join(ROOT, 'examples'), join(cwd, 'examples'), { recursive: true });
  return cwd;
}

const transcript: string[] = [];

async function step(cwd: string, args: string[]): Promise<CliResult> {
  const started = Date.now();
  const r = await runCli(args, cwd, { LOG_LEVEL: 'error' }).done;
  transcript.push(`$ ringvisor ${args.join(' ')}  → exit ${r.code} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return r;
}

function expectPass(r: CliResult, what: string): void {
  const out = `${what}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`;
  expect(r.stdout + r.stderr, out).not.toMatch(/larger than the configured|set it aside/);
  expect(r.code, out).toBe(0);
  expect(r.stdout, out).toMatch(/^chaos: verdict PASS$/m);
}

/** `npm start` for a few seconds, and `ringvisor list` finding it from the same directory. */
async function upAndList(cwd: string): Promise<void> {
  const up = runCli(['up', '--duration', '8'], cwd, { LOG_LEVEL: 'error' });
  const listed = await until(
    'ringvisor list to find the running cluster',
    async () => {
      if (up.child.exitCode !== null) throw new Error(`up exited (${up.child.exitCode}) before list found it`);
      const r = await runCli(['list'], cwd).done;
      return r.code === 0 ? r.stdout : undefined;
    },
    60_000,
  );
  expect(listed).toMatch(/guest1/);
  expect(listed).toMatch(/guest5/);
  const r = await up.done;
  transcript.push(`$ ringvisor up --duration 8  → exit ${r.code}`);
  expect(r.code, r.stderr.slice(-3000)).toBe(0);
  // What a user finds afterwards: the shared secret, the default config's own disk and manifest,
  // and no endpoint file pointing at a cluster that has gone.
  const state = join(cwd, '.ringvisor');
  expect(existsSync(join(state, 'secret'))).toBe(true);
  expect(existsSync(join(state, 'control.json'))).toBe(false);
  expect(readdirSync(join(state, 'default')).sort()).toEqual(['host0', 'state.json']);
  expect(JSON.parse(readFileSync(join(state, 'default', 'state.json'), 'utf8'))).toMatchObject({ config: 'built-in default', hosts: [{ host: 'host0', diskMiB: 68 }] });
}

/** After the sequence: every campaign cleaned up after itself, nothing set aside, the default's disk still there. */
function expectTidy(cwd: string): void {
  const state = join(cwd, '.ringvisor');
  expect(readdirSync(join(state, 'chaos'))).toEqual([]);
  expect(readdirSync(state).filter((n) => n.includes('.stale-'))).toEqual([]);
  expect(existsSync(join(state, 'default', 'host0', 'disk.img'))).toBe(true);
}

describe('the README, in one checkout', () => {
  it('npm start, then the two plans that used to trip over its disk (dom0-restart over ws, power-loss): both pass', async () => {
    const cwd = checkout();
    transcript.length = 0;
    await upAndList(cwd);
    for (const args of [
      ['chaos', '--plan', 'examples/faults/dom0-restart.yaml', '--transport', 'ws'], // README "Breaking it"
      ['chaos', '--plan', 'examples/faults/power-loss.yaml'], // examples/writeback.yaml, docs/faults.md
    ])
      expectPass(await step(cwd, args), args.join(' '));
    // `up` again after the campaigns: its disk is the one it left, reused without a word.
    const again = await step(cwd, ['up', '--duration', '3']);
    expect(again.code, again.stderr.slice(-3000)).toBe(0);
    expect(again.stderr).not.toMatch(/set it aside/);
    expectTidy(cwd);
    console.log(transcript.join('\n'));
  }, 360_000);

  it.runIf(process.env.RINGVISOR_TEST_README === 'all')('npm start, then every plan in examples/faults/ and the README\'s other chaos lines: all pass', async () => {
    const cwd = checkout();
    transcript.length = 0;
    await upAndList(cwd);
    const plans = readdirSync(join(ROOT, 'examples/faults')).filter((f) => f.endsWith('.yaml')).sort();
    expect(plans.length).toBeGreaterThanOrEqual(12);
    const runs = [
      ...plans.map((p) => ['chaos', '--plan', `examples/faults/${p}`]),
      // README "Breaking it" and docs/faults.md, as written.
      ['chaos', '--plan', 'examples/faults/events.yaml', '--json', 'report.json'],
      ['chaos', '--plan', 'examples/faults/dom0-restart.yaml', '--transport', 'ws'],
      ['chaos', '--plan', 'examples/faults/hardware-restart.yaml', '--transport', 'ws', '--config', 'examples/svio.yaml'],
      ['chaos', '--random', '30', '--seed', '7'],
    ];
    const failed: string[] = [];
    // README "Quick start": another config's host0 (a 64 MiB disk beside the default's 68 MiB).
    const other = await step(cwd, ['up', '--config', 'examples/two-guests.yaml', '--seed', '7', '--duration', '3']);
    if (other.code !== 0 || /set it aside|larger than the configured/.test(other.stderr)) failed.push(`up --config examples/two-guests.yaml: exit ${other.code} ${other.stderr.slice(-500)}`);
    for (const args of runs) {
      const r = await step(cwd, args);
      try {
        expectPass(r, args.join(' '));
      } catch (e) {
        const verdict = /^chaos: verdict .*$/m.exec(r.stdout)?.[0] ?? `exit ${r.code}, no verdict: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`;
        failed.push(`${args.join(' ')}: ${verdict} (${(e as Error).message.split('\n').find((l) => /expected/i.test(l)) ?? ''})`);
      }
    }
    console.log(transcript.join('\n'));
    expect(failed).toEqual([]);
    expect(JSON.parse(readFileSync(join(cwd, 'report.json'), 'utf8'))).toMatchObject({ plan: 'events', verdict: 'pass' });
    expectTidy(cwd);
  }, 1_800_000);
});
