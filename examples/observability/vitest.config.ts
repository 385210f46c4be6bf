import { defineConfig } from 'vitest/config';

/** The example's own test run (`pnpm test`): against the local nats-server. */
export default defineConfig({
  test: { include: ['test/**/*.test.ts'], environment: 'node', testTimeout: 30_000 },
});
