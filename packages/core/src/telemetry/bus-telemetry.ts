/**
 * The spans and metrics of one `EventBus`, by the OpenTelemetry messaging conventions
 * (docs/OBSERVABILITY.md lists every name). A `publish` span (PRODUCER) per publish, whose
 * context travels in the event's `traceparent`/`tracestate` headers; a `process` span
 * (CONSUMER) per handler run, parented on that context; counters, histograms and observable
 * gauges whose attributes are bounded (destinations are subscription patterns, or event types
 * through a bounded map on publish; never ids).
 *
 * The bus holds one of these only when a provider is given or registered, and calls it once
 * per publish and once per handler run: with telemetry off the per-event path has nothing but
 * a field test. Nothing here may throw into the bus or change an outcome; it only watches.
 */
import type {
  Attributes,
  BatchObservableCallback,
  Context,
  Counter,
  Histogram,
  Link,
  Meter,
  Observable,
  Span,
  Tracer,
} from '@opentelemetry/api';
import type { EventHandler, HandlerContext } from '../bus-subscription.js';
import type { CircuitState } from '../circuit-breaker.js';
import { ErrorCode } from '../errors.js';
import type { Event } from '../event.js';
import type { CompiledPattern } from '../pattern.js';
import { failureCode } from '../transport-kit/dead-letter-record.js';
import type { OtelApi } from './otel-api.js';
import type { ResolvedTelemetry } from './telemetry-options.js';
import { contextFromHeaders, withTraceHeaders } from './trace-context.js';

/** The instrumentation scope of every span and metric. */
export const INSTRUMENTATION_NAME = '@watchtower/core';

/** Attribute names beyond the messaging conventions' own. */
export const ATTR = {
  system: 'messaging.system',
  destination: 'messaging.destination.name',
  destinationTemplate: 'messaging.destination.template',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  group: 'messaging.consumer.group.name',
  errorType: 'error.type',
  /** 1 on first delivery, as the handler's `context.attempt`. */
  attempt: 'watchtower.attempt',
  /** What became of a failed run: `retry` or `dead_letter`. */
  outcome: 'watchtower.outcome',
  /** The subscription's name (its group, or its patterns). */
  subscription: 'watchtower.subscription',
  /** Events handed to one batch handler call. */
  batchSize: 'messaging.batch.message_count',
  /** The circuit breaker's state, on the circuit gauge. */
  circuitState: 'watchtower.circuit.state',
} as const;

/** What the publish metrics call an event type past `maxPublishDestinations`. */
export const OTHER_DESTINATION = '_other';

/** The circuit gauge's values. */
export const CIRCUIT_STATE_VALUE: Readonly<Record<CircuitState, number>> = {
  closed: 0,
  'half-open': 1,
  open: 2,
};

/** What becomes of a failed handler run. */
export type RunOutcome = 'retry' | 'dead_letter';

/** What the bus tells its telemetry about itself, read by the observable gauges. */
export interface BusProbe {
  /** The messaging system (`TransportInfo.system`, else its name). */
  readonly system: string;
  /** The publish queue's fill level, 0 to 1. */
  queueFill(): number;
  circuitState(): CircuitState;
}

// Seconds, from 50 µs (an in-process handler) to 10 s (a slow one, or a publish riding out an
// outage): the SDK's default buckets are meant for milliseconds.
const DURATION_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
  5, 10,
];

const SPAN_KIND_PRODUCER = 3;
const SPAN_KIND_CONSUMER = 4;
const STATUS_ERROR = 2;

/** The instruments of one bus. */
class Instruments {
  readonly published: Counter;
  readonly publishFailures: Counter;
  readonly dropped: Counter;
  readonly delivered: Counter;
  readonly handled: Counter;
  readonly handlerFailures: Counter;
  readonly retries: Counter;
  readonly deadLettered: Counter;
  readonly publishDuration: Histogram;
  readonly processDuration: Histogram;
  readonly gauges: Observable[];

  constructor(meter: Meter) {
    const events = { unit: '{event}' };
    this.published = meter.createCounter('watchtower.published', {
      ...events,
      description: 'Publishes the transport confirmed.',
    });
    this.publishFailures = meter.createCounter('watchtower.publish.failures', {
      ...events,
      description: 'Publishes that failed, by error.type (the error code).',
    });
    this.dropped = meter.createCounter('watchtower.backpressure.dropped', {
      ...events,
      description: 'Publishes the full publish queue refused or evicted, by error.type.',
    });
    this.delivered = meter.createCounter('watchtower.delivered', {
      ...events,
      description: 'Deliveries received from the transport.',
    });
    this.handled = meter.createCounter('watchtower.handled', {
      ...events,
      description: 'Handler runs that succeeded.',
    });
    this.handlerFailures = meter.createCounter('watchtower.handler.failures', {
      ...events,
      description: 'Handler runs that threw, rejected or timed out, by error.type.',
    });
    this.retries = meter.createCounter('watchtower.retries', {
      ...events,
      description: 'Failed deliveries handed back for another attempt.',
    });
    this.deadLettered = meter.createCounter('watchtower.dead_lettered', {
      ...events,
      description:
        'Events and undecodable messages written to the dead-letter queue, by error.type.',
    });
    const seconds = { unit: 's', advice: { explicitBucketBoundaries: DURATION_BUCKETS } };
    this.publishDuration = meter.createHistogram('messaging.client.operation.duration', {
      ...seconds,
      description: 'Publish latency, from publish() to the transport confirming it (or failing).',
    });
    this.processDuration = meter.createHistogram('messaging.process.duration', {
      ...seconds,
      description: 'Handler run duration.',
    });
    this.gauges = [
      meter.createObservableGauge('watchtower.publish.queue.fill', {
        unit: '1',
        description: 'Fill level of the publish queue, 0 to 1 (backpressure.maxQueueSize).',
      }),
      meter.createObservableGauge('watchtower.handlers.in_flight', {
        unit: '{handler}',
        description: 'Handler runs in progress.',
      }),
      meter.createObservableGauge('watchtower.circuit.state', {
        description: 'Publish circuit breaker: 0 closed, 1 half-open, 2 open.',
      }),
    ];
  }
}

/** Metric attributes and in-flight count of one (pattern, group). */
interface ConsumeSlot {
  readonly attributes: Attributes;
  readonly spanAttributes: Attributes;
  inFlight: number;
}

/** The telemetry of each bus that has one, for the layers above it (batch spans). */
const TELEMETRY_OF = new WeakMap<object, BusTelemetry>();

/** The telemetry `bus` runs with, if any. */
export function telemetryOf(bus: object): BusTelemetry | undefined {
  return TELEMETRY_OF.get(bus);
}

/** The telemetry of one bus. */
export class BusTelemetry {
  readonly api: OtelApi;
  readonly tracer: Tracer | undefined;
  readonly instruments: Instruments | undefined;
  readonly #meter: Meter | undefined;
  readonly #probe: BusProbe;
  readonly #maxDestinations: number;
  /** Publish metric attributes by event type, at most `maxPublishDestinations` of them. */
  readonly #publishAttributes = new Map<string, Attributes>();
  readonly #otherAttributes: Attributes;
  /** Consume slots by pattern and group, shared by the subscriptions that have them. */
  readonly #slots = new Map<string, ConsumeSlot>();
  readonly #observe: BatchObservableCallback | undefined;

  /** `owner` is the bus, for {@link telemetryOf}. */
  constructor(owner: object, resolved: ResolvedTelemetry, probe: BusProbe) {
    TELEMETRY_OF.set(owner, this);
    this.api = resolved.api;
    this.#probe = probe;
    this.#maxDestinations = resolved.maxPublishDestinations;
    this.tracer = resolved.tracerProvider?.getTracer(INSTRUMENTATION_NAME) as Tracer | undefined;
    this.#meter = resolved.meterProvider?.getMeter(INSTRUMENTATION_NAME) as Meter | undefined;
    this.#otherAttributes = publishAttributes(probe.system, OTHER_DESTINATION);
    if (this.#meter !== undefined) {
      const instruments = new Instruments(this.#meter);
      this.instruments = instruments;
      const [fill, inFlight, circuit] = instruments.gauges as [Observable, Observable, Observable];
      const system = { [ATTR.system]: probe.system };
      this.#observe = (result) => {
        result.observe(fill, this.#probe.queueFill(), system);
        for (const slot of this.#slots.values()) {
          result.observe(inFlight, slot.inFlight, slot.attributes);
        }
        const state = this.#probe.circuitState();
        result.observe(circuit, CIRCUIT_STATE_VALUE[state], system);
      };
      this.#meter.addBatchObservableCallback(this.#observe, instruments.gauges);
    }
  }

  get system(): string {
    return this.#probe.system;
  }

  /**
   * Publishes `event` through `admit` (the bus's own publish path) inside a `publish` span,
   * with the span's context written into a copy of the event's headers. The parent is the
   * caller's active span, else the context the event already carries (a republished dead
   * letter, a forwarded event). Settles as `admit` does.
   */
  publish(event: Event, admit: (event: Event) => Promise<void>): Promise<void> {
    const api = this.api;
    const active = api.context.active();
    let traced = event;
    let span: Span | undefined;
    let context = active;
    if (this.tracer !== undefined) {
      const parent =
        api.trace.getSpan(active) === undefined ? contextFromHeaders(api, event, active) : active;
      span = this.tracer.startSpan(
        `publish ${event.type}`,
        { kind: SPAN_KIND_PRODUCER, attributes: this.#publishSpanAttributes(event) },
        parent,
      );
      context = api.trace.setSpan(parent, span);
      traced = withTraceHeaders(event, span.spanContext());
    }
    // Durations are measured, not waited for: performance.now() rather than the bus's Clock,
    // whose milliseconds are too coarse for a publish of a few microseconds.
    const started = performance.now();
    let admitted: Promise<void>;
    try {
      admitted = api.context.with(context, admit, undefined, traced);
    } catch (error) {
      admitted = Promise.reject(error);
    }
    return admitted.then(
      () => this.#published(traced.type, span, started),
      (error: unknown) => {
        this.#publishFailed(traced.type, span, started, error);
        throw error;
      },
    );
  }

  /** The telemetry of one subscription. */
  forSubscription(
    patterns: readonly CompiledPattern[],
    group: string | undefined,
    name: string,
  ): SubscriptionTelemetry {
    return new SubscriptionTelemetry(
      this,
      patterns,
      patterns.map((pattern) => this.#slot(pattern.source, group, name)),
    );
  }

  /**
   * Runs `handle` (one handler call for a batch of events) inside a `process` span that links
   * to each event's producer, as the messaging conventions have batches: a batch has no one
   * parent. `label` names the span and its destination template (the subscription's patterns).
   */
  processBatch<R>(label: string, events: readonly Event[], handle: () => Promise<R>): Promise<R> {
    const api = this.api;
    if (this.tracer === undefined) return handle();
    const links: Link[] = [];
    for (const event of events) {
      const context = api.trace.getSpanContext(contextFromHeaders(api, event, api.ROOT_CONTEXT));
      if (context !== undefined) links.push({ context });
    }
    const span = this.tracer.startSpan(
      `process ${label}`,
      {
        kind: SPAN_KIND_CONSUMER,
        links,
        attributes: {
          [ATTR.system]: this.#probe.system,
          [ATTR.destinationTemplate]: label,
          [ATTR.operationType]: 'process',
          [ATTR.batchSize]: events.length,
        },
      },
      api.ROOT_CONTEXT,
    );
    let handled: Promise<R>;
    try {
      handled = api.context.with(api.trace.setSpan(api.ROOT_CONTEXT, span), handle);
    } catch (error) {
      handled = Promise.reject(error);
    }
    return handled.then(
      (result) => {
        span.end();
        return result;
      },
      (error: unknown) => {
        failSpan(span, error, failureCode(error));
        span.end();
        throw error;
      },
    );
  }

  /** Stops the observable gauges; the counters stay with the provider. */
  close(): void {
    if (this.#observe !== undefined && this.instruments !== undefined) {
      this.#meter?.removeBatchObservableCallback(this.#observe, this.instruments.gauges);
    }
  }

  #publishSpanAttributes(event: Event): Attributes {
    const attributes: Attributes = {
      [ATTR.system]: this.#probe.system,
      [ATTR.destination]: event.type,
      [ATTR.operationType]: 'publish',
      [ATTR.messageId]: event.id,
    };
    if (event.correlationId !== undefined) attributes[ATTR.conversationId] = event.correlationId;
    return attributes;
  }

  /** The publish metric attributes of `type`: its own while the map has room, else `_other`. */
  #destinationOf(type: string): Attributes {
    let attributes = this.#publishAttributes.get(type);
    if (attributes === undefined) {
      if (this.#publishAttributes.size >= this.#maxDestinations) return this.#otherAttributes;
      attributes = publishAttributes(this.#probe.system, type);
      this.#publishAttributes.set(type, attributes);
    }
    return attributes;
  }

  #published(type: string, span: Span | undefined, started: number): void {
    span?.end();
    const instruments = this.instruments;
    if (instruments === undefined) return;
    const attributes = this.#destinationOf(type);
    instruments.published.add(1, attributes);
    instruments.publishDuration.record((performance.now() - started) / 1000, attributes);
  }

  #publishFailed(type: string, span: Span | undefined, started: number, error: unknown): void {
    const code = failureCode(error);
    if (span !== undefined) {
      failSpan(span, error, code);
      if (error instanceof Error) span.recordException(error);
      span.end();
    }
    const instruments = this.instruments;
    if (instruments === undefined) return;
    const attributes = { ...this.#destinationOf(type), [ATTR.errorType]: code };
    instruments.publishFailures.add(1, attributes);
    if (code === ErrorCode.BACKPRESSURE_FULL || code === ErrorCode.BACKPRESSURE_DROPPED) {
      instruments.dropped.add(1, attributes);
    }
    instruments.publishDuration.record((performance.now() - started) / 1000, attributes);
  }

  #slot(pattern: string, group: string | undefined, name: string): ConsumeSlot {
    const key = `${pattern}\u0000${group ?? ''}`;
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      const attributes: Attributes = {
        [ATTR.system]: this.#probe.system,
        [ATTR.destination]: pattern,
      };
      if (group !== undefined) attributes[ATTR.group] = group;
      const spanAttributes: Attributes = {
        [ATTR.system]: this.#probe.system,
        [ATTR.destinationTemplate]: pattern,
        [ATTR.operationType]: 'process',
        [ATTR.subscription]: name,
      };
      if (group !== undefined) spanAttributes[ATTR.group] = group;
      slot = { attributes, spanAttributes, inFlight: 0 };
      this.#slots.set(key, slot);
    }
    return slot;
  }
}

/** One handler run: its span (when tracing) and what its metrics need. */
class ProcessRun {
  /** The span has ended (the run succeeded, or its outcome was told). */
  ended = false;
  constructor(
    readonly slot: ConsumeSlot,
    readonly span: Span | undefined,
    readonly started: number,
  ) {}
}

/**
 * The telemetry of one subscription: the bus subscription calls {@link run} for every handler
 * run, {@link failed} when a failed run's outcome is decided, and the counters' hooks.
 */
export class SubscriptionTelemetry {
  readonly #bus: BusTelemetry;
  readonly #patterns: readonly CompiledPattern[];
  readonly #slots: readonly ConsumeSlot[];
  /**
   * Runs that did not succeed at once, by their handler context (each run has its own), until
   * they succeed or their outcome is told. A run that returns without a promise (most) is
   * never entered: no map operation on that path.
   */
  readonly #open = new Map<HandlerContext, ProcessRun>();

  constructor(bus: BusTelemetry, patterns: readonly CompiledPattern[], slots: ConsumeSlot[]) {
    this.#bus = bus;
    this.#patterns = patterns;
    this.#slots = slots;
  }

  /** A delivery arrived on the subscription's `index`-th pattern. */
  delivered(index: number): void {
    const slot = this.#slots[index];
    if (slot !== undefined) this.#bus.instruments?.delivered.add(1, slot.attributes);
  }

  /**
   * Runs `handler` inside a `process` span parented on the event's trace context (a new
   * trace when it has none); returns what the handler returned (a promise of it when it
   * returned one) and throws what it threw.
   */
  run(handler: EventHandler, event: Event, context: HandlerContext): unknown {
    const bus = this.#bus;
    const api = bus.api;
    const slot = this.#slotOf(event.type);
    let span: Span | undefined;
    let active: Context = api.ROOT_CONTEXT;
    if (bus.tracer !== undefined) {
      const parent = contextFromHeaders(api, event, api.ROOT_CONTEXT);
      const attributes: Attributes = {
        ...slot.spanAttributes,
        [ATTR.destination]: event.type,
        [ATTR.messageId]: event.id,
        [ATTR.attempt]: context.attempt,
      };
      if (event.correlationId !== undefined) attributes[ATTR.conversationId] = event.correlationId;
      span = bus.tracer.startSpan(
        `process ${event.type}`,
        { kind: SPAN_KIND_CONSUMER, attributes },
        parent,
      );
      active = api.trace.setSpan(parent, span);
    }
    const run = new ProcessRun(slot, span, performance.now());
    slot.inFlight++;
    let result: unknown;
    try {
      result = api.context.with(active, handler, undefined, event, context);
    } catch (error) {
      this.#open.set(context, run);
      this.#handlerFailed(run, error);
      throw error;
    }
    if (!isPromiseLike(result)) {
      this.#succeeded(run);
      return result;
    }
    // Open while it runs: a timeout tells its outcome before it settles.
    this.#open.set(context, run);
    return Promise.resolve(result).then(
      (value) => {
        this.#open.delete(context);
        this.#succeeded(run);
        return value;
      },
      (error: unknown) => {
        this.#handlerFailed(run, error);
        throw error;
      },
    );
  }

  /**
   * A failed run's outcome is decided: counted, and its span (still open, or cut short by a
   * timeout while the handler runs on) ends with the error and `watchtower.outcome`.
   */
  failed(context: HandlerContext | undefined, failure: unknown, outcome: RunOutcome): void {
    const run = context === undefined ? undefined : this.#open.get(context);
    if (context !== undefined) this.#open.delete(context);
    const code = failureCode(failure);
    const slot = run?.slot ?? this.#slots[0];
    const instruments = this.#bus.instruments;
    if (slot !== undefined && instruments !== undefined) {
      const attributes = { ...slot.attributes, [ATTR.errorType]: code };
      instruments.handlerFailures.add(1, attributes);
      if (outcome === 'retry') instruments.retries.add(1, slot.attributes);
      if (run !== undefined && !run.ended) {
        instruments.processDuration.record((performance.now() - run.started) / 1000, attributes);
      }
    }
    if (run === undefined || run.ended) return;
    run.ended = true;
    if (run.span !== undefined) {
      failSpan(run.span, failure, code);
      run.span.setAttribute(ATTR.outcome, outcome);
      run.span.end();
    }
  }

  /** A dead letter was stored for an event of `type` (undefined: bytes that never decoded). */
  deadLettered(type: string | undefined, code: string): void {
    const instruments = this.#bus.instruments;
    if (instruments === undefined) return;
    const slot = type === undefined ? this.#slots[0] : this.#slotOf(type);
    if (slot !== undefined) {
      instruments.deadLettered.add(1, { ...slot.attributes, [ATTR.errorType]: code });
    }
  }

  /** The slot of the first pattern matching `type`, as the bus gives the event to it. */
  #slotOf(type: string): ConsumeSlot {
    const slots = this.#slots;
    if (slots.length > 1) {
      for (let i = 0; i < slots.length; i++) {
        if ((this.#patterns[i] as CompiledPattern).matches(type)) return slots[i] as ConsumeSlot;
      }
    }
    return slots[0] as ConsumeSlot;
  }

  #succeeded(run: ProcessRun): void {
    run.slot.inFlight--;
    if (run.ended) return;
    run.ended = true;
    run.span?.end();
    const instruments = this.#bus.instruments;
    if (instruments === undefined) return;
    instruments.handled.add(1, run.slot.attributes);
    instruments.processDuration.record(
      (performance.now() - run.started) / 1000,
      run.slot.attributes,
    );
  }

  /** The handler threw or rejected: its span stays open until the outcome is told. */
  #handlerFailed(run: ProcessRun, error: unknown): void {
    run.slot.inFlight--;
    if (!run.ended && error instanceof Error) run.span?.recordException(error);
  }
}

function publishAttributes(system: string, destination: string): Attributes {
  return {
    [ATTR.system]: system,
    [ATTR.destination]: destination,
    [ATTR.operationName]: 'publish',
  };
}

function failSpan(span: Span, error: unknown, code: string): void {
  span.setAttribute(ATTR.errorType, code);
  span.setStatus({
    code: STATUS_ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}
