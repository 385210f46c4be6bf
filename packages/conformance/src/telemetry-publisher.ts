/**
 * The publisher process of `describeTelemetryAcrossProcesses`: it builds the transport named
 * on its command line, publishes `count` events inside a `request` span with the real SDK, and
 * prints its finished spans and its published-counter total as one JSON line. Run with tsx:
 *
 *   node --import tsx telemetry-publisher.ts <module> <export> <config JSON> <type> <count>
 *
 * The transport module is loaded with `@watchtower/core` mapped to core's sources, as the
 * tests run them (a resolve hook registered before it is imported).
 */
import { register } from 'node:module';
import * as api from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { EventBus as Bus, Transport } from '@watchtower/core';

import {
  PullReader,
  counterTotal,
  type PrintedSpan,
  type PublisherReport,
} from './telemetry-sdk.js';

/** Maps `@watchtower/core` and its transport kit to core's sources. */
function resolveCoreToSources(): void {
  const index = new URL('../../core/src/index.ts', import.meta.url).href;
  const kit = new URL('../../core/src/transport-kit.ts', import.meta.url).href;
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
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const reader = new PullReader();
  // Core, and the transport's import of it, from the sources: loaded after the hook.
  resolveCoreToSources();
  const { EventBus } = (await import('@watchtower/core')) as { EventBus: typeof Bus };
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
  const published = counterTotal(resourceMetrics, 'watchtower.published');
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
