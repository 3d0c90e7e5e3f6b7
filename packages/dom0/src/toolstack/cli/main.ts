/**
 * `ringvisor` — the toolstack CLI (as `xl` lives in dom0). This module only parses the command
 * and dispatches it to its module under commands/; `ringvisor help` (usage.ts) lists them.
 *
 * Mistakes print what was wrong and how to fix it, and exit 2.
 */
import { ConfigError, StateError } from '@ringvisor/shared';
import { ControlEndpointError, UsageError } from './endpoint.js';
import { USAGE } from './usage.js';
import { up } from './commands/up.js';
import { dom0 } from './commands/dom0.js';
import { health } from './commands/health.js';
import { list } from './commands/list.js';
import { top } from './commands/top.js';
import { rings } from './commands/rings.js';
import { trace } from './commands/trace.js';
import { backend } from './commands/backend.js';
import { direct } from './commands/direct.js';
import { svio } from './commands/svio.js';
import { chaos } from './commands/chaos.js';
import { bench } from './commands/bench.js';
import { token } from './commands/token.js';
import { key } from './commands/key.js';
import { fault } from './commands/fault.js';

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = { up, dom0, health, list, top, rings, trace, backend, direct, svio, chaos, bench, token, key, fault };

const HELP = new Set(['help', '--help', '-h']);

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || HELP.has(cmd)) {
      process.stdout.write(USAGE);
      return 0;
    }
    const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!command) throw new UsageError(`unknown command "${cmd}"\n\n${USAGE}`);
    return await command(rest);
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof ControlEndpointError || e instanceof StateError) {
      process.stderr.write(`ringvisor: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
