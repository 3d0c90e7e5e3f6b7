/** `ringvisor list` (xl list). */
import { parseArgs } from 'node:util';
import type { ClusterSnapshot } from '../../../observe/model.js';
import { getJson } from '../endpoint.js';
import { COMMON, creds, deviceModes, parse, table } from '../view-support.js';

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
