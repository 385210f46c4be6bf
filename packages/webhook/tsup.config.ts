import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // undici, ioredis and @watchtower/core stay external: dependencies the user installs once.
  external: ['undici', 'ioredis', '@watchtower/core'],
});
