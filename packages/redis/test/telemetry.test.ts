/**
 * Traces and metrics across processes over the real Redis server: a publisher in a child
 * process and the handler here form one trace, with the real OpenTelemetry SDK on both sides;
 * a dead letter keeps the trace headers and a replay of it continues the trace.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as api from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { EventBus, NonRetryableError, type DeadLetter } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisTransport } from '../src/index.js';
import { REDIS_URL, deleteKeysAndQuit, rawClient, uniquePrefix } from './helpers.js';

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

function spans(name: string) {
  return exporter.getFinishedSpans().filter((span) => span.name === name);
}

/** A bus on a fresh prefix, closed and its keys deleted after the test. */
function busOn(prefix: string, meterProvider?: MeterProvider): EventBus {
  const bus = new EventBus({
    transport: new RedisTransport({ url: REDIS_URL, prefix }),
    logger: quiet,
    telemetry: meterProvider === undefined ? { tracerProvider } : { tracerProvider, meterProvider },
  });
  closing.push(async () => {
    await bus.close();
    await deleteKeysAndQuit(rawClient(), prefix);
  });
  return bus;
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

describe('Redis telemetry across processes', () => {
  it('a publish in one process and its handler in another form one trace', async () => {
    const prefix = uniquePrefix('otel');
    const reader = new PullReader();
    const bus = busOn(prefix, new MeterProvider({ readers: [reader] }));
    const COUNT = 5;
    await bus.subscribe('order.*', () => undefined, { group: 'billing' });

    const { stdout } = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        PUBLISHER,
        new URL('../src/index.ts', import.meta.url).href,
        'RedisTransport',
        JSON.stringify({ url: REDIS_URL, prefix }),
        'order.placed',
        String(COUNT),
      ],
      {
        cwd: root,
        timeout: 60_000,
      },
    );
    const publisher = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
      spans: PrintedSpan[];
      published: number;
    };
    await waitFor(() => spans('process order.placed').length === COUNT, { timeoutMs: 15_000 });

    const request = publisher.spans.find((span) => span.name === 'request');
    const publishes = publisher.spans.filter((span) => span.name === 'publish order.placed');
    expect(publishes).toHaveLength(COUNT);
    expect(publisher.published).toBe(COUNT);
    for (const span of publishes) {
      expect(span.kind).toBe(api.SpanKind.PRODUCER);
      expect(span.parentSpanId).toBe(request?.spanId);
    }
    for (const span of spans('process order.placed')) {
      expect(span.kind).toBe(api.SpanKind.CONSUMER);
      expect(span.spanContext().traceId).toBe(request?.traceId);
      expect(publishes.map((p) => p.spanId)).toContain(span.parentSpanContext?.spanId);
      expect(span.attributes).toMatchObject({
        'messaging.system': 'redis',
        'messaging.destination.name': 'order.placed',
        'messaging.destination.template': 'order.*',
        'messaging.consumer.group.name': 'billing',
        'watchtower.attempt': 1,
      });
    }
    expect(await counter(reader, 'watchtower.delivered')).toBe(COUNT);
    expect(await counter(reader, 'watchtower.handled')).toBe(COUNT);
  }, 90_000);

  it('keeps the trace headers in the dead letter, and a replay of it continues the trace', async () => {
    const prefix = uniquePrefix('otel');
    const reader = new PullReader();
    const bus = busOn(prefix, new MeterProvider({ readers: [reader] }));
    await bus.subscribe('invoice.sent', () => {
      throw new NonRetryableError('no address');
    });
    await bus.publish('invoice.sent', { n: 1 });
    const letters: DeadLetter[] = [];
    const dlq = await bus.transport.consumeDlq((letter) => void letters.push(letter));
    closing.unshift(() => dlq.unsubscribe());
    await waitFor(() => letters.length === 1, { timeoutMs: 10_000 });

    const [publish] = spans('publish invoice.sent');
    const [run] = spans('process invoice.sent');
    expect(letters[0]?.event?.headers['traceparent']).toContain(publish?.spanContext().spanId);
    expect(run?.attributes).toMatchObject({
      'watchtower.outcome': 'dead_letter',
      'error.type': 'NON_RETRYABLE',
    });
    expect(await counter(reader, 'watchtower.dead_lettered')).toBe(1);

    await bus.publish(letters[0]?.event as never);
    await waitFor(() => spans('publish invoice.sent').length === 2);
    const replay = spans('publish invoice.sent')[1];
    expect(replay?.spanContext().traceId).toBe(publish?.spanContext().traceId);
  });

  it('starts a new trace for an event without trace headers, as a Rust service writes it', async () => {
    const prefix = uniquePrefix('otel');
    const bus = busOn(prefix);
    await bus.subscribe('legacy.ping', () => undefined);
    const rust = {
      metadata: {
        id: randomUUID(),
        event_type: 'legacy.ping',
        timestamp: new Date().toISOString(),
        source: null,
        correlation_id: null,
      },
      payload: {},
    };
    const client = rawClient();
    try {
      await client.xadd(`${prefix}:legacy.ping`, '*', 'event', JSON.stringify(rust));
    } finally {
      await client.quit();
    }
    await waitFor(() => spans('process legacy.ping').length === 1, { timeoutMs: 10_000 });
    expect(spans('process legacy.ping')[0]?.parentSpanContext).toBeUndefined();
  });
});
