/**
 * Trace forwarding (trace/forward.ts has the mechanism): dom0 asks a runtime that is not its
 * thread (a guest, the hardware, a VMApp) to forward its trace events, and the runtime sends them
 * in batches. dom0 trusts none of an event: each is validated and re-labelled one by one
 * (acceptForwardedEvent), so the batch schema only bounds its shape.
 */
import { Type } from '@sinclair/typebox';
import { TRACE_KINDS } from '../trace/index.js';
import { defineContract, method, notification } from './contract.js';

const TraceKindSchema = Type.Union(TRACE_KINDS.map((k) => Type.Literal(k)));

/** Served by every runtime that forwards its trace events. */
export const TraceForwardContract = defineContract('trace-forward', {
  methods: {
    /** Start (or change) forwarding: answers the kinds it forwards. */
    subscribe: method('trace.subscribe', Type.Object({ kinds: Type.Array(TraceKindSchema, { maxItems: 64 }) }), Type.Array(TraceKindSchema), [], 5_000),
    /** Stop; the runtime's channels go quiet. */
    unsubscribe: method('trace.unsubscribe', Type.Object({}), Type.Null(), [], 5_000),
  },
  notifications: {
    /** A batch (every 100 ms while subscribed); `dropped`: events the bounded buffer lost. */
    events: notification('trace.events', Type.Object({ events: Type.Array(Type.Unknown()), dropped: Type.Number({ minimum: 0 }) })),
  },
});
