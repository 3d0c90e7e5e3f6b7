/**
 * Prometheus `/metrics`: the same counters the views show, labelled by host, domain, device and
 * ring. Counters are read from the Observatory's latest snapshot at scrape time (no per-event
 * cost); totals are exported as counters, instantaneous values (occupancy, verdict) as gauges.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import type { Observatory } from './observatory.js';
import type { ClusterSnapshot, DeviceRow } from './model.js';

type Labels<K extends string> = Record<K, string>;

/**
 * A metric read from the latest snapshot at collect time. Totals are counters (reset, then
 * incremented to the value: prom-client counters only go up), instantaneous values gauges.
 */
function fromSnapshot<K extends string>(
  kind: 'counter' | 'gauge',
  registry: Registry,
  name: string,
  help: string,
  labelNames: K[],
  read: (s: ClusterSnapshot) => Array<[Labels<K>, number]>,
  obs: Observatory,
): void {
  if (kind === 'counter')
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, v] of read(obs.snapshot())) this.inc(labels, v);
      },
    });
  else
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, v] of read(obs.snapshot())) this.set(labels, v);
      },
    });
}

export function createMetricsRegistry(obs: Observatory): Registry {
  const r = new Registry();
  const ringL = ['host', 'domain', 'device', 'ring', 'mode'] as const;
  const ringLabels = (x: ClusterSnapshot['rings'][number]) => ({ host: x.host, domain: x.domain, device: x.device, ring: x.ring, mode: x.mode });
  fromSnapshot('counter', r, 'ringvisor_ring_requests_total', 'Requests the backend consumed from the ring', [...ringL], (s) => s.rings.map((x) => [ringLabels(x), x.requests]), obs);
  fromSnapshot('counter', r, 'ringvisor_ring_responses_total', 'Responses the backend published on the ring', [...ringL], (s) => s.rings.map((x) => [ringLabels(x), x.responses]), obs);
  fromSnapshot('gauge', r, 'ringvisor_ring_occupancy', 'Requests published and not yet answered (req_prod - rsp_prod)', [...ringL], (s) => s.rings.map((x) => [ringLabels(x), x.occupancy]), obs);
  fromSnapshot('gauge', r, 'ringvisor_ring_size', 'Slots in the ring', [...ringL], (s) => s.rings.map((x) => [ringLabels(x), x.size]), obs);
  fromSnapshot('gauge', r, 'ringvisor_ring_stuck', '1 when entries wait and the consumer made no progress over the last interval (xen-ringwatch STUCK)', [...ringL], (s) => s.rings.map((x) => [ringLabels(x), x.verdict === 'STUCK' ? 1 : 0]), obs);

  const devL = ['host', 'domain', 'device', 'mode'] as const;
  const devRows = (s: ClusterSnapshot) => s.domains.flatMap((d) => d.devices.map((v) => ({ d, v, l: { host: d.host, domain: d.name, device: v.name, mode: v.mode } })));
  fromSnapshot('counter', r, 'ringvisor_events_received_total', 'Event-channel notifications the backend received from the frontend', [...devL], (s) => devRows(s).map(({ v, l }) => [l, v.events]), obs);
  fromSnapshot('counter', r, 'ringvisor_notifications_sent_total', 'Event-channel notifications the backend sent to the frontend', [...devL], (s) => devRows(s).map(({ v, l }) => [l, v.notifications]), obs);
  fromSnapshot('counter', r, 'ringvisor_notifications_suppressed_total', 'Notifications the ring protocol made unnecessary (event index not passed)', [...devL], (s) => devRows(s).map(({ v, l }) => [l, v.suppressed]), obs);
  // Only devices whose I/O traps report these (emulated): a PV device has no trap counter to read.
  const devOpt = (s: ClusterSnapshot, pick: (v: DeviceRow) => number | undefined): Array<[Labels<(typeof devL)[number]>, number]> =>
    devRows(s).flatMap(({ v, l }) => {
      const n = pick(v);
      return n === undefined ? [] : [[l, n]];
    });
  fromSnapshot('counter', r, 'ringvisor_device_traps_total', "Guest port accesses to the device's registers, each a trap to its model in dom0 (emulated devices)", [...devL], (s) => devOpt(s, (v) => v.traps), obs);
  fromSnapshot('counter', r, 'ringvisor_device_interrupts_total', 'Interrupts the device model raised to the guest (emulated devices)', [...devL], (s) => devOpt(s, (v) => v.interrupts), obs);

  const domL = ['host', 'domain'] as const;
  const dl = (d: ClusterSnapshot['domains'][number]) => ({ host: d.host, domain: d.name });
  fromSnapshot('counter', r, 'ringvisor_vbd_reads_total', 'Block read requests served', [...domL], (s) => s.domains.map((d) => [dl(d), d.vbdReads]), obs);
  fromSnapshot('counter', r, 'ringvisor_vbd_writes_total', 'Block write requests served', [...domL], (s) => s.domains.map((d) => [dl(d), d.vbdWrites]), obs);
  fromSnapshot('counter', r, 'ringvisor_vbd_sectors_read_total', 'Sectors read', [...domL], (s) => s.domains.map((d) => [dl(d), d.vbdSectorsRead]), obs);
  fromSnapshot('counter', r, 'ringvisor_vbd_sectors_written_total', 'Sectors written', [...domL], (s) => s.domains.map((d) => [dl(d), d.vbdSectorsWritten]), obs);
  fromSnapshot('counter', r, 'ringvisor_vif_tx_packets_total', 'Frames the guest transmitted', [...domL], (s) => s.domains.map((d) => [dl(d), d.netTxPackets]), obs);
  fromSnapshot('counter', r, 'ringvisor_vif_rx_packets_total', 'Frames delivered to the guest', [...domL], (s) => s.domains.map((d) => [dl(d), d.netRxPackets]), obs);
  fromSnapshot('counter', r, 'ringvisor_vif_tx_bytes_total', 'Bytes the guest transmitted', [...domL], (s) => s.domains.map((d) => [dl(d), d.netTxBytes]), obs);
  fromSnapshot('counter', r, 'ringvisor_vif_rx_bytes_total', 'Bytes delivered to the guest', [...domL], (s) => s.domains.map((d) => [dl(d), d.netRxBytes]), obs);
  fromSnapshot('gauge', r, 'ringvisor_domain_cpu_percent', 'Share of one CPU the guest runtime was busy over the last interval', [...domL], (s) => s.domains.map((d) => [dl(d), d.cpuPct]), obs);
  fromSnapshot('counter', r, 'ringvisor_domain_traps_total', "Traps of the guest's vCPU dom0 served, including ports no device decodes (guests with emulated devices)", [...domL], (s) => s.domains.flatMap((d) => (d.traps === undefined ? [] : [[dl(d), d.traps] as [Labels<(typeof domL)[number]>, number]])), obs);
  fromSnapshot('counter', r, 'ringvisor_integrity_failures_total', 'Integrity failures the guest checkers found', [...domL], (s) => s.domains.map((d) => [dl(d), d.integrityFailures]), obs);

  const hostL = ['host'] as const;
  fromSnapshot('counter', r, 'ringvisor_traps_total', 'Guest accesses to emulated device registers that trapped', [...hostL], (s) => s.hosts.map((h) => [{ host: h.name }, h.traps]), obs);
  fromSnapshot('counter', r, 'ringvisor_world_switches_total', 'Context changes between guest, hypervisor and device model', [...hostL], (s) => s.hosts.map((h) => [{ host: h.name }, h.worldSwitches]), obs);
  fromSnapshot('counter', r, 'ringvisor_grant_maps_total', 'Grant map operations', [...hostL], (s) => s.hosts.map((h) => [{ host: h.name }, h.grantMaps]), obs);
  fromSnapshot('counter', r, 'ringvisor_grant_unmaps_total', 'Grant unmap operations', [...hostL], (s) => s.hosts.map((h) => [{ host: h.name }, h.grantUnmaps]), obs);
  fromSnapshot('counter', r, 'ringvisor_grant_copies_total', 'Grant copy operations', [...hostL], (s) => s.hosts.map((h) => [{ host: h.name }, h.grantCopies]), obs);
  fromSnapshot('counter', r, 'ringvisor_bytes_copied_total', 'Bytes moved by grant copy', [...hostL], (s) => s.hosts.map((h) => [{ host: h.name }, h.bytesCopied]), obs);
  fromSnapshot('gauge', r, 'ringvisor_runtime_up', '1 while the runtime (thread or process) is up', ['host', 'runtime', 'role'], (s) => s.runtimes.map((x) => [{ host: x.host, runtime: x.name, role: x.role }, x.state === 'up' ? 1 : 0]), obs);
  return r;
}
