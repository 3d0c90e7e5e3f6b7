/**
 * The guests' domain keys of docker-compose.yml, as an operator puts them in .env: one variable
 * per guest service, named after it (guest-a1 → RINGVISOR_DOMAIN_KEY_A1), holding the key that
 * guest's host (its dom0's config) and domain id (`--id`) derive from the cluster secret.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { deriveDomainKey, formatDomainKey, parseSecret } from '@ringvisor/shared';

interface Service {
  command?: unknown;
  configs?: (string | { source: string; target?: string })[];
}
interface ComposeFile {
  services: Record<string, Service>;
  configs?: Record<string, { file?: string }>;
}

export function domainKeyVar(service: string): string {
  return `RINGVISOR_DOMAIN_KEY_${service.replace(/^guest-/, '').toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

function flag(cmd: string[], name: string): string | undefined {
  const i = cmd.indexOf(name);
  return i >= 0 ? cmd[i + 1] : undefined;
}

/** The host name in the config file a dom0 service runs with (its --config, a compose config). */
function hostNameOfDom0(doc: ComposeFile, dom0: string, root: string): string {
  const s = doc.services[dom0];
  const target = Array.isArray(s?.command) ? flag(s.command.map(String), '--config') : undefined;
  const c = (s?.configs ?? []).find((x) => typeof x !== 'string' && x.target === target) as { source: string } | undefined;
  const file = c && doc.configs?.[c.source]?.file;
  if (!file) throw new Error(`${dom0}: no compose config file for --config ${String(target)}`);
  return (parseYaml(readFileSync(resolve(root, file), 'utf8')) as { hosts: Array<{ name: string }> }).hosts[0].name;
}

/** Every guest service's key variable and value, for `secretHex` (services it cannot place are skipped). */
export function composeGuestKeys(doc: ComposeFile, secretHex: string, root: string): Record<string, string> {
  const secret = parseSecret(secretHex, 'test secret');
  const keys: Record<string, string> = {};
  for (const [name, s] of Object.entries(doc.services)) {
    if (!Array.isArray(s.command)) continue;
    const cmd = s.command.map(String);
    if (cmd[0] !== 'domu') continue;
    const dom0 = /^wss?:\/\/([^:/]+):/.exec(flag(cmd, '--dom0') ?? '')?.[1];
    if (!dom0 || !doc.services[dom0]) continue;
    keys[domainKeyVar(name)] = formatDomainKey(deriveDomainKey(secret, hostNameOfDom0(doc, dom0, root), Number(flag(cmd, '--id'))));
  }
  return keys;
}
