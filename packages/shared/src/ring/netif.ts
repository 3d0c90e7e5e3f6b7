/**
 * netif — the Xen network-device ring protocol (public/io/netif.h). Two rings per vif.
 *
 * TX ring (guest → backend), slot 12 bytes, 256 per page:
 *   request  0 u32 gref, 4 u16 offset, 6 u16 flags, 8 u16 id, 10 u16 size
 *            flags: CSUM_BLANK 1, DATA_VALIDATED 2, MORE_DATA 4, EXTRA_INFO 8.
 *            For the first slot of a packet `size` is the whole packet's length.
 *   response 0 u16 id, 2 i16 status
 * RX ring (backend → guest), slot 8 bytes, 256 per page:
 *   request  0 u16 id, 2 u16 pad, 4 u32 gref       (an empty buffer the guest posts)
 *   response 0 u16 id, 2 u16 offset, 4 u16 flags, 6 i16 status (> 0: bytes received)
 */
import type { EntryCodec, RingProtocol } from './ring.js';

export const NETTXF_CSUM_BLANK = 1;
export const NETTXF_DATA_VALIDATED = 2;
export const NETTXF_MORE_DATA = 4;
export const NETTXF_EXTRA_INFO = 8;

export const NETRXF_DATA_VALIDATED = 1;
export const NETRXF_CSUM_BLANK = 2;
export const NETRXF_MORE_DATA = 4;

export const NETIF_RSP_NULL = 1;
export const NETIF_RSP_OKAY = 0;
export const NETIF_RSP_ERROR = -1;
export const NETIF_RSP_DROPPED = -2;

export interface NetifTxRequest {
  gref: number;
  offset: number;
  flags: number;
  id: number;
  size: number;
}
export interface NetifTxResponse {
  id: number;
  status: number;
}
export interface NetifRxRequest {
  id: number;
  gref: number;
}
export interface NetifRxResponse {
  id: number;
  offset: number;
  flags: number;
  status: number;
}

export const netifTxRequestCodec: EntryCodec<NetifTxRequest> = {
  size: 12,
  encode(v, o, r) {
    v.setUint32(o, r.gref, true);
    v.setUint16(o + 4, r.offset, true);
    v.setUint16(o + 6, r.flags, true);
    v.setUint16(o + 8, r.id, true);
    v.setUint16(o + 10, r.size, true);
  },
  decode(v, o) {
    return {
      gref: v.getUint32(o, true),
      offset: v.getUint16(o + 4, true),
      flags: v.getUint16(o + 6, true),
      id: v.getUint16(o + 8, true),
      size: v.getUint16(o + 10, true),
    };
  },
};

export const netifTxResponseCodec: EntryCodec<NetifTxResponse> = {
  size: 4,
  encode(v, o, r) {
    v.setUint16(o, r.id, true);
    v.setInt16(o + 2, r.status, true);
  },
  decode(v, o) {
    return { id: v.getUint16(o, true), status: v.getInt16(o + 2, true) };
  },
};

export const netifRxRequestCodec: EntryCodec<NetifRxRequest> = {
  size: 8,
  encode(v, o, r) {
    v.setUint16(o, r.id, true);
    v.setUint16(o + 2, 0, true);
    v.setUint32(o + 4, r.gref, true);
  },
  decode(v, o) {
    return { id: v.getUint16(o, true), gref: v.getUint32(o + 4, true) };
  },
};

export const netifRxResponseCodec: EntryCodec<NetifRxResponse> = {
  size: 8,
  encode(v, o, r) {
    v.setUint16(o, r.id, true);
    v.setUint16(o + 2, r.offset, true);
    v.setUint16(o + 4, r.flags, true);
    v.setInt16(o + 6, r.status, true);
  },
  decode(v, o) {
    return {
      id: v.getUint16(o, true),
      offset: v.getUint16(o + 2, true),
      flags: v.getUint16(o + 4, true),
      status: v.getInt16(o + 6, true),
    };
  },
};

export const netifTxProtocol: RingProtocol<NetifTxRequest, NetifTxResponse> = {
  name: 'netif-tx',
  request: netifTxRequestCodec,
  response: netifTxResponseCodec,
};

export const netifRxProtocol: RingProtocol<NetifRxRequest, NetifRxResponse> = {
  name: 'netif-rx',
  request: netifRxRequestCodec,
  response: netifRxResponseCodec,
};
