/**
 * The observability example against the local nats-server: its Prometheus scrape shows what
 * was published, handled and dead-lettered, and its readiness report is ready.
 */
import { randomUUID } from 'node:crypto';
import { freePort } from '@watchtower/core/testing';
import { describe, expect, it } from 'vitest';
import { runObservabilityDemo } from '../src/observability.js';

const servers = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';

/** The value of the scrape's sample `name` whose labels include every one of `labels`. */
function sample(scrape: string, name: string, labels: string[] = []): number | undefined {
  const line = scrape
    .split('\n')
    .find((row) => row.startsWith(`${name}{`) && labels.every((label) => row.includes(label)));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('observability example', () => {
  it('exposes the counts of the orders it sent on /metrics, and /readyz says ready', async () => {
    const lines: string[] = [];
    const { scrape, ready } = await runObservabilityDemo({
      servers,
      subjectPrefix: `wt-obs-${randomUUID().slice(0, 8)}`,
      metricsPort: await freePort(),
      healthPort: 0,
      orders: 10,
      print: (line) => lines.push(line),
    });
    const placed = 'messaging_destination_name="order.placed"';
    const group = 'messaging_consumer_group_name="billing"';
    expect(sample(scrape, 'watchtower_published_total', [placed])).toBe(10);
    expect(sample(scrape, 'watchtower_delivered_total', [group])).toBe(11);
    expect(sample(scrape, 'watchtower_handled_total', [group])).toBe(10);
    expect(
      sample(scrape, 'watchtower_dead_lettered_total', [group, 'error_type="NON_RETRYABLE"']),
    ).toBe(1);
    expect(sample(scrape, 'messaging_client_operation_duration_count', [placed])).toBe(10);
    expect(sample(scrape, 'watchtower_circuit_state', ['messaging_system="nats"'])).toBe(0);
    expect(ready).toMatchObject({ status: 'ready' });
    expect(lines.some((line) => line.startsWith('watchtower_published_total'))).toBe(true);
  });
});
