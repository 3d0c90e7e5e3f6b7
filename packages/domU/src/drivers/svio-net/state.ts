/**
 * The saved state of an SV-IO network driver ('svio-net-driver'): what a fresh driver built with
 * the same arguments (the open VIF, the guest's memory, its frame allocator) needs to carry on.
 *
 * What a record holds: the queue indices as the driver last published them (outgoing `prod`,
 * incoming `cons`; checked against the queue pages on restore); its 2 KiB DMA buffers (frame and
 * offset, by id) — which transmit buffers are free (every other one is out with a TX the VIF has
 * not answered) and which receive buffers wait to be posted (every other one is posted); the
 * frames queued for transmit and not yet in a buffer; the MAC; the counters.
 *
 * What a record does not hold: the guest's memory (queues, buffers, the frames in them), the
 * frame allocator and the VIF — the environment. A restored driver does not allocate buffers:
 * the record names them.
 */
import { Type, type Static } from '@sinclair/typebox';
import { ETH_MAX_FRAME, defineStateLayout } from '@ringvisor/shared';

const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Buffer = Type.Object({ pfn: U32, offset: Type.Union([Type.Literal(0), Type.Literal(2048)]) });

export const SvioNetDriverState = Type.Object({
  outProd: U32,
  inCons: U32,
  tx: Type.Array(Buffer, { minItems: 32, maxItems: 32 }),
  rx: Type.Array(Buffer, { minItems: 64, maxItems: 64 }),
  txFree: Type.Array(Type.Integer({ minimum: 0, maximum: 31 }), { maxItems: 32 }),
  rxToPost: Type.Array(Type.Integer({ minimum: 0, maximum: 63 }), { maxItems: 64 }),
  txQueue: Type.Array(Type.Uint8Array({ maxByteLength: ETH_MAX_FRAME }), { maxItems: 256 }),
  mac: Type.String({ maxLength: 17 }),
  counters: Type.Record(Type.String({ pattern: '^[a-zA-Z]+$' }), Count),
});
export type SvioNetDriverState = Static<typeof SvioNetDriverState>;

export const svioNetDriverLayout = defineStateLayout('svio-net-driver', 1, SvioNetDriverState, {
  refine: (s) => {
    if (new Set(s.txFree).size !== s.txFree.length) return 'a transmit buffer free twice';
    if (new Set(s.rxToPost).size !== s.rxToPost.length) return 'a receive buffer to post twice';
    const seen = new Set<string>();
    for (const b of [...s.tx, ...s.rx]) {
      const key = `${b.pfn}:${b.offset}`;
      if (seen.has(key)) return `buffer ${key} owned twice`;
      seen.add(key);
    }
    return undefined;
  },
});
