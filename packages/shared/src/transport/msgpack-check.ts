/**
 * A strict check of one received msgpack frame, run over its bytes before anything decodes it.
 *
 * What passes is plain data and nothing else: nil, booleans, integers, floats, str, bin, arrays
 * and maps whose keys are strings or integers, nested at most `maxDepth` deep, and exactly one
 * value filling the frame. Every extension type (fixext 1/2/4/8/16 = 0xd4–0xd8, ext 8/16/32 =
 * 0xc7–0xc9) is refused — timestamps (-1), msgpackr's records (0x72), shared references and
 * structured clones (0x70, 0x73…), typed arrays, RegExp and Error among them — with one exception:
 * `d4 00 00`, the three bytes msgpackr writes for a property whose value is `undefined`, which
 * decodes to `undefined` and nothing else. The never-used byte 0xc1 is refused too.
 *
 * Cost. Every container declares how many values it holds, and every value takes at least one
 * byte, so a frame that promises more values than it has bytes left is refused at the header
 * that promised them (a map of 2^32 entries in five bytes costs five steps). Each step of the walk
 * consumes at least one byte, so checking a frame costs at most a constant times its length, and
 * what msgpackr then builds from it is bounded the same way — and by MAX_VALUES, refused at the
 * header that would exceed it.
 */

/** Deepest nesting of arrays/maps accepted in a received message. */
export const MAX_DEPTH = 64;

/**
 * Most values (scalars, strings, containers, map keys) in one message. Proportional is not cheap
 * enough on its own: 16 MiB of empty arrays is 16 million allocations, seconds of a main thread.
 * Control messages carry bulk data as `bin` (one value); a million values is far beyond any of them.
 */
export const MAX_VALUES = 1 << 20;

const EXT_NAMES: Record<number, string> = {
  [-1]: 'timestamp',
  0x70: "msgpackr's shared reference",
  0x72: "msgpackr's record",
  0x73: "msgpackr's Set",
  0x65: "msgpackr's Error",
  0x78: "msgpackr's RegExp",
  0x62: "msgpackr's bundled strings",
};

function extProblem(kind: string, code: number): string {
  const signed = code > 127 ? code - 256 : code;
  const name = EXT_NAMES[signed];
  return `msgpack extension ${signed}${name ? ` (${name})` : ''} in ${kind} is not accepted`;
}

function u16(b: Uint8Array, p: number): number {
  return (b[p] << 8) | b[p + 1];
}

function u32(b: Uint8Array, p: number): number {
  return b[p] * 0x1000000 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
}

/**
 * Why `bytes` is not one plain msgpack value as this transport accepts it, or null if it is.
 * Work is bounded by a constant times `bytes.byteLength` whatever the bytes say.
 */
export function msgpackProblem(bytes: Uint8Array, maxDepth: number = MAX_DEPTH, maxValues: number = MAX_VALUES): string | null {
  const b = bytes;
  const end = b.byteLength;
  if (end === 0) return 'empty frame';
  // Open containers: values still to read in each (the top level holds exactly one), and whether
  // it is a map (then every other value, starting with the first, is a key).
  const remaining: number[] = [1];
  const isMap: boolean[] = [false];
  let depth = 0;
  // Values promised by every open container and not read yet; each needs at least one byte.
  let promised = 1;
  let read = 0;
  let pos = 0;
  for (;;) {
    if (remaining[depth] === 0) {
      if (depth === 0) break;
      depth--;
      continue;
    }
    if (pos >= end) return 'truncated';
    const isKey = isMap[depth] && remaining[depth] % 2 === 0;
    remaining[depth]--;
    promised--;
    read++;
    const t = b[pos++];
    let skip = 0; // payload bytes of a scalar
    let lengthBytes = 0; // bytes of a length field that precedes a payload
    let children = -1; // values a container holds (2 per map entry)
    let keyable = false;
    if (t <= 0x7f || t >= 0xe0) keyable = true; // fixint
    else if (t <= 0x8f) children = (t & 0x0f) * 2;
    else if (t <= 0x9f) children = t & 0x0f;
    else if (t <= 0xbf) {
      skip = t & 0x1f;
      keyable = true;
    } else
      switch (t) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break;
        case 0xc1:
          return 'the never-used byte 0xc1';
        case 0xc4:
          lengthBytes = 1;
          break;
        case 0xc5:
          lengthBytes = 2;
          break;
        case 0xc6:
          lengthBytes = 4;
          break;
        case 0xc7:
        case 0xc8:
        case 0xc9: {
          const lb = t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4;
          if (end - pos < lb + 1) return 'truncated';
          return extProblem(`ext ${lb * 8}`, b[pos + lb]);
        }
        case 0xca:
          skip = 4;
          break;
        case 0xcb:
          skip = 8;
          break;
        case 0xcc:
        case 0xd0:
          skip = 1;
          keyable = true;
          break;
        case 0xcd:
        case 0xd1:
          skip = 2;
          keyable = true;
          break;
        case 0xce:
        case 0xd2:
          skip = 4;
          keyable = true;
          break;
        case 0xcf:
        case 0xd3:
          skip = 8;
          keyable = true;
          break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8: {
          if (end - pos < 1) return 'truncated';
          // msgpackr's `undefined`: fixext 1, type 0, data 0. Nothing else is let through.
          if (t === 0xd4 && b[pos] === 0 && end - pos >= 2 && b[pos + 1] === 0) {
            skip = 2;
            break;
          }
          return extProblem(`fixext ${1 << (t - 0xd4)}`, b[pos]);
        }
        case 0xd9:
          lengthBytes = 1;
          keyable = true;
          break;
        case 0xda:
          lengthBytes = 2;
          keyable = true;
          break;
        case 0xdb:
          lengthBytes = 4;
          keyable = true;
          break;
        case 0xdc:
        case 0xdd:
        case 0xde:
        case 0xdf: {
          const lb = t === 0xdc || t === 0xde ? 2 : 4;
          if (end - pos < lb) return 'truncated';
          const n = lb === 2 ? u16(b, pos) : u32(b, pos);
          pos += lb;
          children = t >= 0xde ? n * 2 : n;
          break;
        }
        default:
          return `unknown msgpack type byte 0x${t.toString(16)}`;
      }
    if (isKey && !keyable) return 'a map key that is not a string or an integer';
    if (lengthBytes > 0) {
      if (end - pos < lengthBytes) return 'truncated';
      skip = lengthBytes === 1 ? b[pos] : lengthBytes === 2 ? u16(b, pos) : u32(b, pos);
      pos += lengthBytes;
    }
    if (skip > 0) {
      if (end - pos < skip) return 'truncated';
      pos += skip;
    }
    if (children >= 0) {
      if (depth + 1 > maxDepth) return `nested deeper than ${maxDepth}`;
      promised += children;
      if (promised > end - pos) return `declares more values than its ${end} bytes can hold`;
      if (read + promised > maxValues) return `declares more than ${maxValues} values`;
      depth++;
      remaining[depth] = children;
      isMap[depth] = (t >= 0x80 && t <= 0x8f) || t === 0xde || t === 0xdf;
    }
  }
  if (pos !== end) return `${end - pos} bytes after the message`;
  return null;
}
