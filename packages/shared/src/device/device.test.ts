import { Type } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { StateRecordError } from '../errors.js';
import { defineStateLayout, loadRecord, saveRecord } from './index.js';

const V2 = Type.Object({ reqProd: Type.Integer({ minimum: 0 }), pending: Type.Array(Type.Object({ id: Type.String(), data: Type.Uint8Array() })) });
const layout = defineStateLayout('demo', 2, V2, {
  refine: (s) => (s.pending.length > s.reqProd ? 'more pending requests than were ever produced' : undefined),
  upgrade: { 1: (s) => ({ reqProd: (s as { prod: number }).prod, pending: [] }) },
});

describe('device state records', () => {
  it('round-trips a record through save and load, binary fields included', () => {
    const rec = saveRecord(layout, 'dom1/demo/0', { reqProd: 3, pending: [{ id: '7', data: new Uint8Array([1, 2]) }] });
    expect(rec).toMatchObject({ format: 'ringvisor/device-state', type: 'demo', version: 2, instance: 'dom1/demo/0' });
    expect(loadRecord(layout, structuredClone(rec))).toEqual(rec.state);
  });

  it('upgrades an older version and refuses a newer one, another type, or a field out of range', () => {
    expect(loadRecord(layout, { format: 'ringvisor/device-state', type: 'demo', version: 1, instance: 'x', state: { prod: 5 } })).toEqual({ reqProd: 5, pending: [] });
    const bad = (r: unknown) => () => loadRecord(layout, r);
    expect(bad({ format: 'ringvisor/device-state', type: 'demo', version: 3, instance: 'x', state: {} })).toThrow(/restores state version 2 \(or 1\), the record is version 3/);
    expect(bad({ format: 'ringvisor/device-state', type: 'other', version: 2, instance: 'x', state: {} })).toThrow(/"other" record cannot restore a demo/);
    expect(bad({ format: 'ringvisor/device-state', type: 'demo', version: 2, instance: 'x', state: { reqProd: -1, pending: [] } })).toThrow(/state\.reqProd/);
    expect(bad({ format: 'ringvisor/device-state', type: 'demo', version: 2, instance: 'x', state: { reqProd: 0, pending: [{ id: '1', data: new Uint8Array() }] } })).toThrow(/more pending/);
    expect(bad(null)).toThrow(StateRecordError);
    expect(bad({ type: 'demo' })).toThrow(/not a device state record/);
  });
});
