/**
 * The `EventBus`: the Subscriber written once, over any `Transport`. This file holds its
 * options, its lifecycle (`idle`, `connecting`, `open`, `closing`, `closed`) and the publish
 * path: type check, schema validation, the bounded publish queue, the circuit breaker and
 * retries, then `transport.publish`. The consume side is in `bus-subscription.ts`. Nothing
 * here talks to a broker directly, and a publish is never reported as sent before the
 * transport confirmed it.
 */
import {
  BackpressureController,
  type BackpressureOptions,
  type BackpressureStats,
} from './backpressure.js';
import {
  CircuitBreaker,
  type CircuitBreakerOptions,
  type CircuitBreakerStats,
  type CircuitState,
} from './circuit-breaker.js';
import { sleep, systemClock, type Clock, type TimerHandle } from './clock.js';
import { Emitter } from './emitter.js';
import {
  ClosedError,
  ConnectionError,
  ErrorCode,
  TimeoutError,
  ValidationError,
  configError,
  describeError,
  isWatchtowerError,
  toWatchtowerError,
  WatchtowerError,
} from './errors.js';
import { clearEncoding, primeEncoding, writeEvent } from './codec.js';
import { consoleLogger, toBusLog, WarningLimiter, type BusLog, type Logger } from './logger.js';
import { assertEvent, createEventAt, type Event, type EventMetadataInput } from './event.js';
import { compilePattern, patternsOverlap, type CompiledPattern } from './pattern.js';
import { RetryPolicy, isRetryableError, type RetryPolicyOptions } from './retry-policy.js';
import {
  runPayloadSchema,
  type EventCatalog,
  type SchemaInput,
  type SchemaOutcome,
  type SchemaOutput,
  type StandardSchemaV1,
  type TypesMatching,
} from './schema.js';
import type {
  DeadLetter,
  PublishReceipt,
  StartPosition,
  SubscriptionHandle,
  Transport,
  TransportSubscription,
} from './transport.js';
import { TRANSPORT_OPTION_KEYS } from './transport.js';
import {
  checkOptionKeys,
  clockOption,
  integerOption,
  numberOption,
  recordOption,
  rejectUnknownOptions,
} from './options.js';
import { BusTelemetry } from './telemetry/bus-telemetry.js';
import { resolveTelemetry, type TelemetryOptions } from './telemetry/telemetry-options.js';
import {
  BusSubscription,
  type ConsumedCheck,
  type EventBusCounters,
  type EventHandler,
  type ResolvedSubscribeOptions,
  type SubscriptionHost,
} from './bus-subscription.js';

export type { EventBusCounters, EventHandler, HandlerContext } from './bus-subscription.js';
export { consoleLogger, type Logger } from './logger.js';
import { CLOSE_MARGIN_MS } from './transport-kit/lifecycle.js';
import { Fifo } from './transport-kit/fifo.js';
import { RESOLVED } from './transport-kit/resolved.js';
import {
  AbortScope,
  Backoff,
  Deadline,
  TIMED_OUT,
  unrefTimer,
  within,
} from './transport-kit/timing.js';

/** How payloads that fail their schema are treated. */
export type ValidationMode = 'strict' | 'warn' | 'ignore';

/** Per-subscription options of {@link EventBus.subscribe}. */
export interface SubscribeOptions {
  /**
   * Competing consumers: each event goes to one member of the group. Without a group every
   * subscription gets every event.
   */
  group?: string;
  /**
   * Handlers of this subscription running at the same time. 1 keeps publish order per type.
   * @defaultValue 1
   */
  concurrency?: number;
  /**
   * A handler still running after this long fails with a `TIMEOUT` error (its `signal`
   * aborts) and the event is retried. 0 turns the limit off.
   * @defaultValue 30000
   */
  timeoutMs?: number;
  /**
   * Redelivery of failed events: `maxAttempts` is how many times the handler runs for an
   * event in all, the first run included, as a delivery's `attempt` counts them (1 =
   * dead-letter on the first failure); the delay before each redelivery follows the strategy.
   * Then the event goes to the dead-letter queue.
   * @defaultValue the bus's `subscriptionDefaults.retry`, else `DEFAULT_RETRY_OPTIONS`
   */
  retry?: RetryPolicyOptions;
  /**
   * Deliveries the transport may hand out before they are acked.
   * @defaultValue the transport's default
   */
  maxInFlight?: number;
  /** Where a new subscription starts, on transports with `replay`. @defaultValue `'new'` */
  startFrom?: StartPosition;
  /** Aborting unsubscribes. */
  signal?: AbortSignal;
  /**
   * Name used in dead-letter reasons and logs.
   * @defaultValue the group, else the patterns joined by `,`
   */
  name?: string;
}

/** The event type a handler of `Pattern` receives with catalog `C`. */
export type EventFor<C extends EventCatalog, Pattern extends string> = string extends keyof C
  ? Event
  : [TypesMatching<C, Pattern>] extends [never]
    ? Event
    : { [K in TypesMatching<C, Pattern>]: Event<SchemaOutput<C[K]>, K> }[TypesMatching<C, Pattern>];

/** Options of {@link EventBus}. */
export interface EventBusOptions<C extends EventCatalog = EventCatalog> {
  /** The broker. The bus connects it on first use and closes it in `close()`. */
  transport: Transport;
  /** Payload schemas by event type, from `defineEvents`. */
  events?: C;
  /**
   * `strict`: a payload that fails its schema is rejected on publish and dead-lettered on
   * consume, and with a catalog an event type it does not list is rejected the same way;
   * `warn`: logged and let through; `ignore`: schemas are not run.
   * @defaultValue `'strict'`
   */
  validation?: ValidationMode;
  /** Set as `source` on events the bus creates from `publish(type, payload)`. */
  source?: string;
  /** The publish circuit breaker. */
  circuitBreaker?: CircuitBreakerOptions;
  /**
   * The publish queue: publishes accepted and waiting for one of the `publishConcurrency`
   * send slots. `maxQueueSize` bounds the waiting ones; the strategy decides what happens to
   * a publish that finds `maxQueueSize` waiting.
   */
  backpressure?: BackpressureOptions;
  /**
   * Retries of a failed publish (retryable errors only): `maxAttempts` counts every attempt,
   * the first included (1 = no retry).
   * @defaultValue `DEFAULT_RETRY_OPTIONS`
   */
  retry?: RetryPolicyOptions;
  /**
   * Publishes handed to the transport and not yet confirmed, at most; further ones wait in
   * the publish queue (`backpressure.maxQueueSize` bounds those). So the two never overlap:
   * at most `publishConcurrency + maxQueueSize` publishes are accepted and unconfirmed, and
   * each backpressure strategy acts once `maxQueueSize` publishes wait, whatever the sizes.
   * @defaultValue 256
   */
  publishConcurrency?: number;
  /** Defaults for every `subscribe` call. */
  subscriptionDefaults?: Pick<
    SubscribeOptions,
    'concurrency' | 'timeoutMs' | 'retry' | 'maxInFlight'
  >;
  /**
   * How long a publish may take, from acceptance to the broker's confirmation, waits in the
   * publish queue and retries included; then it rejects with `TIMEOUT` (whose `cause` is the
   * connection error while the transport reports its connection lost). A publish that timed
   * out may still reach the broker later (delivery is at least once). The same for every
   * transport.
   * @defaultValue 30000: rides through a broker restart, well inside common request timeouts
   */
  publishTimeoutMs?: number;
  /**
   * How long the first connect may keep trying, with exponential backoff and jitter, while
   * the broker cannot be reached (a broker starting beside the service, as containers do).
   * `0` fails at once with `CONNECTION`, so a wrong address shows up at the first call.
   * @defaultValue 0
   */
  connectWaitMs?: number;
  /**
   * How long `close()` waits for queued publishes and running handlers.
   * @defaultValue 10000
   */
  closeTimeoutMs?: number;
  /** @defaultValue `consoleLogger` */
  logger?: Logger;
  /** @defaultValue `systemClock` */
  clock?: Clock;
  /**
   * OpenTelemetry traces and metrics (docs/OBSERVABILITY.md); `false` turns them off.
   * @defaultValue the providers registered with `@opentelemetry/api`, when it is installed
   * and one is registered; otherwise none, at no cost
   */
  telemetry?: TelemetryOptions | false;
}

/** Defaults of {@link EventBusOptions} and {@link SubscribeOptions}. */
export const DEFAULT_EVENT_BUS_OPTIONS = {
  validation: 'strict',
  publishConcurrency: 256,
  publishTimeoutMs: 30_000,
  connectWaitMs: 0,
  closeTimeoutMs: 10_000,
  concurrency: 1,
  timeoutMs: 30_000,
} as const;

/** A snapshot from {@link EventBus.stats}. */
export interface EventBusStats extends EventBusCounters {
  /** Handlers running now. */
  activeHandlers: number;
  /** Publishes handed to the transport and not yet settled (at most `publishConcurrency`). */
  publishesInFlight: number;
  /** Live subscriptions. */
  subscriptions: number;
  circuitBreaker: CircuitBreakerStats;
  backpressure: BackpressureStats;
}

/** Listener signatures of {@link EventBus.on}. */
export type EventBusEvents = {
  /** Something failed that no caller can be told about (ack failed, DLQ write failed ...). */
  error: [error: WatchtowerError, context: { subscription?: string; eventId?: string }];
  /** A dead letter was written. */
  deadLetter: [deadLetter: DeadLetter];
  /** The publish circuit breaker changed state. */
  circuitStateChange: [to: CircuitState, from: CircuitState];
  /** The publish queue crossed its warning threshold. */
  backpressureWarning: [stats: BackpressureStats];
};

/** What a {@link PublishEntry} reports its transport's receipt to (its bus). */
interface ReceiptHost {
  sent(entry: PublishEntry): void;
  sendFailed(entry: PublishEntry, error: unknown): void;
}

/**
 * An accepted publish: waiting in the queue, then in flight at the transport until it settles
 * or `close()` cuts it off. `resolve`/`reject` settle the caller's promise, once. It is also
 * the receipt a transport with `publishTo` reports to (the first report counts).
 */
class PublishEntry implements PublishReceipt {
  /** Neighbours in {@link InFlightPublishes} while in flight. */
  prev: PublishEntry | undefined = undefined;
  next: PublishEntry | undefined = undefined;
  inFlight = false;
  /** Ends the retries of this publish when it times out or close() cuts it off. */
  retry: AbortController | undefined = undefined;
  /** Set by a receipt: the bus, while `publishTo` has the event; cleared by its report. */
  receiptHost: ReceiptHost | undefined = undefined;

  constructor(
    readonly event: Event,
    /** The event's wire text, written before admission; the transport's encode reuses it. */
    readonly text: string,
    /** The publish-timeout sweep's tick at acceptance (see `EventBus#sweep`). */
    readonly acceptedTick: number,
    readonly resolve: () => void,
    readonly reject: (error: unknown) => void,
  ) {}

  published(): void {
    const host = this.receiptHost;
    this.receiptHost = undefined;
    host?.sent(this);
  }

  failed(error: unknown): void {
    const host = this.receiptHost;
    this.receiptHost = undefined;
    host?.sendFailed(this, error);
  }
}

/**
 * The publishes in flight at the transport, as a list threaded through the entries: adding or
 * removing one is a few field writes, and the long-lived bus points only to the two ends. (A
 * `Set` held by the bus made the garbage collector track one old-to-young pointer per publish,
 * which doubled the CPU time of the memory publish path.)
 */
class InFlightPublishes {
  #head: PublishEntry | undefined = undefined;
  #tail: PublishEntry | undefined = undefined;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(entry: PublishEntry): void {
    entry.inFlight = true;
    entry.prev = this.#tail;
    if (this.#tail === undefined) this.#head = entry;
    else this.#tail.next = entry;
    this.#tail = entry;
    this.#size++;
  }

  /** Removes `entry`; false when it was not in flight (close() had taken it). */
  delete(entry: PublishEntry): boolean {
    if (!entry.inFlight) return false;
    entry.inFlight = false;
    const { prev, next } = entry;
    if (prev === undefined) this.#head = next;
    else prev.next = next;
    if (next === undefined) this.#tail = prev;
    else next.prev = prev;
    entry.prev = undefined;
    entry.next = undefined;
    this.#size--;
    return true;
  }

  /** The entries accepted before `tick`, removed. */
  takeAcceptedBefore(tick: number): PublishEntry[] {
    const taken: PublishEntry[] = [];
    for (let entry = this.#head; entry !== undefined;) {
      const next = entry.next;
      if (entry.acceptedTick < tick) {
        this.delete(entry);
        taken.push(entry);
      }
      entry = next;
    }
    return taken;
  }

  /** Removes and returns every entry, oldest first. */
  takeAll(): PublishEntry[] {
    const all: PublishEntry[] = [];
    for (let entry = this.#head; entry !== undefined;) {
      const next = entry.next;
      this.delete(entry);
      all.push(entry);
      entry = next;
    }
    return all;
  }
}

const NOT_SET = Symbol('not set');

/** What a nested options field must be, in its `CONFIG` error. */
const AN_OPTIONS_OBJECT = 'an options object';

const NON_NEGATIVE = { min: 0 } as const;

/** How often at most the bus logs that the publish queue is filling up. */
const QUEUE_WARNING_INTERVAL_MS = 5000;

/** The longest step of the publish-timeout sweep: a publish times out at most this late. */
const MAX_SWEEP_MS = 1000;

/** Waits between tries of the first connect under `connectWaitMs`. */
const CONNECT_BACKOFF = { baseMs: 100, maxMs: 5000 } as const;

/** Where an {@link EventBus} is in its life. */
type BusPhase = 'idle' | 'connecting' | 'open' | 'closing' | 'closed';

/**
 * The `EventBus` options other than `transport`: entry points that take one flat options
 * object (`NatsSubscriber`, `RedisSubscriber`) split it with this list.
 */
export const EVENT_BUS_OPTION_KEYS = [
  'events',
  'validation',
  'source',
  'circuitBreaker',
  'backpressure',
  'retry',
  'publishConcurrency',
  'subscriptionDefaults',
  'publishTimeoutMs',
  'connectWaitMs',
  'closeTimeoutMs',
  'logger',
  'clock',
  'telemetry',
] as const satisfies readonly (keyof Omit<EventBusOptions, 'transport'>)[];

const SUBSCRIBE_OPTION_KEYS = [
  'group',
  'concurrency',
  'timeoutMs',
  'retry',
  'maxInFlight',
  'startFrom',
  'signal',
  'name',
] as const satisfies readonly (keyof SubscribeOptions)[];

const SUBSCRIPTION_DEFAULT_KEYS = [
  'concurrency',
  'timeoutMs',
  'retry',
  'maxInFlight',
] as const satisfies readonly (keyof NonNullable<EventBusOptions['subscriptionDefaults']>)[];

/**
 * The Subscriber: publish and subscribe over any {@link Transport}, with schema validation,
 * backpressure, a circuit breaker and retries on publish, and per-subscription concurrency,
 * timeouts, redelivery and dead-lettering on consume. Nothing is acked that was not handled
 * or dead-lettered.
 */
export class EventBus<C extends EventCatalog = EventCatalog> implements AsyncDisposable {
  readonly transport: Transport;
  /** The transport encodes with core's codec: the bus writes each event's JSON before admission. */
  readonly #encodes: boolean;
  /** The receipt's reports, for a transport with `publishTo` (see {@link #sendWithReceipt}). */
  readonly #receipts: ReceiptHost | undefined;
  readonly #catalog: Readonly<Record<string, StandardSchemaV1>> | undefined;
  readonly #validation: ValidationMode;
  readonly #source: string | undefined;
  readonly #breaker: CircuitBreaker;
  readonly #queue: BackpressureController<PublishEntry>;
  readonly #retry: RetryPolicy;
  readonly #publishConcurrency: number;
  readonly #subscriptionDefaults: NonNullable<EventBusOptions['subscriptionDefaults']>;
  readonly #closeTimeoutMs: number;
  readonly #publishTimeoutMs: number;
  readonly #connectWaitMs: number;
  /** One step of the publish-timeout sweep, and how many steps make `publishTimeoutMs`. */
  readonly #sweepMs: number;
  readonly #sweepSteps: number;
  /** Steps the sweep has made; each publish records the step it was accepted in. */
  #tick = 0;
  /** The sweep's next step; armed while publishes are accepted and unsettled. */
  #sweepTimer: TimerHandle | undefined;
  /**
   * The transport reported its connection lost and has not reported it back: new publishes
   * wait in the queue, and retries wait for the connection before they try again.
   */
  #connectionLost: WatchtowerError | undefined;
  /** Retries waiting for the connection to come back. */
  readonly #connectionWaiters = new Set<() => void>();
  /** Publishes waiting for the half-open circuit's trial calls to decide. */
  readonly #awaitingTrial = new Fifo<PublishEntry>();
  readonly #logger: BusLog;
  /** "The publish queue is filling up" at most once per interval. */
  readonly #queueWarnings: WarningLimiter;
  readonly #clock: Clock;
  readonly #emitter = new Emitter<EventBusEvents>();
  readonly #subscriptions = new Set<BusSubscription>();
  /** Every wait of the bus (retries, connect backoff, dead-letter writes) ends at close. */
  readonly #closeScope = new AbortScope();
  readonly #counters: EventBusCounters = {
    published: 0,
    publishFailed: 0,
    received: 0,
    handled: 0,
    handlerFailures: 0,
    retried: 0,
    deadLettered: 0,
    validationFailures: 0,
    malformed: 0,
    misrouted: 0,
    deadLettersReduced: 0,
    deadLetterFailures: 0,
  };
  /**
   * Where the bus is in its life. Publishes skip the connect step once it is `open`; from
   * `closing` on nothing new is accepted.
   */
  #phase: BusPhase = 'idle';
  /** The one connect attempt, shared; kept once it has succeeded (close sends through it). */
  #connecting: Promise<void> | undefined;
  /** What `close()` returns, every time. */
  #closing: Promise<void> | undefined;
  /**
   * Publishes handed to the transport and not yet settled, at most `publishConcurrency`.
   * Kept so that `close()` can settle them by its deadline whatever the transport does.
   */
  readonly #inFlight = new InFlightPublishes();
  #flushed: (() => void) | undefined;
  readonly #removeTransportListeners: (() => void)[] = [];
  /** Spans and metrics; undefined (one field test per event) when there is no provider. */
  readonly #telemetry: BusTelemetry | undefined;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: EventBusOptions<C>) {
    if (options === undefined || typeof options.transport?.publish !== 'function') {
      throw configError('transport', 'a Transport is required');
    }
    rejectUnknownOptions(options, ['transport', ...EVENT_BUS_OPTION_KEYS], 'EventBus');
    this.transport = options.transport;
    this.#encodes = options.transport.info.encodes !== false;
    this.#receipts =
      typeof options.transport.publishTo === 'function'
        ? {
            sent: (entry) => this.#sent(entry),
            sendFailed: (entry, error) => void this.#sendFailed(entry, error),
          }
        : undefined;
    this.#validation = options.validation ?? DEFAULT_EVENT_BUS_OPTIONS.validation;
    if (!['strict', 'warn', 'ignore'].includes(this.#validation)) {
      throw configError('validation', 'must be "strict", "warn" or "ignore"');
    }
    if (
      options.events !== undefined &&
      (typeof options.events !== 'object' || options.events === null)
    ) {
      throw configError('events', 'must be a catalog from defineEvents()');
    }
    this.#catalog = options.events;
    if (options.source !== undefined && typeof options.source !== 'string') {
      throw configError('source', 'must be a string');
    }
    this.#source = options.source;
    this.#publishConcurrency = integerOption(
      'publishConcurrency',
      options.publishConcurrency ?? DEFAULT_EVENT_BUS_OPTIONS.publishConcurrency,
      1,
    );
    this.#closeTimeoutMs = numberOption(
      'closeTimeoutMs',
      options.closeTimeoutMs ?? DEFAULT_EVENT_BUS_OPTIONS.closeTimeoutMs,
      NON_NEGATIVE,
    );
    this.#publishTimeoutMs = numberOption(
      'publishTimeoutMs',
      options.publishTimeoutMs ?? DEFAULT_EVENT_BUS_OPTIONS.publishTimeoutMs,
      { above: 0 },
    );
    this.#sweepMs = Math.min(MAX_SWEEP_MS, Math.max(1, Math.ceil(this.#publishTimeoutMs / 10)));
    this.#sweepSteps = Math.ceil(this.#publishTimeoutMs / this.#sweepMs);
    this.#connectWaitMs = numberOption(
      'connectWaitMs',
      options.connectWaitMs ?? DEFAULT_EVENT_BUS_OPTIONS.connectWaitMs,
      NON_NEGATIVE,
    );
    this.#clock = clockOption('clock', options.clock ?? systemClock);
    this.#logger = toBusLog(options.logger ?? consoleLogger);
    this.#queueWarnings = new WarningLimiter(this.#clock, QUEUE_WARNING_INTERVAL_MS);
    this.#subscriptionDefaults =
      recordOption('subscriptionDefaults', options.subscriptionDefaults, AN_OPTIONS_OBJECT) ?? {};
    // Checked here so that a bad default fails at construction, not at the first subscribe.
    resolveSubscribeOptions({}, this.#subscriptionDefaults, this.#clock);

    // Each nested options object is checked before it is spread: spreading a number or a
    // string would silently stand the defaults in for what the caller wrote.
    this.#breaker = new CircuitBreaker({
      clock: this.#clock,
      name: 'publish',
      ...recordOption('circuitBreaker', options.circuitBreaker, AN_OPTIONS_OBJECT),
    });
    this.#retry = new RetryPolicy({
      clock: this.#clock,
      ...recordOption('retry', options.retry, AN_OPTIONS_OBJECT),
    });
    this.#queue = new BackpressureController<PublishEntry>({
      clock: this.#clock,
      ...recordOption('backpressure', options.backpressure, AN_OPTIONS_OBJECT),
    });
    this.#queue.on('dropped', (entry, error) => {
      this.#counters.publishFailed++;
      entry.reject(error);
    });
    this.#queue.on('warning', (stats) => {
      const suppressed = this.#queueWarnings.take();
      if (suppressed !== undefined) {
        const more = suppressed === 0 ? '' : ` (${suppressed} more such warnings held back)`;
        this.#logger.warn(
          { ...stats, fillRatio: stats.fillRatio(), suppressedWarnings: suppressed },
          `the publish queue is filling up${more}`,
        );
      }
      this.#emitter.emit('backpressureWarning', stats);
    });
    this.#breaker.on('stateChange', (to, from) =>
      this.#emitter.emit('circuitStateChange', to, from),
    );
    const onError = this.transport.on?.('error', (error) => this.#reportError(error, {}));
    const onConnection = this.transport.on?.('connection', (change) => {
      if (change.state === 'lost') this.#lostConnection(change.error);
      // No publish reaches the transport while the connection is lost: a failed reconnect is
      // what tells the breaker that the broker is still away.
      else if (change.state === 'reconnect-failed') this.#breaker.recordFailure(change.error);
      else this.#restoredConnection(change.state === 'restored');
    });
    for (const remove of [onError, onConnection]) {
      if (remove !== undefined) this.#removeTransportListeners.push(remove);
    }
    const telemetry = resolveTelemetry(options.telemetry);
    this.#telemetry =
      telemetry === undefined
        ? undefined
        : new BusTelemetry(this, telemetry, {
            system: this.transport.info.system ?? this.transport.info.name,
            queueFill: () => this.#queue.stats().fillRatio(),
            circuitState: () => this.#breaker.state,
          });
  }

  /** True from the start of `close()`: nothing new is accepted. */
  #closed(): boolean {
    return this.#phase === 'closing' || this.#phase === 'closed';
  }

  /** Connects the transport. Called on first use; calling it early surfaces errors early. */
  connect(): Promise<void> {
    if (this.#closed()) return Promise.reject(new ClosedError('the event bus is closed'));
    return this.#ensureConnected();
  }

  /**
   * Publishes an event. Resolves when the transport has confirmed it; rejects with
   * `VALIDATION` (bad type or payload, before anything is queued), `BACKPRESSURE_FULL` /
   * `BACKPRESSURE_DROPPED`, `CIRCUIT_OPEN`, `CLOSED` or the transport's error after retries.
   */
  publish<T extends keyof C & string>(
    type: T,
    payload: SchemaInput<C[T]>,
    metadata?: EventMetadataInput,
  ): Promise<void>;
  publish(event: Event): Promise<void>;
  publish(
    eventOrType: Event | string,
    payload?: unknown,
    metadata?: EventMetadataInput,
  ): Promise<void> {
    if (this.#closed()) return Promise.reject(new ClosedError('the event bus is closed'));
    let event: Event;
    try {
      event =
        typeof eventOrType === 'string'
          ? createEventAt(eventOrType, payload, this.#withSource(metadata), this.#clock)
          : checkedEvent(eventOrType);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#telemetry !== undefined) {
      return this.#telemetry.publish(event, (traced) => this.#admit(traced));
    }
    return this.#admit(event);
  }

  /** Validates the payload against its schema, then queues the publish. */
  #admit(event: Event): Promise<void> {
    const schema = this.#schemaFor(event.type, NOT_SET);
    if (schema === NOT_SET) return this.#enqueue(event);
    if (schema instanceof ValidationError) {
      this.#counters.validationFailures++;
      return Promise.reject(schema);
    }
    const outcome = checkPayload(schema, event.payload, event.type);
    if (outcome instanceof Promise)
      return outcome.then((settled) => this.#afterValidation(event, settled));
    return this.#afterValidation(event, outcome);
  }

  /**
   * Calls `handler` for every event whose type matches one of `eventTypes` (exact types or
   * patterns: `*` one token, `>` the rest). Resolves once the transport subscriptions are
   * live. An event matching several of the patterns is handled once. With a `group`, patterns
   * that can match the same event are refused with `CONFIG` (use one pattern covering both).
   */
  async subscribe<P extends string>(
    eventTypes: P | readonly P[],
    handler: EventHandler<EventFor<C, P>>,
    options: SubscribeOptions = {},
  ): Promise<SubscriptionHandle> {
    if (this.#closed()) throw new ClosedError('the event bus is closed');
    const patterns: readonly string[] = typeof eventTypes === 'string' ? [eventTypes] : eventTypes;
    if (!Array.isArray(patterns) || patterns.length === 0) {
      throw configError('eventTypes', 'give at least one event type or pattern');
    }
    if (typeof handler !== 'function') throw configError('handler', 'must be a function');
    // Array.isArray narrows to any[]; the list is re-typed, each entry is checked by compilePattern.
    const compiled = (patterns as readonly unknown[]).map((pattern) =>
      compilePattern(pattern as string),
    );
    const resolved = resolveSubscribeOptions(options, this.#subscriptionDefaults, this.#clock);
    if (resolved.group !== undefined) rejectOverlapInGroup(compiled);
    options.signal?.throwIfAborted();
    await this.connect();

    const subscription = new BusSubscription(
      this.#host(),
      compiled,
      handler as EventHandler,
      resolved,
    );
    const transportSubs: TransportSubscription[] = [];
    try {
      for (const pattern of compiled) {
        transportSubs.push(
          await this.transport.subscribe(pattern.source, {
            ...(resolved.group === undefined ? {} : { group: resolved.group }),
            ...(resolved.maxInFlight === undefined ? {} : { maxInFlight: resolved.maxInFlight }),
            concurrency: resolved.concurrency,
            ...(resolved.startFrom === undefined ? {} : { startFrom: resolved.startFrom }),
          }),
        );
      }
    } catch (error) {
      await Promise.allSettled(transportSubs.map((sub) => sub.unsubscribe()));
      throw toWatchtowerError(error);
    }
    if (this.#closed()) {
      // close() began while the transport subscriptions were being made: it cannot see them.
      await Promise.allSettled(transportSubs.map((sub) => sub.unsubscribe()));
      throw new ClosedError('the event bus is closed');
    }
    this.#subscriptions.add(subscription);
    const signal = options.signal;
    const onAbort = (): void => void subscription.unsubscribe();
    subscription.start(transportSubs, () => {
      this.#subscriptions.delete(subscription);
      // A long-lived signal shared by many subscriptions must not collect their listeners.
      signal?.removeEventListener('abort', onAbort);
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    return subscription;
  }

  /** Stops a subscription; resolves when its running handlers have finished. Idempotent. */
  unsubscribe(handle: SubscriptionHandle): Promise<void> {
    return handle.unsubscribe();
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof EventBusEvents>(
    name: K,
    listener: (...args: EventBusEvents[K]) => void,
  ): () => void {
    return this.#emitter.on(name, listener);
  }

  /** A snapshot of the counters and of the circuit breaker and publish queue. */
  stats(): EventBusStats {
    let activeHandlers = 0;
    for (const subscription of this.#subscriptions) activeHandlers += subscription.active;
    return {
      ...this.#counters,
      activeHandlers,
      publishesInFlight: this.#inFlight.size,
      subscriptions: this.#subscriptions.size,
      circuitBreaker: this.#breaker.stats(),
      backpressure: this.#queue.stats(),
    };
  }

  /** The publish circuit breaker's stats. */
  circuitBreakerStats(): CircuitBreakerStats {
    return this.#breaker.stats();
  }

  /** The publish queue's stats; `fillRatio()` is its fill level in [0, 1]. */
  backpressureStats(): BackpressureStats {
    return this.#queue.stats();
  }

  /** Asks the transport; never rejects. */
  healthCheck(): ReturnType<Transport['healthCheck']> {
    return this.transport.healthCheck().catch((error: unknown) => ({
      healthy: false,
      state: 'unknown',
      message: describeError(error),
    }));
  }

  /**
   * Graceful and idempotent: refuses new publishes (`CLOSED`), sends what is queued, stops
   * the subscriptions, waits for running handlers, then closes the transport, all within
   * `timeoutMs`. Every publish accepted before has settled by the end of that deadline:
   * those not confirmed by then (queued, in flight, waiting for a retry) reject with `CLOSED`,
   * whatever the transport does. Every step runs even when an earlier one fails; the first
   * failure rejects.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    let timeoutMs: number;
    try {
      checkOptionKeys(options, TRANSPORT_OPTION_KEYS.close, 'close options');
      timeoutMs = numberOption(
        'timeoutMs',
        options.timeoutMs ?? this.#closeTimeoutMs,
        NON_NEGATIVE,
      );
    } catch (error) {
      return Promise.reject(error);
    }
    this.#phase = 'closing';
    this.#closing = this.#close(timeoutMs).finally(() => {
      this.#phase = 'closed';
    });
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- publish path -------------------------------------------------------------------

  #withSource(metadata: EventMetadataInput | undefined): EventMetadataInput | undefined {
    if (this.#source === undefined || metadata?.source !== undefined) return metadata;
    return { ...metadata, source: this.#source };
  }

  /**
   * The schema of `type`; `fallback` when nothing is to be checked; a ValidationError when
   * strict validation with a catalog meets a type the catalog does not list.
   */
  #schemaFor<F>(type: string, fallback: F): StandardSchemaV1 | ValidationError | F {
    if (this.#catalog === undefined || this.#validation === 'ignore') return fallback;
    const schema = Object.hasOwn(this.#catalog, type) ? this.#catalog[type] : undefined;
    if (schema !== undefined) return schema;
    if (this.#validation === 'strict') {
      return new ValidationError(`unknown event type "${type}": it is not in the event catalog`);
    }
    return fallback;
  }

  #afterValidation(event: Event, outcome: SchemaOutcome): Promise<void> {
    // The payload travels as given (the schema's input shape): consumers run the schema and
    // hand its output to handlers. Sending the output would make a transforming schema
    // (string -> Date, say) fail on the consuming side.
    if (outcome.ok) return this.#enqueue(event);
    this.#counters.validationFailures++;
    if (this.#validation === 'strict') return Promise.reject(outcome.error);
    this.#logger.warn({ eventId: event.id, type: event.type }, outcome.error.message);
    return this.#enqueue(event);
  }

  #enqueue(event: Event): Promise<void> {
    // Written now, before admission: a payload that cannot be JSON (a BigInt, a cycle) is the
    // caller's mistake and is refused here, taking no queue slot and no breaker call. The
    // transport's own encodeEvent() then reuses this text (see #publishNow).
    let text = '';
    if (this.#encodes) {
      try {
        text = writeEvent(event);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    // Hot path: nothing waits ahead (so nothing is blocked either) and a send slot is free,
    // so the event goes straight out, in publish order, without an entry in the queue.
    if (this.#sweepTimer === undefined) this.#armSweep();
    const tick = this.#tick;
    if (
      this.#phase === 'open' &&
      this.#inFlight.size < this.#publishConcurrency &&
      this.#queue.size === 0 &&
      this.#connectionLost === undefined
    ) {
      return this.#sendAtOnce(event, text, tick);
    }
    return new Promise<void>((resolve, reject) => {
      const admitted = this.#queue.admit(new PublishEntry(event, text, tick, resolve, reject));
      if (admitted === undefined) this.#pump();
      else admitted.then(() => this.#pump(), reject);
    });
  }

  /**
   * Hands waiting publishes to the transport while send slots are free and the connection is
   * not reported lost.
   */
  #pump(): void {
    if (this.#connectionLost !== undefined) return;
    while (this.#inFlight.size < this.#publishConcurrency) {
      const entry = this.#queue.take();
      if (entry === undefined) return;
      this.#send(entry);
    }
  }

  // ---- publish timeouts and the connection ---------------------------------------------

  /**
   * The publish-timeout sweep: one timer for all publishes, not one per publish. Each step
   * counts a tick; a publish accepted `#sweepSteps` ticks ago has had `publishTimeoutMs` (at
   * most one step more) and is rejected with `TIMEOUT`, waiting or in flight. The sweep runs
   * only while publishes are unsettled and never keeps the process alive.
   */
  #armSweep(): void {
    this.#sweepTimer = this.#clock.setTimeout(() => this.#sweep(), this.#sweepMs);
    unrefTimer(this.#sweepTimer);
  }

  #sweep(): void {
    this.#sweepTimer = undefined;
    this.#tick++;
    const acceptedBefore = this.#tick - this.#sweepSteps;
    const expired = this.#inFlight.takeAcceptedBefore(acceptedBefore);
    for (
      let head = this.#queue.peek();
      head !== undefined && head.acceptedTick < acceptedBefore;
      head = this.#queue.peek()
    ) {
      expired.push(this.#queue.take() as PublishEntry);
    }
    for (const entry of expired) this.#timedOut(entry);
    if (expired.length > 0) this.#finishedSome();
    if (this.#inFlight.size > 0 || this.#queue.size > 0) this.#armSweep();
  }

  #timedOut(entry: PublishEntry): void {
    const lost = this.#connectionLost;
    const error = new TimeoutError(
      `the publish of ${entry.event.type} ${entry.event.id} was not confirmed within ` +
        `publishTimeoutMs (${this.#publishTimeoutMs} ms)` +
        (lost === undefined
          ? ''
          : `: the ${this.transport.info.name} transport's connection is lost (${lost.message})`) +
        '; it may still reach the broker',
      this.#publishTimeoutMs,
      lost === undefined ? undefined : { cause: lost },
    );
    entry.retry?.abort(error);
    this.#counters.publishFailed++;
    entry.reject(error);
  }

  #lostConnection(error: WatchtowerError | undefined): void {
    this.#connectionLost =
      error ?? new ConnectionError(`the ${this.transport.info.name} transport lost its connection`);
  }

  /**
   * The transport is connected again (or gave the connection up): retries waiting for it go,
   * the publish queue is sent, and (when it is back) an open circuit goes half-open so that trial calls decide at once, instead of
   * refusing publishes for the rest of `resetTimeoutMs` after a short outage.
   */
  #restoredConnection(restored: boolean): void {
    this.#connectionLost = undefined;
    // Given up: nothing is held for a connection that will not come back by itself; the next
    // publish makes the transport connect afresh, or fail with CONNECTION.
    if (restored) this.#breaker.halfOpen();
    for (const wake of [...this.#connectionWaiters]) wake();
    this.#pump();
  }

  /** Resolves once the connection is not reported lost; rejects when `signal` aborts. */
  #connectionBack(signal: AbortSignal): Promise<void> {
    if (this.#connectionLost === undefined) return RESOLVED;
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.#connectionWaiters.delete(done);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        this.#connectionWaiters.delete(done);
        reject(signal.reason);
      };
      this.#connectionWaiters.add(done);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** `transport.connect()`, tried again with backoff for up to `connectWaitMs`. */
  async #connectTransport(): Promise<void> {
    if (this.#connectWaitMs === 0) return this.transport.connect();
    const deadline = new Deadline(this.#clock, this.#connectWaitMs);
    const backoff = new Backoff(CONNECT_BACKOFF);
    for (;;) {
      try {
        await this.transport.connect();
        return;
      } catch (error) {
        const left = deadline.remaining();
        if (!isRetryableError(error) || left <= 0 || this.#closed()) {
          if (!isRetryableError(error) || this.#closed()) throw error;
          throw new ConnectionError(
            `the ${this.transport.info.name} transport could not connect within connectWaitMs ` +
              `(${this.#connectWaitMs} ms, ${backoff.failures + 1} attempts): ${describeError(error)}`,
            { cause: error },
          );
        }
        const wait = Math.min(left, backoff.next());
        await this.#closeScope.run((signal) => sleep(this.#clock, wait, signal));
      }
    }
  }

  /** Connects once; also used while closing, to send what was accepted before. */
  #ensureConnected(): Promise<void> {
    if (this.#connecting === undefined) {
      if (this.#phase === 'idle') this.#phase = 'connecting';
      this.#connecting = this.#connectTransport().then(
        () => {
          if (this.#phase === 'connecting') this.#phase = 'open';
        },
        (error: unknown) => {
          if (this.#phase === 'connecting') this.#phase = 'idle';
          this.#connecting = undefined;
          throw toWatchtowerError(error, ErrorCode.CONNECTION);
        },
      );
    }
    return this.#connecting;
  }

  /** `transport.publish`, connecting first when the bus has not connected yet. */
  #transportPublish(event: Event, text: string): Promise<void> {
    if (this.#phase === 'open') return this.#publishNow(event, text);
    return this.#ensureConnected().then(() => this.#publishNow(event, text));
  }

  /**
   * `transport.publish`, with the event's text primed for the length of the call: a transport
   * encodes inside `publish()`, and its `encodeEvent` returns this text instead of encoding
   * the event a second time.
   */
  #publishNow(event: Event, text: string): Promise<void> {
    if (!this.#encodes) return this.transport.publish(event);
    primeEncoding(event, text);
    try {
      return this.transport.publish(event);
    } finally {
      clearEncoding();
    }
  }

  /**
   * Sends one accepted publish through the circuit breaker and the retry policy, holding a
   * send slot until it settles; settles the caller's promise with the outcome, unless
   * `close()` has cut it off by then (the caller already has `CLOSED`).
   *
   * The path every publish takes (the first attempt succeeds) costs one `then` on the
   * transport's promise; only a failure enters the async retry path.
   */
  #send(entry: PublishEntry): void {
    this.#inFlight.add(entry);
    let sent: Promise<void>;
    try {
      this.#breaker.acquire();
      if (this.#receipts !== undefined && this.#phase === 'open') {
        this.#publishWithReceipt(entry, this.#receipts);
        return;
      }
      sent = this.#transportPublish(entry.event, entry.text);
    } catch (error) {
      this.#notSent(entry, error);
      return;
    }
    this.#settleWith(entry, sent);
  }

  /**
   * A publish the breaker refused, or whose transport threw at once. While the circuit is
   * half-open its trial calls decide: a publish that finds every trial slot taken waits for
   * their outcome instead of failing, so the publishes held through an outage do not all
   * fail with `CIRCUIT_OPEN` the moment the connection is back.
   */
  #notSent(entry: PublishEntry, error: unknown): void {
    if (isWatchtowerError(error, ErrorCode.CIRCUIT_OPEN) && this.#breaker.state === 'half-open') {
      this.#awaitingTrial.push(entry);
      return;
    }
    void this.#sendFailed(entry, error);
  }

  /** A publish the breaker let through has its outcome: waiting publishes may go now. */
  #afterOutcome(): void {
    if (this.#awaitingTrial.size > 0) this.#sendAwaiting();
  }

  #sendAwaiting(): void {
    for (let entry = this.#awaitingTrial.peek(); entry !== undefined;) {
      if (entry.inFlight && this.#breaker.state === 'half-open' && !this.#breaker.admits()) return;
      this.#awaitingTrial.shift();
      // Timed out or cut off by close() while it waited: its caller has been told.
      if (entry.inFlight) {
        let sent: Promise<void>;
        try {
          this.#breaker.acquire();
          sent = this.#transportPublish(entry.event, entry.text);
        } catch (error) {
          void this.#sendFailed(entry, error);
          entry = this.#awaitingTrial.peek();
          continue;
        }
        this.#settleWith(entry, sent);
      }
      entry = this.#awaitingTrial.peek();
    }
  }

  /**
   * {@link #send} on the hot path (open, a slot free, nothing queued), where the entry is
   * made only when something is left to wait for: a transport that answers with a promise
   * already seen to resolve (core NATS and memory publishes share one) is done at once,
   * without an entry, a reaction or a microtask.
   */
  #sendAtOnce(event: Event, text: string, tick: number): Promise<void> {
    if (this.#receipts !== undefined)
      return this.#sendWithReceipt(event, text, tick, this.#receipts);
    let sent: Promise<void>;
    try {
      this.#breaker.acquire();
      sent = this.#publishNow(event, text);
    } catch (error) {
      return new Promise<void>((resolve, reject) => {
        const entry = new PublishEntry(event, text, tick, resolve, reject);
        this.#inFlight.add(entry);
        this.#notSent(entry, error);
      });
    }
    if (sent === this.#resolvedSend) {
      this.#breaker.recordSuccess();
      this.#afterOutcome();
      this.#counters.published++;
      return RESOLVED;
    }
    return new Promise<void>((resolve, reject) => {
      const entry = new PublishEntry(event, text, tick, resolve, reject);
      this.#inFlight.add(entry);
      this.#settleWith(entry, sent);
    });
  }

  /**
   * {@link #sendAtOnce} for a transport with `publishTo`: the entry is the receipt it reports
   * to, so a publish costs the caller's promise and no promise, reaction or microtask more.
   */
  #sendWithReceipt(event: Event, text: string, tick: number, receipts: ReceiptHost): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry = new PublishEntry(event, text, tick, resolve, reject);
      this.#inFlight.add(entry);
      try {
        this.#breaker.acquire();
      } catch (error) {
        this.#notSent(entry, error);
        return;
      }
      this.#publishWithReceipt(entry, receipts);
    });
  }

  /** `transport.publishTo` with `entry` as the receipt, the event's text primed (open bus). */
  #publishWithReceipt(entry: PublishEntry, receipts: ReceiptHost): void {
    entry.receiptHost = receipts;
    if (this.#encodes) primeEncoding(entry.event, entry.text);
    try {
      this.transport.publishTo?.(entry.event, entry);
    } catch (error) {
      // The contract says it does not throw; one that does has failed this publish.
      entry.failed(error);
    } finally {
      if (this.#encodes) clearEncoding();
    }
  }

  /**
   * The last promise a transport publish returned that resolved. A promise never changes its
   * state once settled, so a publish that returns this one again has succeeded.
   */
  #resolvedSend: Promise<void> | undefined;

  #settleWith(entry: PublishEntry, sent: Promise<void>): void {
    sent.then(
      () => {
        this.#resolvedSend = sent;
        this.#sent(entry);
      },
      (error: unknown) => this.#sendFailed(entry, error),
    );
  }

  #sent(entry: PublishEntry): void {
    // Recorded even for a publish close() cut off: every acquire() gets its outcome.
    this.#breaker.recordSuccess();
    this.#afterOutcome();
    if (!this.#finish(entry)) return;
    this.#counters.published++;
    entry.resolve();
  }

  /**
   * The first attempt failed: retries per the policy, then settles. Never rejects. The
   * breaker hears one outcome per publish it let through, after the retries: a blip that a
   * retry rides out (a broker just back, its streams not yet ready) is not a failure.
   */
  async #sendFailed(entry: PublishEntry, firstError: unknown): Promise<void> {
    if (isWatchtowerError(firstError, ErrorCode.CIRCUIT_OPEN)) {
      // Refused by the breaker: nothing was sent, and there is no outcome to record.
      if (!this.#finish(entry)) return;
      this.#counters.publishFailed++;
      entry.reject(firstError);
      return;
    }
    let failure: unknown = firstError;
    let failed = true;
    // Timed out or cut off by close() already (its caller has been told): no retry.
    if (entry.inFlight) {
      try {
        await this.#retryPublish(entry, firstError);
        failed = false;
      } catch (error) {
        failure = error;
      }
    }
    if (failed) this.#breaker.recordFailure(failure);
    else this.#breaker.recordSuccess();
    this.#afterOutcome();
    if (!this.#finish(entry)) return;
    if (failed) {
      this.#counters.publishFailed++;
      entry.reject(failure);
    } else {
      this.#counters.published++;
      entry.resolve();
    }
  }

  /**
   * Frees the send slot of a publish that has settled and lets the next one go. False when
   * close() cut the publish off first: its caller has been told already.
   */
  #finish(entry: PublishEntry): boolean {
    if (!this.#inFlight.delete(entry)) return false;
    this.#finishedSome();
    return true;
  }

  /** Send slots were freed: the next publishes go, and close() hears when all are done. */
  #finishedSome(): void {
    this.#pump();
    if (this.#flushed !== undefined && this.#inFlight.size === 0 && this.#queue.size === 0) {
      this.#flushed();
    }
  }

  /**
   * Retries a failed first attempt per the policy; rejects with the final error. While the
   * transport reports its connection lost, each retry first waits for it to come back (the
   * publish timeout and close() bound the wait).
   */
  async #retryPublish(entry: PublishEntry, firstError: unknown): Promise<void> {
    const { event, text } = entry;
    if (this.#retry.maxAttempts === 1 || !isRetryableError(firstError)) {
      throw toWatchtowerError(firstError);
    }
    // The first attempt already ran on the fast path; replaying its failure lets the policy
    // count it and wait before the first real retry. Each retrying publish has its own
    // signal (a shared one would collect a listener per retry).
    let replayed = false;
    const retry = this.#closeScope.open();
    entry.retry = retry;
    try {
      await this.#retry.execute(
        async () => {
          if (!replayed) {
            replayed = true;
            throw firstError;
          }
          await this.#connectionBack(retry.signal);
          await this.#transportPublish(event, text);
        },
        { signal: retry.signal },
      );
    } catch (error) {
      throw toWatchtowerError(error);
    } finally {
      entry.retry = undefined;
      this.#closeScope.release(retry);
    }
  }

  // ---- consume path --------------------------------------------------------------------

  /** What a subscription needs from its bus; kept off the public surface. */
  #host(): SubscriptionHost {
    return {
      transport: this.transport,
      clock: this.#clock,
      closeScope: this.#closeScope,
      writeRetry: this.#retry,
      needsValidation: this.#catalog !== undefined && this.#validation !== 'ignore',
      counters: this.#counters,
      reportError: (error, context) => this.#reportError(error, context),
      log: this.#logger,
      emitDeadLetter: (letter) => this.#emitter.emit('deadLetter', letter),
      telemetry: this.#telemetry,
      validateConsumed: (event) => this.#validateConsumed(event),
    };
  }

  #reportError(error: unknown, context: { subscription?: string; eventId?: string }): void {
    const wrapped = toWatchtowerError(error);
    if (this.#emitter.hasListeners('error')) this.#emitter.emit('error', wrapped, context);
    else this.#logger.error({ code: wrapped.code, ...context }, wrapped.message);
  }

  /** Synchronous schemas answer synchronously, so the consume fast path stays synchronous. */
  #validateConsumed(event: Event): ConsumedCheck | Promise<ConsumedCheck> {
    const schema = this.#schemaFor(event.type, NOT_SET);
    if (schema === NOT_SET) return { event };
    if (schema instanceof ValidationError) {
      this.#counters.validationFailures++;
      return { error: schema };
    }
    const outcome = checkPayload(schema, event.payload, event.type);
    return outcome instanceof Promise
      ? outcome.then((settled) => this.#afterConsumedCheck(event, settled))
      : this.#afterConsumedCheck(event, outcome);
  }

  #afterConsumedCheck(event: Event, outcome: SchemaOutcome): ConsumedCheck {
    if (outcome.ok) {
      return {
        event: outcome.value === event.payload ? event : { ...event, payload: outcome.value },
      };
    }
    this.#counters.validationFailures++;
    if (this.#validation === 'strict') return { error: outcome.error };
    this.#logger.warn({ eventId: event.id, type: event.type }, outcome.error.message);
    return { event };
  }

  // ---- close ----------------------------------------------------------------------------

  /**
   * The steps of `close()`, sharing one deadline. Each step is bounded by what is left of it,
   * so that a transport that does not keep its own limits cannot hold the bus's close up for
   * longer than `timeoutMs` plus the transport's close margin.
   */
  async #close(timeoutMs: number): Promise<void> {
    const deadline = new Deadline(this.#clock, timeoutMs);
    const remaining = (): number => deadline.remaining();
    const failures: unknown[] = [];

    // 1. Send what was accepted. What is not confirmed by the deadline is cut off: every
    // publish accepted before close settles by then, whatever the transport does.
    if (this.#queue.size > 0 || this.#inFlight.size > 0) {
      const flushed = await this.#waitFor((resolve) => (this.#flushed = resolve), remaining());
      this.#flushed = undefined;
      if (!flushed) {
        const cutOff = new ClosedError('the event bus closed before this publish was confirmed');
        this.#closeScope.abort(cutOff);
        for (const entry of this.#queue.close(new ClosedError('the event bus is closed'))) {
          this.#counters.publishFailed++;
          entry.reject(new ClosedError('the event bus closed before this event was sent'));
        }
        for (const entry of this.#inFlight.takeAll()) {
          entry.retry?.abort(cutOff);
          this.#counters.publishFailed++;
          entry.reject(
            new ClosedError('the event bus closed before the transport confirmed this publish'),
          );
        }
      }
    }
    this.#queue.close(new ClosedError('the event bus is closed'));

    // 2. Stop pulling and wait for running handlers.
    const subscriptions = [...this.#subscriptions];
    const stopped = await deadline.within(
      Promise.allSettled(subscriptions.map((sub) => sub.stop(remaining()))),
    );
    if (stopped !== TIMED_OUT) {
      for (const result of stopped) if (result.status === 'rejected') failures.push(result.reason);
    }

    // 3. Close the transport.
    this.#closeScope.abort(new ClosedError('the event bus is closed'));
    try {
      const left = remaining();
      const closed = await within(
        this.#clock,
        left + CLOSE_MARGIN_MS,
        this.transport.close({ timeoutMs: left }),
      );
      if (closed === TIMED_OUT) {
        failures.push(
          new TimeoutError(
            `the ${this.transport.info.name} transport did not close within ${left} ms`,
            left,
          ),
        );
      }
    } catch (error) {
      failures.push(error);
    }
    for (const remove of this.#removeTransportListeners) remove();
    this.#telemetry?.close();
    if (this.#sweepTimer !== undefined) this.#clock.clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#emitter.removeAll();
    if (failures.length > 0) throw toWatchtowerError(failures[0]);
  }

  /** Resolves true when `arm`'s callback fires, false when `ms` passes first. */
  #waitFor(arm: (resolve: () => void) => void, ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = this.#clock.setTimeout(() => resolve(false), ms);
      arm(() => {
        this.#clock.clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

// ---- subscriptions ------------------------------------------------------------------------

function resolveSubscribeOptions(
  options: SubscribeOptions,
  defaults: NonNullable<EventBusOptions['subscriptionDefaults']>,
  clock: Clock,
): ResolvedSubscribeOptions {
  rejectUnknownOptions(options, SUBSCRIBE_OPTION_KEYS, 'subscribe()');
  rejectUnknownOptions(defaults, SUBSCRIPTION_DEFAULT_KEYS, 'subscriptionDefaults');
  if (
    options.group !== undefined &&
    (typeof options.group !== 'string' || options.group.length === 0)
  ) {
    throw configError('group', 'must be a non-empty string');
  }
  const maxInFlight = options.maxInFlight ?? defaults.maxInFlight;
  return {
    group: options.group,
    concurrency: integerOption(
      'concurrency',
      options.concurrency ?? defaults.concurrency ?? DEFAULT_EVENT_BUS_OPTIONS.concurrency,
      1,
    ),
    timeoutMs: numberOption(
      'timeoutMs',
      options.timeoutMs ?? defaults.timeoutMs ?? DEFAULT_EVENT_BUS_OPTIONS.timeoutMs,
      NON_NEGATIVE,
    ),
    retry: new RetryPolicy({
      clock,
      ...recordOption('subscriptionDefaults.retry', defaults.retry, AN_OPTIONS_OBJECT),
      ...recordOption('retry', options.retry, AN_OPTIONS_OBJECT),
    }),
    maxInFlight:
      maxInFlight === undefined ? undefined : integerOption('maxInFlight', maxInFlight, 1),
    startFrom: options.startFrom,
    name: options.name,
  };
}

// ---- helpers ------------------------------------------------------------------------------

/**
 * `runPayloadSchema`, with a schema that throws (a bug in a refinement, say) reported as a failed
 * validation: publish then rejects with `VALIDATION` instead of throwing, and a consumed
 * event is dead-lettered instead of being left unsettled.
 */
function checkPayload(
  schema: StandardSchemaV1,
  value: unknown,
  type: string,
): SchemaOutcome | Promise<SchemaOutcome> {
  try {
    const outcome = runPayloadSchema(schema, value, type);
    return outcome instanceof Promise
      ? outcome.catch((error: unknown) => schemaThrew(error, type))
      : outcome;
  } catch (error) {
    return schemaThrew(error, type);
  }
}

function schemaThrew(error: unknown, type: string): SchemaOutcome {
  return {
    ok: false,
    error: new ValidationError(
      `payload of "${type}": the schema threw: ${describeError(error)}`,
      [],
      { cause: error },
    ),
  };
}

/**
 * An event that matches two patterns of one subscription is handled once: the bus acks the
 * copy that arrives on the later pattern. In a group that copy may be the only one (brokers
 * such as Redis share one group across the patterns), so acking it would lose the event:
 * overlapping patterns in a group are refused instead.
 */
function rejectOverlapInGroup(patterns: readonly CompiledPattern[]): void {
  for (let i = 0; i < patterns.length; i++) {
    for (let j = i + 1; j < patterns.length; j++) {
      const a = patterns[i] as CompiledPattern;
      const b = patterns[j] as CompiledPattern;
      if (patternsOverlap(a, b)) {
        throw configError(
          'eventTypes',
          `"${a.source}" and "${b.source}" match some of the same events; in a group, ` +
            'subscribe with one pattern that covers both, or subscribe to them separately',
        );
      }
    }
  }
}

function checkedEvent(event: Event): Event {
  assertEvent(event);
  return event;
}
