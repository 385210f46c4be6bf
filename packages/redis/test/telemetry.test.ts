/**
 * Traces and metrics across processes over the real Redis server: the conformance package's
 * telemetry cases.
 */
import { describeTelemetryAcrossProcesses } from '@watchtower/conformance';
import { RedisTransport } from '../src/index.js';
import { REDIS_URL, deleteKeysAndQuit, rawClient, uniquePrefix } from './helpers.js';

describeTelemetryAcrossProcesses({
  name: 'redis',
  system: 'redis',
  module: new URL('../src/index.ts', import.meta.url).href,
  exportName: 'RedisTransport',
  config: () => ({ url: REDIS_URL, prefix: uniquePrefix('otel') }),
  transport: (config) => new RedisTransport(config),
  publishRaw: async (config, type, bytes) => {
    const client = rawClient();
    try {
      await client.xadd(`${String(config['prefix'])}:${type}`, '*', 'event', Buffer.from(bytes));
    } finally {
      await client.quit();
    }
  },
  cleanup: (config) => deleteKeysAndQuit(rawClient(), String(config['prefix'])),
});
