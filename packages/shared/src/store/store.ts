/**
 * The store (xenstored's data model): a tree of string values addressed by `/`-separated paths,
 * with watches and transactions.
 *
 * - Watches fire once on registration, then on any change at or below the watched path (the
 *   event names the path that changed).
 * - A transaction reads and writes through an overlay; on commit it fails with EAGAIN if any path
 *   it read or wrote was changed by someone else since it began (optimistic, as xenstored).
 *   A commit is all-or-nothing: if any of its operations fails (EQUOTA part-way through, say),
 *   everything it had applied is undone — tree, generations, quota counts — and no watch fires.
 *   Watches fire only once the whole commit has applied. Inside a transaction, `rm` of a path
 *   the transaction does not see fails with ENOENT at once, as in cxenstored.
 * - Every change outside a transaction is atomic the same way (a write whose missing ancestors
 *   run into EQUOTA leaves none of them behind).
 * - Permissions follow xenstored's default layout: dom0 may do anything; a guest may read and
 *   write below its own /local/domain/<id>, and read its backends' directories
 *   /local/domain/0/backend/<type>/<id>/…. Everything else is EACCES.
 * - Quotas bound what a guest can make the store hold: nodes per domain, value size, watches.
 */
import { StoreError } from '../errors.js';

export interface StoreQuota {
  maxNodesPerDomain: number;
  maxValueBytes: number;
  maxWatchesPerDomain: number;
  maxTransactionsPerDomain: number;
}

export const DEFAULT_STORE_QUOTA: StoreQuota = {
  maxNodesPerDomain: 1000,
  maxValueBytes: 4096,
  maxWatchesPerDomain: 128,
  maxTransactionsPerDomain: 10,
};

interface StoreNode {
  value: string;
  children: Map<string, StoreNode>;
  owner: number;
  /** Generation of the last change to this node (value, creation). */
  gen: number;
}

export type WatchCallback = (path: string, token: string) => void;

interface Watch {
  domid: number;
  path: string;
  token: string;
  cb: WatchCallback;
}

type TxOp = { op: 'write'; path: string; value: string } | { op: 'rm'; path: string } | { op: 'mkdir'; path: string };

interface Transaction {
  domid: number;
  startGen: number;
  touched: Set<string>;
  ops: TxOp[];
  overlay: Map<string, string | null>;
  /** Paths removed in this transaction: the tree below them is invisible to it (re-created nodes live in the overlay). */
  removed: Set<string>;
}

export function normalizePath(path: string): string {
  if (typeof path !== 'string' || !path.startsWith('/') || path.length > 1024)
    throw new StoreError(`invalid store path ${JSON.stringify(path)}`, 'EINVAL');
  if (path === '/') return path;
  const parts = path.split('/').slice(1);
  for (const p of parts)
    if (p === '' || p === '.' || p === '..' || !/^[A-Za-z0-9_@\-.:]+$/.test(p))
      throw new StoreError(`invalid store path ${JSON.stringify(path)}`, 'EINVAL');
  return path;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

function isAtOrBelow(path: string, root: string): boolean {
  return root === '/' || path === root || path.startsWith(root + '/');
}

export class Store {
  private readonly root: StoreNode = { value: '', children: new Map(), owner: 0, gen: 0 };
  private gen = 0;
  /** Generation at which a path was last deleted, so transactions notice deletions. */
  private readonly deletedAt = new Map<string, number>();
  private readonly watches: Watch[] = [];
  private readonly txs = new Map<number, Transaction>();
  private nextTx = 1;
  private readonly nodesOwned = new Map<number, number>();
  /**
   * While a change is being applied: how to undo each step (run newest first if a step fails)
   * and the watch events it will fire once every step has succeeded.
   */
  private journal?: { undo: Array<() => void>; events: Array<[string, boolean]> };

  constructor(readonly quota: StoreQuota = DEFAULT_STORE_QUOTA) {}

  // ---- permissions -------------------------------------------------------------------------

  canRead(domid: number, path: string): boolean {
    if (domid === 0) return true;
    if (isAtOrBelow(path, `/local/domain/${domid}`)) return true;
    const m = /^\/local\/domain\/0\/backend\/[a-z]+\/(\d+)(\/|$)/.exec(path);
    return m !== null && Number(m[1]) === domid;
  }

  canWrite(domid: number, path: string): boolean {
    return domid === 0 || isAtOrBelow(path, `/local/domain/${domid}`);
  }

  private checkRead(domid: number, path: string): string {
    const p = normalizePath(path);
    if (!this.canRead(domid, p)) throw new StoreError(`domain ${domid} may not read ${p}`, 'EACCES');
    return p;
  }

  private checkWrite(domid: number, path: string): string {
    const p = normalizePath(path);
    if (!this.canWrite(domid, p)) throw new StoreError(`domain ${domid} may not write ${p}`, 'EACCES');
    return p;
  }

  // ---- tree primitives -----------------------------------------------------------------------

  private lookup(path: string): StoreNode | undefined {
    if (path === '/') return this.root;
    let n: StoreNode | undefined = this.root;
    for (const part of path.split('/').slice(1)) {
      n = n.children.get(part);
      if (!n) return undefined;
    }
    return n;
  }

  private countNode(owner: number, delta: number): void {
    this.nodesOwned.set(owner, (this.nodesOwned.get(owner) ?? 0) + delta);
  }

  /**
   * Apply `change` all-or-nothing: a step that throws undoes every step before it (the tree, the
   * generations, the quota counts, even the order of a directory's children) and the error goes
   * on; watch events are held until every step has succeeded. Steps must be synchronous.
   */
  private atomically(change: () => void): void {
    if (this.journal) return change(); // part of a change already being applied
    const journal: NonNullable<Store['journal']> = { undo: [], events: [] };
    const gen = this.gen;
    this.journal = journal;
    try {
      change();
    } catch (e) {
      for (let i = journal.undo.length - 1; i >= 0; i--) journal.undo[i]();
      this.gen = gen;
      throw e;
    } finally {
      this.journal = undefined;
    }
    for (const [path, removal] of journal.events) this.fire(path, removal);
  }

  private ensure(path: string, owner: number): { node: StoreNode; changed: string[] } {
    let n = this.root;
    let cur = '';
    const changed: string[] = [];
    for (const part of path.split('/').slice(1)) {
      cur += '/' + part;
      let c = n.children.get(part);
      if (!c) {
        if (owner !== 0 && (this.nodesOwned.get(owner) ?? 0) >= this.quota.maxNodesPerDomain)
          throw new StoreError(`domain ${owner} exceeded its store quota`, 'EQUOTA');
        const parent = n;
        const parentGen = parent.gen;
        c = { value: '', children: new Map(), owner, gen: ++this.gen };
        parent.children.set(part, c);
        parent.gen = c.gen; // the parent's child list changed: a transaction that listed it must conflict
        this.countNode(owner, 1);
        this.journal?.undo.push(() => {
          parent.children.delete(part); // the newest child: deleting it restores the order
          parent.gen = parentGen;
          this.countNode(owner, -1);
        });
        changed.push(cur);
      }
      n = c;
    }
    return { node: n, changed };
  }

  private applyWrite(domid: number, path: string, value: string): void {
    const { node } = this.ensure(path, domid);
    const { value: oldValue, gen: oldGen } = node;
    node.value = value;
    node.gen = ++this.gen;
    this.journal?.undo.push(() => {
      node.value = oldValue;
      node.gen = oldGen;
    });
    this.changed(path);
  }

  private applyMkdir(domid: number, path: string): void {
    const { changed } = this.ensure(path, domid);
    if (changed.length) this.changed(path);
  }

  private applyRm(path: string): void {
    if (path === '/') throw new StoreError('cannot remove /', 'EINVAL');
    const parent = this.lookup(parentOf(path));
    const name = path.slice(path.lastIndexOf('/') + 1);
    const node = parent?.children.get(name);
    if (!parent || !node) throw new StoreError(`${path} does not exist`, 'ENOENT');
    const g = ++this.gen;
    const dropped: Array<[string, StoreNode, number | undefined]> = [];
    const drop = (p: string, n: StoreNode): void => {
      dropped.push([p, n, this.deletedAt.get(p)]);
      this.deletedAt.set(p, g);
      this.countNode(n.owner, -1);
      for (const [k, c] of n.children) drop(p + '/' + k, c);
    };
    drop(path, node);
    const siblings = this.journal ? [...parent.children] : undefined;
    const parentGen = parent.gen;
    parent.children.delete(name);
    parent.gen = g;
    if (siblings)
      this.journal!.undo.push(() => {
        parent.children.clear();
        for (const [k, c] of siblings) parent.children.set(k, c);
        parent.gen = parentGen;
        for (const [p, n, at] of dropped) {
          if (at === undefined) this.deletedAt.delete(p);
          else this.deletedAt.set(p, at);
          this.countNode(n.owner, 1);
        }
      });
    this.changed(path, true);
  }

  /** A change at `path`: its watch events go out once the change being applied has succeeded. */
  private changed(path: string, removal = false): void {
    if (this.journal) this.journal.events.push([path, removal]);
    else this.fire(path, removal);
  }

  /** Fire watches at or above `path`; a removal also fires watches below it (they lost their node). */
  private fire(path: string, removal = false): void {
    for (const w of [...this.watches]) {
      const hit = isAtOrBelow(path, w.path) || (removal && isAtOrBelow(w.path, path));
      if (hit && this.canRead(w.domid, path)) w.cb(path, w.token);
    }
  }

  // ---- public operations ---------------------------------------------------------------------

  read(domid: number, path: string, tx?: number): string {
    const p = this.checkRead(domid, path);
    const t = this.tx(domid, tx);
    if (t) {
      t.touched.add(p);
      const v = this.txView(t, p);
      if (v === undefined) throw new StoreError(`${p} does not exist`, 'ENOENT');
      return v;
    }
    const n = this.lookup(p);
    if (!n) throw new StoreError(`${p} does not exist`, 'ENOENT');
    return n.value;
  }

  /** Read, or undefined when the node does not exist (other errors still throw). */
  tryRead(domid: number, path: string, tx?: number): string | undefined {
    try {
      return this.read(domid, path, tx);
    } catch (e) {
      if (e instanceof StoreError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }

  write(domid: number, path: string, value: string, tx?: number): void {
    const p = this.checkWrite(domid, path);
    if (typeof value !== 'string') throw new StoreError('store values are strings', 'EINVAL');
    if (Buffer.byteLength(value) > this.quota.maxValueBytes) throw new StoreError(`value for ${p} too large`, 'E2BIG');
    const t = this.tx(domid, tx);
    if (t) {
      t.touched.add(p);
      t.ops.push({ op: 'write', path: p, value });
      this.txEnsureAncestors(t, p);
      t.overlay.set(p, value);
      return;
    }
    this.atomically(() => this.applyWrite(domid, p, value));
  }

  mkdir(domid: number, path: string, tx?: number): void {
    const p = this.checkWrite(domid, path);
    const t = this.tx(domid, tx);
    if (t) {
      t.touched.add(p);
      t.ops.push({ op: 'mkdir', path: p });
      this.txEnsureAncestors(t, p);
      if (this.txView(t, p) === undefined) t.overlay.set(p, '');
      return;
    }
    this.atomically(() => this.applyMkdir(domid, p));
  }

  rm(domid: number, path: string, tx?: number): void {
    const p = this.checkWrite(domid, path);
    const t = this.tx(domid, tx);
    if (t) {
      t.touched.add(p); // its absence is read too: a concurrent creation conflicts
      // As cxenstored: removing what the transaction does not see fails now, not at commit.
      if (p === '/') throw new StoreError('cannot remove /', 'EINVAL');
      if (this.txView(t, p) === undefined) throw new StoreError(`${p} does not exist`, 'ENOENT');
      t.ops.push({ op: 'rm', path: p });
      for (const k of t.overlay.keys()) if (isAtOrBelow(k, p)) t.overlay.set(k, null);
      t.overlay.set(p, null);
      t.removed.add(p);
      return;
    }
    this.atomically(() => this.applyRm(p));
  }

  directory(domid: number, path: string, tx?: number): string[] {
    const p = this.checkRead(domid, path);
    const t = this.tx(domid, tx);
    const names = new Set<string>();
    const n = this.lookup(p);
    if (t) {
      t.touched.add(p);
      if (this.txView(t, p) === undefined) throw new StoreError(`${p} does not exist`, 'ENOENT');
      const prefix = p === '/' ? '/' : p + '/';
      if (n) for (const k of n.children.keys()) if (this.txView(t, prefix + k) !== undefined) names.add(k);
      for (const [k, v] of t.overlay) if (v !== null && k !== '/' && parentOf(k) === p) names.add(k.slice(k.lastIndexOf('/') + 1));
      return [...names].sort();
    }
    if (!n) throw new StoreError(`${p} does not exist`, 'ENOENT');
    for (const k of n.children.keys()) names.add(k);
    return [...names].sort();
  }

  watch(domid: number, path: string, token: string, cb: WatchCallback): void {
    const p = normalizePath(path);
    if (domid !== 0 && this.watches.filter((w) => w.domid === domid).length >= this.quota.maxWatchesPerDomain)
      throw new StoreError(`domain ${domid} has too many watches`, 'EQUOTA');
    this.watches.push({ domid, path: p, token, cb });
    // A watch fires once on registration so the watcher can read the initial state.
    queueMicrotask(() => {
      if (this.watches.some((w) => w.cb === cb && w.path === p && w.token === token)) cb(p, token);
    });
  }

  unwatch(domid: number, path: string, token: string): void {
    const p = normalizePath(path);
    const i = this.watches.findIndex((w) => w.domid === domid && w.path === p && w.token === token);
    if (i < 0) throw new StoreError(`no watch on ${p} with that token`, 'ENOENT');
    this.watches.splice(i, 1);
  }

  /** Drop every watch and transaction of a domain (it went away). */
  releaseDomain(domid: number): void {
    for (let i = this.watches.length - 1; i >= 0; i--) if (this.watches[i].domid === domid) this.watches.splice(i, 1);
    for (const [id, t] of this.txs) if (t.domid === domid) this.txs.delete(id);
  }

  transactionStart(domid: number): number {
    if ([...this.txs.values()].filter((t) => t.domid === domid).length >= this.quota.maxTransactionsPerDomain)
      throw new StoreError(`domain ${domid} has too many open transactions`, 'EQUOTA');
    const id = this.nextTx++;
    this.txs.set(id, { domid, startGen: this.gen, touched: new Set(), ops: [], overlay: new Map(), removed: new Set() });
    return id;
  }

  /**
   * Commit (or abort). Throws EAGAIN when another writer touched what this transaction used, or
   * the error of an operation that cannot be applied (EQUOTA): either way nothing is applied and
   * the transaction is over. Watches fire after the whole commit has applied.
   */
  transactionEnd(domid: number, id: number, commit: boolean): void {
    const t = this.tx(domid, id);
    if (!t) throw new StoreError(`no transaction ${id}`, 'ENOENT');
    this.txs.delete(id);
    if (!commit) return;
    for (const p of t.touched) {
      const n = this.lookup(p);
      if ((n && n.gen > t.startGen) || (this.deletedAt.get(p) ?? 0) > t.startGen)
        throw new StoreError(`transaction ${id} conflicted on ${p}`, 'EAGAIN');
    }
    this.atomically(() => {
      for (const op of t.ops) {
        if (op.op === 'write') this.applyWrite(domid, op.path, op.value);
        else if (op.op === 'mkdir') this.applyMkdir(domid, op.path);
        else this.applyRm(op.path); // it existed in the transaction's view, and nothing it touched moved
      }
    });
  }

  /**
   * What a transaction sees at `p` (undefined: no such node): its own writes first; a node it
   * removed hides the tree below it (even if re-created later in the transaction); otherwise the tree.
   */
  private txView(t: Transaction, p: string): string | undefined {
    const o = t.overlay.get(p);
    if (o !== undefined) return o ?? undefined;
    for (let a = p; a !== '/'; a = parentOf(a)) if (t.removed.has(a)) return undefined;
    return this.lookup(p)?.value;
  }

  /** Writing below a node creates the missing ancestors in the transaction's view, as commit will. */
  private txEnsureAncestors(t: Transaction, p: string): void {
    for (let a = parentOf(p); a !== '/'; a = parentOf(a)) if (this.txView(t, a) === undefined) t.overlay.set(a, '');
  }

  private tx(domid: number, id: number | undefined): Transaction | undefined {
    if (id === undefined || id === 0) return undefined;
    const t = this.txs.get(id);
    if (!t || t.domid !== domid) throw new StoreError(`no transaction ${id}`, 'ENOENT');
    return t;
  }

  /** Every path and value below `path` (for `ringvisor` debugging views). */
  dump(path = '/'): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    const walk = (p: string, n: StoreNode): void => {
      out.push([p, n.value]);
      for (const [k, c] of n.children) walk(p === '/' ? '/' + k : p + '/' + k, c);
    };
    const n = this.lookup(normalizePath(path));
    if (n) walk(path, n);
    return out;
  }
}
