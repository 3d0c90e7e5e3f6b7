/**
 * xenbus: the device handshake carried over the store.
 *
 * Frontend  /local/domain/<domid>/device/<type>/<devid>/           (state, ring-ref(s),
 *                                                                    event-channel, backend-id, backend)
 * Backend   /local/domain/0/backend/<type>/<domid>/<devid>/        (state, frontend, frontend-id,
 *                                                                    features, sectors, mac, rate …)
 *
 * The block sequence: both Initialising → backend publishes features, InitWait → frontend
 * grants its ring, allocates an event channel, writes ring-ref/event-channel, Initialised →
 * backend maps the ring, binds the channel, publishes sectors, Connected → frontend Connected.
 * Closing: either side Closing → the other tears down → Closed.
 */
import { TimeoutError } from '../errors.js';
import type { StoreClient } from './client.js';

export enum XenbusState {
  Unknown = 0,
  Initialising = 1,
  InitWait = 2,
  Initialised = 3,
  Connected = 4,
  Closing = 5,
  Closed = 6,
  Reconfiguring = 7,
  Reconfigured = 8,
}

export const XENBUS_STATE_NAMES = [
  'Unknown',
  'Initialising',
  'InitWait',
  'Initialised',
  'Connected',
  'Closing',
  'Closed',
  'Reconfiguring',
  'Reconfigured',
] as const;

export type DeviceType = 'vbd' | 'vif';

export function frontendPath(domid: number, type: DeviceType, devid: number): string {
  return `/local/domain/${domid}/device/${type}/${devid}`;
}

export function backendPath(backendDomid: number, type: DeviceType, frontDomid: number, devid: number): string {
  return `/local/domain/${backendDomid}/backend/${type}/${frontDomid}/${devid}`;
}

export async function readState(store: StoreClient, dir: string): Promise<XenbusState> {
  const v = await store.tryRead(`${dir}/state`);
  const n = v === undefined ? 0 : Number(v);
  return Number.isInteger(n) && n >= 0 && n <= 8 ? (n as XenbusState) : XenbusState.Unknown;
}

export async function switchState(store: StoreClient, dir: string, state: XenbusState): Promise<void> {
  await store.write(`${dir}/state`, String(state));
}

/**
 * Wait until the `state` node under `dir` satisfies `pred`, using a watch (no polling).
 * Resolves with the state seen.
 */
export async function waitForState(
  store: StoreClient,
  dir: string,
  pred: (s: XenbusState) => boolean,
  timeoutMs = 30_000,
): Promise<XenbusState> {
  let unwatch: (() => Promise<void>) | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<XenbusState>((resolve, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`timed out waiting for ${dir}/state`)), timeoutMs);
      let checking = false;
      let again = false;
      const check = async (): Promise<void> => {
        if (checking) {
          again = true;
          return;
        }
        checking = true;
        try {
          do {
            again = false;
            const s = await readState(store, dir);
            if (pred(s)) return resolve(s);
          } while (again);
        } catch (e) {
          reject(e);
        } finally {
          checking = false;
        }
      };
      store.watch(`${dir}/state`, () => void check()).then((u) => {
        unwatch = u;
        void check();
      }, reject);
    });
  } finally {
    if (timer) clearTimeout(timer);
    if (unwatch) await unwatch().catch(() => {});
  }
}
