/**
 * The saved state of the guest's ATA driver (layout 'ata-driver', version 1).
 *
 * The driver runs one command at a time; quiesce() lets the command in progress finish (it
 * needs the drive, so drivers are quiesced before the device models), so the record holds no
 * half-done command: it holds what the driver learnt at probe (capacity, model and serial
 * strings), whether the next command must start with a software reset, an interrupt latched
 * while nobody waited, and the pending operations — requests callers queued and the driver has
 * not started — as data (a write carries its sectors). A restored driver runs them in order.
 */
import { Type, type Static } from '@sinclair/typebox';
import { defineStateLayout } from '@ringvisor/shared';

const SECTOR = 512;
/** Pending requests a record may carry, and the bytes one write may carry. */
export const ATA_DRIVER_MAX_PENDING = 1024;
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
const Sector = Type.Integer({ minimum: 0, maximum: 0x0fffffff });

export const AtaPendingRequestSchema = Type.Union([
  Type.Object({ kind: Type.Literal('probe') }),
  Type.Object({ kind: Type.Literal('flush') }),
  Type.Object({ kind: Type.Literal('read'), sector: Sector, count: Type.Integer({ minimum: 1, maximum: MAX_REQUEST_BYTES / SECTOR }) }),
  Type.Object({ kind: Type.Literal('write'), sector: Sector, data: Type.Uint8Array({ minByteLength: SECTOR, maxByteLength: MAX_REQUEST_BYTES }) }),
]);
export type AtaPendingRequest = Static<typeof AtaPendingRequestSchema>;

export const AtaDriverStateSchema = Type.Object({
  probed: Type.Boolean(),
  sectors: Type.Integer({ minimum: 0, maximum: 0x0fffffff }),
  model: Type.String({ maxLength: 40 }),
  serial: Type.String({ maxLength: 20 }),
  needsReset: Type.Boolean(),
  irqLatched: Type.Boolean(),
  pending: Type.Array(AtaPendingRequestSchema, { maxItems: ATA_DRIVER_MAX_PENDING }),
});
export type AtaDriverState = Static<typeof AtaDriverStateSchema>;

export const ATA_DRIVER_STATE = defineStateLayout('ata-driver', 1, AtaDriverStateSchema, {
  refine: (s) => {
    if (s.probed !== s.sectors > 0) return `a ${s.probed ? 'probed' : 'unprobed'} driver with ${s.sectors} sectors`;
    for (const [i, r] of s.pending.entries()) {
      if (r.kind === 'write' && r.data.byteLength % SECTOR !== 0) return `pending write ${i} carries ${r.data.byteLength} bytes, not whole sectors`;
      const count = r.kind === 'write' ? r.data.byteLength / SECTOR : r.kind === 'read' ? r.count : 0;
      if (count > 0 && r.kind !== 'flush' && 'sector' in r && r.sector + count > s.sectors) return `pending ${r.kind} ${i} (sectors ${r.sector}..${r.sector + count - 1}) runs past a ${s.sectors}-sector disk`;
    }
    return undefined;
  },
});
