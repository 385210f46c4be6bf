/**
 * Traces and metrics across processes over the real RabbitMQ broker: the conformance
 * package's telemetry cases.
 */
import { randomBytes } from 'node:crypto';
import { describeTelemetryAcrossProcesses } from '@watchtower/conformance';
import { RabbitMQTransport } from '../src/index.js';
import { AMQP_URL, deleteTopology, withRawChannel } from './helpers.js';

describeTelemetryAcrossProcesses({
  name: 'rabbitmq',
  system: 'rabbitmq',
  module: new URL('../src/index.ts', import.meta.url).href,
  exportName: 'RabbitMQTransport',
  config: () => ({ url: AMQP_URL, exchange: `wt-otel-${randomBytes(4).toString('hex')}` }),
  transport: (config) => new RabbitMQTransport(config),
  publishRaw: (config, type, bytes) =>
    withRawChannel(async (channel) => {
      channel.publish(String(config['exchange']), type, Buffer.from(bytes), { persistent: true });
      await channel.waitForConfirms();
    }),
  cleanup: (config) => deleteTopology([String(config['exchange'])]),
});
