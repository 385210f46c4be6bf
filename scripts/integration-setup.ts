import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Vitest global setup of the integration project: the brokers of the transport packages
 * that exist are checked (and started when local and down) by scripts/ensure-brokers.sh, so
 * `vitest run` alone fails early with a message that says how to start a missing broker,
 * instead of failing test by test with connection errors.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const brokers = ['nats', 'redis', 'rabbitmq'].filter((name) =>
    existsSync(`${root}packages/${name}/package.json`),
  );
  if (brokers.length === 0) return;
  execFileSync('bash', [`${root}scripts/ensure-brokers.sh`, ...brokers], { stdio: 'inherit' });
}
