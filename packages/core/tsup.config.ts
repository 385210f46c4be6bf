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
  // p-retry ships as ESM only. Left external, the CommonJS build loads it through Node's
  // require() of ES modules, but esbuild's CommonJS interop then takes the whole module
  // namespace for the default export, and the first retry throws "is not a function".
  // Whatever is listed here ends up in dist/: its license goes in THIRD-PARTY-NOTICES.
  noExternal: ['p-retry', 'is-network-error'],
  // telemetry/otel-api.ts reads import.meta.url only where there is no require(): in the ESM
  // build. The CommonJS build has require(), so its empty import.meta is never read.
  esbuildOptions(options, { format }) {
    if (format === 'cjs') options.logOverride = { 'empty-import-meta': 'silent' };
  },
});
