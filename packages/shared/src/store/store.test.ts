import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { StoreError, TimeoutError } from '../errors.js';
import { DEFAULT_STORE_QUOTA, Store, normalizePath } from './store.js';
import { LocalStoreClient, inTransaction } from './client.js';
import { XenbusState, backendPath, frontendPath, readState, switchState, waitForState } from './xenbus.js';

const DOM0 = 0;
const GUEST = 3;

async function errnoOf(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof StoreError) return e.errno;
    throw e;
  }
  return undefined;
}

/** Let queued microtasks (registration watch events) run. */
const settle = () => new Promise<void>((r) => setTimeout(r, 0));

function recorder() {
  const events: string[] = [];
  return { events, cb: (path: string) => void events.push(path) };
}

describe('store tree operations', () => {
  let s: Store;
  beforeEach(() => {
    s = new Store();
  });

  it('write creates intermediate nodes; read returns the value', async () => {
    s.write(DOM0, '/a/b/c', 'x');
    expect(s.read(DOM0, '/a/b/c')).toBe('x');
    expect(s.read(DOM0, '/a/b')).toBe('');
    s.write(DOM0, '/a/b/c', 'y');
    expect(s.read(DOM0, '/a/b/c')).toBe('y');
    expect(await errnoOf(() => s.read(DOM0, '/a/nope'))).toBe('ENOENT');
    expect(s.tryRead(DOM0, '/a/nope')).toBeUndefined();
    expect(s.tryRead(DOM0, '/a/b/c')).toBe('y');
  });

  it('directory lists children sorted; mkdir creates empty nodes and keeps existing values', async () => {
    s.write(DOM0, '/d/zeta', '1');
    s.write(DOM0, '/d/alpha', '2');
    s.mkdir(DOM0, '/d/mid');
    expect(s.directory(DOM0, '/d')).toEqual(['alpha', 'mid', 'zeta']);
    expect(s.read(DOM0, '/d/mid')).toBe('');
    expect(s.directory(DOM0, '/d/mid')).toEqual([]);
    s.mkdir(DOM0, '/d/alpha');
    expect(s.read(DOM0, '/d/alpha')).toBe('2');
    expect(await errnoOf(() => s.directory(DOM0, '/none'))).toBe('ENOENT');
    expect(s.directory(DOM0, '/')).toEqual(['d']);
  });

  it('rm removes a whole subtree', async () => {
    s.write(DOM0, '/r/a/b', '1');
    s.write(DOM0, '/r/c', '2');
    s.rm(DOM0, '/r/a');
    expect(s.directory(DOM0, '/r')).toEqual(['c']);
    expect(await errnoOf(() => s.read(DOM0, '/r/a/b'))).toBe('ENOENT');
    expect(await errnoOf(() => s.rm(DOM0, '/r/a'))).toBe('ENOENT');
    expect(await errnoOf(() => s.rm(DOM0, '/'))).toBe('EINVAL');
    s.write(DOM0, '/r/a/b', 'again');
    expect(s.read(DOM0, '/r/a/b')).toBe('again');
  });

  it('rejects malformed paths with EINVAL', async () => {
    for (const p of ['a/b', '', '/a//b', '/a/', '/a/../b', '/a/./b', '/a b', '/x/' + 'y'.repeat(1100)])
      expect(await errnoOf(() => s.write(DOM0, p, 'v')), JSON.stringify(p)).toBe('EINVAL');
    expect(normalizePath('/local/domain/3/device/vbd/51712/state')).toBe('/local/domain/3/device/vbd/51712/state');
    expect(normalizePath('/')).toBe('/');
    expect(await errnoOf(() => s.write(DOM0, '/v', 5 as unknown as string))).toBe('EINVAL');
  });

  it('dump lists paths and values below a node', () => {
    s.write(DOM0, '/t/a', '1');
    s.write(DOM0, '/t/b/c', '2');
    expect(s.dump('/t')).toEqual([
      ['/t', ''],
      ['/t/a', '1'],
      ['/t/b', ''],
      ['/t/b/c', '2'],
    ]);
  });
});

describe('store permissions', () => {
  let s: Store;
  beforeEach(() => {
    s = new Store();
    s.mkdir(DOM0, '/local/domain/3');
    s.mkdir(DOM0, '/local/domain/4');
    s.mkdir(DOM0, '/local/domain/33');
    s.write(DOM0, '/local/domain/0/backend/vbd/3/0/state', '2');
    s.write(DOM0, '/local/domain/0/backend/vbd/4/0/state', '2');
    s.write(DOM0, '/local/domain/0/backend/vbd/33/0/state', '2');
    s.write(DOM0, '/local/domain/4/secret', 's');
  });

  it('a guest may write below its own domain directory only', async () => {
    s.write(GUEST, '/local/domain/3/device/vbd/0/state', '1');
    expect(s.read(GUEST, '/local/domain/3/device/vbd/0/state')).toBe('1');
    s.mkdir(GUEST, '/local/domain/3/data');
    s.rm(GUEST, '/local/domain/3/data');
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/4/device/vbd/0/state', '1'))).toBe('EACCES');
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/33/x', '1'))).toBe('EACCES'); // not a prefix match
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/0/backend/vbd/3/0/state', '4'))).toBe('EACCES');
    expect(await errnoOf(() => s.write(GUEST, '/tool', '1'))).toBe('EACCES');
    expect(await errnoOf(() => s.rm(GUEST, '/local/domain/4/secret'))).toBe('EACCES');
    expect(await errnoOf(() => s.mkdir(GUEST, '/local/domain/4/x'))).toBe('EACCES');
    expect(s.read(DOM0, '/local/domain/4/secret')).toBe('s');
  });

  it('a guest may read its own tree and its backends, nothing else', async () => {
    expect(s.read(GUEST, '/local/domain/0/backend/vbd/3/0/state')).toBe('2');
    expect(s.directory(GUEST, '/local/domain/0/backend/vbd/3')).toEqual(['0']);
    expect(await errnoOf(() => s.read(GUEST, '/local/domain/0/backend/vbd/4/0/state'))).toBe('EACCES');
    expect(await errnoOf(() => s.read(GUEST, '/local/domain/0/backend/vbd/33/0/state'))).toBe('EACCES');
    expect(await errnoOf(() => s.read(GUEST, '/local/domain/4/secret'))).toBe('EACCES');
    expect(await errnoOf(() => s.directory(GUEST, '/local/domain/0/backend/vbd'))).toBe('EACCES');
    expect(await errnoOf(() => s.directory(GUEST, '/local/domain'))).toBe('EACCES');
    expect(await errnoOf(() => s.read(GUEST, '/local/domain/33'))).toBe('EACCES');
    // EACCES is reported before existence: a guest cannot probe other domains' keys.
    expect(await errnoOf(() => s.read(GUEST, '/local/domain/4/no-such-key'))).toBe('EACCES');
  });

  it('dom0 may do anything', () => {
    s.write(DOM0, '/local/domain/3/device/vbd/0/backend-id', '0');
    expect(s.read(DOM0, '/local/domain/4/secret')).toBe('s');
    s.rm(DOM0, '/local/domain/4');
    expect(s.tryRead(DOM0, '/local/domain/4/secret')).toBeUndefined();
  });
});

describe('store watches', () => {
  let s: Store;
  beforeEach(() => {
    s = new Store();
  });

  it('fires once on registration, then on each change at or below the watched path', async () => {
    const r = recorder();
    s.watch(DOM0, '/w/dev', 'tok', r.cb);
    expect(r.events).toEqual([]); // asynchronously, so the watcher is set up first
    await settle();
    expect(r.events).toEqual(['/w/dev']);
    s.write(DOM0, '/w/dev', 'v');
    s.write(DOM0, '/w/dev/state', '1');
    s.mkdir(DOM0, '/w/dev/sub/dir');
    s.write(DOM0, '/w/other', 'x'); // sibling
    s.write(DOM0, '/w/devx', 'x'); // shares a prefix but is not below
    s.write(DOM0, '/w', 'parent'); // above
    expect(r.events).toEqual(['/w/dev', '/w/dev', '/w/dev/state', '/w/dev/sub/dir']);
  });

  it('passes the token and stops after unwatch', async () => {
    const tokens: string[] = [];
    s.watch(DOM0, '/u', 'T1', (_p, t) => tokens.push(t));
    await settle();
    s.write(DOM0, '/u/a', '1');
    s.unwatch(DOM0, '/u', 'T1');
    s.write(DOM0, '/u/a', '2');
    await settle();
    expect(tokens).toEqual(['T1', 'T1']);
    expect(await errnoOf(() => s.unwatch(DOM0, '/u', 'T1'))).toBe('ENOENT');
  });

  it('a watch removed before its registration event never fires', async () => {
    const r = recorder();
    s.watch(DOM0, '/x', 't', r.cb);
    s.unwatch(DOM0, '/x', 't');
    await settle();
    expect(r.events).toEqual([]);
  });

  it('rm fires watches at, above and below the removed node', async () => {
    s.write(DOM0, '/rm/a/b/c', '1');
    const below = recorder();
    const above = recorder();
    const at = recorder();
    const unrelated = recorder();
    s.watch(DOM0, '/rm/a/b/c', 't1', below.cb);
    s.watch(DOM0, '/rm', 't2', above.cb);
    s.watch(DOM0, '/rm/a', 't3', at.cb);
    s.watch(DOM0, '/rmx', 't4', unrelated.cb);
    await settle();
    s.rm(DOM0, '/rm/a');
    expect(below.events).toEqual(['/rm/a/b/c', '/rm/a']);
    expect(above.events).toEqual(['/rm', '/rm/a']);
    expect(at.events).toEqual(['/rm/a', '/rm/a']);
    expect(unrelated.events).toEqual(['/rmx']);
  });

  it("a guest's watch only reports changes it may read", async () => {
    s.mkdir(DOM0, '/local/domain/3');
    const r = recorder();
    s.watch(GUEST, '/local/domain', 'g', r.cb);
    await settle();
    s.write(DOM0, '/local/domain/4/secret', 'x');
    s.write(DOM0, '/local/domain/3/device/vbd/0/state', '1');
    s.write(DOM0, '/local/domain/0/backend/vbd/3/0/state', '2');
    s.write(DOM0, '/local/domain/0/backend/vbd/4/0/state', '2');
    expect(r.events).toEqual(['/local/domain', '/local/domain/3/device/vbd/0/state', '/local/domain/0/backend/vbd/3/0/state']);
  });

  it('a transaction fires watches on commit, not before, and never on abort', async () => {
    const r = recorder();
    s.watch(DOM0, '/tx', 't', r.cb);
    await settle();
    const t = s.transactionStart(DOM0);
    s.write(DOM0, '/tx/a', '1', t);
    expect(r.events).toEqual(['/tx']);
    s.transactionEnd(DOM0, t, true);
    expect(r.events).toEqual(['/tx', '/tx/a']);
    const t2 = s.transactionStart(DOM0);
    s.write(DOM0, '/tx/b', '1', t2);
    s.transactionEnd(DOM0, t2, false);
    expect(r.events).toEqual(['/tx', '/tx/a']);
  });
});

describe('store transactions', () => {
  let s: Store;
  beforeEach(() => {
    s = new Store();
    s.write(DOM0, '/t/x', '0');
    s.write(DOM0, '/t/y', '0');
  });

  it('reads its own writes, hides them from others until commit', () => {
    const t = s.transactionStart(DOM0);
    s.write(DOM0, '/t/x', '1', t);
    s.write(DOM0, '/t/new/leaf', 'n', t);
    expect(s.read(DOM0, '/t/x', t)).toBe('1');
    expect(s.read(DOM0, '/t/x')).toBe('0');
    expect(s.tryRead(DOM0, '/t/new/leaf')).toBeUndefined();
    expect(s.directory(DOM0, '/t', t)).toEqual(['new', 'x', 'y']);
    s.transactionEnd(DOM0, t, true);
    expect(s.read(DOM0, '/t/x')).toBe('1');
    expect(s.read(DOM0, '/t/new/leaf')).toBe('n');
  });

  it('abort discards every change', () => {
    const t = s.transactionStart(DOM0);
    s.write(DOM0, '/t/x', '1', t);
    s.rm(DOM0, '/t/y', t);
    s.mkdir(DOM0, '/t/dir', t);
    s.transactionEnd(DOM0, t, false);
    expect(s.read(DOM0, '/t/x')).toBe('0');
    expect(s.read(DOM0, '/t/y')).toBe('0');
    expect(s.tryRead(DOM0, '/t/dir')).toBeUndefined();
  });

  it('rm inside a transaction hides the node (and its children) from that transaction only', async () => {
    s.write(DOM0, '/t/y/child', 'c');
    const t = s.transactionStart(DOM0);
    s.rm(DOM0, '/t/y', t);
    expect(await errnoOf(() => s.read(DOM0, '/t/y', t))).toBe('ENOENT');
    expect(await errnoOf(() => s.read(DOM0, '/t/y/child', t))).toBe('ENOENT');
    expect(s.directory(DOM0, '/t', t)).toEqual(['x']);
    expect(s.read(DOM0, '/t/y/child')).toBe('c');
    s.transactionEnd(DOM0, t, true);
    expect(s.tryRead(DOM0, '/t/y')).toBeUndefined();
  });

  it('a conflicting commit fails with EAGAIN and applies nothing', async () => {
    const t = s.transactionStart(DOM0);
    expect(s.read(DOM0, '/t/x', t)).toBe('0');
    s.write(DOM0, '/t/y', '1', t);
    s.write(DOM0, '/t/x', 'other'); // someone else changes what the transaction read
    const err = await errnoOf(() => s.transactionEnd(DOM0, t, true));
    expect(err).toBe('EAGAIN');
    expect(s.read(DOM0, '/t/y')).toBe('0');
    expect(await errnoOf(() => s.transactionEnd(DOM0, t, true))).toBe('ENOENT'); // it is gone
  });

  it('a write to a path the transaction wrote (not read) also conflicts', async () => {
    const t = s.transactionStart(DOM0);
    s.write(DOM0, '/t/x', 'mine', t);
    s.write(DOM0, '/t/x', 'theirs');
    expect(await errnoOf(() => s.transactionEnd(DOM0, t, true))).toBe('EAGAIN');
    expect(s.read(DOM0, '/t/x')).toBe('theirs');
  });

  it('a concurrent removal of a path the transaction read conflicts', async () => {
    const t = s.transactionStart(DOM0);
    s.read(DOM0, '/t/y', t);
    s.write(DOM0, '/t/x', '1', t);
    s.rm(DOM0, '/t/y');
    expect(await errnoOf(() => s.transactionEnd(DOM0, t, true))).toBe('EAGAIN');
  });

  it('a concurrent creation of a path the transaction found missing conflicts', async () => {
    const t = s.transactionStart(DOM0);
    expect(s.tryRead(DOM0, '/t/z', t)).toBeUndefined();
    s.write(DOM0, '/t/z', 'created', t);
    s.write(DOM0, '/t/z', 'theirs');
    expect(await errnoOf(() => s.transactionEnd(DOM0, t, true))).toBe('EAGAIN');
  });

  it('a new entry in a directory the transaction listed conflicts', async () => {
    const t = s.transactionStart(DOM0);
    expect(s.directory(DOM0, '/t', t)).toEqual(['x', 'y']);
    s.write(DOM0, '/t/count', '2', t);
    s.write(DOM0, '/t/w', 'new'); // the listing the transaction acted on is now stale
    expect(await errnoOf(() => s.transactionEnd(DOM0, t, true))).toBe('EAGAIN');
  });

  it('rm then re-create inside a transaction does not resurrect the old children', async () => {
    s.write(DOM0, '/t/y/old', 'o');
    const t = s.transactionStart(DOM0);
    s.rm(DOM0, '/t/y', t);
    s.write(DOM0, '/t/y/new', 'n', t);
    expect(s.read(DOM0, '/t/y', t)).toBe('');
    expect(await errnoOf(() => s.read(DOM0, '/t/y/old', t))).toBe('ENOENT');
    expect(s.directory(DOM0, '/t/y', t)).toEqual(['new']);
    s.transactionEnd(DOM0, t, true);
    expect(s.directory(DOM0, '/t/y')).toEqual(['new']);
  });

  it("a transaction's view is exactly what its commit produces", () => {
    const names = ['a', 'b'];
    const paths: string[] = ['/p'];
    for (let i = 0; i < paths.length; i++) if (paths[i].split('/').length < 5) for (const n of names) paths.push(`${paths[i]}/${n}`);
    const pathArb = fc.constantFrom(...paths);
    const opArb = fc.oneof(
      fc.record({ op: fc.constant('write' as const), path: pathArb, value: fc.constantFrom('', 'v1', 'v2') }),
      fc.record({ op: fc.constant('mkdir' as const), path: pathArb }),
      fc.record({ op: fc.constant('rm' as const), path: pathArb }),
    );
    const snapshot = (store: Store, tx?: number) =>
      paths.map((p) => {
        const value = store.tryRead(DOM0, p, tx);
        return value === undefined ? [p, null] : [p, value, store.directory(DOM0, p, tx)];
      });
    fc.assert(
      fc.property(fc.array(pathArb, { maxLength: 8 }), fc.array(opArb, { maxLength: 12, size: 'max' }), (initial, ops) => {
        const store = new Store();
        for (const p of initial) store.write(DOM0, p, 'init');
        const t = store.transactionStart(DOM0);
        for (const o of ops) {
          if (o.op === 'write') store.write(DOM0, o.path, o.value, t);
          else if (o.op === 'mkdir') store.mkdir(DOM0, o.path, t);
          else if (store.tryRead(DOM0, o.path, t) !== undefined) store.rm(DOM0, o.path, t);
        }
        const view = snapshot(store, t);
        store.transactionEnd(DOM0, t, true);
        expect(view).toEqual(snapshot(store));
      }),
      { numRuns: 500 },
    );
  });

  it('non-conflicting transactions both commit', () => {
    const a = s.transactionStart(DOM0);
    const b = s.transactionStart(DOM0);
    s.read(DOM0, '/t/x', a);
    s.write(DOM0, '/t/x', 'a', a);
    s.read(DOM0, '/t/y', b);
    s.write(DOM0, '/t/y', 'b', b);
    s.write(DOM0, '/elsewhere', 'unrelated');
    s.transactionEnd(DOM0, a, true);
    s.transactionEnd(DOM0, b, true);
    expect([s.read(DOM0, '/t/x'), s.read(DOM0, '/t/y')]).toEqual(['a', 'b']);
  });

  it('a transaction belongs to the domain that started it', async () => {
    s.mkdir(DOM0, '/local/domain/3');
    const t = s.transactionStart(GUEST);
    expect(await errnoOf(() => s.write(DOM0, '/t/x', '1', t))).toBe('ENOENT');
    expect(await errnoOf(() => s.transactionEnd(DOM0, t, true))).toBe('ENOENT');
    expect(await errnoOf(() => s.write(GUEST, '/t/x', '1', t))).toBe('EACCES'); // permissions still apply
    s.write(GUEST, '/local/domain/3/k', 'v', t);
    s.transactionEnd(GUEST, t, true);
    expect(s.read(DOM0, '/local/domain/3/k')).toBe('v');
  });
});

describe('inTransaction', () => {
  it('retries on EAGAIN and returns the result of the successful attempt', async () => {
    const s = new Store();
    s.write(DOM0, '/c/n', '0');
    const c = new LocalStoreClient(s, DOM0);
    let attempts = 0;
    const result = await inTransaction(c, async (tx) => {
      attempts++;
      const n = Number(await c.read('/c/n', tx));
      if (attempts === 1) s.write(DOM0, '/c/n', '10'); // a racing writer, once
      await c.write('/c/n', String(n + 1), tx);
      return n + 1;
    });
    expect(attempts).toBe(2);
    expect(result).toBe(11);
    expect(s.read(DOM0, '/c/n')).toBe('11');
  });

  it('gives up after the given number of attempts with EAGAIN', async () => {
    const s = new Store();
    s.write(DOM0, '/c/n', '0');
    const c = new LocalStoreClient(s, DOM0);
    let attempts = 0;
    const err = await errnoOf(() =>
      inTransaction(
        c,
        async (tx) => {
          attempts++;
          await c.read('/c/n', tx);
          if (attempts < 10) s.write(DOM0, '/c/n', String(attempts)); // races every attempt (a bound keeps a broken retry loop finite)
        },
        3,
      ),
    );
    expect(err).toBe('EAGAIN');
    expect(attempts).toBe(3);
  });

  it('aborts and rethrows when the body throws, releasing the transaction', async () => {
    const s = new Store({ ...DEFAULT_STORE_QUOTA, maxTransactionsPerDomain: 1 });
    const c = new LocalStoreClient(s, DOM0);
    await expect(
      inTransaction(c, async (tx) => {
        await c.write('/boom', '1', tx);
        throw new Error('body failed');
      }),
    ).rejects.toThrow('body failed');
    expect(s.tryRead(DOM0, '/boom')).toBeUndefined();
    await expect(inTransaction(c, async (tx) => c.write('/ok', '1', tx))).resolves.toBeUndefined(); // slot was freed
    expect(s.read(DOM0, '/ok')).toBe('1');
  });
});

describe('store quotas', () => {
  const quota = { maxNodesPerDomain: 4, maxValueBytes: 16, maxWatchesPerDomain: 2, maxTransactionsPerDomain: 2 };
  let s: Store;
  beforeEach(() => {
    s = new Store(quota);
    s.mkdir(DOM0, '/local/domain/3'); // owned by dom0, not counted against the guest
  });

  it('limits the nodes a guest creates (EQUOTA); removing nodes gives quota back', async () => {
    for (const k of ['a', 'b', 'c', 'd']) s.write(GUEST, `/local/domain/3/${k}`, '1');
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/3/e', '1'))).toBe('EQUOTA');
    s.write(GUEST, '/local/domain/3/a', 'rewrite'); // existing nodes can still change
    s.rm(GUEST, '/local/domain/3/a');
    s.write(GUEST, '/local/domain/3/e', '1');
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/3/f/g', '1'))).toBe('EQUOTA');
    for (let i = 0; i < 10; i++) s.write(DOM0, `/local/domain/3/dom0-${i}`, 'x'); // dom0 is exempt
  });

  it('removing a subtree returns the quota of every node in it', () => {
    s.write(GUEST, '/local/domain/3/x/y/z', '1'); // three nodes
    s.rm(GUEST, '/local/domain/3/x');
    for (const k of ['a', 'b', 'c', 'd']) s.write(GUEST, `/local/domain/3/${k}`, '1');
  });

  it('limits value size in bytes (E2BIG)', async () => {
    s.write(GUEST, '/local/domain/3/v', 'x'.repeat(16));
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/3/v', 'x'.repeat(17)))).toBe('E2BIG');
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/3/v', 'é'.repeat(9)))).toBe('E2BIG'); // 18 bytes
    expect(await errnoOf(() => s.write(DOM0, '/big', 'x'.repeat(17)))).toBe('E2BIG');
    const t = s.transactionStart(GUEST);
    expect(await errnoOf(() => s.write(GUEST, '/local/domain/3/v', 'x'.repeat(17), t))).toBe('E2BIG');
    s.transactionEnd(GUEST, t, false);
    expect(s.read(GUEST, '/local/domain/3/v')).toBe('x'.repeat(16));
  });

  it('limits watches and open transactions per guest', async () => {
    s.watch(GUEST, '/local/domain/3/a', 't1', () => {});
    s.watch(GUEST, '/local/domain/3/b', 't2', () => {});
    expect(await errnoOf(() => s.watch(GUEST, '/local/domain/3/c', 't3', () => {}))).toBe('EQUOTA');
    s.unwatch(GUEST, '/local/domain/3/a', 't1');
    s.watch(GUEST, '/local/domain/3/c', 't3', () => {});
    const t1 = s.transactionStart(GUEST);
    s.transactionStart(GUEST);
    expect(await errnoOf(() => s.transactionStart(GUEST))).toBe('EQUOTA');
    s.transactionEnd(GUEST, t1, false);
    s.transactionStart(GUEST);
    s.releaseDomain(GUEST);
    s.transactionStart(GUEST);
    s.watch(GUEST, '/local/domain/3/d', 't4', () => {});
  });
});

describe('store changes are all-or-nothing', () => {
  const quota = { maxNodesPerDomain: 4, maxValueBytes: 64, maxWatchesPerDomain: 8, maxTransactionsPerDomain: 4 };
  const D = '/local/domain/3';
  let s: Store;
  beforeEach(() => {
    s = new Store(quota);
    s.mkdir(DOM0, D); // owned by dom0, not counted against the guest
  });

  it('rm of a path the transaction does not see fails with ENOENT at once (cxenstored); the transaction goes on', async () => {
    s.write(GUEST, `${D}/a`, '1');
    const t = s.transactionStart(GUEST);
    expect(await errnoOf(() => s.rm(GUEST, `${D}/missing`, t))).toBe('ENOENT');
    s.rm(GUEST, `${D}/a`, t);
    expect(await errnoOf(() => s.rm(GUEST, `${D}/a`, t))).toBe('ENOENT'); // already gone in its view
    expect(await errnoOf(() => s.rm(GUEST, `${D}/a/below`, t))).toBe('ENOENT');
    s.write(GUEST, `${D}/b`, '2', t);
    s.transactionEnd(GUEST, t, true);
    expect(s.dump(D)).toEqual([[D, ''], [`${D}/b`, '2']]);
  });

  it('an EQUOTA part-way through a commit applies nothing, fires no watch, and ends the transaction', async () => {
    s.write(GUEST, `${D}/keep`, 'old');
    const before = s.dump();
    const w = recorder();
    s.watch(DOM0, '/', 'all', w.cb);
    await settle();
    w.events.length = 0;
    const t = s.transactionStart(GUEST);
    s.write(GUEST, `${D}/keep`, 'new', t); // applied first at commit...
    s.rm(GUEST, `${D}/keep`, t); // ...0 of 4 nodes...
    s.write(GUEST, `${D}/x/y`, '1', t); // ...2 of 4...
    s.write(GUEST, `${D}/z/w/v`, '1', t); // ...and three more: the third is over the quota
    expect(await errnoOf(() => s.transactionEnd(GUEST, t, true))).toBe('EQUOTA');
    await settle();
    expect(s.dump()).toEqual(before);
    expect(w.events).toEqual([]);
    expect(await errnoOf(() => s.transactionEnd(GUEST, t, true))).toBe('ENOENT');
    // The quota count was restored too: exactly three more nodes fit.
    for (const k of ['p', 'q', 'r']) s.write(GUEST, `${D}/${k}`, '1');
    expect(await errnoOf(() => s.write(GUEST, `${D}/s`, '1'))).toBe('EQUOTA');
  });

  it('a plain write whose missing ancestors run into EQUOTA leaves none of them behind', async () => {
    s.write(GUEST, `${D}/a`, '1');
    s.write(GUEST, `${D}/b`, '1');
    const before = s.dump();
    expect(await errnoOf(() => s.write(GUEST, `${D}/c/d/e`, '1'))).toBe('EQUOTA'); // c and d fit, e does not
    expect(s.dump()).toEqual(before);
    s.write(GUEST, `${D}/c/d`, '1'); // the two nodes are still free
  });

  it('a transaction with a quota that trips at a random point leaves the store exactly as before; watches fire only for committed changes', () => {
    const names = ['a', 'b', 'c'];
    const paths: string[] = [D];
    for (let i = 0; i < paths.length; i++) if (paths[i].split('/').length < 7) for (const n of names) paths.push(`${paths[i]}/${n}`);
    const pathArb = fc.constantFrom(...paths.slice(1));
    const opArb = fc.oneof(
      fc.record({ op: fc.constant('write' as const), path: pathArb, value: fc.constantFrom('', 'v1', 'v2') }),
      fc.record({ op: fc.constant('mkdir' as const), path: pathArb }),
      fc.record({ op: fc.constant('rm' as const), path: pathArb }),
    );
    type Op = { op: 'write'; path: string; value: string } | { op: 'mkdir'; path: string } | { op: 'rm'; path: string };
    /** Apply one op, directly or in transaction `t`; ENOENT (rm of a missing path) is an answer, not a failure. */
    const apply = (store: Store, o: Op, t?: number): void => {
      try {
        if (o.op === 'write') store.write(GUEST, o.path, o.value, t);
        else if (o.op === 'mkdir') store.mkdir(GUEST, o.path, t);
        else store.rm(GUEST, o.path, t);
      } catch (e) {
        if (!(e instanceof StoreError && e.errno === 'ENOENT' && o.op === 'rm')) throw e;
      }
    };
    /** Two stores built alike, each with a watch on everything recording synchronously. */
    const build = (maxNodes: number, initial: string[]) => {
      const store = new Store({ ...quota, maxNodesPerDomain: maxNodes });
      store.mkdir(DOM0, D);
      for (const p of initial) {
        try {
          store.write(GUEST, p, 'init');
        } catch (e) {
          if (!(e instanceof StoreError && e.errno === 'EQUOTA')) throw e;
        }
      }
      const events: string[] = [];
      store.watch(DOM0, '/', 'all', (p) => events.push(p));
      return { store, events };
    };
    /** What the guest can still create: writes fresh nodes until EQUOTA (the quota count, observed). */
    const headroom = (store: Store): number => {
      let n = 0;
      for (; n < 64; n++) {
        try {
          store.write(GUEST, `${D}/probe${n}`, '');
        } catch (e) {
          if (e instanceof StoreError && e.errno === 'EQUOTA') break;
          throw e;
        }
      }
      return n;
    };
    let tripped = 0;
    let committed = 0;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 14 }), fc.array(pathArb, { maxLength: 6 }), fc.array(opArb, { minLength: 1, maxLength: 14 }), (maxNodes, initial, ops) => {
        const a = build(maxNodes, initial); // the transaction's store
        const b = build(maxNodes, initial); // the same ops applied directly, or nothing
        a.events.length = 0; // the registration events are microtasks: none has run yet
        const before = a.store.dump();
        const t = a.store.transactionStart(GUEST);
        for (const o of ops) apply(a.store, o, t);
        let error: string | undefined;
        try {
          a.store.transactionEnd(GUEST, t, true);
        } catch (e) {
          if (!(e instanceof StoreError)) throw e;
          error = e.errno;
        }
        if (error !== undefined) {
          tripped++;
          expect(error).toBe('EQUOTA');
          expect(a.store.dump()).toEqual(before);
          expect(a.events).toEqual([]);
        } else {
          committed++;
          b.events.length = 0;
          for (const o of ops) apply(b.store, o); // cannot trip: the commit did not
          expect(a.store.dump()).toEqual(b.store.dump());
          expect(a.events).toEqual(b.events); // one event per committed change, in order
        }
        // Indistinguishable from the store that never saw a failed commit: same quota left.
        if (error !== undefined) expect(a.store.dump()).toEqual(b.store.dump());
        expect(headroom(a.store)).toBe(headroom(b.store));
        expect(a.store.dump()).toEqual(b.store.dump());
      }),
      { numRuns: 400 },
    );
    // Both outcomes were really exercised.
    expect(tripped).toBeGreaterThan(20);
    expect(committed).toBeGreaterThan(20);
  });
});

describe('xenbus state handshake over the store', () => {
  it('builds the frontend and backend paths', () => {
    expect(frontendPath(3, 'vbd', 51712)).toBe('/local/domain/3/device/vbd/51712');
    expect(backendPath(0, 'vif', 3, 0)).toBe('/local/domain/0/backend/vif/3/0');
  });

  it('readState maps missing or garbage values to Unknown', async () => {
    const s = new Store();
    const c = new LocalStoreClient(s, DOM0);
    expect(await readState(c, '/dev')).toBe(XenbusState.Unknown);
    await switchState(c, '/dev', XenbusState.InitWait);
    expect(s.read(DOM0, '/dev/state')).toBe('2');
    expect(await readState(c, '/dev')).toBe(XenbusState.InitWait);
    for (const junk of ['9', '-1', 'x', '1.5']) {
      s.write(DOM0, '/dev/state', junk);
      expect(await readState(c, '/dev')).toBe(XenbusState.Unknown);
    }
  });

  it('waitForState resolves when the other side writes the awaited state', async () => {
    const s = new Store();
    s.mkdir(DOM0, '/local/domain/3');
    const back = new LocalStoreClient(s, DOM0);
    const front = new LocalStoreClient(s, GUEST);
    const fe = frontendPath(3, 'vbd', 0);
    const be = backendPath(0, 'vbd', 3, 0);
    await switchState(front, fe, XenbusState.Initialising);
    await switchState(back, be, XenbusState.Initialising);
    const seen: XenbusState[] = [];
    const connected = waitForState(front, be, (st) => {
      seen.push(st);
      return st === XenbusState.Connected;
    });
    await settle();
    await switchState(back, be, XenbusState.InitWait);
    await settle();
    await switchState(back, be, XenbusState.Connected);
    await expect(connected).resolves.toBe(XenbusState.Connected);
    expect(seen).toContain(XenbusState.InitWait);
    expect(seen[seen.length - 1]).toBe(XenbusState.Connected);
  });

  it('waitForState resolves at once if the state already holds, and removes its watch', async () => {
    const s = new Store({ ...DEFAULT_STORE_QUOTA, maxWatchesPerDomain: 1 });
    s.mkdir(DOM0, '/local/domain/3');
    const front = new LocalStoreClient(s, GUEST);
    const fe = frontendPath(3, 'vif', 0);
    await switchState(front, fe, XenbusState.Connected);
    for (let i = 0; i < 3; i++) await expect(waitForState(front, fe, (st) => st === XenbusState.Connected)).resolves.toBe(XenbusState.Connected);
    // With a quota of one watch, this only works if each wait released its watch.
    s.watch(GUEST, fe, 'last', () => {});
  });

  it('waitForState times out with TimeoutError', async () => {
    const s = new Store();
    const c = new LocalStoreClient(s, DOM0);
    await expect(waitForState(c, '/nobody', (st) => st === XenbusState.Connected, 50)).rejects.toBeInstanceOf(TimeoutError);
  });
});
