/** Validation of a netif tx request (the backend's private copy). */
import { ETH_MAX_FRAME, ETH_MIN_FRAME, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, PAGE_SIZE, type NetifTxRequest } from '@ringvisor/shared';

export type ParsedTx = { ok: true } | { ok: false; reason: string };

export function validateTxRequest(req: NetifTxRequest): ParsedTx {
  if (req.flags & (NETTXF_MORE_DATA | NETTXF_EXTRA_INFO)) return { ok: false, reason: 'multi-slot and extra-info packets are not supported' };
  if (req.size < ETH_MIN_FRAME || req.size > ETH_MAX_FRAME) return { ok: false, reason: `size ${req.size} outside ${ETH_MIN_FRAME}..${ETH_MAX_FRAME}` };
  if (req.offset + req.size > PAGE_SIZE) return { ok: false, reason: `offset ${req.offset} + size ${req.size} crosses the page` };
  return { ok: true };
}
