/**
 * A guest's domain key against dom0's control endpoint: admin actions are HMACs under the cluster
 * secret itself, so a request signed with a guest's key — or any key it can compute from it — is
 * refused (403) and changes nothing; the same request signed with the secret is accepted.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AdminRequestHeaders, createLogger, deriveDomainKey, deriveReadToken, identityKey, signAdminRequest } from '@ringvisor/shared';
import { Host, guestEnvironment } from '../src/toolstack/host.js';
import { normalizeConfig } from '../src/toolstack/config.js';
import { Observatory } from '../src/observe/observatory.js';
import { ControlServer } from '../src/observe/server.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

describe("a guest's domain key", () => {
  it('cannot sign admin actions on the control endpoint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rv-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const config = normalizeConfig({ hosts: [{ name: 'host-a', disk: { path: join(dir, 'disk.img'), sizeMiB: 16 }, guests: [{ name: 'g1' }] }] }).hosts[0];
    const secret = new Uint8Array(randomBytes(32));
    const log = createLogger('test');
    const host = new Host(config, { seed: 1, log });
    const server = new ControlServer(new Observatory([host], 'threads'), { host: '127.0.0.1', port: 0, readToken: deriveReadToken(secret), adminSecret: secret, log });
    await server.listen();
    cleanup.push(() => server.close());

    const path = '/api/backend/pause';
    const body = JSON.stringify({ domain: 'g1', device: 'vbd0' });
    const post = (signed: AdminRequestHeaders) =>
      fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...signed }, body });
    const guestKey = deriveDomainKey(secret, config.name, 1);
    const computable = [guestKey.key, ...(['guest', 'vcpu', 'direct'] as const).map((role) => identityKey(guestKey, { role, domid: 1 }))];
    for (const key of computable) {
      const r = await post(signAdminRequest(key, 'POST', path, body));
      expect(r.status).toBe(403);
      expect(await r.text()).toMatch(/admin secret/);
    }
    // The secret's signature gets past the check (the host is not running, so there is no such backend).
    const ok = await post(signAdminRequest(secret, 'POST', path, body));
    expect(ok.status).not.toBe(403);
  });

  it('is the only credential in a guest process environment: cluster credentials the operator exported are stripped', () => {
    const env = guestEnvironment({ PATH: '/bin', RINGVISOR_SECRET: 'aa'.repeat(32), RINGVISOR_READ_TOKEN: 't', RINGVISOR_DOMAIN_KEY: 'stale', LOG_LEVEL: 'warn' }, 'bb'.repeat(32));
    expect(env).toEqual({ PATH: '/bin', LOG_LEVEL: 'warn', RINGVISOR_DOMAIN_KEY: 'bb'.repeat(32) });
  });
});
