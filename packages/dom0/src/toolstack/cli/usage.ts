/** `ringvisor help`: every command and its options. */
import { TRACE_KINDS } from '@ringvisor/shared';

export const USAGE = `usage: ringvisor <command> [options]

commands:
  up        start a cluster and run its workloads (default: one host, five guests in three I/O modes:
            guest1-3 para-virtualized, guest4 emulated (Lance NIC, ATA disk), guest5 direct I/O)
  list      the running cluster's domains (xl list)
  top       live per-domain figures (xentop); -b -n N for batch output, -d S between iterations
  rings     every ring's indices, occupancy and verdict BUSY / IDLE / STUCK (xen-ringwatch)
  trace     stream trace events as JSON Lines: --kind K (repeatable: ${TRACE_KINDS.join(', ')}) --host H
            --domain NAME|ID --device vif0 --ring tx --count N --duration S; --pcap FILE writes
            every NIC's frames as pcapng instead
  backend   pause|resume DOMAIN DEVICE: stop or restart a backend consuming its rings (admin)
  direct    list | faults | reclaim|assign DOMAIN DEVICE: direct devices' functions (requester id,
            state, DMA blocked); the IOMMU's fault records; take a function back (bus master off,
            FLR, IOMMU teardown) or assign one (admin)
  svio      list | qos DOMAIN DEVICE --weight N [--rate BYTES,USEC]: the SV-IO engine's VIFs (core,
            weight, credit limit, queue state, counters); set a VIF's QoS share and limit (admin)
  bench     [suite...] [--quick] [--json FILE] [--svg FILE] [--seconds N]: the benchmarks (npm run bench);
            --quick with no suite: the comparison of every I/O design (modes, scaling), under 5 minutes;
            --transport/--mode/--workload narrow it; rows more than 3× below the committed run
            (docs/bench/run.json, or --reference FILE) are flagged, --fail-on-regression exits 3
  chaos     --plan FILE | --random N  [--seed N] [--json FILE] [--transport T] [--config F] [--duration S]:
            run a fault campaign (a plan, or N seeded random scenarios), heal, check; with
            --attach URL[,URL] against a running cluster through its dom0s' control endpoints;
            exit 1 when a checker fails (plans: examples/faults/)
  fault     inject SPEC [--for S] | heal [ID] | list: faults into a running cluster (admin)
  token     print the read token (dashboard: http://HOST:PORT/?token=…) derived from the cluster secret
  key       --host NAME --domain N: print guest N of host NAME's domain key (hex), the one credential
            its process gets (RINGVISOR_DOMAIN_KEY); it opens that guest's own links and nothing else
  help      show this text

view commands find the cluster through .ringvisor/control.json (or --url http://HOST:PORT,
RINGVISOR_CONTROL_URL) and authenticate with the cluster secret (.ringvisor/secret,
RINGVISOR_SECRET or --secret-file; read-only views also accept RINGVISOR_READ_TOKEN).
--json prints machine-readable output.

ringvisor up options:
  --config FILE     cluster config (YAML or JSON); default: the embedded five-guest host (above)
  --duration S      run for S seconds, then shut down cleanly (default: until Ctrl-C)
  --json FILE       write the run summary (per guest, per device ops/bytes/errors, integrity) at exit
  --seed N          seed for every workload (same seed, same schedule)
  --transport T     threads (default: every runtime a thread of this process, real shared memory)
                    or ws (every guest its own process on an authenticated WebSocket to dom0)
  --secret-file F   the cluster secret (created, mode 0600, if missing; default .ringvisor/secret)
  --observe H:P     the control endpoint: dashboard, /metrics, views (default 127.0.0.1:7070)
  --pcap FILE       capture every frame crossing a vif or the physical NIC to FILE (pcapng)
  A second Ctrl-C / SIGTERM forces the exit (children killed by pid). Exit codes: 0 clean,
  1 a check failed, 2 usage, 3 a runtime crashed and the run recovered, 4 forced exit
  (5: a runtime that lost its dom0).

runtimes (ws transport; started by \`up --transport ws\` or by docker compose):
  dom0 --config FILE [--listen HOST:PORT] [--lan ws://SWITCH:PORT]
                                            this host's dom0 and hardware; waits for the config's guests
  switch [--listen HOST:PORT]               the LAN switch joining several hosts' physical NICs
  domu --id N --dom0 ws://HOST:PORT         a guest; its domain key (only) in RINGVISOR_DOMAIN_KEY
                                            or --key-file FILE (see \`ringvisor key\`)
  health [--url ws://HOST:PORT]             exit 0 when dom0 answers an authenticated ping
  (the other runtimes take the cluster secret from RINGVISOR_SECRET, hex, or --secret-file FILE)
`;

