import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { projects } from './vitest.workspace.js';

const src = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the sources, so a change needs no rebuild; the built packages are
    // checked separately by publint and attw.
    alias: [
      { find: /^@watchtower\/core\/testing$/, replacement: src('./packages/core/src/testing.ts') },
      {
        find: /^@watchtower\/core\/transport-kit$/,
        replacement: src('./packages/core/src/transport-kit.ts'),
      },
      { find: /^@watchtower\/core$/, replacement: src('./packages/core/src/index.ts') },
      {
        find: /^@watchtower\/conformance$/,
        replacement: src('./packages/conformance/src/index.ts'),
      },
    ],
  },
  test: {
    projects,
  },
});
