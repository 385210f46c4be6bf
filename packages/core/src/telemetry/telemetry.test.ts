/**
 * The bus's spans and metrics with the real OpenTelemetry SDK (in-memory span exporter, a
 * pull metric reader) over the memory transport. Across brokers and processes:
 * packages/nats/test and packages/redis/test, `telemetry*.test.ts`.
 */
import * as api from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, NonRetryableError } from '../errors.js';
import { EventBus, type EventBusOptions } from '../event-bus.js';
import { createEvent } from '../event.js';
import { createEventSystem, type EventSystem } from '../event-system/event-system.js';
import { MemoryBroker, MemoryTransport } from '../memory-transport.js';
import { configErrorField } from '../testing/outcomes.js';
import { waitFor } from '../testing/wait-for.js';
import type { Transport } from '../transport.js';
import { setOtelApiForTesting } from './otel-api.js';
import type { TelemetryOptions } from './telemetry-options.js';

const quiet = { warn: () => undefined, error: () => undefined };

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
let reader: PullReader;
let meterProvider: MeterProvider;
const contextManager = new AsyncLocalStorageContextManager();

beforeAll(() => {
  api.context.setGlobalContextManager(contextManager.enable());
});
afterAll(() => {
  contextManager.disable();
  api.context.disable();
});

const buses: EventBus[] = [];
const closingSystems: EventSystem[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
  await Promise.all(closingSystems.splice(0).map((system) => system.close()));
  exporter.reset();
});

function newMeter(): MeterProvider {
  reader = new PullReader();
  meterProvider = new MeterProvider({ readers: [reader] });
  return meterProvider;
}

function busOver(transport: Transport, options: Partial<EventBusOptions> = {}): EventBus {
  const bus = new EventBus({
    transport,
    logger: quiet,
    ...options,
    telemetry: options.telemetry ?? { tracerProvider, meterProvider: newMeter() },
  });
  buses.push(bus);
  return bus;
}

function spans(name?: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) => name === undefined || span.name === name);
}

async function metric(name: string): Promise<MetricData | undefined> {
  const { resourceMetrics } = await reader.collect();
  for (const scope of resourceMetrics.scopeMetrics) {
    const found = scope.metrics.find((data) => data.descriptor.name === name);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** The sum of a counter's (or a gauge's) points whose attributes include `where`. */
async function total(name: string, where: Record<string, unknown> = {}): Promise<number> {
  const data = await metric(name);
  let sum = 0;
  for (const point of data?.dataPoints ?? []) {
    const matches = Object.entries(where).every(([key, value]) => point.attributes[key] === value);
    if (!matches) continue;
    const value = point.value as number | { count: number };
    sum += typeof value === 'number' ? value : value.count;
  }
  return sum;
}

describe('EventBus telemetry: traces', () => {
  it('makes a PRODUCER publish span and a CONSUMER process span in one trace, by the messaging conventions', async () => {
    const bus = busOver(new MemoryTransport());
    const seen: string[] = [];
    await bus.subscribe('user.*', (event) => void seen.push(event.id), { group: 'mailer' });
    const event = createEvent('user.created', { id: 7 }, { correlationId: 'c-1' });
    await bus.publish(event);
    await waitFor(() => spans('process user.created').length === 1);

    const [publish] = spans('publish user.created');
    const [process] = spans('process user.created');
    expect(publish?.kind).toBe(api.SpanKind.PRODUCER);
    expect(publish?.attributes).toMatchObject({
      'messaging.system': 'memory',
      'messaging.destination.name': 'user.created',
      'messaging.message.id': event.id,
      'messaging.message.conversation_id': 'c-1',
      'messaging.operation.type': 'publish',
    });
    expect(process?.kind).toBe(api.SpanKind.CONSUMER);
    expect(process?.attributes).toMatchObject({
      'messaging.system': 'memory',
      'messaging.destination.name': 'user.created',
      'messaging.destination.template': 'user.*',
      'messaging.consumer.group.name': 'mailer',
      'messaging.message.id': event.id,
      'messaging.operation.type': 'process',
      'watchtower.attempt': 1,
    });
    expect(process?.spanContext().traceId).toBe(publish?.spanContext().traceId);
    expect(process?.parentSpanContext?.spanId).toBe(publish?.spanContext().spanId);
    expect(seen).toEqual([event.id]);
  });

  it('writes traceparent into the published event and leaves the caller’s event as it was', async () => {
    const bus = busOver(new MemoryTransport());
    const headers: Record<string, string>[] = [];
    await bus.subscribe('order.placed', (event) => void headers.push(event.headers));
    const event = createEvent('order.placed', {}, { headers: { tenant: 'a' } });
    await bus.publish(event);
    await waitFor(() => headers.length === 1);

    const publish = spans('publish order.placed')[0];
    const context = publish?.spanContext() ?? api.INVALID_SPAN_CONTEXT;
    expect(headers[0]).toEqual({
      tenant: 'a',
      traceparent: `00-${context.traceId}-${context.spanId}-01`,
    });
    expect(event.headers).toEqual({ tenant: 'a' });
  });

  it('parents the publish span on the caller’s active span, and handler spans on the process span', async () => {
    const bus = busOver(new MemoryTransport());
    const tracer = tracerProvider.getTracer('app');
    await bus.subscribe('job.queued', () => {
      tracer.startSpan('inside handler').end();
    });
    await tracer.startActiveSpan('request', async (request) => {
      await bus.publish('job.queued', {});
      request.end();
    });
    await waitFor(() => spans('inside handler').length === 1);

    const [request] = spans('request');
    const [publish] = spans('publish job.queued');
    const [process] = spans('process job.queued');
    const [inside] = spans('inside handler');
    expect(publish?.parentSpanContext?.spanId).toBe(request?.spanContext().spanId);
    expect(process?.parentSpanContext?.spanId).toBe(publish?.spanContext().spanId);
    expect(inside?.parentSpanContext?.spanId).toBe(process?.spanContext().spanId);
    expect(new Set(spans().map((span) => span.spanContext().traceId)).size).toBe(1);
  });

  it('starts a new trace for an event that carries no trace headers (a Rust producer)', async () => {
    const broker = new MemoryBroker();
    const consumer = busOver(new MemoryTransport({ broker }));
    const got: string[] = [];
    await consumer.subscribe('legacy.event', (event) => void got.push(event.id));
    const producer = new EventBus({
      transport: new MemoryTransport({ broker }),
      logger: quiet,
      telemetry: false,
    });
    buses.push(producer);
    await producer.publish('legacy.event', {});
    await waitFor(() => got.length === 1);

    const [process] = spans('process legacy.event');
    expect(spans('publish legacy.event')).toEqual([]);
    expect(process?.parentSpanContext).toBeUndefined();
  });

  it('ends failed runs with an error status and their outcome, and the dead letter keeps the trace headers', async () => {
    const transport = new MemoryTransport();
    const bus = busOver(transport);
    await bus.subscribe(
      'payment.failed',
      () => {
        throw new Error('card declined');
      },
      { retry: { maxAttempts: 2, minDelayMs: 1, maxDelayMs: 1 } },
    );
    await bus.publish('payment.failed', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);
    await waitFor(() => spans('process payment.failed').length === 2);

    const runs = spans('process payment.failed');
    expect(runs.map((span) => span.attributes['watchtower.attempt'])).toEqual([1, 2]);
    expect(runs.map((span) => span.attributes['watchtower.outcome'])).toEqual([
      'retry',
      'dead_letter',
    ]);
    for (const run of runs) {
      expect(run.status.code).toBe(api.SpanStatusCode.ERROR);
      expect(run.attributes['error.type']).toBe(ErrorCode.HANDLER_FAILED);
      expect(run.events.map((event) => event.name)).toEqual(['exception']);
    }
    const publish = spans('publish payment.failed')[0];
    const letter = transport.deadLetterQueue.list()[0];
    expect(letter?.event?.headers.traceparent).toContain(publish?.spanContext().spanId);
  });

  it('continues the trace when a dead letter is published again (a replay)', async () => {
    const transport = new MemoryTransport();
    const bus = busOver(transport);
    await bus.subscribe('invoice.sent', () => {
      throw new NonRetryableError('no address');
    });
    await bus.publish('invoice.sent', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);
    const letter = transport.deadLetterQueue.list()[0];

    await bus.publish(letter?.event as never);
    await waitFor(() => spans('publish invoice.sent').length === 2);

    const [first, replay] = spans('publish invoice.sent');
    expect(replay?.spanContext().traceId).toBe(first?.spanContext().traceId);
    expect(replay?.parentSpanContext?.spanId).toBe(first?.spanContext().spanId);
  });

  it('ends a timed-out handler’s span with TIMEOUT when the bus gives up on it', async () => {
    const bus = busOver(new MemoryTransport());
    let release: () => void = () => undefined;
    await bus.subscribe('report.built', () => new Promise<void>((r) => (release = r)), {
      timeoutMs: 20,
      retry: { maxAttempts: 1 },
    });
    await bus.publish('report.built', {});
    await waitFor(() => spans('process report.built').length === 1);
    release();

    const [run] = spans('process report.built');
    expect(run?.attributes).toMatchObject({
      'error.type': ErrorCode.TIMEOUT,
      'watchtower.outcome': 'dead_letter',
    });
  });
});

describe('EventBus telemetry: metrics', () => {
  it('counts what was published, delivered, handled, failed, retried and dead-lettered', async () => {
    const transport = new MemoryTransport();
    const bus = busOver(transport);
    await bus.subscribe(
      'task.*',
      (event) => {
        if (event.type === 'task.bad') throw new Error('bad task');
      },
      { group: 'workers', retry: { maxAttempts: 3, minDelayMs: 1, maxDelayMs: 1 } },
    );
    for (let i = 0; i < 5; i++) await bus.publish('task.ok', { i });
    await bus.publish('task.bad', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);
    await waitFor(() => bus.stats().handled === 5);

    const consumed = {
      'messaging.destination.name': 'task.*',
      'messaging.consumer.group.name': 'workers',
    };
    expect(await total('watchtower.published', { 'messaging.destination.name': 'task.ok' })).toBe(
      5,
    );
    expect(await total('watchtower.published')).toBe(6);
    expect(await total('watchtower.delivered', consumed)).toBe(8);
    expect(await total('watchtower.handled', consumed)).toBe(5);
    expect(
      await total('watchtower.handler.failures', { ...consumed, 'error.type': 'HANDLER_FAILED' }),
    ).toBe(3);
    expect(await total('watchtower.retries', consumed)).toBe(2);
    expect(
      await total('watchtower.dead_lettered', { ...consumed, 'error.type': 'HANDLER_FAILED' }),
    ).toBe(1);
    expect(await total('messaging.client.operation.duration')).toBe(6);
    expect(await total('messaging.process.duration', consumed)).toBe(8);
    expect(await total('watchtower.handlers.in_flight', consumed)).toBe(0);
    expect(await total('watchtower.circuit.state', { 'messaging.system': 'memory' })).toBe(0);
    expect(await metric('watchtower.publish.queue.fill')).toBeDefined();
  });

  it('counts publish failures by code and backpressure drops', async () => {
    const memory = new MemoryTransport();
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    // The memory transport, with publishes that wait for the gate.
    const held: Transport = {
      info: memory.info,
      connect: () => memory.connect(),
      publish: () => gate,
      subscribe: (pattern, options) => memory.subscribe(pattern, options),
      healthCheck: () => memory.healthCheck(),
      publishToDlq: (message, reason) => memory.publishToDlq(message, reason),
      consumeDlq: (handler, options) => memory.consumeDlq(handler, options),
      close: (options) => memory.close(options),
    };
    const bus = busOver(held, {
      publishConcurrency: 1,
      backpressure: { maxQueueSize: 1, strategy: 'drop-newest' },
    });
    await bus.connect();
    const first = bus.publish('audit.logged', { n: 1 });
    const second = bus.publish('audit.logged', { n: 2 });
    const third = bus.publish('audit.logged', { n: 3 });
    await expect(third).rejects.toMatchObject({ code: ErrorCode.BACKPRESSURE_FULL });
    expect(await total('watchtower.publish.queue.fill')).toBe(1);
    open();
    await Promise.all([first, second]);

    const full = { 'error.type': ErrorCode.BACKPRESSURE_FULL };
    expect(await total('watchtower.publish.failures', full)).toBe(1);
    expect(await total('watchtower.backpressure.dropped', full)).toBe(1);
    expect(await total('watchtower.published')).toBe(2);
    const [failed] = spans('publish audit.logged').filter(
      (span) => span.status.code === api.SpanStatusCode.ERROR,
    );
    expect(failed?.attributes['error.type']).toBe(ErrorCode.BACKPRESSURE_FULL);
  });

  it('names at most maxPublishDestinations event types on publish metrics, the rest _other', async () => {
    const bus = busOver(new MemoryTransport(), {
      telemetry: { meterProvider: newMeter(), maxPublishDestinations: 2 },
    });
    for (const type of ['a.one', 'a.two', 'a.three', 'a.four']) await bus.publish(type, {});

    const data = await metric('watchtower.published');
    const destinations = data?.dataPoints.map(
      (point) => point.attributes['messaging.destination.name'],
    );
    expect(destinations?.sort()).toEqual(['_other', 'a.one', 'a.two']);
    expect(await total('watchtower.published', { 'messaging.destination.name': '_other' })).toBe(2);
  });

  it('stops its observable gauges when the bus closes', async () => {
    const bus = busOver(new MemoryTransport());
    await bus.publish('x.y', {});
    await bus.close();
    expect(await metric('watchtower.circuit.state')).toBeUndefined();
  });
});

describe('EventBus telemetry: without a provider', () => {
  it('writes no trace headers and makes no spans with nothing registered', async () => {
    const bus = new EventBus({ transport: new MemoryTransport(), logger: quiet });
    buses.push(bus);
    const headers: Record<string, string>[] = [];
    await bus.subscribe('plain.event', (event) => void headers.push(event.headers));
    await bus.publish('plain.event', {});
    await waitFor(() => headers.length === 1);
    expect(headers).toEqual([{}]);
    expect(spans()).toEqual([]);
  });

  it('uses the providers registered with @opentelemetry/api, and none with telemetry: false', async () => {
    api.trace.setGlobalTracerProvider(tracerProvider);
    try {
      const traced = new EventBus({ transport: new MemoryTransport(), logger: quiet });
      const off = new EventBus({
        transport: new MemoryTransport(),
        logger: quiet,
        telemetry: false,
      });
      buses.push(traced, off);
      await traced.publish('global.one', {});
      await off.publish('global.two', {});
      expect(spans().map((span) => span.name)).toEqual(['publish global.one']);
    } finally {
      api.trace.disable();
    }
  });

  it('runs without telemetry when @opentelemetry/api is not installed, and refuses providers then', async () => {
    setOtelApiForTesting({ missing: "Cannot find module '@opentelemetry/api'" });
    try {
      const bus = new EventBus({ transport: new MemoryTransport(), logger: quiet });
      buses.push(bus);
      await bus.publish('no.api', {});
      expect(
        configErrorField(
          () => new EventBus({ transport: new MemoryTransport(), telemetry: { tracerProvider } }),
        ),
      ).toBe('telemetry');
    } finally {
      setOtelApiForTesting(undefined);
    }
  });

  it('refuses a telemetry option that is not one, naming the field', () => {
    const transport = new MemoryTransport();
    const make = (telemetry: unknown) => () =>
      new EventBus({ transport, telemetry: telemetry as TelemetryOptions });
    expect(configErrorField(make({ tracerprovider: tracerProvider }))).toBe('tracerprovider');
    expect(configErrorField(make({ tracerProvider: {} }))).toBe('telemetry.tracerProvider');
    expect(configErrorField(make({ meterProvider: 5 }))).toBe('telemetry.meterProvider');
    expect(configErrorField(make({ api: {} }))).toBe('telemetry.api');
    expect(configErrorField(make({ maxPublishDestinations: 0 }))).toBe(
      'telemetry.maxPublishDestinations',
    );
    expect(configErrorField(make('on'))).toBe('telemetry');
  });
});

describe('EventSystem telemetry: providers given in its bus options', () => {
  it('traces publishes and handler runs with the providers of bus.telemetry, none registered', async () => {
    const system = createEventSystem({
      service: 'shop',
      transports: { main: new MemoryTransport() },
      bus: { telemetry: { tracerProvider, meterProvider: newMeter() } },
      logger: quiet,
    });
    closingSystems.push(system);
    let handled = 0;
    await system.subscribe('order.placed', () => void handled++);
    await system.publish('order.placed', { id: 1 });
    await waitFor(() => spans('process order.placed').length === 1);

    const [publish] = spans('publish order.placed');
    const [process] = spans('process order.placed');
    expect(handled).toBe(1);
    expect(publish?.kind).toBe(api.SpanKind.PRODUCER);
    expect(process?.kind).toBe(api.SpanKind.CONSUMER);
    expect(process?.spanContext().traceId).toBe(publish?.spanContext().traceId);
  });

  it('refuses a bus.telemetry that is not one, naming the field', () => {
    const make = (): EventSystem =>
      createEventSystem({
        service: 'shop',
        transports: { main: new MemoryTransport() },
        bus: { telemetry: { tracerProvider: {} } as unknown as TelemetryOptions },
        logger: quiet,
      });
    expect(configErrorField(make)).toBe('telemetry.tracerProvider');
  });
});

describe('EventSystem telemetry: batches', () => {
  it('runs a batch handler in one process span that links to every event’s publish span', async () => {
    api.trace.setGlobalTracerProvider(tracerProvider);
    try {
      const system = createEventSystem({
        service: 'shop',
        transports: { main: new MemoryTransport() },
        logger: quiet,
      });
      closingSystems.push(system);
      const batches: number[] = [];
      await system.subscribeBatch('cart.*', (events) => void batches.push(events.length), {
        maxBatchSize: 3,
        maxWaitMs: 1000,
      });
      for (let i = 0; i < 3; i++) await system.publish('cart.updated', { i });
      await waitFor(() => spans('process cart.*').length === 1);

      const [batch] = spans('process cart.*');
      const published = spans('publish cart.updated').map((span) => span.spanContext().spanId);
      expect(batches).toEqual([3]);
      expect(batch?.kind).toBe(api.SpanKind.CONSUMER);
      expect(batch?.attributes['messaging.batch.message_count']).toBe(3);
      expect(batch?.links.map((link) => link.context.spanId).sort()).toEqual(published.sort());
    } finally {
      api.trace.disable();
    }
  });
});
