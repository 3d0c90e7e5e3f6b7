/**
 * Reading and validating a Compose file without a Docker engine: the Compose Specification JSON
 * schema (as shipped by the `dclint` npm package) compiled with ajv, the YAML parsed the way
 * Compose parses it (merge keys `<<:` on), and Compose's `${VAR…}` interpolation.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';

/** The Compose Specification schema (draft-07). dclint exports only its package.json, so locate the file from there. */
export function composeSchemaPath(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('dclint/package.json')), 'schemas', 'compose.schema.json');
}

let compiled: ValidateFunction | undefined;

/** A validator for whole Compose files. */
export function composeValidator(): ValidateFunction {
  if (compiled) return compiled;
  const schema = JSON.parse(readFileSync(composeSchemaPath(), 'utf8')) as Record<string, unknown>;
  // ajv 8's default instance knows draft-07 but not the draft URL spelled this way; the keyword
  // set is draft-07's, so drop the declaration rather than load a meta-schema over the network.
  delete schema.$schema;
  // strict: false — the schema uses annotations ajv does not know (e.g. "deprecated").
  // validateFormats: false — no format-checking plugin; the schema's constraints that matter
  // here (types, enums, additionalProperties, patterns) are all structural.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  compiled = ajv.compile(schema);
  return compiled;
}

export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword}${e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : ''}${e.keyword === 'enum' ? ` ${JSON.stringify((e.params as { allowedValues: unknown }).allowedValues)}` : ''}`)
    .join('\n');
}

/** Parse Compose YAML as Compose does: YAML merge keys resolved. */
export function parseCompose(text: string): Record<string, unknown> {
  return parseYaml(text, { merge: true }) as Record<string, unknown>;
}

/**
 * Compose interpolation: `$$` is a literal `$`; `${VAR}`, `$VAR`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`. Throws the
 * error text of a `?` form whose variable is missing, as Compose refuses to start.
 */
export function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^}])*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, name?: string, op?: string, arg?: string, bare?: string) => {
    if (m === '$$') return '$';
    if (bare) return env[bare] ?? '';
    const v = env[name!];
    const unsetOrEmpty = v === undefined || (op?.startsWith(':') === true && v === '');
    switch (op) {
      case undefined:
        return v ?? '';
      case ':-':
      case '-':
        return unsetOrEmpty ? interpolate(arg ?? '', env) : v!;
      case ':?':
      case '?':
        if (unsetOrEmpty) throw new Error(`required variable ${name} is missing a value: ${arg}`);
        return v!;
      case ':+':
      case '+':
        return unsetOrEmpty ? '' : interpolate(arg ?? '', env);
      default:
        throw new Error(`unsupported interpolation ${m}`);
    }
  });
}

/** Every string in a parsed document, interpolated. */
export function interpolateDeep<T>(value: T, env: Record<string, string | undefined>): T {
  if (typeof value === 'string') return interpolate(value, env) as T;
  if (Array.isArray(value)) return value.map((v) => interpolateDeep(v, env)) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateDeep(v, env)])) as T;
  return value;
}
