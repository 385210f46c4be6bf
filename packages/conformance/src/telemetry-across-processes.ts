/**
 * The telemetry cases every broker transport runs against its real broker, with the real
 * OpenTelemetry SDK: a publish in another process (`telemetry-publisher.ts`, run with tsx) and
 * the handler here form one trace, with the messaging attributes, and the counters match the
 * events sent; the dead letter of a failed event keeps its trace headers, and publishing it
 * again continues the trace; an event written without trace headers (as a Rust service
 * writes it) starts a new trace.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as api from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import {
  EventBus,
  NonRetryableError,
  createEvent,
  encodeEventBytes,
  type DeadLetter,
  type Transport,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { PullReader, counterTotal, type PublisherReport } from './telemetry-sdk.js';

const run = promisify(execFile);
const PUBLISHER = fileURLToPath(new URL('./telemetry-publisher.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const quiet = { warn: () => undefined, error: () => undefined };
const COUNT = 5;

/** A transport config as both processes get it: plain JSON. */
export type JsonConfig = Record<string, unknown>;

/** One transport setup for {@link describeTelemetryAcrossProcesses}. */
export interface TelemetryHarness {
  /** Shown in the test names (`nats core`). */
  readonly name: string;
  /** The `messaging.system` the transport reports. */
  readonly system: string;
  /** URL of the module that exports the transport class (its `src/index.ts`). */
  readonly module: string;
  /** The class's export name (`NatsTransport`); the child builds it from the config. */
  readonly exportName: string;
  /** A config with names of its own for one test. */
  config(): JsonConfig;
  /** The transport of this process, on `config`. */
  transport(config: JsonConfig): Transport;
  /** Puts bytes on the wire where events of `type` go, with the broker's own client. */
  publishRaw(config: JsonConfig, type: string, bytes: Uint8Array): Promise<void>;
  /** Deletes what a test left on the broker. */
  cleanup?(config: JsonConfig): Promise<void>;
}

/** Registers the telemetry cases for `harness`. */
export function describeTelemetryAcrossProcesses(harness: TelemetryHarness): void {
  describe(`telemetry across processes: ${harness.name}`, () => {
    const exporter = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({
      spanProcessors: [new SimpleSpanProcessor(exporter)],
    });
    const closing: (() => Promise<void>)[] = [];
    afterEach(async () => {
      await Promise.all(closing.splice(0).map((close) => close()));
      exporter.reset();
    });
    const spans = (name: string): ReadableSpan[] =>
      exporter.getFinishedSpans().filter((span) => span.name === name);

    function busOn(config: JsonConfig, reader?: PullReader): EventBus {
      const bus = new EventBus({
        transport: harness.transport(config),
        logger: quiet,
        telemetry:
          reader === undefined
            ? { tracerProvider }
            : { tracerProvider, meterProvider: new MeterProvider({ readers: [reader] }) },
      });
      closing.push(async () => {
        await bus.close();
        await harness.cleanup?.(config);
      });
      return bus;
    }

    async function publishElsewhere(config: JsonConfig, type: string): Promise<PublisherReport> {
      const args = [harness.module, harness.exportName, JSON.stringify(config), type];
      const { stdout } = await run(
        process.execPath,
        ['--import', 'tsx', PUBLISHER, ...args, String(COUNT)],
        { cwd: ROOT, timeout: 60_000 },
      );
      return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as PublisherReport;
    }

    it('a publish in one process and its handler in another form one trace', async () => {
      const config = harness.config();
      const reader = new PullReader();
      const bus = busOn(config, reader);
      await bus.subscribe('order.*', () => undefined, { group: 'billing' });

      const publisher = await publishElsewhere(config, 'order.placed');
      await waitFor(() => spans('process order.placed').length === COUNT, { timeoutMs: 15_000 });

      const request = publisher.spans.find((span) => span.name === 'request');
      const publishes = publisher.spans.filter((span) => span.name === 'publish order.placed');
      expect(publishes).toHaveLength(COUNT);
      expect(publisher.published).toBe(COUNT);
      for (const span of publishes) {
        expect(span.kind).toBe(api.SpanKind.PRODUCER);
        expect(span.parentSpanId).toBe(request?.spanId);
        expect(span.attributes).toMatchObject({ 'messaging.system': harness.system });
      }
      for (const span of spans('process order.placed')) {
        expect(span.kind).toBe(api.SpanKind.CONSUMER);
        expect(span.spanContext().traceId).toBe(request?.traceId);
        expect(publishes.map((p) => p.spanId)).toContain(span.parentSpanContext?.spanId);
        expect(span.attributes).toMatchObject({
          'messaging.system': harness.system,
          'messaging.destination.name': 'order.placed',
          'messaging.destination.template': 'order.*',
          'messaging.consumer.group.name': 'billing',
          'watchtower.attempt': 1,
        });
      }
      const { resourceMetrics } = await reader.collect();
      expect(counterTotal(resourceMetrics, 'watchtower.delivered')).toBe(COUNT);
      expect(counterTotal(resourceMetrics, 'watchtower.handled')).toBe(COUNT);
    }, 90_000);

    it('keeps the trace headers in the dead letter, and a replay of it continues the trace', async () => {
      const reader = new PullReader();
      const bus = busOn(harness.config(), reader);
      await bus.subscribe('invoice.sent', () => {
        throw new NonRetryableError('no address');
      });
      await bus.publish('invoice.sent', { n: 1 });
      const letters: DeadLetter[] = [];
      const dlq = await bus.transport.consumeDlq((letter) => void letters.push(letter));
      closing.unshift(() => dlq.unsubscribe());
      await waitFor(() => letters.length === 1, { timeoutMs: 10_000 });

      const [publish] = spans('publish invoice.sent');
      const [failed] = spans('process invoice.sent');
      expect(letters[0]?.event?.headers['traceparent']).toContain(publish?.spanContext().spanId);
      expect(failed?.attributes).toMatchObject({
        'watchtower.outcome': 'dead_letter',
        'error.type': 'NON_RETRYABLE',
      });
      const { resourceMetrics } = await reader.collect();
      expect(counterTotal(resourceMetrics, 'watchtower.dead_lettered')).toBe(1);

      await bus.publish(letters[0]?.event as never);
      await waitFor(() => spans('publish invoice.sent').length === 2);
      const replay = spans('publish invoice.sent')[1];
      expect(replay?.spanContext().traceId).toBe(publish?.spanContext().traceId);
    });

    it('starts a new trace for an event without trace headers, as a Rust service sends it', async () => {
      const config = harness.config();
      const bus = busOn(config);
      await bus.subscribe('legacy.ping', () => undefined);
      await harness.publishRaw(
        config,
        'legacy.ping',
        encodeEventBytes(createEvent('legacy.ping', {})),
      );
      await waitFor(() => spans('process legacy.ping').length === 1, { timeoutMs: 10_000 });
      expect(spans('process legacy.ping')[0]?.parentSpanContext).toBeUndefined();
    });
  });
}
