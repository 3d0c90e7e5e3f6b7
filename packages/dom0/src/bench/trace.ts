/**
 * What watching costs: the default host's three PV guests (block + UDP workloads, threads transport)
 * runs once, and its throughput is measured in three observation modes, interleaved round by
 * round so machine noise falls on all of them alike:
 *
 *   off          nothing observes (the baseline: trace channels have no subscribers)
 *   aggregated   the Observatory samples every counter once a second, the control endpoint
 *                serves a live dashboard feed to one viewer, the timeline listens
 *   streaming    aggregated, plus one `ringvisor trace` client receiving every event of every
 *                runtime (guests and hardware forward theirs) over the control endpoint
 *
 * Throughput is guest I/O operations per second (block requests completed + frames sent and
 * received, as the guests count them). Reported per mode (median of rounds) and as ratios to
 * off; the target is aggregated ≥ 95% of off.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { createLogger, deriveReadToken, type GuestStats } from '@ringvisor/shared';
import { Host } from '../toolstack/host.js';
import { defaultConfig } from '../toolstack/config.js';
import { Observatory } from '../observe/observatory.js';
import { ControlServer } from '../observe/server.js';

export type TraceMode = 'off' | 'aggregated' | 'streaming';

export interface TraceBenchResult {
  opsPerSec: Record<TraceMode, number>;
  rounds: Array<Record<TraceMode, number>>;
  ratios: { aggregatedVsOff: number; streamingVsOff: number };
  streamed: { events: number; eventsPerSec: number; dropped: number };
  targets: { aggregatedRatio: number; met: boolean };
  setup: { guests: number; windowSec: number; rounds: number };
}

function totalOps(stats: GuestStats[]): number {
  return stats.reduce((a, g) => a + (g?.devices.reduce((b, d) => b + d.ops, 0) ?? 0), 0);
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runTraceBench(o: { seconds?: number; rounds?: number; modes?: TraceMode[]; log: (line: string) => void }): Promise<TraceBenchResult> {
  const windowSec = o.seconds ?? 2;
  const roundsN = o.rounds ?? 5;
  const dir = mkdtempSync(join(tmpdir(), 'rv-bench-trace-'));
  // The three PV guests: what tracing costs on the split-driver path (comparable across runs).
  const config = defaultConfig({ emulatedGuest: false, directGuest: false });
  const hostConfig = config.hosts[0];
  process.env.LOG_LEVEL ??= 'warn';
  const log = createLogger('bench');
  const host = new Host(hostConfig, { seed: 7, log, baseDir: dir });
  const secret = new Uint8Array(randomBytes(32));
  const obs = new Observatory([host], 'threads');
  const server = new ControlServer(obs, { host: '127.0.0.1', port: 0, readToken: deriveReadToken(secret), adminSecret: secret, log });
  const rounds: Array<Record<TraceMode, number>> = [];
  let streamedEvents = 0;
  let streamedSec = 0;
  let dropped = 0;
  try {
    await host.start();
    await server.listen();
    await delay(1500); // warm up: rings connected, flows in steady state
    const headers = { authorization: `Bearer ${deriveReadToken(secret)}` };
    for (let r = 0; r < roundsN; r++) {
      const round = {} as Record<TraceMode, number>;
      for (const mode of o.modes ?? (['off', 'aggregated', 'streaming'] as TraceMode[])) {
        const sockets: WebSocket[] = [];
        if (mode !== 'off') {
          obs.start();
          const live = new WebSocket(`${server.url.replace('http', 'ws')}/api/live`, { headers });
          live.on('message', () => {});
          sockets.push(live);
        }
        let events = 0;
        if (mode === 'streaming') {
          const tr = new WebSocket(`${server.url.replace('http', 'ws')}/api/trace`, { headers });
          tr.on('message', (data) => {
            const m = JSON.parse((data as Buffer).toString('utf8')) as { type: string; events?: unknown[]; dropped?: number };
            if (m.type === 'events') {
              events += m.events!.length;
              dropped += m.dropped ?? 0;
            }
          });
          sockets.push(tr);
        }
        await Promise.all(sockets.map((s) => new Promise((res, rej) => (s.once('open', res), s.once('error', rej)))));
        await delay(300); // let the mode settle (subscriptions reach every runtime)
        const a = totalOps(await host.guestStats());
        const t0 = performance.now();
        await delay(windowSec * 1000);
        const b = totalOps(await host.guestStats());
        const sec = (performance.now() - t0) / 1000;
        round[mode] = (b - a) / sec;
        if (mode === 'streaming') {
          streamedEvents += events;
          streamedSec += sec;
        }
        for (const s of sockets) s.close();
        obs.stop();
        await delay(300);
        o.log(`round ${r + 1} ${mode}: ${Math.round(round[mode])} ops/s${mode === 'streaming' ? `, ${events} events streamed` : ''}`);
      }
      rounds.push(round);
    }
  } finally {
    await server.close();
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const opsPerSec = { off: median(rounds.map((r) => r.off)), aggregated: median(rounds.map((r) => r.aggregated)), streaming: median(rounds.map((r) => r.streaming)) };
  // Ratios per round (same round, same machine weather), then the median.
  const aggregatedVsOff = median(rounds.map((r) => r.aggregated / r.off));
  const streamingVsOff = median(rounds.map((r) => r.streaming / r.off));
  return {
    opsPerSec,
    rounds,
    ratios: { aggregatedVsOff, streamingVsOff },
    streamed: { events: streamedEvents, eventsPerSec: streamedSec > 0 ? streamedEvents / streamedSec : 0, dropped },
    targets: { aggregatedRatio: 0.95, met: aggregatedVsOff >= 0.95 },
    setup: { guests: hostConfig.guests.length, windowSec, rounds: roundsN },
  };
}
