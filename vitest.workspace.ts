import type { TestProjectConfiguration } from 'vitest/config';

/**
 * The test projects. `unit` runs without any broker; `integration` talks to real brokers
 * (see scripts/ensure-brokers.sh, run by `make test`).
 */
export const projects: TestProjectConfiguration[] = [
  {
    extends: true,
    test: {
      name: 'unit',
      include: ['packages/*/src/**/*.test.ts'],
      environment: 'node',
    },
  },
  {
    extends: true,
    test: {
      name: 'integration',
      include: ['packages/*/test/**/*.test.ts'],
      environment: 'node',
      testTimeout: 30_000,
      hookTimeout: 30_000,
    },
  },
];
