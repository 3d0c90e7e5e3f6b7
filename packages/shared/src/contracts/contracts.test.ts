/**
 * Walks every contract through a real RpcPeer pair (MessageChannel): for each method, params
 * outside the schema are refused with RV_ERR_INVALID_ARG naming the field before the handler
 * runs; a valid call round-trips; a server answering outside the schema is refused by the client
 * with RV_ERR_PROTOCOL. Notifications: a valid payload reaches the listener, an invalid one never.
 */
import { MessageChannel } from 'node:worker_threads';
import { Kind, OptionalKind, type TSchema } from '@sinclair/typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { DeviceError, type RingvisorError } from '../errors.js';
import { PortLink, RpcPeer } from '../transport/rpc.js';
import { ControlContract, GuestBootContract, GuestControlContract, HardwareBootContract, HardwareContract, HypercallContract, IoReqLinkContract, TraceForwardContract, VmAppContract, VmAppHostContract } from './index.js';
import { contractClient, notify, onNotify, serveContract, TRANSPORT_ERRORS, type Contract, type ContractHandlers, type Method } from './contract.js';

const CONTRACTS: Contract[] = [HardwareContract, HardwareBootContract, GuestControlContract, GuestBootContract, VmAppContract, VmAppHostContract, IoReqLinkContract, HypercallContract, TraceForwardContract, ControlContract];

type Schema = TSchema & Record<string, unknown>;

/** A value the schema accepts (the smallest of each kind). */
function sample(schema: TSchema): unknown {
  const s = schema as Schema;
  switch (s[Kind]) {
    case 'Object': {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(s.properties as Record<string, Schema>)) if (v[OptionalKind] !== 'Optional') out[k] = sample(v);
      return out;
    }
    case 'Union':
      return sample((s.anyOf as TSchema[])[0]);
    case 'Literal':
      return s.const;
    case 'Integer':
    case 'Number':
      return (s.minimum as number | undefined) ?? 0;
    case 'String':
      return s.pattern ? 'ws://h:1' : 'x'.repeat((s.minLength as number | undefined) ?? 1);
    case 'Boolean':
      return true;
    case 'Null':
      return null;
    case 'Array':
      return [];
    case 'Record':
      return {};
    case 'Uint8Array':
      return new Uint8Array(4);
    case 'SharedArrayBuffer':
      return new SharedArrayBuffer(8);
    case 'Unknown':
      return null;
    default:
      throw new Error(`no sample for kind ${String(s[Kind])}`);
  }
}

/** A value of the wrong kind for `schema` (the first candidate it refuses). */
function wrong(m: Method, schema: TSchema, check: (v: unknown) => boolean): unknown {
  for (const v of ['garbage', 42, { garbage: true }, [1]]) if (!check(v)) return v;
  throw new Error(`${m.wire}: no value outside ${JSON.stringify(schema)}`);
}

const peers: RpcPeer[] = [];
function pair(): { client: RpcPeer; server: RpcPeer } {
  const { port1, port2 } = new MessageChannel();
  const client = new RpcPeer(new PortLink(port1), 'client');
  const server = new RpcPeer(new PortLink(port2), 'server');
  peers.push(client, server);
  return { client, server };
}
afterEach(() => {
  for (const p of peers.splice(0)) p.close();
});

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return { code: (e as RingvisorError).code, message: (e as Error).message };
  }
  return { code: 'resolved', message: '' };
}

describe.each(CONTRACTS.map((c) => [c.name, c] as const))('contract %s', (_name, contract) => {
  const methods = Object.entries(contract.methods);

  it('declares each wire name once, and only RV_ERR_ codes', () => {
    expect(new Set(methods.map(([, m]) => m.wire)).size).toBe(methods.length);
    for (const [, m] of methods) for (const code of m.errors) expect(code).toMatch(/^RV_ERR_[A-Z_]+$/);
  });

  it.each(methods)('%s: refuses bad params with RV_ERR_INVALID_ARG naming the field, round-trips a valid call, refuses a bad result with RV_ERR_PROTOCOL', async (key, m) => {
    const params = sample(m.params);
    const result = sample(m.result);
    let ran = 0;
    let answer: unknown = result;
    const handlers = Object.fromEntries(methods.map(([k]) => [k, () => (k === key ? (ran++, answer) : null)]));
    const { client, server } = pair();
    serveContract(server, contract, handlers as ContractHandlers<typeof contract>);
    const typed = contractClient(contract, client) as Record<string, (p: unknown, o?: { timeoutMs?: number }) => Promise<unknown>>;

    // The whole params of the wrong kind.
    const bad = await codeOf(client.call(m.wire, wrong(m, m.params, (v) => m.checkParams().Check(v))));
    expect(bad.code).toBe('RV_ERR_INVALID_ARG');
    expect(bad.message).toContain(m.wire);
    // One field of the wrong kind: the message names its path.
    const fields = params !== null && typeof params === 'object' && !Array.isArray(params) ? Object.keys(params) : [];
    if (fields.length > 0) {
      const field = fields[0];
      const broken = { ...(params as Record<string, unknown>), [field]: { not: 'this' } };
      if (!m.checkParams().Check(broken)) {
        const e = await codeOf(client.call(m.wire, broken));
        expect(e.code).toBe('RV_ERR_INVALID_ARG');
        expect(e.message).toContain(`/${field}`);
      }
    }
    expect(ran).toBe(0); // the handler never saw either

    // A valid call round-trips.
    expect(await typed[key](params)).toEqual(result);
    expect(ran).toBe(1);

    // A server answering outside the contract: the client refuses it.
    answer = wrong(m, m.result, (v) => m.checkResult().Check(v));
    const refused = await codeOf(typed[key](params));
    expect(refused.code).toBe('RV_ERR_PROTOCOL');
    expect(refused.message).toContain(m.wire);
  });

  it('delivers valid notifications and drops invalid ones', async () => {
    for (const n of Object.values(contract.notifications)) {
      const { client, server } = pair();
      const got: unknown[] = [];
      const refused: string[] = [];
      onNotify(server, n, (p) => got.push(p), (e) => refused.push(e.code));
      client.notify(n.wire, 'garbage');
      const payload = sample(n.payload);
      notify(client, n, payload as never);
      await expect.poll(() => got.length).toBe(1);
      expect(got[0]).toEqual(payload);
      expect(refused).toEqual(['RV_ERR_PROTOCOL']);
    }
  });
});

describe('contract machinery', () => {
  it('passes a handler\'s typed error through with its code, and the code is one the method declares', async () => {
    const { client, server } = pair();
    const guestHandlers = (over: Partial<ContractHandlers<typeof GuestControlContract>>): ContractHandlers<typeof GuestControlContract> => ({
      stats: () => sample(GuestControlContract.methods.stats.result) as never,
      quiesce: () => sample(GuestControlContract.methods.quiesce.result) as never,
      start: () => undefined,
      mark: () => null,
      stop: () => sample(GuestControlContract.methods.stop.result) as never,
      freeze: () => true,
      attack: () => ({}),
      directUnplug: () => undefined,
      directPlug: () => undefined,
      svioPlug: () => undefined,
      powerLost: () => undefined,
      ...over,
    });
    serveContract(
      server,
      GuestControlContract,
      guestHandlers({
        attack: () => {
          throw new DeviceError('no device vbd9');
        },
      }),
    );
    const guest = contractClient(GuestControlContract, client);
    const e = await codeOf(guest.attack({ device: 'vbd9', attack: 'x' }));
    expect(e.code).toBe('RV_ERR_DEVICE');
    expect([...GuestControlContract.methods.attack.errors, ...TRANSPORT_ERRORS]).toContain(e.code);
    // A method without params may be called with none (and a raw call with null params).
    expect(await guest.mark()).toBeNull();
    expect(await client.call('guest.mark')).toBeNull();
    // A guest's answer is checked: a stats result with a negative counter is refused.
    const { client: c2, server: s2 } = pair();
    const stats = sample(GuestControlContract.methods.stats.result) as { udp: { sent: number } };
    stats.udp.sent = -1;
    serveContract(s2, GuestControlContract, guestHandlers({ stats: () => stats as never }));
    expect((await codeOf(contractClient(GuestControlContract, c2).stats())).code).toBe('RV_ERR_PROTOCOL');
  });

  it('refuses to serve a contract with a handler missing', () => {
    const { server } = pair();
    // @ts-expect-error: every method must have a handler (a compile error, and a runtime one)
    expect(() => serveContract(server, ControlContract, {})).toThrow(/no handler for control\.ping/);
  });

  it('types calls from the schemas (compile-time checks)', () => {
    const { client } = pair();
    const hw = contractClient(HardwareContract, client);
    // @ts-expect-error: a renamed method does not exist
    void hw.svioCreat;
    // @ts-expect-error: a field of the wrong type
    void hw.nicLink({ up: 'yes' }).catch(() => undefined);
    expect(typeof hw.svioCreate).toBe('function');
  });
});
