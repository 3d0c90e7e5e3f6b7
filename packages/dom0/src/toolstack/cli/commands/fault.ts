import { parse as parseYaml } from 'yaml';
import { UsageError, postAction, resolveControl } from '../endpoint.js';
import { parseCommandArgs } from '../args.js';

/** `ringvisor fault inject|heal|list`: faults into a running cluster (admin). */
export async function fault(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs('fault', { args: argv, options: { url: { type: 'string' }, 'secret-file': { type: 'string' }, for: { type: 'string' } }, allowPositionals: true });
  const [action, arg] = positionals;
  const c = await resolveControl({ ...(values.url ? { url: values.url } : {}), ...(values['secret-file'] ? { secretFile: values['secret-file'] } : {}) });
  if (action === 'inject') {
    if (!arg) throw new UsageError(`usage: ringvisor fault inject '{"who":{"domain":"guest1","device":"vbd51712"},"what":{"kind":"backend.pause"}}' [--for S]`);
    let spec: unknown;
    try {
      spec = parseYaml(arg);
    } catch (e) {
      throw new UsageError(`ringvisor fault inject: the fault must be JSON or YAML: ${(e as Error).message}`);
    }
    if (values.for !== undefined) {
      const s = Number(values.for);
      if (!(s > 0)) throw new UsageError('--for must be a positive number of seconds');
      spec = { ...(spec as object), when: { ...((spec as { when?: object }).when ?? {}), for: s } };
    }
    const r = await postAction<{ key: string }>(c, '/api/fault/inject', { fault: spec });
    process.stdout.write(`injected ${r.key}\n`);
    return 0;
  }
  if (action === 'heal') {
    const r = await postAction<{ healed: number }>(c, '/api/fault/heal', arg ? { id: arg } : {});
    process.stdout.write(`healed ${r.healed} fault(s)\n`);
    return 0;
  }
  if (action === 'list') {
    const r = await postAction<{ active: Array<{ key: string; kind: string; host: string; who: unknown }> }>(c, '/api/fault/list', {});
    for (const a of r.active) process.stdout.write(`${a.key}  ${a.kind}  ${a.host}  ${JSON.stringify(a.who)}\n`);
    if (r.active.length === 0) process.stdout.write('no active faults\n');
    return 0;
  }
  throw new UsageError('usage: ringvisor fault inject SPEC [--for S] | heal [ID] | list');
}
