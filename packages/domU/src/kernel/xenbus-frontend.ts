/**
 * The frontend half of a xenbus device: where it lives in the store, where its backend lives,
 * and the state transitions both frontends (blk, net) share.
 */
import {
  ProtocolError,
  XenbusState,
  frontendPath,
  readState,
  switchState,
  waitForState,
  type DeviceType,
  type StoreClient,
} from '@ringvisor/shared';

export class XenbusFrontend {
  readonly dir: string;
  backendDir = '';
  backendId = 0;

  constructor(
    readonly store: StoreClient,
    readonly domid: number,
    readonly type: DeviceType,
    readonly devid: number,
  ) {
    this.dir = frontendPath(domid, type, devid);
  }

  /** Read where the toolstack put our backend. */
  async probe(): Promise<void> {
    const backend = await this.store.read(`${this.dir}/backend`);
    const backendId = Number(await this.store.read(`${this.dir}/backend-id`));
    if (!backend.startsWith('/local/domain/') || !Number.isInteger(backendId) || backendId < 0)
      throw new ProtocolError(`${this.dir}: malformed backend location`);
    this.backendDir = backend;
    this.backendId = backendId;
  }

  setState(s: XenbusState): Promise<void> {
    return switchState(this.store, this.dir, s);
  }

  backendState(): Promise<XenbusState> {
    return readState(this.store, this.backendDir);
  }

  waitBackend(pred: (s: XenbusState) => boolean, timeoutMs = 30_000): Promise<XenbusState> {
    return waitForState(this.store, this.backendDir, pred, timeoutMs);
  }

  async backendValue(key: string): Promise<string | undefined> {
    return this.store.tryRead(`${this.backendDir}/${key}`);
  }

  /** Watch the backend's state; used to notice a backend going away or restarting. */
  watchBackend(cb: (s: XenbusState) => void): Promise<() => Promise<void>> {
    return this.store.watch(`${this.backendDir}/state`, () => {
      void readState(this.store, this.backendDir).then(cb, () => {});
    });
  }
}
