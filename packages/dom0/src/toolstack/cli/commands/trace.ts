/** `ringvisor trace`: trace events as JSON Lines, or frames to pcapng. */
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { TRACE_KINDS, type TraceKind } from '@ringvisor/shared';
import { PcapCapture } from '../../../observe/capture.js';
import { ControlEndpointError, UsageError } from '../endpoint.js';
import { COMMON, creds, parse } from '../view-support.js';

/**
 * `ringvisor trace`: stream trace events as JSON Lines (filtered at the source), or capture
 * frames to pcapng with --pcap. Ends after --count events, --duration seconds, or Ctrl-C.
 */
export async function trace(argv: string[]): Promise<number> {
  const { values } = parse('trace', () =>
    parseArgs({
      args: argv,
      options: {
        ...COMMON,
        kind: { type: 'string', multiple: true },
        host: { type: 'string' },
        domain: { type: 'string' },
        device: { type: 'string' },
        ring: { type: 'string' },
        pcap: { type: 'string' },
        count: { type: 'string' },
        duration: { type: 'string' },
      },
      strict: true,
    }),
  );
  const kinds = (values.kind ?? []).flatMap((k) => k.split(','));
  for (const k of kinds) if (!TRACE_KINDS.includes(k as TraceKind)) throw new UsageError(`--kind ${k}: unknown event kind (kinds: ${TRACE_KINDS.join(', ')})`);
  const pcap = values.pcap;
  if (pcap && kinds.length && !kinds.includes('frame')) throw new UsageError('--pcap captures frames: leave out --kind, or include --kind frame');
  const count = values.count === undefined ? Infinity : Number(values.count);
  if (!(count >= 1)) throw new UsageError(`--count must be a positive number, got ${JSON.stringify(values.count)}`);
  const durationSec = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(durationSec > 0)) throw new UsageError(`--duration must be a positive number of seconds, got ${JSON.stringify(values.duration)}`);
  const c = await creds(values);
  const q = new URLSearchParams();
  if (pcap) q.set('kinds', 'frame');
  else if (kinds.length) q.set('kinds', kinds.join(','));
  if (pcap) q.set('frames', '1');
  for (const k of ['host', 'domain', 'device', 'ring'] as const) if (values[k]) q.set(k, values[k]!);
  const ws = new WebSocket(`${c.url.replace(/^http/, 'ws')}/api/trace?${q.toString()}`, { headers: { authorization: `Bearer ${c.readToken}` } });
  const capture = pcap ? new PcapCapture(pcap) : undefined;
  let seen = 0;
  let dropped = 0;
  let closeReason = '';
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; events?: Array<Record<string, unknown>>; dropped?: number };
      if (m.type !== 'events') return;
      dropped += m.dropped ?? 0;
      for (const ev of m.events ?? []) {
        if (seen >= count) break;
        seen++;
        if (capture && typeof ev.frame === 'string')
          capture.write({ t: ev.t as number, host: ev.host as string, iface: ev.iface as string, dir: ev.dir as 'tx' | 'rx', frame: Buffer.from(ev.frame, 'base64') });
        else process.stdout.write(JSON.stringify(ev) + '\n');
      }
      if (seen >= count) ws.close(1000, 'enough');
    });
    ws.on('unexpected-response', (_req, res) => reject(new ControlEndpointError(`trace stream refused: ${res.statusCode} (check the read token)`)));
    ws.on('error', (e) => reject(new ControlEndpointError(`cannot reach the control endpoint at ${c.url}: ${e.message}`)));
    ws.on('close', (code, reason) => {
      closeReason = code === 1008 ? String(reason) : '';
      resolve();
    });
  });
  const stop = () => ws.close(1000, 'stopped');
  process.once('SIGINT', stop);
  const timer = Number.isFinite(durationSec) ? setTimeout(stop, durationSec * 1000) : undefined;
  try {
    await done;
  } finally {
    process.off('SIGINT', stop);
    if (timer) clearTimeout(timer);
    capture?.close();
  }
  if (closeReason) throw new UsageError(`ringvisor trace: ${closeReason}`);
  if (capture) process.stderr.write(`ringvisor: captured ${capture.frames} frames on ${capture.perInterface.size} interfaces to ${pcap}\n`);
  if (dropped) process.stderr.write(`ringvisor: ${dropped} events dropped (the stream could not keep up; filter by --kind/--domain/--ring)\n`);
  return 0;
}
