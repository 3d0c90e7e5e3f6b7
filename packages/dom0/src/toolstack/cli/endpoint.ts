/**
 * Finding and reaching a running cluster's control endpoint, for `up` (which serves it) and the
 * view commands (which attach to it): the state directory, the endpoint file, credentials.
 *
 *   <state dir>/secret         the cluster secret (0600) — admin credential
 *   <state dir>/control.json   {"url", "pid"} of the running `up` (removed at exit)
 *
 * The state directory is `.ringvisor` in the working directory, or $RINGVISOR_DIR; each config's
 * disks live in a directory of their own inside it (toolstack/state.ts), these two files are shared.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  RingvisorError,
  deriveReadToken,
  parseSecret,
  readSecretFile,
  signAdminRequest,
  type Logger,
} from '@ringvisor/shared';
import type { ControlServer } from '../../observe/server.js';
import { stateRoot } from '../state.js';

export class UsageError extends RingvisorError {
  override readonly code = 'RV_ERR_USAGE';
}

/** The control endpoint could not be reached or refused us. */
export class ControlEndpointError extends RingvisorError {
  override readonly code = 'RV_ERR_CONTROL';
}

export interface ListenAt {
  host: string;
  port: number;
}

export const DEFAULT_OBSERVE = '127.0.0.1:7070';

export function stateDir(): string {
  return stateRoot();
}

export function parseListen(flag: string, value: string): ListenAt {
  const m = /^(.+):(\d{1,5})$/.exec(value);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`${flag} must be HOST:PORT (e.g. 127.0.0.1:7070, or :0 for any free port), got ${JSON.stringify(value)}`);
  return { host: m[1], port: Number(m[2]) };
}

/** Listen where asked; if the default port is taken (another cluster), take any free one. */
export async function listenControl(server: ControlServer, at: ListenAt, log: Logger): Promise<void> {
  try {
    await server.listen();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || `${at.host}:${at.port}` !== DEFAULT_OBSERVE) throw e;
    log.warn({ port: at.port }, 'control port in use; using a free port');
    server.opts.port = 0;
    await server.listen();
  }
}

/** The URL this process wrote to the endpoint file (the server no longer knows it once closed). */
let writtenControlUrl: string | undefined;

export function writeControlFile(url: string): void {
  mkdirSync(stateDir(), { recursive: true });
  writeFileSync(join(stateDir(), 'control.json'), JSON.stringify({ url, pid: process.pid }) + '\n', { mode: 0o600 });
  writtenControlUrl = url;
}

/** Remove the endpoint file if it is still ours (another run may have started since). */
export function removeControlFile(_server?: ControlServer): void {
  const path = join(stateDir(), 'control.json');
  try {
    const cur = JSON.parse(readFileSync(path, 'utf8')) as { url?: string; pid?: number };
    if (cur.pid === process.pid && cur.url === writtenControlUrl) rmSync(path);
  } catch {
    /* already gone, or another run's */
  }
}

export interface ControlCredentials {
  url: string;
  readToken: string;
  /** Present when the cluster secret is at hand (admin actions). */
  secret?: Uint8Array;
}

/**
 * Where the endpoint is and how to authenticate: --url / $RINGVISOR_CONTROL_URL / the endpoint
 * file; the read token from $RINGVISOR_READ_TOKEN or derived from the cluster secret
 * ($RINGVISOR_SECRET, --secret-file, or the state directory's secret).
 */
export async function resolveControl(o: { url?: string; secretFile?: string }): Promise<ControlCredentials> {
  let url = o.url ?? process.env.RINGVISOR_CONTROL_URL;
  if (!url) {
    const file = join(stateDir(), 'control.json');
    try {
      url = (JSON.parse(readFileSync(file, 'utf8')) as { url: string }).url;
    } catch {
      throw new UsageError(`no running cluster found (${file} is missing): start one with \`ringvisor up\`, or pass --url http://HOST:PORT`);
    }
  }
  if (!/^https?:\/\/[^/]+$/.test(url)) throw new UsageError(`--url must look like http://127.0.0.1:7070, got ${JSON.stringify(url)}`);
  let secret: Uint8Array | undefined;
  if (o.secretFile) secret = await readSecretFile(o.secretFile);
  else if (process.env.RINGVISOR_SECRET) secret = parseSecret(process.env.RINGVISOR_SECRET, 'RINGVISOR_SECRET');
  else {
    try {
      secret = await readSecretFile(join(stateDir(), 'secret'));
    } catch {
      /* a reader may hold only the read token */
    }
  }
  const readToken = process.env.RINGVISOR_READ_TOKEN ?? (secret ? deriveReadToken(secret) : undefined);
  if (!readToken) throw new UsageError('no credentials: set RINGVISOR_READ_TOKEN (read-only) or RINGVISOR_SECRET / --secret-file (the cluster secret)');
  return { url, readToken, ...(secret ? { secret } : {}) };
}

/** GET a JSON view. */
export async function getJson<T>(c: ControlCredentials, path: string): Promise<T> {
  let res: Response;
  try {
    res = await fetch(c.url + path, { headers: { authorization: `Bearer ${c.readToken}` } });
  } catch (e) {
    throw new ControlEndpointError(`cannot reach the control endpoint at ${c.url}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message} (is the cluster running?)`);
  }
  const body = await res.text();
  if (!res.ok) throw new ControlEndpointError(`${path}: ${res.status} ${errorText(body)}`);
  return JSON.parse(body) as T;
}

/** POST an admin action, signed with the cluster secret. */
export async function postAction<T>(c: ControlCredentials, path: string, params: unknown): Promise<T> {
  if (!c.secret) throw new UsageError('this action needs the cluster secret: set RINGVISOR_SECRET or pass --secret-file FILE');
  const body = JSON.stringify(params);
  let res: Response;
  try {
    res = await fetch(c.url + path, {
      method: 'POST',
      // Signed anew for each request: the endpoint accepts a signature once.
      headers: { 'content-type': 'application/json', ...signAdminRequest(c.secret, 'POST', path, body) },
      body,
    });
  } catch (e) {
    throw new ControlEndpointError(`cannot reach the control endpoint at ${c.url}: ${(e as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) throw new ControlEndpointError(`${path}: ${res.status} ${errorText(text)}`);
  return JSON.parse(text) as T;
}

function errorText(body: string): string {
  try {
    return (JSON.parse(body) as { error?: string }).error ?? body;
  } catch {
    return body;
  }
}
