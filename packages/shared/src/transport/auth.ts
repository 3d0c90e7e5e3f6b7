/**
 * Mutual challenge–response authentication for the ws transport, and the cluster secret.
 *
 * Every connection proves knowledge of the cluster secret and binds the identity it claims
 * (role + domain id) into that proof; the server proves knowledge of the secret back. No secret
 * or MAC ever crosses the wire in a form that can be replayed: both sides contribute a fresh
 * 32-byte nonce, and the two directions use different labels, so a client's proof can never be
 * reflected back as a server's.
 *
 * Wire format (msgpack maps, one per binary WebSocket frame; nonces and MACs are `bin`):
 *
 *   server → client  { t: 'challenge', v: 1, nonce: bin(32) }                       (Ns)
 *   client → server  { t: 'hello', v: 1, role, domid, nonce: bin(32), mac: bin(32) } (Nc, Mc)
 *   server → client  { t: 'welcome', v: 1, mac: bin(32) }                            (Ms)
 *
 *   Mc = HMAC-SHA256(secret, "ringvisor-v1|client|" + role + "|" + domid + "|" + hex(Ns) + "|" + hex(Nc))
 *   Ms = HMAC-SHA256(secret, "ringvisor-v1|server|" + role + "|" + domid + "|" + hex(Ns) + "|" + hex(Nc))
 *
 * `domid` is written in decimal, nonces as lowercase hex. `role` comes from a fixed set without
 * `|`, and domid is an integer, so the MAC input is unambiguous. Any deviation (wrong shape, a
 * message out of turn, a bad MAC, an identity the server does not authorize) ends the connection
 * with close code 1008 and a reason; see ws.ts for the state machine and timeouts.
 *
 * This module is pure (no sockets): message construction and verification, plus secret helpers.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { ConfigError, InvalidArgumentError, ProtocolError } from '../errors.js';

export const AUTH_VERSION = 1;
export const NONCE_BYTES = 32;
export const MAC_BYTES = 32;
export const MIN_SECRET_BYTES = 16;
/** Highest domain id a connection may claim (Xen's domid_t is 15 bits for real domains). */
export const MAX_DOMID = 0x7fff;

/**
 * `vcpu`: a guest's I/O request relay (trapped port I/O to device models in dom0, ws transport).
 * `direct`: a guest's link straight to the hardware simulator for the device functions assigned
 * to it (direct I/O, ws transport): register pages, queues, DMA data, doorbells and interrupts.
 */
export const ROLES = ['dom0', 'hwsim', 'guest', 'switch', 'control', 'vcpu', 'direct'] as const;
export type Role = (typeof ROLES)[number];

/** Who a connection speaks for. The server lets it act only as this identity. */
export interface Identity {
  role: Role;
  domid: number;
}

export interface ChallengeMessage {
  t: 'challenge';
  v: 1;
  nonce: Uint8Array;
}

export interface HelloMessage {
  t: 'hello';
  v: 1;
  role: Role;
  domid: number;
  nonce: Uint8Array;
  mac: Uint8Array;
}

export interface WelcomeMessage {
  t: 'welcome';
  v: 1;
  mac: Uint8Array;
}

export type HandshakeMessage = ChallengeMessage | HelloMessage | WelcomeMessage;

export function isRole(x: unknown): x is Role {
  return typeof x === 'string' && (ROLES as readonly string[]).includes(x);
}

export function isValidDomid(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= MAX_DOMID;
}

/** Throws InvalidArgumentError unless `secret` is a byte string of at least MIN_SECRET_BYTES. */
export function checkSecret(secret: unknown): asserts secret is Uint8Array {
  if (!(secret instanceof Uint8Array))
    throw new InvalidArgumentError('cluster secret must be a Uint8Array');
  if (secret.byteLength < MIN_SECRET_BYTES)
    throw new InvalidArgumentError(`cluster secret is too short: ${secret.byteLength} bytes, need at least ${MIN_SECRET_BYTES}`);
}

/** Throws InvalidArgumentError unless `id` is a known role with a domid in 0..MAX_DOMID. */
export function checkIdentity(id: Identity): void {
  if (!isRole(id.role)) throw new InvalidArgumentError(`unknown role ${JSON.stringify(id.role)}; expected one of ${ROLES.join(', ')}`);
  if (!isValidDomid(id.domid)) throw new InvalidArgumentError(`domid must be an integer in 0..${MAX_DOMID}, got ${String(id.domid)}`);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** The MAC one side sends; `side` is who produces it. Exported for tests and tools. */
export function computeMac(
  secret: Uint8Array,
  side: 'client' | 'server',
  id: Identity,
  serverNonce: Uint8Array,
  clientNonce: Uint8Array,
): Uint8Array {
  const input = `ringvisor-v1|${side}|${id.role}|${id.domid}|${hex(serverNonce)}|${hex(clientNonce)}`;
  return new Uint8Array(createHmac('sha256', secret).update(input, 'utf8').digest());
}

function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

function isBytes(x: unknown, length: number): x is Uint8Array {
  return x instanceof Uint8Array && x.byteLength === length;
}

function fields(x: unknown, expected: string): Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x) || x instanceof Uint8Array)
    throw new ProtocolError(`expected ${expected}, got ${describe(x)}`);
  const o = x as Record<string, unknown>;
  if (o.t !== expected) throw new ProtocolError(`expected ${expected}, got ${typeof o.t === 'string' ? JSON.stringify(o.t.slice(0, 20)) : describe(x)}`);
  if (o.v !== AUTH_VERSION) throw new ProtocolError(`unsupported handshake version ${String(o.v).slice(0, 20)}`);
  return o;
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  if (x instanceof Uint8Array) return 'raw bytes';
  return `a ${typeof x}`;
}

// ---- server side ------------------------------------------------------------------------------

export function createChallenge(): ChallengeMessage {
  return { t: 'challenge', v: AUTH_VERSION, nonce: new Uint8Array(randomBytes(NONCE_BYTES)) };
}

/**
 * Checks a client's hello against the challenge this server sent. Returns the proven identity,
 * or throws ProtocolError ('malformed hello: …' or 'authentication failed'). Authorization of the
 * identity is the caller's business.
 */
export function verifyHello(secret: Uint8Array, challenge: ChallengeMessage, msg: unknown): { identity: Identity; hello: HelloMessage } {
  const o = fields(msg, 'hello');
  if (!isRole(o.role)) throw new ProtocolError('malformed hello: unknown role');
  if (!isValidDomid(o.domid)) throw new ProtocolError('malformed hello: bad domid');
  if (!isBytes(o.nonce, NONCE_BYTES)) throw new ProtocolError('malformed hello: bad nonce');
  if (!isBytes(o.mac, MAC_BYTES)) throw new ProtocolError('malformed hello: bad mac');
  const identity: Identity = { role: o.role, domid: o.domid };
  const expected = computeMac(secret, 'client', identity, challenge.nonce, o.nonce);
  if (!macEquals(expected, o.mac)) throw new ProtocolError('authentication failed');
  const hello: HelloMessage = { t: 'hello', v: AUTH_VERSION, role: o.role, domid: o.domid, nonce: o.nonce, mac: o.mac };
  return { identity, hello };
}

export function createWelcome(secret: Uint8Array, challenge: ChallengeMessage, hello: HelloMessage): WelcomeMessage {
  return { t: 'welcome', v: AUTH_VERSION, mac: computeMac(secret, 'server', hello, challenge.nonce, hello.nonce) };
}

// ---- client side ------------------------------------------------------------------------------

export function parseChallenge(msg: unknown): ChallengeMessage {
  const o = fields(msg, 'challenge');
  if (!isBytes(o.nonce, NONCE_BYTES)) throw new ProtocolError('malformed challenge: bad nonce');
  return { t: 'challenge', v: AUTH_VERSION, nonce: o.nonce };
}

export function createHello(secret: Uint8Array, challenge: ChallengeMessage, identity: Identity): HelloMessage {
  checkIdentity(identity);
  const nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  const mac = computeMac(secret, 'client', identity, challenge.nonce, nonce);
  return { t: 'hello', v: AUTH_VERSION, role: identity.role, domid: identity.domid, nonce, mac };
}

/** Throws ProtocolError unless `msg` is a welcome proving the server holds the secret. */
export function verifyWelcome(secret: Uint8Array, challenge: ChallengeMessage, hello: HelloMessage, msg: unknown): void {
  const o = fields(msg, 'welcome');
  if (!isBytes(o.mac, MAC_BYTES)) throw new ProtocolError('malformed welcome: bad mac');
  const expected = computeMac(secret, 'server', hello, challenge.nonce, hello.nonce);
  if (!macEquals(expected, o.mac)) throw new ProtocolError('server authentication failed: the server does not know the cluster secret');
}

// ---- the secret -------------------------------------------------------------------------------

/**
 * Decodes a secret written as hex (even length, [0-9a-f]) or base64/base64url. Hex wins when a
 * string is both. Surrounding whitespace is ignored. Never echoes the value in errors.
 */
export function parseSecret(text: string, source: string): Uint8Array {
  const s = text.trim();
  let bytes: Buffer;
  if (s.length > 0 && s.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(s)) bytes = Buffer.from(s, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(s)) bytes = Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  else throw new ConfigError(`${source}: the cluster secret must be hex or base64 (${s.length === 0 ? 'it is empty' : 'it contains other characters'})`);
  if (bytes.byteLength < MIN_SECRET_BYTES)
    throw new ConfigError(
      `${source}: the cluster secret is too short (${bytes.byteLength} bytes; need at least ${MIN_SECRET_BYTES}). ` +
        `Generate one with: node -e "console.log(require('crypto').randomBytes(32).toString('hex'))"`,
    );
  return new Uint8Array(bytes);
}

/** Reads the cluster secret (hex or base64, at least 16 bytes) from an environment variable. */
export function secretFromEnv(name = 'RINGVISOR_SECRET', env: NodeJS.ProcessEnv = process.env): Uint8Array {
  const v = env[name];
  if (v === undefined || v.trim() === '')
    throw new ConfigError(
      `environment variable ${name} is not set: it must hold the cluster secret (at least ${MIN_SECRET_BYTES} bytes, hex or base64), ` +
        `the same value for every runtime of the cluster`,
    );
  return parseSecret(v, `environment variable ${name}`);
}

/**
 * Reads a secret file. Refuses a file that group or others may read or write (like ssh does with
 * private keys), since anyone who can read it can join the cluster as any domain.
 */
export async function readSecretFile(path: string): Promise<Uint8Array> {
  const st = await stat(path);
  if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
    throw new ConfigError(`secret file ${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${path}`);
  return parseSecret(await readFile(path, 'utf8'), `secret file ${path}`);
}

/**
 * Creates `path` holding a fresh random 32-byte secret in hex, readable and writable by its owner
 * only (0600), and returns it. An existing file is never overwritten: its secret is read and
 * returned instead (so every run of a local cluster reuses it). Creation is atomic (O_EXCL).
 */
export async function generateSecretFile(path: string): Promise<Uint8Array> {
  const secret = new Uint8Array(randomBytes(32));
  let fh;
  try {
    fh = await open(path, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return readSecretFile(path);
    throw e;
  }
  try {
    await fh.chmod(0o600); // in case the umask or the filesystem did something odd
    await fh.writeFile(`${hex(secret)}\n`, 'utf8');
  } finally {
    await fh.close();
  }
  return secret;
}

/**
 * Control-endpoint credentials: read-only views need the read token; actions that change the
 * cluster need the admin secret (the cluster secret itself), which never travels. The read token
 * is derived from the secret one way, so whoever holds the secret can read, and a reader learns
 * nothing about the secret.
 */
export function deriveReadToken(secret: Uint8Array): string {
  checkSecret(secret);
  return createHmac('sha256', secret).update('ringvisor control read token v1').digest('hex');
}

/**
 * Admin request signatures (v2). An action carries two headers:
 *
 *   x-ringvisor-signature:       <ms timestamp>.<nonce: 32 hex>.<mac: 64 hex>
 *   x-ringvisor-content-sha256:  <hex SHA-256 of the body>
 *
 *   mac = HMAC-SHA256(secret, "ringvisor admin v2\n" + ts + "\n" + nonce + "\n" + METHOD + "\n"
 *                              + path + "\n" + content-length + "\n" + content-sha256)
 *
 * Everything the MAC covers is in the request line and headers, so a server checks the signature
 * before it reads a byte of the body (a stranger's body costs nothing), then reads at most
 * content-length bytes and checks them against the signed digest. A signature is good within
 * ADMIN_SIGNATURE_SKEW_MS of the server's clock and once: the server remembers each nonce it
 * accepted until its timestamp leaves the window (AdminNonceLedger), so a replay is refused.
 */
export const ADMIN_SIGNATURE_HEADER = 'x-ringvisor-signature';
export const ADMIN_CONTENT_DIGEST_HEADER = 'x-ringvisor-content-sha256';
export const ADMIN_SIGNATURE_SKEW_MS = 30_000;
const ADMIN_NONCE_BYTES = 16;

/** The parts of an admin request its signature covers (the body only through its length and digest). */
export interface AdminRequestFacts {
  method: string;
  /** The request target as sent (path and query). */
  path: string;
  contentLength: number;
  /** The value of x-ringvisor-content-sha256 (lowercase hex). */
  contentSha256: string;
}

/** The headers that authorise one admin request. */
export type AdminRequestHeaders = { [ADMIN_SIGNATURE_HEADER]: string; [ADMIN_CONTENT_DIGEST_HEADER]: string };

export type AdminSignatureVerdict =
  | { ok: true; timestamp: number; nonce: string }
  | { ok: false; reason: 'unsigned' | 'malformed' | 'stale' | 'forged' };

/** Lowercase hex SHA-256 of a body (a string is hashed as its UTF-8 bytes, as it is sent). */
export function adminContentDigest(body: string | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}

function adminMac(secret: Uint8Array, ts: number, nonce: string, r: AdminRequestFacts): string {
  return createHmac('sha256', secret)
    .update(`ringvisor admin v2\n${ts}\n${nonce}\n${r.method.toUpperCase()}\n${r.path}\n${r.contentLength}\n${r.contentSha256}`)
    .digest('hex');
}

/**
 * The headers that authorise one admin request: a fresh random nonce, the time, and a MAC over
 * the request line, the body's length and its digest. Sign each request anew; a signature is
 * accepted once.
 */
export function signAdminRequest(
  secret: Uint8Array,
  method: string,
  path: string,
  body: string | Uint8Array,
  now = Date.now(),
  nonce = randomBytes(ADMIN_NONCE_BYTES).toString('hex'),
): AdminRequestHeaders {
  checkSecret(secret);
  const contentSha256 = adminContentDigest(body);
  const contentLength = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.byteLength;
  const mac = adminMac(secret, now, nonce, { method, path, contentLength, contentSha256 });
  return { [ADMIN_SIGNATURE_HEADER]: `${now}.${nonce}.${mac}`, [ADMIN_CONTENT_DIGEST_HEADER]: contentSha256 };
}

/**
 * Checks an admin signature from the request's headers alone (constant-time MAC comparison):
 * well-formed, within ADMIN_SIGNATURE_SKEW_MS of `now`, and covering exactly this request line,
 * length and digest. It does not check single use (AdminNonceLedger) nor the body (compare
 * adminContentDigest(body) with `contentSha256` once it is read).
 */
export function verifyAdminRequest(secret: Uint8Array, header: string | undefined, facts: AdminRequestFacts, now = Date.now()): AdminSignatureVerdict {
  if (!header) return { ok: false, reason: 'unsigned' };
  const m = /^(\d{1,15})\.([0-9a-f]{32})\.([0-9a-f]{64})$/.exec(header);
  if (!m || !/^[0-9a-f]{64}$/.test(facts.contentSha256) || !Number.isSafeInteger(facts.contentLength) || facts.contentLength < 0)
    return { ok: false, reason: 'malformed' };
  const ts = Number(m[1]);
  if (Math.abs(now - ts) > ADMIN_SIGNATURE_SKEW_MS) return { ok: false, reason: 'stale' };
  const want = Buffer.from(adminMac(secret, ts, m[2], facts), 'hex');
  if (!timingSafeEqual(want, Buffer.from(m[3], 'hex'))) return { ok: false, reason: 'forged' };
  return { ok: true, timestamp: ts, nonce: m[2] };
}

/**
 * The nonces of admin signatures already accepted, each kept until its timestamp leaves the
 * freshness window (after that the signature is refused as stale anyway). Bounded: when
 * `capacity` live nonces are held, a new one is refused ('full') rather than evicting one that
 * could then be replayed. Only signatures that verified reach it, so only secret holders fill it.
 */
export class AdminNonceLedger {
  private readonly expiries = new Map<string, number>();

  constructor(
    readonly capacity = 4096,
    readonly windowMs = ADMIN_SIGNATURE_SKEW_MS,
  ) {}

  get size(): number {
    return this.expiries.size;
  }

  /** Record a verified signature's nonce: 'fresh' the first time, 'replayed' after. */
  admit(nonce: string, timestamp: number, now = Date.now()): 'fresh' | 'replayed' | 'full' {
    const seen = this.expiries.get(nonce);
    if (seen !== undefined && seen >= now) return 'replayed';
    if (this.expiries.size >= this.capacity) this.prune(now);
    if (this.expiries.size >= this.capacity) return 'full';
    this.expiries.set(nonce, timestamp + this.windowMs);
    return 'fresh';
  }

  private prune(now: number): void {
    for (const [nonce, expiry] of this.expiries) if (expiry < now) this.expiries.delete(nonce);
  }
}

/** Constant-time comparison of two tokens given as strings. */
export function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
