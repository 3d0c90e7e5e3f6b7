/**
 * What the view commands share: their common flags, parsing with usage errors, reaching the
 * control endpoint, and plain-text tables.
 */
import type { DomainRow } from '../../observe/model.js';
import { UsageError, resolveControl, type ControlCredentials } from './endpoint.js';

export const COMMON = { url: { type: 'string' }, 'secret-file': { type: 'string' }, json: { type: 'boolean' } } as const;

/** Run parseArgs, turning its complaints into a usage error naming the command. */
export function parse<T>(cmd: string, run: () => T): T {
  try {
    return run();
  } catch (e) {
    throw new UsageError(`ringvisor ${cmd}: ${(e as Error).message} (see \`ringvisor help\`)`);
  }
}

/** The control endpoint and credentials from --url / --secret-file (or the state directory). */
export async function creds(values: { url?: string | boolean; 'secret-file'?: string | boolean }): Promise<ControlCredentials> {
  return resolveControl({
    ...(typeof values.url === 'string' ? { url: values.url } : {}),
    ...(typeof values['secret-file'] === 'string' ? { secretFile: values['secret-file'] } : {}),
  });
}

/** Columns right-aligned (numbers) except the first and those in `left` (names, lists). */
export function table(head: string[], rows: string[][], left: readonly number[] = []): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 || left.includes(i) ? c.padEnd(w[i]) : c.padStart(w[i])))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** A domain's devices and their I/O modes: "vbd51712:pv,vif0:pv", "ata0:emulated,lance0:emulated". */
export function deviceModes(d: DomainRow): string {
  return d.devices.map((x) => `${x.name}:${x.mode}`).join(',') || '-';
}
