import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/testing.ts', 'src/transport-kit.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Keep `node:crypto` and friends as written: every supported Node (>= 20.19) and bundler
  // resolves the `node:` scheme, and it cannot be shadowed by a package named `crypto`.
  removeNodeProtocol: false,
  // p-retry ships as ESM only; bundling it keeps the CommonJS build loadable with require().
  noExternal: ['p-retry', 'is-network-error'],
});
