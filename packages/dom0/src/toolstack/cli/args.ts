/** What the CLI's commands share: flag parsing with usage errors, the transport, the operator's secret, state lines. */
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readSecretFile, secretFromEnv } from '@ringvisor/shared';
import { UsageError, stateDir } from './endpoint.js';
import { USAGE } from './usage.js';

/** A line about the state directories (a leftover set aside), where the user sees it. */
export function sayState(prefix: string): (line: string) => void {
  return (line) => process.stderr.write(`${prefix}: ${line}\n`);
}

/**
 * node:util's parseArgs (strict), with a mistake reported as a UsageError that names the command
 * and shows the usage — every command parses its flags through here.
 */
export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>({ strict: true, ...config });
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message}\n\n${USAGE}`);
  }
}

/** `--transport` (or a plan's transport): "threads" or "ws". */
export function parseTransport(value: string | undefined): 'threads' | 'ws' {
  const t = value ?? 'threads';
  if (t !== 'threads' && t !== 'ws') throw new UsageError(`--transport must be "threads" or "ws", got ${JSON.stringify(t)}`);
  return t;
}

/** The cluster secret for a command run by the operator: --secret-file, RINGVISOR_SECRET, or `up`'s state directory. */
export async function operatorSecret(command: string, secretFile: string | undefined): Promise<Uint8Array> {
  if (secretFile) return readSecretFile(secretFile);
  if (process.env.RINGVISOR_SECRET) return secretFromEnv();
  return readSecretFile(join(stateDir(), 'secret')).catch(() => {
    throw new UsageError(`ringvisor ${command}: no cluster secret (set RINGVISOR_SECRET, pass --secret-file, or run in the directory of \`ringvisor up\`)`);
  });
}
