// ESLint flat config (ESLint 9, typescript-eslint 8). `npm run lint` runs it; CI (.ci/run) runs it
// before the tests.
//
// Strict where the house rules are (docs/errors.md):
//   - no floating or misused promises: a promise nobody awaits loses its rejection;
//   - no `new Error(` / `throw Error(` (nor RangeError, TypeError …) in packages/*/src: every
//     error is a typed one from packages/shared/src/errors.ts, so it carries a stable RV_ERR_…
//     code across RPC;
//   - no `any` in the sources (tests may use it to build hostile inputs).
// Quiet elsewhere: rules that only restyle code, or that flag idioms this code base uses on
// purpose, are switched off below with the reason, so the lint stays a list of real defects.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Test code: unit tests next to the sources, test-support helpers, the e2e tests. */
const TEST_FILES = ['**/*.test.ts', '**/test/**/*.ts', '**/test-support/**/*.ts', '**/testing/**/*.ts'];

/** Node's globals, for the plain .mjs scripts (no type information there). */
const NODE_GLOBALS = Object.fromEntries(
  ['process', 'console', 'Buffer', 'URL', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'queueMicrotask', 'globalThis', 'structuredClone', 'AbortController', 'TextEncoder', 'TextDecoder'].map((g) => [g, 'readonly']),
);

/** The browser globals the dashboard's plain script uses. */
const BROWSER_GLOBALS = Object.fromEntries(
  ['window', 'document', 'location', 'fetch', 'WebSocket', 'console', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'requestAnimationFrame', 'localStorage', 'URL', 'URLSearchParams', 'performance', 'uPlot', 'HTMLElement', 'Event', 'navigator', 'matchMedia', 'getComputedStyle', 'ResizeObserver', 'Element'].map((g) => [g, 'readonly']),
);

/** JavaScript's own error constructors: they carry no code, and cross RPC as RV_ERR_INTERNAL. */
const BUILTIN_ERRORS = '/^(Error|TypeError|RangeError|SyntaxError|ReferenceError|EvalError|URIError|AggregateError)$/';

const NO_NEW_ERROR_MESSAGE = 'Throw a typed error with a stable RV_ERR_… code from packages/shared/src/errors.ts (add a class at its end if none fits), not a bare Error (nor RangeError, TypeError …).';

export default tseslint.config(
  {
    ignores: ['**/dist/**', '**/node_modules/**', '**/coverage/**', '**/*.min.js', '**/vendor/**', 'packages/*/dashboard/vendor/**'],
  },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        // One TypeScript program for the sources and the tests: tsconfig.test.json holds both
        // (with the `source` condition, so a package sees its dependencies' sources, not a stale
        // dist). The project service would open each package's tsconfig, which excludes the
        // tests, and its default project takes at most a handful of files, not every test.
        project: './tsconfig.test.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      // `_`-prefixed parameters and destructured leftovers are deliberate (interface conformance,
      // omitting a field from a rest object).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      // Restyling only: async functions without an await implement async interfaces on purpose
      // (46 findings, none a defect).
      '@typescript-eslint/require-await': 'off',
      // It cannot narrow `unknown`: `String(v)` after the objects were ruled out is still flagged.
      '@typescript-eslint/no-base-to-string': 'off',
      // Restyling only: assertions the checker can prove redundant are not defects, and removing
      // them would touch 30 lines across the device folders.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // Restyling only: `unknown | Promise<unknown>` documents what a handler may return.
      '@typescript-eslint/no-redundant-type-constituents': 'off',
      // Options objects hand callbacks in as method-syntax members (`irq(): void`); taking them
      // is how a callback is stored, and the rule cannot tell those from class methods.
      '@typescript-eslint/unbound-method': 'off',
      // Hostile drivers and register pokes use `write ? io.outb(p, v) : io.inb(p)` as a statement
      // on purpose: the access is the point, not a value.
      '@typescript-eslint/no-unused-expressions': ['error', { allowTernary: true, allowShortCircuit: true }],
      // Rethrowing a caught value later (after cleanup) throws `unknown`; that is not a new
      // non-Error throw.
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // A `let` read by a closure before its one assignment (a callback wired before the object it
      // calls exists) cannot be a const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // Control-bit loops (`while (true)` with a break) and constant-condition assertions.
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // Outside tsconfig.test.json: the browser test (DOM library) and the root's config files.
    files: ['packages/dom0/test/dashboard.browser.test.ts', '*.ts'],
    extends: [tseslint.configs.disableTypeChecked],
  },
  {
    // The sources: no bare Error (the house rule), no `any`.
    files: ['packages/*/src/**/*.ts'],
    ignores: TEST_FILES,
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: `NewExpression[callee.name=${BUILTIN_ERRORS}]`, message: NO_NEW_ERROR_MESSAGE },
        { selector: `CallExpression[callee.name=${BUILTIN_ERRORS}]`, message: NO_NEW_ERROR_MESSAGE },
      ],
    },
  },
  {
    // Tests build hostile and malformed inputs on purpose, and stub with loose types.
    files: TEST_FILES,
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // `await null` yields a microtask turn on purpose when a test steps an event loop.
      '@typescript-eslint/await-thenable': 'off',
      // A test machine's nested classes (a vCPU over the machine's devices) reach the machine through a named alias.
      '@typescript-eslint/no-this-alias': 'off',
    },
  },
  {
    files: ['**/*.mjs'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'module', globals: NODE_GLOBALS },
  },
  {
    files: ['packages/dom0/dashboard/**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'script', globals: BROWSER_GLOBALS },
  },
  {
    files: ['eslint.config.js'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'module' },
  },
);
