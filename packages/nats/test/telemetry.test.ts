/**
 * Traces and metrics across processes over the real NATS server, core and JetStream: the
 * conformance package's telemetry cases.
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describeTelemetryAcrossProcesses, type JsonConfig } from '@watchtower/conformance';
import { NatsTransport } from '../src/index.js';
import { NATS_URL, uniqueName } from './helpers.js';

for (const mode of ['core', 'jetstream'] as const) {
  describeTelemetryAcrossProcesses({
    name: `nats ${mode}`,
    system: 'nats',
    module: new URL('../src/index.ts', import.meta.url).href,
    exportName: 'NatsTransport',
    config: () => {
      const id = uniqueName('wt');
      return {
        servers: NATS_URL,
        mode,
        subjectPrefix: `${id}.events`,
        dlqPrefix: `${id}.dlq`,
        stream: { name: `${id}_EVENTS` },
        dlq: { streamName: `${id}_DLQ` },
      };
    },
    transport: (config) => new NatsTransport(config),
    publishRaw: async (config, type, bytes) => {
      const nc = await connect({ servers: NATS_URL });
      try {
        const subject = `${String(config['subjectPrefix'])}.${type}`;
        if (mode === 'core') nc.publish(subject, bytes);
        else await jetstream(nc).publish(subject, bytes);
        await nc.flush();
      } finally {
        await nc.close();
      }
    },
    cleanup: async (config: JsonConfig) => {
      // Core mode too: its dead letters go to a JetStream stream where the server has one.
      const nc = await connect({ servers: NATS_URL });
      try {
        const jsm = await jetstreamManager(nc);
        for (const key of ['stream', 'dlq'] as const) {
          const names = config[key] as { name?: string; streamName?: string };
          await jsm.streams.delete(names.name ?? names.streamName ?? '').catch(() => false);
        }
      } finally {
        await nc.close();
      }
    },
  });
}
