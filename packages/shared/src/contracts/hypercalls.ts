/**
 * Hypercalls a guest makes on its control link (dom0/src/hypervisor/hypervisor.ts serves them,
 * bound to the domain the link proved: no method takes the caller's domid). The event-channel
 * and store operations keep Xen's semantics (evtchn/, store/); their errors carry RV_ERR_EVTCHN
 * and RV_ERR_STORE (with the xenstore errno).
 */
import { Type } from '@sinclair/typebox';
import { defineContract, method, notification } from './contract.js';

const DomainId = Type.Integer({ minimum: 0, maximum: 0xffff });
const EventPort = Type.Integer({ minimum: 0, maximum: 0xffffffff });
/** Store paths and values are bounded by the store's own quotas; this bounds the message. */
const Path = Type.String({ maxLength: 4096 });
const Tx = { tx: Type.Optional(Type.Integer({ minimum: 0 })) };
const STORE_ERRORS = ['RV_ERR_STORE'] as const;

export const EventPortStatusSchema = Type.Object({
  port: Type.Integer(),
  state: Type.Union([Type.Literal('free'), Type.Literal('unbound'), Type.Literal('interdomain'), Type.Literal('reserved')]),
  remoteDomid: Type.Integer(),
  remotePort: Type.Integer(),
  pending: Type.Boolean(),
  masked: Type.Boolean(),
});

export const HypercallContract = defineContract('hypercalls', {
  methods: {
    /** A port of the caller's, unbound, that `remoteDom` may bind to. */
    evtchnAllocUnbound: method('evtchn.allocUnbound', Type.Object({ remoteDom: DomainId }), Type.Integer({ minimum: 1 }), ['RV_ERR_EVTCHN']),
    evtchnBindInterdomain: method('evtchn.bindInterdomain', Type.Object({ remoteDom: DomainId, remotePort: EventPort }), Type.Integer({ minimum: 1 }), ['RV_ERR_EVTCHN']),
    evtchnClose: method('evtchn.close', Type.Object({ port: EventPort }), Type.Null(), ['RV_ERR_EVTCHN']),
    evtchnStatus: method('evtchn.status', Type.Object({ port: EventPort }), EventPortStatusSchema, ['RV_ERR_EVTCHN']),
    storeRead: method('store.read', Type.Object({ path: Path, ...Tx }), Type.String(), STORE_ERRORS),
    /** null: no such node. */
    storeTryRead: method('store.tryRead', Type.Object({ path: Path, ...Tx }), Type.Union([Type.String(), Type.Null()]), STORE_ERRORS),
    storeWrite: method('store.write', Type.Object({ path: Path, value: Type.String(), ...Tx }), Type.Null(), STORE_ERRORS),
    storeMkdir: method('store.mkdir', Type.Object({ path: Path, ...Tx }), Type.Null(), STORE_ERRORS),
    storeRm: method('store.rm', Type.Object({ path: Path, ...Tx }), Type.Null(), STORE_ERRORS),
    storeDirectory: method('store.directory', Type.Object({ path: Path, ...Tx }), Type.Array(Type.String()), STORE_ERRORS),
    /** Changes under `path` arrive as `store.watch` notifications carrying `token`. */
    storeWatch: method('store.watch', Type.Object({ path: Path, token: Type.String({ maxLength: 256 }) }), Type.Null(), STORE_ERRORS),
    storeUnwatch: method('store.unwatch', Type.Object({ path: Path, token: Type.String({ maxLength: 256 }) }), Type.Null(), STORE_ERRORS),
    storeTxStart: method('store.txStart', Type.Object({}), Type.Integer({ minimum: 0 }), STORE_ERRORS),
    /** commit false: abort. A commit that conflicts answers RV_ERR_STORE with errno EAGAIN. */
    storeTxEnd: method('store.txEnd', Type.Object({ tx: Type.Integer({ minimum: 0 }), commit: Type.Boolean() }), Type.Null(), STORE_ERRORS),
  },
  notifications: {
    /** A watched node changed: the watch's token and the path that changed. */
    storeWatchFired: notification('store.watch', Type.Object({ token: Type.String(), path: Type.String() })),
  },
});
