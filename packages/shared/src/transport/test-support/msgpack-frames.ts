/** fast-check generators of hostile msgpack frames, for the transport's tests. */
import fc from 'fast-check';
import { Packr } from 'msgpackr';

/** An extension of every shape msgpack has: fixext 1/2/4/8/16 and ext 8/16/32, any type code. */
export const anyExtension: fc.Arbitrary<Uint8Array> = fc
  .record({
    // -1 is the timestamp; 0x62…0x78 are msgpackr's (bundled strings, Error, shared references, records, Set, RegExp…)
    type: fc.oneof(fc.constantFrom(0xff, 0x00, 0x62, 0x65, 0x69), fc.integer({ min: 0x70, max: 0x78 }), fc.integer({ min: 0, max: 255 })),
    form: fc.constantFrom('fixext1', 'fixext2', 'fixext4', 'fixext8', 'fixext16', 'ext8', 'ext16', 'ext32'),
    data: fc.uint8Array({ maxLength: 40 }),
  })
  .map(({ type, form, data }) => {
    const fixed: Record<string, number> = { fixext1: 1, fixext2: 2, fixext4: 4, fixext8: 8, fixext16: 16 };
    const n = fixed[form];
    if (n !== undefined) {
      const d = new Uint8Array(n);
      d.set(data.subarray(0, n));
      if (form === 'fixext1' && type === 0 && d[0] === 0) d[0] = 1; // not msgpackr's `undefined`, the one let through
      return Uint8Array.from([0xd4 + Math.log2(n), type, ...d]);
    }
    const len = data.length;
    const header = form === 'ext8' ? [0xc7, len] : form === 'ext16' ? [0xc8, len >> 8, len & 0xff] : [0xc9, 0, 0, len >> 8, len & 0xff];
    return Uint8Array.from([...header, type, ...data]);
  });

/** `inner` placed somewhere inside a plain message: as a value, in an array, deeper. */
export function embedded(inner: Uint8Array): fc.Arbitrary<Uint8Array> {
  const pre = new Packr({ useRecords: false });
  return fc.constantFrom('top', 'value', 'array', 'deep').map((where) => {
    const head = (v: unknown): Uint8Array => pre.pack(v).subarray(0);
    switch (where) {
      case 'top':
        return inner;
      case 'value': // { t: 'hello', v: 1, role: 'guest', domid: 1, nonce: <ext> }
        return Uint8Array.from([0x85, ...head('t'), ...head('hello'), ...head('v'), 1, ...head('role'), ...head('guest'), ...head('domid'), 1, ...head('nonce'), ...inner]);
      case 'array':
        return Uint8Array.from([0x93, 1, ...inner, 0xc0]);
      default:
        return Uint8Array.from([0x81, ...head('payload'), 0x91, 0x91, 0x81, ...head('x'), ...inner]);
    }
  });
}

