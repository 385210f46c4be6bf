/**
 * A publisher in a process of its own, for the cross-process trace tests of the transports
 * (packages/nats/test, packages/redis/test): it builds the transport named on its command
 * line, publishes `count` events inside a `request` span with the real SDK, and prints its
 * finished spans and its published-counter total as one JSON line. Run with tsx:
 *
 *   node --import tsx publisher-process.ts <module> <export> <config JSON> <type> <count>
 *
 * The transport module is loaded with `@watchtower/core` mapped to core's sources, as the
 * tests run them (a resolve hook registered before it is imported).
 */
import { register } from 'node:module';
import * as api from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { EventBus } from '../../event-bus.js';
import type { Transport } from '../../transport.js';

/** A span as the parent test reads it. */
export interface PrintedSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  attributes: Record<string, unknown>;
}

/** What the process prints. */
export interface PublisherReport {
  spans: PrintedSpan[];
  published: number;
}

class PullReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

/** Maps `@watchtower/core` and its transport kit to core's sources. */
function resolveCoreToSources(): void {
  const index = new URL('../../index.ts', import.meta.url).href;
  const kit = new URL('../../transport-kit.ts', import.meta.url).href;
  const hooks = `
    export async function resolve(specifier, context, next) {
      if (specifier === '@watchtower/core') return next(${JSON.stringify(index)}, context);
      if (specifier === '@watchtower/core/transport-kit') return next(${JSON.stringify(kit)}, context);
      return next(specifier, context);
    }`;
  register(`data:text/javascript,${encodeURIComponent(hooks)}`);
}

async function main(): Promise<void> {
  const [moduleUrl, exportName, configJson, type, count] = process.argv.slice(2) as [
    string,
    string,
    string,
    string,
    string,
  ];
  resolveCoreToSources();
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const reader = new PullReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const module = (await import(moduleUrl)) as Record<string, new (config: unknown) => Transport>;
  const TransportClass = module[exportName] as new (config: unknown) => Transport;
  const bus = new EventBus({
    transport: new TransportClass(JSON.parse(configJson)),
    telemetry: { tracerProvider, meterProvider },
  });
  await tracerProvider.getTracer('publisher').startActiveSpan('request', async (request) => {
    for (let i = 0; i < Number(count); i++) await bus.publish(type, { i });
    request.end();
  });
  const { resourceMetrics } = await reader.collect();
  let published = 0;
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== 'watchtower.published') continue;
      for (const point of metric.dataPoints) published += point.value as number;
    }
  }
  await bus.close();
  const spans = exporter.getFinishedSpans().map((span): PrintedSpan => ({
    name: span.name,
    kind: span.kind,
    traceId: span.spanContext().traceId,
    spanId: span.spanContext().spanId,
    parentSpanId: span.parentSpanContext?.spanId,
    attributes: { ...span.attributes },
  }));
  const report: PublisherReport = { spans, published };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await main();
