/**
 * Mutual challenge–response authentication for the ws transport, per-identity keys, and the
 * cluster secret.
 *
 * Every connection proves knowledge of the key of the identity it claims (role + domain id) and
 * binds that identity into the proof; the server proves knowledge of the same key back. No key
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
 *   Mc = HMAC-SHA256(K(role, domid), "ringvisor-v1|client|" + role + "|" + domid + "|" + hex(Ns) + "|" + hex(Nc))
 *   Ms = HMAC-SHA256(K(role, domid), "ringvisor-v1|server|" + role + "|" + domid + "|" + hex(Ns) + "|" + hex(Nc))
 *
 * `domid` is written in decimal, nonces as lowercase hex. `role` comes from a fixed set without
 * `|`, and domid is an integer, so the MAC input is unambiguous. Any deviation (wrong shape, a
 * message out of turn, an identity no key may speak for, a bad MAC, an identity the server does
 * not authorize) ends the connection with close code 1008 and a reason; see ws.ts for the state
 * machine and timeouts.
 *
 * Per-identity keys. K(role, domid) is derived from the cluster secret S with HKDF-SHA256
 * (RFC 5869; salt "ringvisor-v1", 32-byte outputs), along two separate paths:
 *
 *   guest-side roles (guest, vcpu, direct), for a guest domain N of host H (1 ≤ N < DOMID_HW):
 *     Kdom(H, N)    = HKDF(S,          info "ringvisor domain key v1|" + H + "|" + N)
 *     K(role, N)    = HKDF(Kdom(H, N), info "ringvisor role key v1|" + role + "|" + N)
 *   infrastructure roles (dom0, hwsim, switch, control):
 *     K(role, id)   = HKDF(S,          info "ringvisor infra key v1|" + role + "|" + id)
 *
 * A guest process is given only its domain key Kdom(H, N): it can compute the keys of its own
 * guest, vcpu and direct connections and nothing else — no infrastructure key (those need S),
 * no other domain's, and no key of the same domain id on another host (H is the host's name in
 * the cluster config, so guest 1 of host a cannot pass for guest 1 of host b). Listeners hold S
 * and derive the key of whatever identity a hello claims (for guest-side roles, for the host
 * they serve). Nor can a domain key sign admin actions: those are HMACs under S itself (below).
 *
 * Which domain ids a role may claim: guest-side roles a guest domain (1..DOMID_HW-1); dom0,
 * control and switch domain 0; hwsim the hardware domain DOMID_HW when it attaches to dom0, and
 * its host's index when it cables the host's NIC to the LAN switch (the switch numbers its
 * ports by host, and admits no guest-side roles). Anything else is refused before the MAC is
 * even looked at.
 *
 * This module is pure (no sockets): message construction and verification, key derivation, plus
 * secret helpers.
 */
import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { ConfigError, InvalidArgumentError, ProtocolError } from '../errors.js';
import { DOMID_HW } from '../evtchn/index.js';

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

// ---- per-identity keys ------------------------------------------------------------------------

/** Roles a guest's own processes speak as; their keys derive from the guest's domain key. */
export const GUEST_ROLES = ['guest', 'vcpu', 'direct'] as const satisfies readonly Role[];
export type GuestRole = (typeof GUEST_ROLES)[number];

export function isGuestRole(role: Role): role is GuestRole {
  return (GUEST_ROLES as readonly Role[]).includes(role);
}

/**
 * The host a listener serves when none is named: the name an unnamed first host gets in a
 * cluster config. Guest-side keys are bound to a host (see the derivation above).
 */
export const DEFAULT_DOMAIN_HOST = 'host0';
/** A host name as a cluster config allows it; it is part of every domain key's derivation. */
const HOST_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * A guest's credential: the domain key Kdom(host, domid). It opens exactly that domain's guest,
 * vcpu and direct connections (to its own host's listeners) and nothing else.
 */
export interface DomainKey {
  domid: number;
  key: Uint8Array;
}

/** What a client authenticates with: the cluster secret (trusted runtimes) or a domain key (a guest). */
export type Credential = Uint8Array | DomainKey;

export const DOMAIN_KEY_BYTES = 32;
const HKDF_SALT = Buffer.from('ringvisor-v1', 'utf8');

function hkdf(ikm: Uint8Array, info: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, HKDF_SALT, Buffer.from(info, 'utf8'), 32));
}

/**
 * Why no key may speak for `id` (a guest-side role outside the guest domains, an infrastructure
 * role with a domain id it never has), or null when it is a claimable identity.
 */
export function identityProblem(id: Identity): string | null {
  if (!isRole(id.role)) return `unknown role ${JSON.stringify(id.role)}`;
  if (!isValidDomid(id.domid)) return `domid must be an integer in 0..${MAX_DOMID}`;
  if (isGuestRole(id.role))
    return id.domid >= 1 && id.domid < DOMID_HW ? null : `role ${id.role} speaks for a guest domain (1..${DOMID_HW - 1}), not ${id.domid}`;
  if (id.role === 'hwsim') return null; // DOMID_HW towards dom0, its host index towards the LAN switch
  return id.domid === 0 ? null : `role ${id.role} speaks only as domain 0, not ${id.domid}`;
}

function checkHost(host: string): void {
  if (typeof host !== 'string' || !HOST_NAME.test(host))
    throw new InvalidArgumentError(`host name must match ${HOST_NAME.source} (a host's name in the cluster config), got ${JSON.stringify(host)}`);
}

/** Kdom(host, domid): the one credential a guest process of that domain is given. */
export function deriveDomainKey(secret: Uint8Array, host: string, domid: number): DomainKey {
  checkSecret(secret);
  checkHost(host);
  const problem = identityProblem({ role: 'guest', domid });
  if (problem !== null) throw new InvalidArgumentError(`no domain key for domain ${domid}: ${problem}`);
  return { domid, key: hkdf(secret, `ringvisor domain key v1|${host}|${domid}`) };
}

function isDomainKey(c: Credential): c is DomainKey {
  return !(c instanceof Uint8Array);
}

/** Throws InvalidArgumentError unless `c` is a cluster secret or a well-formed domain key. */
export function checkCredential(c: unknown): asserts c is Credential {
  if (c instanceof Uint8Array) return checkSecret(c);
  const k = c as Partial<DomainKey> | null;
  if (typeof k !== 'object' || k === null || !(k.key instanceof Uint8Array) || typeof k.domid !== 'number')
    throw new InvalidArgumentError('a credential is the cluster secret (Uint8Array) or a domain key { domid, key }');
  if (k.key.byteLength !== DOMAIN_KEY_BYTES) throw new InvalidArgumentError(`a domain key is ${DOMAIN_KEY_BYTES} bytes, got ${k.key.byteLength}`);
  const problem = identityProblem({ role: 'guest', domid: k.domid });
  if (problem !== null) throw new InvalidArgumentError(`domain key: ${problem}`);
}

/**
 * K(role, domid): the key whose MACs prove `id`. From the cluster secret, any claimable identity
 * (guest-side ones for the guests of `host`); from a domain key, only its own domain's guest-side
 * roles — anything else throws InvalidArgumentError, since that key cannot produce it.
 */
export function identityKey(credential: Credential, id: Identity, host: string = DEFAULT_DOMAIN_HOST): Uint8Array {
  const problem = identityProblem(id);
  if (problem !== null) throw new InvalidArgumentError(`no key speaks for ${id.role} ${id.domid}: ${problem}`);
  if (isDomainKey(credential)) {
    if (!isGuestRole(id.role) || id.domid !== credential.domid)
      throw new InvalidArgumentError(`the domain key of domain ${credential.domid} cannot speak for ${id.role} ${id.domid}: a guest's key opens only its own guest, vcpu and direct connections`);
    return roleKey(credential.key, id);
  }
  if (isGuestRole(id.role)) return roleKey(deriveDomainKey(credential, host, id.domid).key, id);
  checkSecret(credential);
  return hkdf(credential, `ringvisor infra key v1|${id.role}|${id.domid}`);
}

function roleKey(domainKey: Uint8Array, id: Identity): Uint8Array {
  return hkdf(domainKey, `ringvisor role key v1|${id.role}|${id.domid}`);
}

/** Parses a domain key written as hex (RINGVISOR_DOMAIN_KEY, `ringvisor key`); never echoes it. */
export function parseDomainKey(text: string, domid: number, source: string): DomainKey {
  const s = text.trim();
  if (!/^[0-9a-fA-F]+$/.test(s) || s.length !== DOMAIN_KEY_BYTES * 2)
    throw new ConfigError(`${source}: a domain key is ${DOMAIN_KEY_BYTES} bytes in hex (${DOMAIN_KEY_BYTES * 2} digits), as \`ringvisor key --host H --domain N\` prints it`);
  const key: DomainKey = { domid, key: new Uint8Array(Buffer.from(s, 'hex')) };
  try {
    checkCredential(key);
  } catch (e) {
    throw new ConfigError(`${source}: ${(e as Error).message}`);
  }
  return key;
}

/** The domain key as `ringvisor key` prints it and RINGVISOR_DOMAIN_KEY holds it. */
export function formatDomainKey(k: DomainKey): string {
  return hex(k.key);
}

/**
 * The MAC one side sends; `side` is who produces it; `key` is K(role, domid) of `id` (see
 * identityKey). Exported for tests and tools.
 */
export function computeMac(
  key: Uint8Array,
  side: 'client' | 'server',
  id: Identity,
  serverNonce: Uint8Array,
  clientNonce: Uint8Array,
): Uint8Array {
  const input = `ringvisor-v1|${side}|${id.role}|${id.domid}|${hex(serverNonce)}|${hex(clientNonce)}`;
  return new Uint8Array(createHmac('sha256', key).update(input, 'utf8').digest());
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
 * Checks a client's hello against the challenge this server sent, with the key the cluster
 * secret derives for the claimed identity (guest-side roles: for the guests of `host`, the host
 * this listener serves). Returns the proven identity, or throws ProtocolError ('malformed hello:
 * …', 'identity refused: …' or 'authentication failed'). Authorization of the identity is the
 * caller's business.
 */
export function verifyHello(
  secret: Uint8Array,
  challenge: ChallengeMessage,
  msg: unknown,
  host: string = DEFAULT_DOMAIN_HOST,
): { identity: Identity; hello: HelloMessage } {
  const o = fields(msg, 'hello');
  if (!isRole(o.role)) throw new ProtocolError('malformed hello: unknown role');
  if (!isValidDomid(o.domid)) throw new ProtocolError('malformed hello: bad domid');
  if (!isBytes(o.nonce, NONCE_BYTES)) throw new ProtocolError('malformed hello: bad nonce');
  if (!isBytes(o.mac, MAC_BYTES)) throw new ProtocolError('malformed hello: bad mac');
  const identity: Identity = { role: o.role, domid: o.domid };
  const problem = identityProblem(identity);
  if (problem !== null) throw new ProtocolError(`identity refused: ${problem}`);
  const expected = computeMac(identityKey(secret, identity, host), 'client', identity, challenge.nonce, o.nonce);
  if (!macEquals(expected, o.mac)) throw new ProtocolError('authentication failed');
  const hello: HelloMessage = { t: 'hello', v: AUTH_VERSION, role: o.role, domid: o.domid, nonce: o.nonce, mac: o.mac };
  return { identity, hello };
}

/** The server's proof, for a hello verifyHello accepted (same `host`). */
export function createWelcome(secret: Uint8Array, challenge: ChallengeMessage, hello: HelloMessage, host: string = DEFAULT_DOMAIN_HOST): WelcomeMessage {
  const id: Identity = { role: hello.role, domid: hello.domid };
  return { t: 'welcome', v: AUTH_VERSION, mac: computeMac(identityKey(secret, id, host), 'server', id, challenge.nonce, hello.nonce) };
}

// ---- client side ------------------------------------------------------------------------------

export function parseChallenge(msg: unknown): ChallengeMessage {
  const o = fields(msg, 'challenge');
  if (!isBytes(o.nonce, NONCE_BYTES)) throw new ProtocolError('malformed challenge: bad nonce');
  return { t: 'challenge', v: AUTH_VERSION, nonce: o.nonce };
}

/**
 * The client's hello as `identity`, proven with the key `credential` gives for it (a cluster
 * secret: for guest-side roles, of the guests of `host`). Throws InvalidArgumentError for an
 * identity the credential cannot speak for.
 */
export function createHello(credential: Credential, challenge: ChallengeMessage, identity: Identity, host: string = DEFAULT_DOMAIN_HOST): HelloMessage {
  checkIdentity(identity);
  checkCredential(credential);
  const key = identityKey(credential, identity, host);
  const nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  const mac = computeMac(key, 'client', identity, challenge.nonce, nonce);
  return { t: 'hello', v: AUTH_VERSION, role: identity.role, domid: identity.domid, nonce, mac };
}

/** Throws ProtocolError unless `msg` is a welcome proving the server holds our identity's key. */
export function verifyWelcome(credential: Credential, challenge: ChallengeMessage, hello: HelloMessage, msg: unknown, host: string = DEFAULT_DOMAIN_HOST): void {
  const o = fields(msg, 'welcome');
  if (!isBytes(o.mac, MAC_BYTES)) throw new ProtocolError('malformed welcome: bad mac');
  const id: Identity = { role: hello.role, domid: hello.domid };
  const expected = computeMac(identityKey(credential, id, host), 'server', id, challenge.nonce, hello.nonce);
  if (!macEquals(expected, o.mac)) throw new ProtocolError('server authentication failed: the server does not hold the cluster secret our key derives from');
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
