/**
 * `pnpm start`: the observability demo on the local nats-server (`WATCHTOWER_NATS_URL`),
 * Prometheus on `METRICS_PORT` (9464) and health on `HEALTH_PORT` (9465).
 */
import { randomUUID } from 'node:crypto';
import { runObservabilityDemo } from './observability.js';

await runObservabilityDemo({
  servers: process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222',
  subjectPrefix: `demo-${randomUUID().slice(0, 8)}`,
  metricsPort: Number(process.env['METRICS_PORT'] ?? 9464),
  healthPort: Number(process.env['HEALTH_PORT'] ?? 9465),
  orders: 10,
  print: (line) => console.log(line),
});
