/**
 * How a runtime talks to the store: one async interface, whether the store is in the same
 * thread (dom0's own backends and toolstack) or behind a link (guests).
 */
import type { RpcPeer } from '../transport/rpc.js';
import { StoreError } from '../errors.js';
import type { Store } from './store.js';
import { contractClient, onNotify, type ContractClient } from '../contracts/contract.js';
import { HypercallContract } from '../contracts/hypercalls.js';

export type Unwatch = () => Promise<void>;

export interface StoreClient {
  readonly domid: number;
  read(path: string, tx?: number): Promise<string>;
  /** undefined when the node does not exist. */
  tryRead(path: string, tx?: number): Promise<string | undefined>;
  write(path: string, value: string, tx?: number): Promise<void>;
  mkdir(path: string, tx?: number): Promise<void>;
  rm(path: string, tx?: number): Promise<void>;
  directory(path: string, tx?: number): Promise<string[]>;
  watch(path: string, cb: (changedPath: string) => void): Promise<Unwatch>;
  transactionStart(): Promise<number>;
  transactionEnd(tx: number, commit: boolean): Promise<void>;
}

/** Run `fn` in a transaction, retrying on EAGAIN (a bounded number of times). */
export async function inTransaction<T>(client: StoreClient, fn: (tx: number) => Promise<T>, attempts = 16): Promise<T> {
  for (let i = 0; ; i++) {
    const tx = await client.transactionStart();
    let result: T;
    try {
      result = await fn(tx);
    } catch (e) {
      await client.transactionEnd(tx, false).catch(() => {});
      throw e;
    }
    try {
      await client.transactionEnd(tx, true);
      return result;
    } catch (e) {
      if (!(e instanceof StoreError && e.errno === 'EAGAIN') || i + 1 >= attempts) throw e;
    }
  }
}

let watchSeq = 0;

/** The store in this thread, acting as `domid`. */
export class LocalStoreClient implements StoreClient {
  constructor(
    readonly store: Store,
    readonly domid: number,
  ) {}
  async read(path: string, tx?: number): Promise<string> {
    return this.store.read(this.domid, path, tx);
  }
  async tryRead(path: string, tx?: number): Promise<string | undefined> {
    return this.store.tryRead(this.domid, path, tx);
  }
  async write(path: string, value: string, tx?: number): Promise<void> {
    this.store.write(this.domid, path, value, tx);
  }
  async mkdir(path: string, tx?: number): Promise<void> {
    this.store.mkdir(this.domid, path, tx);
  }
  async rm(path: string, tx?: number): Promise<void> {
    this.store.rm(this.domid, path, tx);
  }
  async directory(path: string, tx?: number): Promise<string[]> {
    return this.store.directory(this.domid, path, tx);
  }
  async watch(path: string, cb: (changedPath: string) => void): Promise<Unwatch> {
    const token = `local-${++watchSeq}`;
    this.store.watch(this.domid, path, token, (p) => cb(p));
    return async () => this.store.unwatch(this.domid, path, token);
  }
  async transactionStart(): Promise<number> {
    return this.store.transactionStart(this.domid);
  }
  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    this.store.transactionEnd(this.domid, tx, commit);
  }
}

/** RPC method names the store server answers (dom0 binds them to the caller's proven domid). */
export const STORE_METHODS = ['read', 'tryRead', 'write', 'mkdir', 'rm', 'directory', 'watch', 'unwatch', 'txStart', 'txEnd'] as const;

/** The store behind a link (HypercallContract). Watch events arrive as `store.watch` notifications. */
export class RemoteStoreClient implements StoreClient {
  private readonly watchCbs = new Map<string, (p: string) => void>();
  private readonly hypercalls: ContractClient<typeof HypercallContract>;

  constructor(
    readonly peer: RpcPeer,
    readonly domid: number,
  ) {
    this.hypercalls = contractClient(HypercallContract, peer);
    onNotify(peer, HypercallContract.notifications.storeWatchFired, ({ token, path }) => this.watchCbs.get(token)?.(path));
  }
  read(path: string, tx?: number): Promise<string> {
    return this.hypercalls.storeRead({ path, tx });
  }
  tryRead(path: string, tx?: number): Promise<string | undefined> {
    return this.hypercalls.storeTryRead({ path, tx }).then((v) => v ?? undefined);
  }
  async write(path: string, value: string, tx?: number): Promise<void> {
    await this.hypercalls.storeWrite({ path, value, tx });
  }
  async mkdir(path: string, tx?: number): Promise<void> {
    await this.hypercalls.storeMkdir({ path, tx });
  }
  async rm(path: string, tx?: number): Promise<void> {
    await this.hypercalls.storeRm({ path, tx });
  }
  directory(path: string, tx?: number): Promise<string[]> {
    return this.hypercalls.storeDirectory({ path, tx });
  }
  async watch(path: string, cb: (changedPath: string) => void): Promise<Unwatch> {
    const token = `w${++watchSeq}`;
    this.watchCbs.set(token, cb);
    await this.hypercalls.storeWatch({ path, token });
    return async () => {
      this.watchCbs.delete(token);
      await this.hypercalls.storeUnwatch({ path, token });
    };
  }
  transactionStart(): Promise<number> {
    return this.hypercalls.storeTxStart();
  }
  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    await this.hypercalls.storeTxEnd({ tx, commit });
  }
}
