import { defineConfig } from 'tsup';

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
]);
