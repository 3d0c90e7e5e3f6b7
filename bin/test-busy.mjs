#!/usr/bin/env node
/**
 * `npm run test:busy`: the whole suite (`npm test`) on a busy machine — two CPU-burning child
 * processes (plain busy loops, not niced, so they really compete with the suite for the CPUs)
 * run beside it for its whole length. A slow machine must make the suite slower, never red: a
 * test that fails only here depends on scheduling luck.
 *
 * The burners are killed by pid when the suite ends, fails, or this script is interrupted
 * (SIGINT, SIGTERM); the exit code is the suite's. Extra arguments go to vitest
 * (`npm run test:busy -- packages/dom0/test/chaos.e2e.test.ts`). BURNERS=n changes the count.
 */
import { spawn } from 'node:child_process';

const count = Number(process.env.BURNERS ?? 2);
if (!Number.isInteger(count) || count < 0 || count > 64) {
  console.error(`test:busy: BURNERS must be 0..64, got ${process.env.BURNERS}`);
  process.exit(2);
}

const burners = [];
for (let i = 0; i < count; i++) {
  const b = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  burners.push(b);
}
console.log(`test:busy: ${count} CPU burners beside the suite (pids ${burners.map((b) => b.pid).join(', ')})`);

function killBurners() {
  for (const b of burners.splice(0))
    if (b.pid && b.exitCode === null && b.signalCode === null)
      try {
        process.kill(b.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
}
process.on('exit', killBurners);

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const extra = process.argv.slice(2);
const suite = spawn(npm, ['test', ...(extra.length ? ['--', ...extra] : [])], { stdio: 'inherit' });

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.on(sig, () => {
    killBurners();
    // The suite got the terminal's SIGINT too; make sure it stops, then leave with its code.
    if (suite.exitCode === null && suite.pid)
      try {
        process.kill(suite.pid, sig);
      } catch {
        /* already gone */
      }
  });

suite.on('error', (e) => {
  console.error(`test:busy: could not run the suite: ${e.message}`);
  killBurners();
  process.exit(1);
});
suite.on('exit', (code, signal) => {
  killBurners();
  console.log(`test:busy: suite ${signal ? `killed by ${signal}` : `exited with ${code}`} beside ${count} CPU burners`);
  process.exit(code ?? 1);
});
