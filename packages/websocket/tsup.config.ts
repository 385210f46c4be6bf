import { fileURLToPath } from 'node:url';
import { defineConfig, type Options } from 'tsup';

const shim = (name: string): string =>
  fileURLToPath(new URL(`./src/browser/${name}-shim.ts`, import.meta.url));

/** Node built-ins that core imports, answered with the browser equivalents of the few calls it makes. */
const browserShims: NonNullable<Options['esbuildPlugins']>[number] = {
  name: 'watchtower-browser-shims',
  setup(build) {
    build.onResolve({ filter: /^(node:)?(buffer|crypto|util|zlib)$/ }, (args) => ({
      path: shim(args.path.replace(/^node:/, '')),
    }));
    build.onResolve({ filter: /^(ws|node:.*)$/ }, (args) => ({
      errors: [{ text: `the browser build must not load ${args.path}` }],
    }));
  },
};

export default defineConfig([
  {
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    // ws and @watchtower/core stay external: they are dependencies the user installs once.
    external: ['ws', '@watchtower/core'],
  },
  {
    // The browser build: one file with what it needs of core, no ws, no Node built-ins.
    entry: { browser: 'src/browser.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    platform: 'browser',
    target: 'es2022',
    noExternal: [/.*/],
    inject: [shim('globals')],
    removeNodeProtocol: false,
    esbuildPlugins: [browserShims],
  },
]);
