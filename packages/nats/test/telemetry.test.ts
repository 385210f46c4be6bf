/**
 * Traces and metrics across processes over the real NATS server: a publisher in a child
 * process and the handler here form one trace, with the real OpenTelemetry SDK on both sides.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as api from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { EventBus, encodeEventBytes, createEvent } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { NatsTransport } from '../src/index.js';
import { NATS_URL, uniqueName } from './helpers.js';

const run = promisify(execFile);
const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));
const root = here('../../..');
const PUBLISHER = here('../../core/src/telemetry/test-support/publisher-process.ts');
const quiet = { warn: () => undefined, error: () => undefined };

interface PrintedSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
}

class PullReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
const closing: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(closing.splice(0).map((close) => close()));
  exporter.reset();
});

/** Runs the publisher process; resolves with its spans and published count. */
async function publishElsewhere(
  config: object,
  type: string,
  count: number,
): Promise<{ spans: PrintedSpan[]; published: number }> {
  const { stdout } = await run(
    process.execPath,
    [
      '--import',
      'tsx',
      PUBLISHER,
      new URL('../src/index.ts', import.meta.url).href,
      'NatsTransport',
      JSON.stringify(config),
      type,
      String(count),
    ],
    {
      cwd: root,
      timeout: 60_000,
    },
  );
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
    spans: PrintedSpan[];
    published: number;
  };
}

async function deleteStreams(...names: string[]): Promise<void> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const jsm = await jetstreamManager(nc);
    for (const name of names) await jsm.streams.delete(name).catch(() => false);
  } finally {
    await nc.close();
  }
}

async function counter(reader: PullReader, name: string): Promise<number> {
  const { resourceMetrics } = await reader.collect();
  let sum = 0;
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== name) continue;
      for (const point of metric.dataPoints) sum += point.value as number;
    }
  }
  return sum;
}

describe('NATS telemetry across processes', () => {
  it.each(['core', 'jetstream'] as const)(
    'a publish in one process and its handler in another form one trace (%s)',
    async (mode) => {
      const id = uniqueName('wt');
      const config = {
        servers: NATS_URL,
        mode,
        subjectPrefix: `${id}.events`,
        dlqPrefix: `${id}.dlq`,
        stream: { name: `${id}_EVENTS` },
        dlq: { streamName: `${id}_DLQ` },
      };
      const reader = new PullReader();
      const bus = new EventBus({
        transport: new NatsTransport(config),
        logger: quiet,
        telemetry: { tracerProvider, meterProvider: new MeterProvider({ readers: [reader] }) },
      });
      closing.push(async () => {
        await bus.close();
        if (mode === 'jetstream') await deleteStreams(config.stream.name, config.dlq.streamName);
      });
      const COUNT = 5;
      await bus.subscribe('order.*', () => undefined, { group: 'billing' });

      const publisher = await publishElsewhere(config, 'order.placed', COUNT);
      await waitFor(() => exporter.getFinishedSpans().length === COUNT, { timeoutMs: 15_000 });

      const request = publisher.spans.find((span) => span.name === 'request');
      const publishes = publisher.spans.filter((span) => span.name === 'publish order.placed');
      expect(publishes).toHaveLength(COUNT);
      expect(publisher.published).toBe(COUNT);
      for (const span of publishes) {
        expect(span.kind).toBe(api.SpanKind.PRODUCER);
        expect(span.parentSpanId).toBe(request?.spanId);
      }
      const processes = exporter.getFinishedSpans();
      for (const span of processes) {
        expect(span.name).toBe('process order.placed');
        expect(span.kind).toBe(api.SpanKind.CONSUMER);
        expect(span.spanContext().traceId).toBe(request?.traceId);
        expect(publishes.map((p) => p.spanId)).toContain(span.parentSpanContext?.spanId);
        expect(span.attributes).toMatchObject({
          'messaging.system': 'nats',
          'messaging.destination.name': 'order.placed',
          'messaging.destination.template': 'order.*',
          'messaging.consumer.group.name': 'billing',
          'watchtower.attempt': 1,
        });
      }
      expect(await counter(reader, 'watchtower.delivered')).toBe(COUNT);
      expect(await counter(reader, 'watchtower.handled')).toBe(COUNT);
    },
    90_000,
  );

  it('starts a new trace for an event without trace headers, as a Rust service sends it', async () => {
    const prefix = `${uniqueName('wt')}.events`;
    const bus = new EventBus({
      transport: new NatsTransport({ servers: NATS_URL, mode: 'core', subjectPrefix: prefix }),
      logger: quiet,
      telemetry: { tracerProvider },
    });
    closing.push(() => bus.close());
    await bus.subscribe('legacy.ping', () => undefined);
    const nc = await connect({ servers: NATS_URL });
    try {
      nc.publish(`${prefix}.legacy.ping`, encodeEventBytes(createEvent('legacy.ping', {})));
      await nc.flush();
    } finally {
      await nc.close();
    }
    await waitFor(() => exporter.getFinishedSpans().length === 1);
    expect(exporter.getFinishedSpans()[0]?.parentSpanContext).toBeUndefined();
  });
});
