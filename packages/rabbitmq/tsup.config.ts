import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // amqplib and @watchtower/core stay external: they are dependencies the user installs once.
  external: ['amqplib', '@watchtower/core'],
});
