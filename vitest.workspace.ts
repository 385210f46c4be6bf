import type { TestProjectConfiguration } from 'vitest/config';

/**
 * The test projects. `unit` runs without any broker; `integration` talks to real brokers,
 * which its global setup checks (and starts when local and down) before any test runs.
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
      include: ['packages/*/test/**/*.test.ts', 'examples/*/test/**/*.test.ts'],
      environment: 'node',
      globalSetup: ['./scripts/integration-setup.ts'],
      testTimeout: 30_000,
      hookTimeout: 30_000,
    },
  },
  {
    extends: true,
    test: {
      // The fault suite (`make test-faults`): private brokers killed and consumer processes
      // SIGKILLed under load, one file at a time.
      name: 'faults',
      include: ['packages/*/test/**/*.faults.ts'],
      environment: 'node',
      fileParallelism: false,
      testTimeout: 240_000,
      hookTimeout: 30_000,
    },
  },
];
