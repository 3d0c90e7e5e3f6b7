/**
 * The view commands: attach to a running cluster's control endpoint and show it the way Xen's
 * tools do.
 *
 *   ringvisor list                     xl list
 *   ringvisor top [-b] [-n N] [-d S]   xentop (batch mode for scripts)
 *   ringvisor rings                    xen-ringwatch: per-ring indices and BUSY / IDLE / STUCK
 *   ringvisor trace [filters] [--pcap FILE] [--count N] [--duration S]   JSON Lines
 *   ringvisor backend pause|resume DOMAIN DEVICE   (admin)
 *   ringvisor direct list | faults | reclaim|assign DOMAIN DEVICE   (functions; IOMMU fault records; xl pci-detach / pci-attach, admin)
 *   ringvisor svio list | qos DOMAIN DEVICE --weight N [--rate bytes,usec]   (the SV-IO engine's VIFs; their QoS, admin)
 */
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { TRACE_KINDS, type TraceKind } from '@ringvisor/shared';
import type { ClusterSnapshot, DomainRow, RingRow } from '../../observe/model.js';
import { PcapCapture } from '../../observe/capture.js';
import { ControlEndpointError, UsageError, getJson, postAction, resolveControl, type ControlCredentials } from './endpoint.js';

const COMMON = { url: { type: 'string' }, 'secret-file': { type: 'string' }, json: { type: 'boolean' } } as const;

/** Run parseArgs, turning its complaints into a usage error naming the command. */
function parse<T>(cmd: string, run: () => T): T {
  try {
    return run();
  } catch (e) {
    throw new UsageError(`ringvisor ${cmd}: ${(e as Error).message} (see \`ringvisor help\`)`);
  }
}

async function creds(values: { url?: string | boolean; 'secret-file'?: string | boolean }): Promise<ControlCredentials> {
  return resolveControl({
    ...(typeof values.url === 'string' ? { url: values.url } : {}),
    ...(typeof values['secret-file'] === 'string' ? { secretFile: values['secret-file'] } : {}),
  });
}

/** Columns right-aligned (numbers) except the first and those in `left` (names, lists). */
function table(head: string[], rows: string[][], left: readonly number[] = []): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 || left.includes(i) ? c.padEnd(w[i]) : c.padStart(w[i])))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** A domain's I/O modes for `top`: one mode when all its devices share it ("pv"), else each device type's ("vbd:direct,vif:svio"). */
function modesColumn(d: DomainRow): string {
  const modes = new Set(d.devices.map((x) => x.mode));
  if (modes.size <= 1) return [...modes][0] ?? '-';
  return [...new Set(d.devices.map((x) => `${x.type}:${x.mode}`))].join(',');
}

/** A domain's devices and their I/O modes: "vbd51712:pv,vif0:pv", "ata0:emulated,lance0:emulated". */
function deviceModes(d: DomainRow): string {
  return d.devices.map((x) => `${x.name}:${x.mode}`).join(',') || '-';
}

function fmtBytes(n: number): string {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + 'G';
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + 'M';
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + 'K';
  return String(n);
}

/** `ringvisor list`: name, id, memory, state, uptime, devices with their I/O mode — every domain of every host. */
export async function list(argv: string[]): Promise<number> {
  const { values } = parse('list', () => parseArgs({ args: argv, options: COMMON, strict: true }));
  const s = await getJson<ClusterSnapshot>(await creds(values), '/api/snapshot');
  if (values.json) {
    process.stdout.write(
      JSON.stringify(
        s.domains.map(({ host, name, domid, memKiB, vcpus, state, uptimeSec, devices, pid, exit }) => ({
          host,
          name,
          domid,
          memKiB,
          vcpus,
          state,
          uptimeSec,
          ...(pid !== undefined ? { pid } : {}),
          ...(exit ? { exit } : {}),
          devices: devices.map(({ name: device, type, mode, traps }) => ({ name: device, type, mode, ...(traps !== undefined ? { traps } : {}) })),
        })),
      ) + '\n',
    );
    return 0;
  }
  process.stdout.write(
    table(
      ['Name', 'ID', 'Mem(MiB)', 'VCPUs', 'State', 'Time(s)', 'Host', 'Devices', 'PID'],
      s.domains.map((d) => [
        d.name,
        String(d.domid),
        String(Math.round(d.memKiB / 1024)),
        String(d.vcpus),
        // One word, so scripts can split on spaces: "crashed:SIGKILL", "crashed:exit-1".
        d.exit ? `${d.state}:${d.exit.signal ?? `exit-${d.exit.code}`}` : d.state,
        String(d.uptimeSec),
        d.host,
        deviceModes(d),
        d.pid !== undefined ? String(d.pid) : '-',
      ]),
      [7],
    ),
  );
  // The hardware simulators are no domains, but an operator looking for a process finds them here.
  for (const r of s.runtimes.filter((x) => x.role === 'hwsim' && x.pid !== undefined)) process.stdout.write(`hardware ${r.name}: pid ${r.pid}, ${r.state}\n`);
  return 0;
}

/** Emulated devices, one line each: where the model runs, its state, ports, traps and interrupts (none when no guest has any). */
function renderEmulatedDevices(s: ClusterSnapshot): string {
  const rows = s.domains.flatMap((d) =>
    d.devices
      .filter((x) => x.mode === 'emulated')
      .map((x) => [
        `${d.host}/${d.name}/${x.name}`,
        x.type,
        x.placement ?? 'dom0',
        x.backendState,
        (x.ports ?? []).join(','),
        String(x.traps ?? 0),
        String(x.trapsPerSec ?? 0),
        String(x.interrupts ?? 0),
        String(x.interruptsPerSec ?? 0),
      ]),
  );
  if (rows.length === 0) return '';
  return '\nemulated devices (every register access traps to the device model)\n' + table(['DEVICE', 'TYPE', 'MODEL_IN', 'STATE', 'PORTS', 'TRAPS', 'TRAP/s', 'IRQS', 'IRQ/s'], rows, [1, 2, 3, 4]);
}

export function renderTopTable(s: ClusterSnapshot): string {
  const rings = new Map<string, RingRow[]>();
  for (const r of s.rings) rings.set(`${r.host}/${r.domid}`, [...(rings.get(`${r.host}/${r.domid}`) ?? []), r]);
  const head = `ringvisor top — ${new Date(s.time).toISOString()} — up ${s.uptimeSec}s — ${s.domains.length} domains on ${s.hosts.length} hosts (${s.transport})`;
  const hostLine = s.hosts
    .map(
      (h) =>
        `${h.name}: events/s ${h.eventsPerSec}  notify/s ${h.notificationsPerSec}  suppressed/s ${h.suppressedPerSec}  traps/s ${h.trapsPerSec}  world switches/s ${h.worldSwitchesPerSec}  grant ops/s ${h.grantOpsPerSec}`,
    )
    .join('\n');
  return (
    `${head}\n${hostLine}\n` +
    table(
      ['NAME', 'STATE', 'MODES', 'CPU(%)', 'MEM(k)', 'NETTX(k)', 'NETRX(k)', 'VBD_RD', 'VBD_WR', 'VBD_RSECT', 'VBD_WSECT', 'RING_OCC', 'REQ/s', 'EVT/s', 'TRAP/s', 'HOST'],
      s.domains.map((d) => {
        const rs = rings.get(`${d.host}/${d.domid}`) ?? [];
        return [
          d.name,
          d.state,
          modesColumn(d),
          d.cpuPct.toFixed(1),
          String(d.memKiB),
          String(Math.round(d.netTxBytes / 1024)),
          String(Math.round(d.netRxBytes / 1024)),
          String(d.vbdReads),
          String(d.vbdWrites),
          String(d.vbdSectorsRead),
          String(d.vbdSectorsWritten),
          rs.map((r) => `${r.occupancy}/${r.size}`).join(',') || '-',
          String(rs.reduce((a, r) => a + r.requestsPerSec, 0)),
          String(d.eventsPerSec),
          d.trapsPerSec === undefined ? '-' : String(d.trapsPerSec),
          d.host,
        ];
      }),
      [2],
    ) +
    renderEmulatedDevices(s)
  );
}

/** `ringvisor top`: xentop. Interactive by default; `-b` prints `-n` iterations for scripts. */
export async function top(argv: string[]): Promise<number> {
  const { values } = parse('top', () =>
    parseArgs({ args: argv, options: { ...COMMON, batch: { type: 'boolean', short: 'b' }, iterations: { type: 'string', short: 'n' }, delay: { type: 'string', short: 'd' } }, strict: true }),
  );
  const n = values.iterations === undefined ? (values.batch ? 1 : Infinity) : Number(values.iterations);
  if (!(n >= 1) || (Number.isFinite(n) && !Number.isInteger(n))) throw new UsageError(`-n must be a positive whole number of iterations, got ${JSON.stringify(values.iterations)}`);
  const delaySec = values.delay === undefined ? 1 : Number(values.delay);
  if (!(delaySec > 0)) throw new UsageError(`-d must be a positive number of seconds, got ${JSON.stringify(values.delay)}`);
  const c = await creds(values);
  const tty = process.stdout.isTTY === true && !values.batch;
  for (let i = 0; i < n; i++) {
    const s = await getJson<ClusterSnapshot>(c, '/api/snapshot');
    if (values.json) process.stdout.write(JSON.stringify({ time: s.time, hosts: s.hosts, domains: s.domains, rings: s.rings }) + '\n');
    else process.stdout.write((tty ? '\x1b[H\x1b[2J' : '') + renderTopTable(s) + (tty ? '' : '\n'));
    if (i + 1 < n) await new Promise((r) => setTimeout(r, delaySec * 1000));
  }
  return 0;
}

/** `ringvisor rings`: every ring's indices, occupancy and xen-ringwatch verdict. */
export async function rings(argv: string[]): Promise<number> {
  const { values } = parse('rings', () => parseArgs({ args: argv, options: { ...COMMON, domain: { type: 'string' } }, strict: true }));
  const s = await getJson<ClusterSnapshot>(await creds(values), '/api/snapshot');
  const rs = s.rings.filter((r) => !values.domain || r.domain === values.domain || String(r.domid) === values.domain);
  if (values.json) {
    process.stdout.write(JSON.stringify(rs) + '\n');
    return 0;
  }
  process.stdout.write(
    table(
      ['RING', 'MODE', 'SIZE', 'REQ_PROD', 'REQ_CONS', 'REQ_EVENT', 'RSP_PROD', 'RSP_EVENT', 'OCC', 'REQ/s', 'RSP/s', 'STATE'],
      rs.map((r) => [
        r.id,
        r.mode,
        String(r.size),
        String(r.reqProd),
        String(r.reqCons),
        String(r.reqEvent),
        String(r.rspProd),
        String(r.rspEvent),
        String(r.occupancy),
        String(r.requestsPerSec),
        String(r.responsesPerSec),
        r.verdict + (r.stuck ? ` (${r.stuck})` : '') + (r.paused ? ' paused' : ''),
      ]),
    ),
  );
  return 0;
}

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
  const ws = new WebSocket(`${c.url.replace(/^http/, 'ws')}/api/trace?${q}`, { headers: { authorization: `Bearer ${c.readToken}` } });
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

/** `ringvisor backend pause|resume DOMAIN DEVICE`: stop or restart a backend consuming its rings. */
export async function backend(argv: string[]): Promise<number> {
  const { values, positionals } = parse('backend', () => parseArgs({ args: argv, options: COMMON, strict: true, allowPositionals: true }));
  const [action, domain, device] = positionals;
  if ((action !== 'pause' && action !== 'resume') || !domain || !device || positionals.length !== 3)
    throw new UsageError('usage: ringvisor backend pause|resume DOMAIN DEVICE   (e.g. ringvisor backend pause guest1 vbd0)');
  const r = await postAction<{ paused: boolean }>(await creds(values), `/api/backend/${action}`, { domain, device });
  process.stdout.write(`${domain}/${device}: backend ${r.paused ? 'paused' : 'running'}\n`);
  return 0;
}

/**
 * `ringvisor direct list`: every direct device and its function (requester id, state, doorbells,
 * interrupts, DMA the IOMMU blocked). `ringvisor direct reclaim|assign DOMAIN DEVICE`: take a
 * function back the VFIO way (bus master off, FLR, IOMMU context torn down) or assign one again.
 */
export async function direct(argv: string[]): Promise<number> {
  const { values, positionals } = parse('direct', () => parseArgs({ args: argv, options: COMMON, strict: true, allowPositionals: true }));
  const [action, domain, device] = positionals;
  const c = await creds(values);
  if (action === 'list' && positionals.length === 1) {
    const snap = await getJson<ClusterSnapshot>(c, '/api/snapshot');
    const rows = snap.domains.flatMap((d) => d.devices.filter((x) => x.mode === 'direct').map((x) => ({ host: d.host, domain: d.name, ...x })));
    if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
    else
      process.stdout.write(
        table(
          ['HOST', 'DOMAIN', 'DEVICE', 'RID', 'STATE', 'DOORBELLS', 'IRQS', 'DMA_BLOCKED'],
          rows.map((r) => [r.host, r.domain, r.name, r.rid ?? '-', r.backendState, String(r.events), String(r.interrupts ?? 0), String(r.dmaFaults ?? 0)]),
          [1, 2, 3, 4],
        ),
      );
    return 0;
  }
  if (action === 'faults' && positionals.length === 1) {
    const hosts = await getJson<Array<{ host: string; faults: Array<{ seq: number; t: number; rid: number; address: number; write: boolean; reason: string; domid?: number }> }>>(c, '/api/direct/faults');
    if (values.json) process.stdout.write(JSON.stringify(hosts) + '\n');
    else {
      const rid = (r: number) => `${((r >> 8) & 0xff).toString(16).padStart(2, '0')}:${((r >> 3) & 0x1f).toString(16).padStart(2, '0')}.${r & 7}`;
      const rows = hosts.flatMap((h) => h.faults.map((f) => [h.host, String(f.seq), rid(f.rid), f.domid === undefined ? '-' : String(f.domid), `0x${f.address.toString(16)}`, f.write ? 'write' : 'read', f.reason]));
      process.stdout.write(table(['HOST', 'SEQ', 'RID', 'DOMID', 'ADDRESS', 'ACCESS', 'REASON'], rows, [2, 4, 5, 6]));
    }
    return 0;
  }
  if ((action !== 'reclaim' && action !== 'assign') || !domain || !device || positionals.length !== 3)
    throw new UsageError('usage: ringvisor direct list | faults | reclaim|assign DOMAIN DEVICE   (e.g. ringvisor direct reclaim direct1 vif0)');
  const r = await postAction<{ rid: string; steps?: string[] }>(c, `/api/direct/${action}`, { domain, device });
  process.stdout.write(action === 'reclaim' ? `${domain}/${device}: function ${r.rid} reclaimed (${(r.steps ?? []).join(', ')})\n` : `${domain}/${device}: function ${r.rid} assigned\n`);
  return 0;
}

/**
 * `ringvisor svio list`: every SV-IO VIF as the engine's management API lists it (bound guest and
 * device, core, weight, credit limit, queue state, messages and bytes, turns throttled).
 * `ringvisor svio qos DOMAIN DEVICE --weight N [--rate bytes,usec]`: set a VIF's share and
 * credit limit (no --rate: unlimited), as `xl sched-credit` sets a domain's weight and cap.
 */
export async function svio(argv: string[]): Promise<number> {
  const usage = 'usage: ringvisor svio list | qos DOMAIN DEVICE --weight 1..1000 [--rate BYTES,USEC]   (e.g. ringvisor svio qos svio1 vbd51712 --weight 400 --rate 1048576,10000)';
  const { values, positionals } = parse('svio', () => parseArgs({ args: argv, options: { ...COMMON, weight: { type: 'string' }, rate: { type: 'string' } }, strict: true, allowPositionals: true }));
  const [action, domain, device] = positionals;
  const c = await creds(values);
  if (action === 'list' && positionals.length === 1) {
    type Row = { host: string; domain: string; device: string; vif: number; kind: string; core: number; weight: number; rate?: { bytes: number; usec: number }; state: string; stats?: { counters: { messagesIn: number; messagesOut: number; bytes: number; refused: number }; sched: { throttled: number }; stopped: string | null } };
    const rows = await getJson<Row[]>(c, '/api/svio');
    if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
    else
      process.stdout.write(
        table(
          ['HOST', 'DOMAIN', 'DEVICE', 'VIF', 'KIND', 'CORE', 'WEIGHT', 'RATE', 'STATE', 'MSGS_IN', 'MSGS_OUT', 'BYTES', 'REFUSED', 'THROTTLED'],
          rows.map((r) => [
            r.host,
            r.domain,
            r.device,
            String(r.vif),
            r.kind,
            String(r.core),
            String(r.weight),
            r.rate ? `${r.rate.bytes},${r.rate.usec}` : '-',
            r.stats?.stopped ? `stopped (${r.stats.stopped})` : r.state,
            String(r.stats?.counters.messagesIn ?? 0),
            String(r.stats?.counters.messagesOut ?? 0),
            String(r.stats?.counters.bytes ?? 0),
            String(r.stats?.counters.refused ?? 0),
            String(r.stats?.sched.throttled ?? 0),
          ]),
          [1, 2, 4, 7, 8],
        ),
      );
    return 0;
  }
  if (action !== 'qos' || !domain || !device || positionals.length !== 3 || typeof values.weight !== 'string') throw new UsageError(usage);
  const weight = Number(values.weight);
  if (!Number.isInteger(weight) || weight < 1 || weight > 1000) throw new UsageError(`ringvisor svio qos: --weight must be an integer in 1..1000, got ${JSON.stringify(values.weight)}`);
  if (values.rate !== undefined && !/^\d+,\d+$/.test(values.rate)) throw new UsageError(`ringvisor svio qos: --rate must be BYTES,USEC (netback's syntax, e.g. 125000,10000 for 100 Mbit/s), got ${JSON.stringify(values.rate)}`);
  const r = await postAction<{ vif: number }>(c, '/api/svio/qos', { domain, device, weight, ...(values.rate !== undefined ? { rate: values.rate } : {}) });
  process.stdout.write(`${domain}/${device}: VIF ${r.vif} weight ${weight}, ${values.rate !== undefined ? `rate ${values.rate}` : 'no credit limit'}\n`);
  return 0;
}
