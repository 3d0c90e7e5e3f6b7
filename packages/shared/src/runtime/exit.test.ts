/**
 * watchParent with real processes: a parent starts a child that watches it, then the parent is
 * killed (-9); the orphaned child notices and exits by itself. The child runs the built module
 * (dist/), as a runtime started by `ringvisor up` does.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EXIT, processAlive } from './exit.js';

const builtExit = fileURLToPath(new URL('../../dist/runtime/exit.js', import.meta.url));
const started: number[] = [];

afterEach(() => {
  for (const pid of started.splice(0)) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
});

describe('watchParent', () => {
  it('an orphaned runtime exits by itself (with EXIT.DOM0_LOST) once its parent is killed', async () => {
    // The child: watches its parent, says so, and otherwise would live for a minute.
    const child = `import { watchParent } from ${JSON.stringify(builtExit)};
watchParent((p) => { process.stderr.write('parent ' + p + ' gone\\n'); process.exit(${EXIT.DOM0_LOST}); }, 100);
setTimeout(() => {}, 60000);
process.stdout.write('watching ' + process.pid + '\\n');`;
    // The parent: starts the child and prints its pid, then waits to be killed.
    const parent = `const { spawn } = require('node:child_process');
const c = spawn(process.execPath, ['--input-type=module', '-e', ${JSON.stringify(child)}], { stdio: ['ignore', 'inherit', 'inherit'] });
setTimeout(() => {}, 60000);`;
    const p = spawn(process.execPath, ['-e', parent], { stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(p.pid!);
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    await expect.poll(() => /watching (\d+)/.exec(out), { timeout: 30_000 }).toBeTruthy();
    const childPid = Number(/watching (\d+)/.exec(out)![1]);
    started.push(childPid);
    expect(processAlive(childPid)).toBe(true);
    process.kill(p.pid!, 'SIGKILL');
    await expect.poll(() => processAlive(childPid), { timeout: 10_000 }).toBe(false);
  });
});

