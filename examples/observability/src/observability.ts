/**
 * Watchtower's metrics on a Prometheus endpoint, and its health handler, over NATS: a bus
 * with `telemetry: { meterProvider }` whose reader is `@opentelemetry/exporter-prometheus`
 * (its own HTTP server, `/metrics`), a `node:http` server with `createHealthHandler(bus)`
 * (`/livez`, `/readyz`), some orders published and handled (one dead-lettered), then one
 * scrape of each, printed.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { EventBus, NonRetryableError, createHealthHandler } from '@watchtower/core';
import { NatsTransport } from '@watchtower/nats';

/** Options of {@link runObservabilityDemo}. */
export interface DemoOptions {
  /** The NATS server. */
  servers: string;
  /** Subject prefix of the demo's events (a random one keeps runs apart). */
  subjectPrefix: string;
  /** Port of the Prometheus endpoint. */
  metricsPort: number;
  /** Port of the health endpoints (0: any free port). */
  healthPort: number;
  /** Orders published; one more, a bad one, is dead-lettered. */
  orders: number;
  print: (line: string) => void;
}

/** Runs the demo; resolves with the scrape and the readiness report it printed. */
export async function runObservabilityDemo(
  options: DemoOptions,
): Promise<{ scrape: string; ready: unknown }> {
  const exporter = new PrometheusExporter({ host: '127.0.0.1', port: options.metricsPort });
  await exporter.startServer();
  const meterProvider = new MeterProvider({ readers: [exporter] });
  const bus = new EventBus({
    transport: new NatsTransport({
      servers: options.servers,
      mode: 'core',
      subjectPrefix: options.subjectPrefix,
      dlqPrefix: `${options.subjectPrefix}-dlq`,
    }),
    telemetry: { meterProvider },
    logger: {
      warn: () => undefined,
      error: (object, message) => options.print(`error: ${message}`),
    },
  });
  const health = createServer(createHealthHandler(bus));
  await new Promise<void>((resolve) => health.listen(options.healthPort, '127.0.0.1', resolve));
  try {
    await bus.subscribe(
      'order.*',
      (event) => {
        if (event.type === 'order.bad') throw new NonRetryableError('no such product');
      },
      { group: 'billing' },
    );
    for (let i = 0; i < options.orders; i++) await bus.publish('order.placed', { order: i });
    await bus.publish('order.bad', { order: -1 });
    while (bus.stats().handled + bus.stats().deadLettered < options.orders + 1) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    options.print(`${options.orders} orders handled, one dead-lettered; scraping /metrics:`);

    const metricsUrl = `http://127.0.0.1:${options.metricsPort}/metrics`;
    const scrape = await (await fetch(metricsUrl)).text();
    for (const line of scrape.split('\n')) {
      if (/^(watchtower|messaging)_/.test(line) && !line.includes('_bucket{')) options.print(line);
    }
    const healthUrl = `http://127.0.0.1:${(health.address() as AddressInfo).port}`;
    const readyz = await fetch(`${healthUrl}/readyz`);
    const ready: unknown = await readyz.json();
    options.print(`GET /readyz ${readyz.status} ${JSON.stringify(ready)}`);
    return { scrape, ready };
  } finally {
    await bus.close();
    await new Promise<void>((resolve) => health.close(() => resolve()));
    await meterProvider.shutdown();
  }
}
