/**
 * The ioreq link (ws transport, device models in dom0; trap/ioreq-link.ts has the mechanism): a
 * relay thread in the guest's process carries each trapped port access to dom0 with the bytes the
 * driver synced for the device, and dom0 answers with the data and the model's writes. Device
 * work between traps sends its writes, then the interrupt, as notifications on the same link.
 *
 * This is a hot path (one call per trap): one compiled check per message, the byte arrays are
 * checked in place (never copied). Ranges against the guest's memory and the byte bound
 * (IOREQ_LINK_MAX_BYTES) are checked where the memory is known (applyGuestWrites).
 */
import { Type } from '@sinclair/typebox';
import { defineContract, method, notification } from './contract.js';

/** Ranges of guest memory: where (guest-physical address) and the bytes. */
export const GuestMemoryWritesSchema = Type.Array(Type.Object({ gpa: Type.Integer({ minimum: 0 }), data: Type.Uint8Array() }), { maxItems: 4096 });

export const IoReqLinkContract = defineContract('ioreq-link', {
  methods: {
    /** One access of the vCPU's I/O request slot (IoReq), with the ranges synced for the device. */
    access: method(
      'ioreq.access',
      Type.Object({
        seq: Type.Integer(),
        port: Type.Integer({ minimum: 0, maximum: 0xffff }),
        size: Type.Union([Type.Literal(1), Type.Literal(2), Type.Literal(4)]),
        /** IO_DIR_OUT (0) or IO_DIR_IN (1). */
        dir: Type.Union([Type.Literal(0), Type.Literal(1)]),
        data: Type.Integer({ minimum: -0x80000000, maximum: 0xffffffff }),
        /** A write the vCPU's VMM deferred and this access carries (applied first). */
        pre: Type.Optional(Type.Object({ port: Type.Integer({ minimum: 0, maximum: 0xffff }), data: Type.Integer({ minimum: -0x80000000, maximum: 0xffffffff }) })),
        pages: GuestMemoryWritesSchema,
      }),
      Type.Object({ data: Type.Integer({ minimum: -0x80000000, maximum: 0xffffffff }), writes: GuestMemoryWritesSchema }),
      [],
      10_000,
    ),
  },
  notifications: {
    /** Bytes the models wrote into guest memory between traps. */
    dma: notification('ioreq.dma', Type.Object({ writes: GuestMemoryWritesSchema })),
    /** A virtual IRQ: the guest's event port (after the writes it announces). */
    irq: notification('ioreq.irq', Type.Object({ port: Type.Integer({ minimum: 1, maximum: 1023 }) })),
  },
});
