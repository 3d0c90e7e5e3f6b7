import { describe, expect, it } from 'vitest';
import type { GuestStats } from '@ringvisor/shared';
import { summarize } from './summary.js';
import type { RuntimeCrash } from './host.js';

function stats(name: string, domid: number, ops: number): GuestStats {
  return {
    name,
    domid,
    state: 'running',
    devices: [{ type: 'vbd', devid: 51712, mode: 'pv', ops, bytes: ops * 4096, errors: 0, detail: {} }],
    udp: { sent: 0, echoed: 0, lost: 0, duplicated: 0, reordered: 0, corrupted: 0 },
    integrity: { checked: 3, failures: 0, kinds: {} },
  } as unknown as GuestStats;
}

describe('the run summary of a run where a runtime crashed', () => {
  const crash: RuntimeCrash = { host: 'h', runtime: 'guest', name: 'a', pid: 41, exit: { code: null, signal: 'SIGKILL' }, at: 1, recovery: 'reclaimed', recoveryMs: 12 };

  it("marks a crashed guest's entry crashed with how its process ended, keeps its last figures, and carries the crashes and the outcome", () => {
    const s = summarize('ws', 3, [{ host: 'h', guests: [stats('a', 1, 5), stats('b', 2, 9)], pids: new Map([['a', 41], ['b', 42]]), crashed: new Map([['a', crash.exit]]) }], {}, [crash], 'recovered', 3);
    expect(s.guests.find((g) => g.name === 'a')).toMatchObject({ state: 'crashed', pid: 41, exit: { code: null, signal: 'SIGKILL' }, ops: 5 });
    expect(s.guests.find((g) => g.name === 'b')).toMatchObject({ state: 'running', pid: 42, ops: 9 });
    expect(s.guests.find((g) => g.name === 'b')!.exit).toBeUndefined();
    expect(s.crashes).toEqual([crash]);
    expect(s).toMatchObject({ outcome: 'recovered', exitCode: 3 });
  });

  it('lists a guest that crashed before dom0 ever polled its figures, with none', () => {
    const s = summarize('ws', 3, [{ host: 'h', guests: [stats('b', 2, 9)], pids: new Map([['a', 41]]), crashed: new Map([['a', crash.exit]]) }], {}, [crash]);
    expect(s.guests.map((g) => [g.name, g.state])).toEqual([
      ['b', 'running'],
      ['a', 'crashed'],
    ]);
    expect(s.guests[1]).toMatchObject({ ops: 0, pid: 41, exit: { signal: 'SIGKILL' } });
    expect(s.integrity.checked).toBe(3);
  });
});
