#!/usr/bin/env node
// The ringvisor CLI entry: builds when needed, then runs the toolstack from built JS.
import { ensureBuilt } from './ensure-built.mjs';

ensureBuilt();
const [command] = process.argv.slice(2);
// Each runtime is started by its own package's entry point; the toolstack CLI handles the rest.
const entry =
  command === 'domu'
    ? '../packages/domU/dist/main.js'
    : command === 'switch' || command === 'hwsim'
      ? '../packages/hwsim/dist/main.js'
      : '../packages/dom0/dist/toolstack/cli/main.js';
const { main } = await import(entry);
try {
  process.exitCode = await main(command === 'domu' ? process.argv.slice(3) : process.argv.slice(2));
} catch (e) {
  process.stderr.write(`ringvisor: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 2;
}
// The toolstack's commands are done when main returns, and nothing of theirs should hold the
// event loop. If something still does (a bug: a runtime that would not stop), exit anyway rather
// than hang a script or a CI job — and say what it was, so it gets fixed.
if (entry.includes('/dom0/'))
  setTimeout(() => {
    process.stderr.write(`ringvisor: still held open 3 s after the command ended (${process.getActiveResourcesInfo().join(', ')}); exiting\n`);
    process.exit(process.exitCode);
  }, 3000).unref();
