/**
 * Two rules of the house, enforced over packages/<pkg>/src (tests and test-support excluded):
 *
 * 1. No branching on an I/O mode ('pv', 'emulated', 'direct', 'svio') or a device kind ('vbd',
 *    'vif', 'cam') outside the places that define them: the device folders and the registries
 *    (toolstack/attach/ with its mode descriptors and attachers, toolstack/device-kinds.ts). Anywhere
 *    else the code asks the registry (IO_MODES, DEVICE_KINDS) instead of comparing strings, so a new
 *    mode or kind is one folder and one registry line. A branch is `x === 'pv'` (or !==, ==, !=)
 *    and `case 'pv':`. A line that compares one of these words in another sense (a trace event's
 *    kind 'direct', say) says so with a `mode-branches:` comment naming what it is.
 * 2. No function longer than 150 lines.
 *
 * A file that cannot yet follow a rule is listed as DEBT with its count: a count may only go down,
 * and the test says when a file is done and must leave the list. Both lists are empty today.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

const ROOT = join(import.meta.dirname, '../../..');
const MODE_AND_KIND_WORDS = new Set(['pv', 'emulated', 'direct', 'svio', 'vbd', 'vif', 'cam']);
const MAX_FUNCTION_LINES = 150;

/** Where branching on a mode or kind belongs: the device folders, the mode registry and attachers, the kind table. */
const ALLOWED_PLACES: readonly string[] = [
  'packages/dom0/src/toolstack/attach/',
  'packages/dom0/src/toolstack/device-kinds.ts',
  'packages/dom0/src/backends/',
  'packages/dom0/src/devicemodels/',
  'packages/dom0/src/physdev/',
  'packages/domU/src/drivers/',
  'packages/hwsim/src/devices/',
  'packages/hwsim/src/sriov/',
  'packages/hwsim/src/svio/',
  'packages/shared/src/device/',
  'packages/shared/src/devicemodels/',
  'packages/shared/src/svio/',
];

/** Files still branching on modes or kinds, and how many branches each has (may only go down): none left. */
const BRANCH_DEBT: Readonly<Record<string, number>> = {};

/** Functions over 150 lines, by "file#name": none today; one added here is a deliberate, visible debt. */
const LONG_FUNCTION_DEBT: ReadonlySet<string> = new Set<string>([]);

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'test-support' && e.name !== 'node_modules') out.push(...sourceFiles(path));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

const FILES = readdirSync(join(ROOT, 'packages'))
  .flatMap((pkg) => {
    try {
      return sourceFiles(join(ROOT, 'packages', pkg, 'src'));
    } catch {
      return [];
    }
  })
  .map((abs) => ({ rel: relative(ROOT, abs), source: ts.createSourceFile(abs, readFileSync(abs, 'utf8'), ts.ScriptTarget.Latest, true) }));

const isModeOrKindLiteral = (n: ts.Node): boolean => (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) && MODE_AND_KIND_WORDS.has(n.text);
const EQUALITY = new Set([ts.SyntaxKind.EqualsEqualsEqualsToken, ts.SyntaxKind.ExclamationEqualsEqualsToken, ts.SyntaxKind.EqualsEqualsToken, ts.SyntaxKind.ExclamationEqualsToken]);

/** The mode/kind branches of a file, as "line: text". */
export function modeBranches(source: ts.SourceFile): string[] {
  const lines = source.text.split('\n');
  const out: string[] = [];
  const visit = (n: ts.Node): void => {
    const branch =
      (ts.isBinaryExpression(n) && EQUALITY.has(n.operatorToken.kind) && (isModeOrKindLiteral(n.left) || isModeOrKindLiteral(n.right))) ||
      (ts.isCaseClause(n) && isModeOrKindLiteral(n.expression));
    if (branch) {
      const line = source.getLineAndCharacterOfPosition(n.getStart(source)).line;
      if (!lines[line].includes('mode-branches:')) out.push(`${line + 1}: ${lines[line].trim()}`);
    }
    ts.forEachChild(n, visit);
  };
  visit(source);
  return out;
}

/** Functions (declarations, methods, arrows, function expressions) longer than the limit, by name. */
export function longFunctions(source: ts.SourceFile, maxLines: number): Array<{ name: string; lines: number }> {
  const out: Array<{ name: string; lines: number }> = [];
  const nameOf = (n: ts.Node): string => {
    if ((ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isFunctionExpression(n)) && n.name) return n.name.getText(source);
    if (ts.isConstructorDeclaration(n)) return 'constructor';
    const p = n.parent;
    if (p && (ts.isVariableDeclaration(p) || ts.isPropertyAssignment(p) || ts.isPropertyDeclaration(p))) return p.name.getText(source);
    return '(anonymous)';
  };
  const visit = (n: ts.Node): void => {
    if (ts.isFunctionLike(n) && 'body' in n && n.body) {
      const first = source.getLineAndCharacterOfPosition(n.getStart(source)).line;
      const last = source.getLineAndCharacterOfPosition(n.getEnd()).line;
      if (last - first + 1 > maxLines) out.push({ name: nameOf(n), lines: last - first + 1 });
    }
    ts.forEachChild(n, visit);
  };
  visit(source);
  return out;
}

describe('the scanners', () => {
  const parse = (text: string) => ts.createSourceFile('x.ts', text, ts.ScriptTarget.Latest, true);
  it('find comparisons and cases on mode and kind literals, and nothing else', () => {
    const found = modeBranches(
      parse(
        [
          "if (d.mode === 'pv') x();",
          "const y = 'vbd' !== d.type;",
          "switch (m) { case 'svio': break; }",
          "const z = { mode: 'direct' }; f('emulated'); g(d.type === kind);",
          "if (ev.kind === 'direct') y(); // mode-branches: a trace event's kind",
          "if (s === 'other') y();",
        ].join('\n'),
      ),
    );
    expect(found.map((f) => f.split(':')[0])).toEqual(['1', '2', '3']);
  });
  it('measure functions by their lines, with their names', () => {
    const body = Array.from({ length: 10 }, () => '  x();').join('\n');
    const src = parse(`function short() {\n${body}\n}\nconst arrow = () => {\n${body}\n};\nclass C {\n  method() {\n${body}\n  }\n}`);
    expect(longFunctions(src, 12)).toEqual([]);
    expect(longFunctions(src, 11).map((f) => f.name)).toEqual(['short', 'arrow', 'method']);
  });
});

describe('no branching on I/O modes or device kinds outside the device folders and the registries', () => {
  const branches = new Map(FILES.map((f) => [f.rel, modeBranches(f.source)]).filter(([, b]) => b.length > 0) as Array<[string, string[]]>);

  it('branches only in the allowed places, or in a debt file that has not grown', () => {
    const problems: string[] = [];
    for (const [file, found] of branches) {
      if (ALLOWED_PLACES.some((p) => (p.endsWith('/') ? file.startsWith(p) : file === p))) continue;
      const debt = BRANCH_DEBT[file];
      if (debt === undefined)
        problems.push(`${file} branches on mode or kind strings (${found.length}); ask the registry (toolstack/attach/modes.ts IO_MODES, toolstack/device-kinds.ts DEVICE_KINDS) instead:\n    ${found.join('\n    ')}`);
      else if (found.length > debt) problems.push(`${file} has ${found.length} mode/kind branches, more than its debt of ${debt}:\n    ${found.join('\n    ')}`);
    }
    expect(problems).toEqual([]);
  });

  it('the debt list holds only files that still owe something (lower a count when it falls)', () => {
    const stale = Object.entries(BRANCH_DEBT).flatMap(([file, debt]) => {
      const now = branches.get(file)?.length ?? 0;
      if (now === 0) return [`${file} has no mode/kind branches left: remove it from BRANCH_DEBT`];
      if (now < debt) return [`${file} is down to ${now} mode/kind branches: lower its BRANCH_DEBT from ${debt} to ${now}`];
      return [];
    });
    expect(stale).toEqual([]);
  });
});

describe(`no function over ${MAX_FUNCTION_LINES} lines in src/`, () => {
  const long = FILES.flatMap((f) => longFunctions(f.source, MAX_FUNCTION_LINES).map((l) => ({ id: `${f.rel}#${l.name}`, lines: l.lines })));

  it('only the functions in the debt list are over the limit', () => {
    expect(long.filter((l) => !LONG_FUNCTION_DEBT.has(l.id)).map((l) => `${l.id} (${l.lines} lines)`)).toEqual([]);
  });

  it('the debt list holds only functions still over the limit', () => {
    const ids = new Set(long.map((l) => l.id));
    expect([...LONG_FUNCTION_DEBT].filter((id) => !ids.has(id)).map((id) => `${id} is ${MAX_FUNCTION_LINES} lines or shorter now: remove it from LONG_FUNCTION_DEBT`)).toEqual([]);
  });
});
