/**
 * `ringvisor chaos --plan FILE --attach URL[,URL…]`: run a plan against a cluster someone else
 * runs (docker compose: one dom0 per host), through each dom0's control endpoint — every fault
 * injected by the dom0 that owns its target, with the admin signature; healed on schedule; the
 * verdict from what the dom0s report while the cluster keeps running.
 *
 * What it can prove from outside: every fault was accepted and healed; no integrity failure was
 * observed by any guest's checkers during the run; every running domain made progress after the
 * final heal (liveness), and how long each recovery took. The full read-back of every
 * acknowledged block happens when the cluster is stopped: each dom0's `--json` summary.
 */
import { schedule, type FaultPlan, type FaultSpec } from '../../faults/plan.js';
import type { ClusterSnapshot } from '../../observe/model.js';
import { ControlEndpointError, UsageError, getJson, postAction, type ControlCredentials } from './endpoint.js';

export interface AttachedReport {
  seed: number;
  plan: string;
  mode: 'attached';
  verdict: 'pass' | 'fail';
  reasons: string[];
  faults: Array<{ id: string; kind: string; endpoint?: string; key?: string; atMs: number; error?: string; recoveryMs?: number }>;
  /** What the guests' checkers saw while the cluster ran (a guest reading another's block counts here too). */
  checkers: { integrity: { checked: number; failures: number } };
  note: string;
  recoveryMs: number[];
  livenessMs: number | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function opsByDomain(snaps: ClusterSnapshot[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const s of snaps) for (const d of s.domains) if (d.domid > 0) m.set(`${d.host}/${d.name}`, d.vbdReads + d.vbdWrites + d.netTxPackets + d.netRxPackets);
  return m;
}

export async function chaosAttached(plan: FaultPlan, seed: number, endpoints: ControlCredentials[], progress: (l: string) => void): Promise<AttachedReport> {
  if (!endpoints.every((e) => e.secret)) throw new UsageError('chaos --attach needs the cluster secret (RINGVISOR_SECRET or --secret-file) to inject faults');
  const { timed, relative } = schedule(plan, seed);
  if (relative.length) throw new UsageError('chaos --attach: `when.after` needs the trace of a cluster chaos runs itself; use `at`/`every` against a running cluster');
  const snaps = () => Promise.all(endpoints.map((e) => getJson<ClusterSnapshot>(e, '/api/snapshot')));
  const faults: AttachedReport['faults'] = [];
  const t0 = Date.now();
  const base = await snaps();
  const recoveries: Promise<void>[] = [];
  for (const occ of timed) {
    if (occ.atMs >= plan.duration * 1000) break;
    await sleep(Math.max(0, t0 + occ.atMs - Date.now()));
    const f: AttachedReport['faults'][number] = { id: occ.fault.id, kind: occ.fault.what.kind, atMs: Date.now() - t0 };
    faults.push(f);
    const spec: FaultSpec = { ...occ.fault, when: occ.healMs !== undefined ? { for: (occ.healMs - occ.atMs) / 1000 } : {} };
    // The dom0 that owns the target accepts it; the others say it is not theirs.
    const errors: string[] = [];
    for (const e of endpoints) {
      try {
        const r = await postAction<{ key: string }>(e, '/api/fault/inject', { fault: spec });
        f.endpoint = e.url;
        f.key = r.key;
        break;
      } catch (err) {
        errors.push(`${e.url}: ${(err as Error).message}`);
      }
    }
    if (!f.key) f.error = errors.join('; ');
    else {
      progress(`${(f.atMs / 1000).toFixed(1)}s  inject ${f.id} (${f.kind}) at ${f.endpoint}`);
      const healAt = occ.healMs !== undefined ? t0 + occ.healMs : Date.now();
      recoveries.push(
        (async () => {
          await sleep(Math.max(0, healAt - Date.now()) + 50);
          const target = occ.fault.who.domain;
          const before = opsByDomain(await snaps());
          const start = Date.now();
          while (Date.now() - start < Math.max(5_000, plan.settle * 1000)) {
            await sleep(250);
            const now = opsByDomain(await snaps());
            const keys = [...now.keys()].filter((k) => !target || k.endsWith(`/${target}`));
            if (keys.length && keys.every((k) => (now.get(k) ?? 0) > (before.get(k) ?? 0))) {
              f.recoveryMs = Date.now() - start;
              return;
            }
          }
        })(),
      );
    }
  }
  await sleep(Math.max(0, t0 + plan.duration * 1000 - Date.now()));
  for (const e of endpoints) await postAction(e, '/api/fault/heal', {}).catch((err) => progress(`heal at ${e.url} failed: ${(err as Error).message}`));
  await Promise.all(recoveries);
  // Liveness: every running domain moves within `settle` of the final heal.
  const before = opsByDomain(await snaps());
  const start = Date.now();
  let livenessMs: number | null = null;
  let last = before;
  let lastSnaps = base;
  while (Date.now() - start < Math.max(1_000, plan.settle * 1000)) {
    await sleep(250);
    lastSnaps = await snaps();
    last = opsByDomain(lastSnaps);
    const running = new Set(lastSnaps.flatMap((s) => s.domains.filter((d) => d.domid > 0 && d.state === 'running').map((d) => `${d.host}/${d.name}`)));
    if ([...running].every((k) => (last.get(k) ?? 0) > (before.get(k) ?? 0))) {
      livenessMs = Date.now() - start;
      break;
    }
  }
  const checked = lastSnaps.reduce((a, s) => a + s.domains.reduce((b, d) => b + d.integrityChecked, 0), 0);
  const failures = lastSnaps.reduce((a, s) => a + s.domains.reduce((b, d) => b + d.integrityFailures, 0), 0);
  const reasons: string[] = [];
  if (failures) reasons.push(`${failures} integrity failures observed by the guests`);
  for (const f of faults) if (f.error) reasons.push(`${f.id} could not be injected: ${f.error}`);
  if (livenessMs === null) reasons.push('some running domain made no progress after the final heal');
  if (faults.length === 0) throw new ControlEndpointError('the plan scheduled no fault within its duration');
  return {
    seed,
    plan: plan.name,
    mode: 'attached',
    verdict: reasons.length ? 'fail' : 'pass',
    reasons,
    faults,
    checkers: { integrity: { checked, failures } },
    note: "attached to a running cluster: the full read-back and classification of every acknowledged block happen when it stops (each dom0's --json summary)",
    recoveryMs: faults.flatMap((f) => (f.recoveryMs !== undefined ? [f.recoveryMs] : [])),
    livenessMs,
  };
}
