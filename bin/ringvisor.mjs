#!/usr/bin/env node
// The ringvisor CLI entry: builds when needed, then runs the toolstack from built JS.
import { ensureBuilt } from './ensure-built.mjs';

ensureBuilt();
const { main } = await import('../packages/dom0/dist/toolstack/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
