/**
 * The repository tells the truth about itself: every file docs/ARCHITECTURE.md names exists;
 * nothing in the sources or the docs points at a design document outside the repository; every
 * export of every package.json names a source file that exists and is built into dist/.
 *
 * What counts as a path in ARCHITECTURE.md: a backticked token that starts with `packages/`,
 * `docs/`, `bin/` or `examples/` (from the repository's root); one that starts with a package's
 * name (`shared/trap/ioreq-link.ts`: under that package's src/); and, in the Packages table, a
 * token with a slash or a file extension (under that row's package's src/, where a bare file
 * name may sit in a folder the row named before it).
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

const ROOT = join(import.meta.dirname, '../../..');
const PACKAGES = ['shared', 'hwsim', 'dom0', 'domU'] as const;
type Package = (typeof PACKAGES)[number];
// Spelled in two parts so this file does not itself name the document it forbids.
const OUTSIDE_DOC = 'DESIGN' + '.md';

/** Every file and folder under dir, as paths relative to ROOT. */
function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'dist') continue;
    const rel = join(dir, e.name);
    out.push(rel);
    if (e.isDirectory()) out.push(...walk(rel));
  }
  return out;
}

const isPackage = (s: string): s is Package => (PACKAGES as readonly string[]).includes(s);
const underSrc = (pkg: Package, rel: string) => join('packages', pkg, 'src', rel);

/** Backticked tokens that name a file or folder, each with the Packages-table row it sits in. */
function pathTokens(markdown: string): Array<{ token: string; row?: Package; line: number }> {
  const out: Array<{ token: string; row?: Package; line: number }> = [];
  markdown.split('\n').forEach((text, i) => {
    const rowMatch = /^\| `(\w+)` \|/.exec(text);
    const row = rowMatch && isPackage(rowMatch[1]) ? rowMatch[1] : undefined;
    for (const [, token] of text.matchAll(/`([^`\s]+)`/g)) {
      if (/^(packages|docs|bin|examples)\//.test(token)) out.push({ token, line: i + 1 });
      else if (isPackage(token.split('/')[0]) && token.includes('/')) out.push({ token, line: i + 1 });
      else if (row && (token.includes('/') || /\.(ts|mjs|json)$/.test(token))) out.push({ token, row, line: i + 1 });
    }
  });
  return out;
}

/** Where a token says it is, or undefined when nothing there exists. */
function resolveToken(t: { token: string; row?: Package }, srcFiles: Map<Package, string[]>): string | undefined {
  const first = t.token.split('/')[0];
  const candidates: string[] = [];
  if (/^(packages|docs|bin|examples)\//.test(t.token)) candidates.push(t.token);
  else if (!t.row && isPackage(first)) candidates.push(underSrc(first, t.token.slice(first.length + 1)));
  else if (t.row) {
    candidates.push(underSrc(t.row, t.token));
    // A bare file name after its folder ("`svio/` (… `scheduler.ts` …)"): somewhere in the package.
    if (!t.token.replace(/\/$/, '').includes('/')) candidates.push(...srcFiles.get(t.row)!.filter((f) => basename(f) === t.token.replace(/\/$/, '')));
  }
  return candidates.find((c) => existsSync(join(ROOT, c)));
}

describe('docs/ARCHITECTURE.md', () => {
  const text = readFileSync(join(ROOT, 'docs/ARCHITECTURE.md'), 'utf8');

  it('names only files and folders that exist', () => {
    const srcFiles = new Map(PACKAGES.map((p) => [p, walk(join('packages', p, 'src'))] as const));
    const tokens = pathTokens(text);
    // The check must be looking at something: the Packages table alone names dozens of paths.
    expect(tokens.filter((t) => t.row).length).toBeGreaterThan(50);
    expect(tokens.filter((t) => !t.row).length).toBeGreaterThan(5);
    const missing = tokens.filter((t) => resolveToken(t, srcFiles) === undefined).map((t) => `line ${t.line}: ${t.token}${t.row ? ` (in ${t.row})` : ''}`);
    expect(missing).toEqual([]);
  });

  it('catches a path that does not exist (the check can fail)', () => {
    const srcFiles = new Map(PACKAGES.map((p) => [p, walk(join('packages', p, 'src'))] as const));
    const made = pathTokens('see `packages/hwsim/src/no-such.worker.ts`\n| `hwsim` | `devices/floppy` |\n`shared/ring/nowhere.ts`');
    expect(made).toHaveLength(3);
    expect(made.map((t) => resolveToken(t, srcFiles))).toEqual([undefined, undefined, undefined]);
  });
});

describe('the repository stands alone', () => {
  it(`no source or doc mentions ${'DESIGN'}.md`, () => {
    const files = [...PACKAGES.flatMap((p) => walk(join('packages', p, 'src'))), ...walk('docs')].filter((f) => statSync(join(ROOT, f)).isFile() && /\.(ts|mts|mjs|js|md|json|ya?ml|html|css)$/.test(f));
    expect(files.length).toBeGreaterThan(100);
    const citing = files.filter((f) => readFileSync(join(ROOT, f), 'utf8').includes(OUTSIDE_DOC));
    expect(citing).toEqual([]);
  });
});

describe("the packages' exports", () => {
  type Target = string | null | { [condition: string]: Target };
  const leaves = (t: Target, condition = 'default'): Array<{ condition: string; path: string }> =>
    t === null ? [] : typeof t === 'string' ? [{ condition, path: t }] : Object.entries(t).flatMap(([c, x]) => leaves(x, c));

  it.each(PACKAGES)('%s: every export names a source that exists, built to the dist/ path it gives', (pkg) => {
    const dir = join('packages', pkg);
    const manifest = JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as { exports: Record<string, Target>; main?: string; types?: string };
    const problems: string[] = [];
    for (const [key, target] of Object.entries(manifest.exports)) {
      const ls = leaves(target);
      const source = ls.find((l) => l.condition === 'source')?.path;
      if (!source) problems.push(`${key}: no source condition`);
      for (const { condition, path } of ls) {
        // A pattern ("./*") stands for every file under its prefix: the prefix must exist.
        const file = path.includes('*') ? path.slice(0, path.indexOf('*')) : path;
        if (condition === 'source') {
          if (!existsSync(join(ROOT, dir, file))) problems.push(`${key}: ${path} does not exist`);
          continue;
        }
        // Built targets: dist/X.js or dist/X.d.ts, compiled from src/X.ts, which the build must not leave out.
        const m = /^\.\/dist\/(.*?)(\.d\.ts|\.js)$/.exec(path);
        if (!m) {
          problems.push(`${key}: ${condition} ${path} is not a dist/ .js or .d.ts`);
          continue;
        }
        if (path.includes('*')) continue;
        const built = `./src/${m[1]}.ts`;
        if (!existsSync(join(ROOT, dir, built))) problems.push(`${key}: ${path} has no source ${built}`);
        if (/(^|\/)test-support\/|\.test\.ts$/.test(built)) problems.push(`${key}: ${path} is test code, left out of dist/`);
      }
    }
    for (const field of ['main', 'types'] as const) if (manifest[field] && !existsSync(join(ROOT, dir, manifest[field]!))) problems.push(`${field}: ${manifest[field]} does not exist`);
    expect(problems).toEqual([]);
  });
});
