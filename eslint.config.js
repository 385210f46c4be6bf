// One linter for the whole workspace. TypeScript sources are linted with type information
// (typescript-eslint's project service finds each file's nearest tsconfig.json), so the
// promise rules see which expressions are promises. Formatting is Prettier's job: no rule
// here is about layout, so the two never disagree.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    name: 'watchtower/ignores',
    ignores: [
      '**/dist/**',
      '**/node_modules/**',
      '**/coverage/**',
      '**/.vitest-cache/**',
      'benchmarks/results/**',
      'shared/**',
    ],
  },
  {
    name: 'watchtower/linter-options',
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    name: 'watchtower/type-aware',
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { ...globals.node },
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Async hygiene (STYLE.md): a promise nobody awaits is a bug. `void promise` marks a
      // deliberate fire-and-forget and is the only way out.
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true, ignoreIIFE: false }],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // Re-rejecting a caught `unknown` or an `AbortSignal.reason` (typed `any`) passes an error
      // on; it does not invent a non-Error. Same defaults as only-throw-error.
      '@typescript-eslint/prefer-promise-reject-errors': [
        'error',
        { allowThrowingAny: true, allowThrowingUnknown: true },
      ],
      // `return promise` inside try/catch/finally skips the catch and runs the finally too early.
      '@typescript-eslint/return-await': ['error', 'error-handling-correctness-only'],

      // `async` without `await` is deliberate in this codebase: it turns a synchronous throw
      // into a rejection, which is the contract of every promise-returning API (Transport).
      '@typescript-eslint/require-await': 'off',

      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowNullish: false, allowAny: false },
      ],
      'no-console': 'off',
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    // Transports, examples and benchmarks use core through its entry points only
    // (docs/TRANSPORTS.md): a deep import would tie them to core's file layout, and a
    // transport's sources never use the test helpers.
    name: 'watchtower/core-entry-points',
    files: ['packages/*/src/**/*.ts', 'examples/**/*.ts', 'benchmarks/**/*.ts'],
    ignores: ['packages/core/**', 'packages/conformance/**', '**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@watchtower/core/*', '!@watchtower/core/transport-kit'],
              message:
                'Import core from @watchtower/core or @watchtower/core/transport-kit only (docs/TRANSPORTS.md).',
            },
            {
              group: ['**/core/src/**', '**/core/dist/**'],
              message: 'Import core through its package name, not a path into it.',
            },
          ],
        },
      ],
    },
  },
  {
    // Their tests (and the conformance suite) may also use the test helpers; still no paths
    // into core.
    name: 'watchtower/core-entry-points-in-tests',
    files: [
      'packages/*/test/**/*.ts',
      'packages/*/src/**/*.test.ts',
      'packages/conformance/src/**/*.ts',
    ],
    ignores: ['packages/core/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '@watchtower/core/*',
                '!@watchtower/core/transport-kit',
                '!@watchtower/core/testing',
              ],
              message:
                'Import core from @watchtower/core, @watchtower/core/transport-kit or @watchtower/core/testing only.',
            },
            {
              group: ['**/core/src/**', '**/core/dist/**'],
              message: 'Import core through its package name, not a path into it.',
            },
          ],
        },
      ],
    },
  },
  {
    // Tests: vitest's asymmetric matchers (`expect.any`, `expect.stringContaining`) are typed
    // `any`, and `expect(obj.method)` passes methods around unbound on purpose. The promise
    // rules stay on here too.
    name: 'watchtower/tests',
    files: ['**/*.test.ts', '**/test/**/*.ts', 'packages/conformance/src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    // Plain JavaScript and the tool config files (tsup, vitest) belong to no tsconfig: lint
    // them without type information rather than inventing a project for them.
    name: 'watchtower/untyped-files',
    files: ['**/*.{js,mjs,cjs}', '**/*.config.{ts,mts,cts}', 'vitest.workspace.ts', 'scripts/*.ts'],
    extends: [tseslint.configs.disableTypeChecked],
  },
);
