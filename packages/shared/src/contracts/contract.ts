/**
 * Contracts between runtimes: every message that crosses a control link (a MessagePort or an
 * authenticated WebSocket) is defined once, here in `shared`, as a TypeBox schema — its wire
 * name, its params, its result and the RV_ERR_ codes it may answer. The TypeScript types of both
 * sides come from those schemas (`Static<>`), so renaming a method or a field in a contract breaks
 * the build of the caller and of the server alike.
 *
 *   defineContract(name, { methods, notifications })   one module per contract (contracts/*.ts)
 *   contractClient(Contract, peer)                      typed calls: `await hw.svioCreate(params, { timeoutMs })`
 *   serveContract(peer, Contract, handlers)             every method handled (compile error if one is missing)
 *   notify / onNotify(peer, Contract.notifications.x)   typed one-way topics
 *
 * Checks are TypeBox's TypeCompiler, compiled once per schema (lazily, on first use, so a runtime
 * pays only for the contracts it speaks): the server refuses invalid params with
 * RV_ERR_INVALID_ARG naming the field path before the handler runs; the client refuses a result
 * that breaks the schema with RV_ERR_PROTOCOL (a guest is untrusted: dom0 does not take its
 * answers on faith). Values are checked in place — no copy, no coercion — so hot paths
 * (ioreq.access, vmapp.disk, vmnet.frame) pay one compiled check per message.
 */
import { Kind, Type, TypeRegistry, type Static, type TSchema, type TUnsafe } from '@sinclair/typebox';
import { TypeCompiler, ValueErrorType, type TypeCheck, type ValueError } from '@sinclair/typebox/compiler';
import { InvalidArgumentError, ProtocolError } from '../errors.js';
import type { RpcPeer } from '../transport/rpc.js';

/** An error code a method may answer (errors.ts). */
export type ErrorCode = `RV_ERR_${string}`;

/** The codes every method may answer besides its own: a timeout, a link gone, a broken peer. */
export const TRANSPORT_ERRORS: readonly ErrorCode[] = ['RV_ERR_TIMEOUT', 'RV_ERR_CLOSED', 'RV_ERR_PROTOCOL'];

export interface MethodSpec<P extends TSchema = TSchema, R extends TSchema = TSchema> {
  /** The name on the wire (`{ t: 'call', method }`). */
  readonly wire: string;
  readonly params: P;
  readonly result: R;
  /**
   * Codes the server may answer, besides TRANSPORT_ERRORS. RV_ERR_INVALID_ARG is implied: params
   * are checked against the schema before the handler runs.
   */
  readonly errors: readonly ErrorCode[];
  /** Default timeout of a call (30 s when absent). */
  readonly timeoutMs?: number;
}

export interface NotificationSpec<P extends TSchema = TSchema> {
  /** The topic on the wire (`{ t: 'notify', topic }`). */
  readonly wire: string;
  readonly payload: P;
}

/** A method of a contract, with its compiled checks. */
export interface Method<P extends TSchema = TSchema, R extends TSchema = TSchema> extends MethodSpec<P, R> {
  readonly checkParams: () => TypeCheck<P>;
  readonly checkResult: () => TypeCheck<R>;
}

export interface Notification<P extends TSchema = TSchema> extends NotificationSpec<P> {
  readonly checkPayload: () => TypeCheck<P>;
}

export interface Contract<M extends Record<string, Method> = Record<string, Method>, N extends Record<string, Notification> = Record<string, Notification>> {
  readonly name: string;
  readonly methods: M;
  readonly notifications: N;
}

type MethodsOf<S extends Record<string, MethodSpec>> = { readonly [K in keyof S]: S[K] extends MethodSpec<infer P, infer R> ? Method<P, R> : never };
type NotificationsOf<S extends Record<string, NotificationSpec>> = { readonly [K in keyof S]: S[K] extends NotificationSpec<infer P> ? Notification<P> : never };

/** Compile on first use, then keep it: one compiled check per schema for the life of the thread. */
function lazyCheck<T extends TSchema>(schema: T): () => TypeCheck<T> {
  let compiled: TypeCheck<T> | undefined;
  return () => (compiled ??= TypeCompiler.Compile(schema));
}

/** A method, written once: `method('hw.svio.create', Params, Result, ['RV_ERR_DEVICE'])`. */
export function method<P extends TSchema, R extends TSchema>(wire: string, params: P, result: R, errors: readonly ErrorCode[] = [], timeoutMs?: number): MethodSpec<P, R> {
  return { wire, params, result, errors, ...(timeoutMs !== undefined ? { timeoutMs } : {}) };
}

export function notification<P extends TSchema>(wire: string, payload: P): NotificationSpec<P> {
  return { wire, payload };
}

export function defineContract<M extends Record<string, MethodSpec>, N extends Record<string, NotificationSpec> = Record<never, NotificationSpec>>(
  name: string,
  spec: { methods: M; notifications?: N },
): Contract<MethodsOf<M>, NotificationsOf<N>> {
  const methods: Record<string, Method> = {};
  const wires = new Set<string>();
  for (const [key, m] of Object.entries(spec.methods)) {
    if (wires.has(m.wire)) throw new InvalidArgumentError(`contract ${name}: wire name ${m.wire} used twice`);
    wires.add(m.wire);
    methods[key] = { ...m, checkParams: lazyCheck(m.params), checkResult: lazyCheck(m.result) };
  }
  const notifications: Record<string, Notification> = {};
  for (const [key, n] of Object.entries(spec.notifications ?? {})) notifications[key] = { ...n, checkPayload: lazyCheck(n.payload) };
  return { name, methods, notifications } as unknown as Contract<MethodsOf<M>, NotificationsOf<N>>;
}

// ── Binary values ─────────────────────────────────────────────────────────────────────────────

const SAB_KIND = 'SharedArrayBuffer';
if (!TypeRegistry.Has(SAB_KIND)) TypeRegistry.Set(SAB_KIND, (_schema, value) => value instanceof SharedArrayBuffer);

/**
 * A SharedArrayBuffer (threads transport: guest memory, register pages, freeze words). It never
 * crosses a WebSocket: a contract field of this kind is optional wherever ws mode uses the method.
 * Uint8Array needs no helper: Type.Uint8Array (a Buffer from msgpack is one).
 */
export function TSharedArrayBuffer(options: { description?: string } = {}): TUnsafe<SharedArrayBuffer> {
  return Type.Unsafe<SharedArrayBuffer>({ ...options, [Kind]: SAB_KIND });
}

// ── Checks with errors that say where ─────────────────────────────────────────────────────────

/**
 * The first violation as `path: message` (path `/` for the value itself). For a union, the
 * variant the value came closest to (fewest violations) names the field (`/devid`, not just
 * "expected union value").
 */
function firstViolation(check: TypeCheck<TSchema>, value: unknown): string {
  let e: ValueError | undefined = check.Errors(value).First();
  while (e?.type === ValueErrorType.Union && e.errors.length > 0) {
    let best: { first: ValueError; count: number } | undefined;
    for (const variant of e.errors) {
      let first: ValueError | undefined;
      let count = 0;
      for (const v of variant) {
        first ??= v;
        if (++count >= 16) break;
      }
      if (first && (!best || count < best.count)) best = { first, count };
    }
    if (!best || best.first.path.length <= e.path.length) break;
    e = best.first;
  }
  if (!e) return 'does not match the schema';
  return `${e.path === '' ? '/' : e.path}: ${e.message}`;
}

const NO_PARAMS: Readonly<Record<string, never>> = Object.freeze({});

/** Params of `m` as typed, or RV_ERR_INVALID_ARG naming the field. */
export function checkParams<P extends TSchema, R extends TSchema>(m: Method<P, R>, params: unknown): Static<P> {
  const check = m.checkParams();
  if (check.Check(params)) return params;
  // RpcPeer.call's default params are null: a method that takes none gets `{}`.
  if ((params === null || params === undefined) && check.Check(NO_PARAMS)) return NO_PARAMS as Static<P>;
  throw new InvalidArgumentError(`${m.wire}: invalid params at ${firstViolation(check, params)}`);
}

/** A result of `m` as typed, or RV_ERR_PROTOCOL: the server broke the contract. */
export function checkResult<P extends TSchema, R extends TSchema>(m: Method<P, R>, value: unknown, peerName: string): Static<R> {
  const check = m.checkResult();
  if (check.Check(value)) return value;
  throw new ProtocolError(`${peerName}: ${m.wire} answered a result outside its contract at ${firstViolation(check, value)}`);
}

// ── Client ────────────────────────────────────────────────────────────────────────────────────

export interface CallOptions {
  timeoutMs?: number;
}

/** A method with no required params may be called without them. */
type CallArgs<P extends TSchema> = Record<string, never> extends Static<P> ? [params?: Static<P>, options?: CallOptions] : [params: Static<P>, options?: CallOptions];

export type ContractClient<C extends Contract> = {
  readonly [K in keyof C['methods']]: C['methods'][K] extends Method<infer P, infer R> ? (...args: CallArgs<P>) => Promise<Static<R>> : never;
};

/** Call one method of a contract on `peer`: the result is checked against the contract. */
export async function callMethod<P extends TSchema, R extends TSchema>(peer: RpcPeer, m: Method<P, R>, params: Static<P>, options: CallOptions = {}): Promise<Static<R>> {
  const value = await peer.call(m.wire, params, options.timeoutMs ?? m.timeoutMs ?? 30_000);
  return checkResult(m, value, peer.name);
}

/** A typed client: one property per method of the contract. */
export function contractClient<C extends Contract>(contract: C, peer: RpcPeer): ContractClient<C> {
  const client: Record<string, (params?: unknown, options?: CallOptions) => Promise<unknown>> = {};
  for (const [key, m] of Object.entries(contract.methods)) client[key] = (params: unknown = {}, options?: CallOptions) => callMethod(peer, m, params, options);
  return client as ContractClient<C>;
}

// ── Server ────────────────────────────────────────────────────────────────────────────────────

/** What a handler returns: the result, or nothing for a method whose result is null. */
type HandlerResult<R extends TSchema> = null extends Static<R> ? Static<R> | void : Static<R>;

export type ContractHandlers<C extends Contract> = {
  readonly [K in keyof C['methods']]: C['methods'][K] extends Method<infer P, infer R> ? (params: Static<P>) => HandlerResult<R> | Promise<HandlerResult<R>> : never;
};

/**
 * Serve every method of `contract` on `peer`. Params are checked before the handler runs; the
 * handler's typed errors cross as their codes (RpcPeer).
 */
export function serveContract<C extends Contract>(peer: RpcPeer, contract: C, handlers: ContractHandlers<C>): void {
  for (const [key, m] of Object.entries(contract.methods)) {
    const handler = (handlers as Record<string, (p: unknown) => unknown>)[key];
    if (!handler) throw new InvalidArgumentError(`${contract.name}: no handler for ${m.wire}`);
    peer.handle(m.wire, (params) => handler(checkParams(m, params)));
  }
}

// ── Notifications ─────────────────────────────────────────────────────────────────────────────

export function notify<P extends TSchema>(peer: RpcPeer, n: Notification<P>, payload: Static<P>): void {
  peer.notify(n.wire, payload);
}

/**
 * Listen to a topic: payloads outside the schema are dropped (one-way: there is no one to answer)
 * and handed to `onInvalid` when given, so the listener only ever sees typed values.
 */
export function onNotify<P extends TSchema>(peer: RpcPeer, n: Notification<P>, fn: (payload: Static<P>) => void, onInvalid?: (error: ProtocolError) => void): void {
  peer.on(n.wire, (payload) => {
    const check = n.checkPayload();
    if (check.Check(payload)) fn(payload);
    else onInvalid?.(new ProtocolError(`${peer.name}: ${n.wire} payload outside its contract at ${firstViolation(check, payload)}`));
  });
}
