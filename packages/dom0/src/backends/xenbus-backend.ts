/**
 * The backend half of a xenbus device, shared by blkback and netback: the toolstack creates both
 * store directories; the backend watches the frontend's state and drives its own.
 */
import {
  MalformedRequestError,
  XenbusState,
  backendPath,
  frontendPath,
  readState,
  switchState,
  type DeviceType,
  type StoreClient,
} from '@ringvisor/shared';

export class XenbusBackend {
  readonly dir: string;
  readonly frontDir: string;
  state: XenbusState = XenbusState.Initialising;
  private unwatch?: () => Promise<void>;

  constructor(
    readonly store: StoreClient,
    readonly type: DeviceType,
    readonly frontDomid: number,
    readonly devid: number,
  ) {
    this.dir = backendPath(0, type, frontDomid, devid);
    this.frontDir = frontendPath(frontDomid, type, devid);
  }

  async setState(s: XenbusState): Promise<void> {
    this.state = s;
    await switchState(this.store, this.dir, s);
  }

  frontendState(): Promise<XenbusState> {
    return readState(this.store, this.frontDir);
  }

  async watchFrontend(cb: (s: XenbusState) => void): Promise<void> {
    this.unwatch = await this.store.watch(`${this.frontDir}/state`, () => {
      void readState(this.store, this.frontDir).then(cb, () => {});
    });
  }

  async stopWatching(): Promise<void> {
    await this.unwatch?.();
    this.unwatch = undefined;
  }

  /** Read an integer the (untrusted) frontend wrote; malformed values are a protocol error. */
  async frontendInt(key: string, max = 0xffffffff): Promise<number> {
    const raw = await this.store.tryRead(`${this.frontDir}/${key}`);
    const v = raw === undefined || !/^\d{1,10}$/.test(raw) ? NaN : Number(raw);
    if (!Number.isInteger(v) || v < 0 || v > max)
      throw new MalformedRequestError(`domain ${this.frontDomid} ${this.type}/${this.devid}: bad ${key} ${JSON.stringify(raw)}`);
    return v;
  }
}
