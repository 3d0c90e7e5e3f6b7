/** CRC-32C (Castagnoli), as used by iSCSI, ext4 and btrfs metadata: the block checksum. */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const impl = require('crc-32/crc32c') as { buf(data: Uint8Array, seed?: number): number };

export function crc32c(data: Uint8Array, seed = 0): number {
  return impl.buf(data, seed) >>> 0;
}
