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
  ErrorCode,
  TimeoutError,
  ValidationError,
  configError,
  describeError,
  isWatchtowerError,
  toWatchtowerError,
  WatchtowerError,
} from './errors.js';
import { assertEventType, createEvent, type Event, type EventMetadataInput } from './event.js';
import { compilePattern, patternsOverlap, type CompiledPattern } from './pattern.js';
import { RetryPolicy, isRetryableError, type RetryPolicyOptions } from './retry-policy.js';
import {
  runSchema,
  type EventCatalog,
  type SchemaInput,
  type SchemaOutcome,
  type SchemaOutput,
  type StandardSchemaV1,
  type TypesMatching,
} from './schema.js';
import type {
  DeadLetter,
  DeadLetterReason,
  Delivery,
  EventDelivery,
  StartPosition,
  SubscriptionHandle,
  Transport,
  TransportSubscription,
} from './transport.js';
import { TRANSPORT_OPTION_KEYS } from './transport.js';
import { checkInteger, checkNumber, checkOptionKeys, rejectUnknownOptions } from './options.js';

/** How payloads that fail their schema are treated. */
export type ValidationMode = 'strict' | 'warn' | 'ignore';

/** Where the bus reports what it cannot throw to a caller. */
export interface Logger {
  warn(message: string, details?: Record<string, unknown>): void;
  error(message: string, details?: Record<string, unknown>): void;
}

/** Writes warnings and errors to the console. */
export const consoleLogger: Logger = {
  warn: (message, details) => console.warn(`[watchtower] ${message}`, details ?? ''),
  error: (message, details) => console.error(`[watchtower] ${message}`, details ?? ''),
};

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
   * Redelivery of failed events: `maxAttempts` is how many times an event is delivered again
   * after its first failure (0 = dead-letter on the first failure); the delay before each
   * redelivery follows the strategy. Then the event goes to the dead-letter queue.
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

/** What a handler learns about the delivery besides the event. */
export interface HandlerContext {
  /** 1 on first delivery. */
  readonly attempt: number;
  /** Aborts when the handler times out or the bus closes without waiting for it. */
  readonly signal: AbortSignal;
  /** The subscription's name. */
  readonly subscription: string;
}

/** Handles one event. Throwing (or rejecting) fails the delivery: it is retried, then dead-lettered. */
export type EventHandler<E extends Event = Event> = (event: E, context: HandlerContext) => unknown;

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
  /** The publish queue. */
  backpressure?: BackpressureOptions;
  /**
   * Retries of a failed publish (retryable errors only).
   * @defaultValue `DEFAULT_RETRY_OPTIONS`
   */
  retry?: RetryPolicyOptions;
  /**
   * Publishes sent to the transport at once and not yet confirmed.
   * @defaultValue 256
   */
  publishConcurrency?: number;
  /** Defaults for every `subscribe` call. */
  subscriptionDefaults?: Pick<
    SubscribeOptions,
    'concurrency' | 'timeoutMs' | 'retry' | 'maxInFlight'
  >;
  /**
   * How long `close()` waits for queued publishes and running handlers.
   * @defaultValue 10000
   */
  closeTimeoutMs?: number;
  /** @defaultValue `consoleLogger` */
  logger?: Logger;
  /** @defaultValue `systemClock` */
  clock?: Clock;
}

/** Defaults of {@link EventBusOptions} and {@link SubscribeOptions}. */
export const DEFAULT_EVENT_BUS_OPTIONS = {
  validation: 'strict',
  publishConcurrency: 256,
  closeTimeoutMs: 10_000,
  concurrency: 1,
  timeoutMs: 30_000,
} as const;

/** A snapshot from {@link EventBus.stats}. */
export interface EventBusStats {
  /** Publishes confirmed by the transport. */
  published: number;
  /** Publishes that rejected after admission (transport failure, circuit open, dropped). */
  publishFailed: number;
  /** Deliveries received from the transport. */
  received: number;
  /** Deliveries handled and acked. */
  handled: number;
  /** Handler failures (thrown, rejected or timed out). */
  handlerFailures: number;
  /** Failed deliveries handed back for another attempt. */
  retried: number;
  /** Events and malformed messages written to the dead-letter queue. */
  deadLettered: number;
  /** Payloads that failed their schema (publish and consume). */
  validationFailures: number;
  /** Deliveries whose bytes did not decode. */
  malformed: number;
  /** Handlers running now. */
  activeHandlers: number;
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

interface PublishEntry {
  readonly event: Event;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

const NOT_SET = Symbol('not set');

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
  'closeTimeoutMs',
  'logger',
  'clock',
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

type Counters = Omit<
  EventBusStats,
  'circuitBreaker' | 'backpressure' | 'activeHandlers' | 'subscriptions'
>;

/**
 * The Subscriber: publish and subscribe over any {@link Transport}, with schema validation,
 * backpressure, a circuit breaker and retries on publish, and per-subscription concurrency,
 * timeouts, redelivery and dead-lettering on consume. Nothing is acked that was not handled
 * or dead-lettered.
 */
export class EventBus<C extends EventCatalog = EventCatalog> implements AsyncDisposable {
  readonly transport: Transport;
  readonly #catalog: Readonly<Record<string, StandardSchemaV1>> | undefined;
  readonly #validation: ValidationMode;
  readonly #source: string | undefined;
  readonly #breaker: CircuitBreaker;
  readonly #queue: BackpressureController<PublishEntry>;
  readonly #retry: RetryPolicy;
  readonly #publishConcurrency: number;
  readonly #subscriptionDefaults: NonNullable<EventBusOptions['subscriptionDefaults']>;
  readonly #closeTimeoutMs: number;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #emitter = new Emitter<EventBusEvents>();
  readonly #subscriptions = new Set<BusSubscription>();
  readonly #closeController = new AbortController();
  readonly #counters: Counters = {
    published: 0,
    publishFailed: 0,
    received: 0,
    handled: 0,
    handlerFailures: 0,
    retried: 0,
    deadLettered: 0,
    validationFailures: 0,
    malformed: 0,
  };
  #connecting: Promise<void> | undefined;
  /** Set once `transport.connect()` has resolved: publishes then skip the connect step. */
  #connected = false;
  #closing: Promise<void> | undefined;
  #flushed: (() => void) | undefined;
  #removeTransportListener: (() => void) | undefined;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: EventBusOptions<C>) {
    if (options === undefined || typeof options.transport?.publish !== 'function') {
      throw configError('transport', 'a Transport is required');
    }
    rejectUnknownOptions(options, ['transport', ...EVENT_BUS_OPTION_KEYS], 'EventBus');
    this.transport = options.transport;
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
    this.#publishConcurrency = positiveInteger(
      'publishConcurrency',
      options.publishConcurrency ?? DEFAULT_EVENT_BUS_OPTIONS.publishConcurrency,
    );
    this.#closeTimeoutMs = nonNegative(
      'closeTimeoutMs',
      options.closeTimeoutMs ?? DEFAULT_EVENT_BUS_OPTIONS.closeTimeoutMs,
    );
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? consoleLogger;
    this.#subscriptionDefaults = options.subscriptionDefaults ?? {};
    // Checked here so that a bad default fails at construction, not at the first subscribe.
    resolveSubscribeOptions({}, this.#subscriptionDefaults, this.#clock);

    this.#breaker = new CircuitBreaker({
      clock: this.#clock,
      name: 'publish',
      ...options.circuitBreaker,
    });
    this.#retry = new RetryPolicy({ clock: this.#clock, ...options.retry });
    this.#queue = new BackpressureController<PublishEntry>({
      clock: this.#clock,
      ...options.backpressure,
    });
    this.#queue.on('dropped', (entry, error) => {
      this.#counters.publishFailed++;
      entry.reject(error);
    });
    this.#queue.on('warning', (stats) => {
      this.#logger.warn('publish queue is filling up', { ...stats, fillRatio: stats.fillRatio() });
      this.#emitter.emit('backpressureWarning', stats);
    });
    this.#breaker.on('stateChange', (to, from) =>
      this.#emitter.emit('circuitStateChange', to, from),
    );
    this.#removeTransportListener = this.transport.on?.('error', (error) =>
      this.#reportError(error, {}),
    );
  }

  /** Connects the transport. Called on first use; calling it early surfaces errors early. */
  connect(): Promise<void> {
    if (this.#closing !== undefined)
      return Promise.reject(new ClosedError('the event bus is closed'));
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
    if (this.#closing !== undefined)
      return Promise.reject(new ClosedError('the event bus is closed'));
    let event: Event;
    try {
      event =
        typeof eventOrType === 'string'
          ? createEvent(eventOrType, payload, this.#withSource(metadata))
          : checkEvent(eventOrType);
    } catch (error) {
      return Promise.reject(error);
    }
    const schema = this.#schemaFor(event.type, NOT_SET);
    if (schema === NOT_SET) return this.#enqueue(event);
    if (schema instanceof ValidationError) {
      this.#counters.validationFailures++;
      return Promise.reject(schema);
    }
    const outcome = checkPayload(schema, event.payload, `payload of "${event.type}"`);
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
    if (this.#closing !== undefined) throw new ClosedError('the event bus is closed');
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
            ...(resolved.startFrom === undefined ? {} : { startFrom: resolved.startFrom }),
          }),
        );
      }
    } catch (error) {
      await Promise.allSettled(transportSubs.map((sub) => sub.unsubscribe()));
      throw toWatchtowerError(error);
    }
    if (this.#closing !== undefined) {
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
   * `timeoutMs`. Every step runs even when an earlier one fails; the first failure rejects.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    let timeoutMs: number;
    try {
      checkOptionKeys(options, TRANSPORT_OPTION_KEYS.close, 'close options');
      timeoutMs = nonNegative('timeoutMs', options.timeoutMs ?? this.#closeTimeoutMs);
    } catch (error) {
      return Promise.reject(error);
    }
    this.#closing = this.#close(timeoutMs);
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
    this.#logger.warn(outcome.error.message, { eventId: event.id, type: event.type });
    return this.#enqueue(event);
  }

  #enqueue(event: Event): Promise<void> {
    const queue = this.#queue;
    // Hot path: nothing waits ahead and a send slot is free, so the event goes straight out
    // (in publish order, since nothing is queued) without an entry in the queue.
    if (
      this.#connected &&
      queue.size - queue.waiting < this.#publishConcurrency &&
      queue.tryAcquire()
    ) {
      return this.#send(event);
    }
    return new Promise<void>((resolve, reject) => {
      const admitted = queue.admit({ event, resolve, reject });
      if (admitted === undefined) this.#pump();
      else admitted.then(() => this.#pump(), reject);
    });
  }

  #pump(): void {
    const queue = this.#queue;
    while (queue.size - queue.waiting < this.#publishConcurrency) {
      const entry = queue.take();
      if (entry === undefined) return;
      this.#send(entry.event).then(entry.resolve, entry.reject);
    }
  }

  /** Connects once; also used while closing, to send what was accepted before. */
  #ensureConnected(): Promise<void> {
    this.#connecting ??= this.transport.connect().then(
      () => {
        this.#connected = true;
      },
      (error: unknown) => {
        this.#connecting = undefined;
        throw toWatchtowerError(error, ErrorCode.CONNECTION);
      },
    );
    return this.#connecting;
  }

  /** `transport.publish`, connecting first when the bus has not connected yet. */
  #transportPublish(event: Event): Promise<void> {
    if (this.#connected) return this.transport.publish(event);
    return this.#ensureConnected().then(() => this.transport.publish(event));
  }

  /**
   * Sends one event whose queue slot is held, through the circuit breaker and the retry
   * policy; frees the slot when done. Resolves when the transport confirmed it, rejects with
   * the final error.
   *
   * Not async: the path every publish takes (the first attempt succeeds) costs one `then` on
   * the transport's promise; only a failure enters the async retry path.
   */
  #send(event: Event): Promise<void> {
    let sent: Promise<void>;
    try {
      this.#breaker.acquire();
      sent = this.#transportPublish(event);
    } catch (error) {
      return this.#sendFailed(event, error);
    }
    return sent.then(this.#onSent, (error: unknown) => this.#sendFailed(event, error));
  }

  readonly #onSent = (): void => {
    this.#breaker.recordSuccess();
    this.#counters.published++;
    this.#sendDone();
  };

  /** The first attempt failed: retries per the policy; rejects with the final error. */
  async #sendFailed(event: Event, firstError: unknown): Promise<void> {
    try {
      await this.#retryPublish(event, firstError);
      this.#counters.published++;
    } catch (error) {
      this.#counters.publishFailed++;
      throw error;
    } finally {
      this.#sendDone();
    }
  }

  /** Frees the send slot of a publish that has settled. */
  #sendDone(): void {
    this.#queue.release();
    if (this.#flushed !== undefined && this.#queue.size === 0) this.#flushed();
    this.#pump();
  }

  /** Retries a failed first attempt per the policy; rejects with the final error. */
  async #retryPublish(event: Event, firstError: unknown): Promise<void> {
    if (isWatchtowerError(firstError, ErrorCode.CIRCUIT_OPEN)) throw firstError;
    this.#breaker.recordFailure(firstError);
    if (this.#retry.maxAttempts === 0 || !isRetryableError(firstError)) {
      throw toWatchtowerError(firstError);
    }
    // The first attempt already ran on the fast path; replaying its failure lets the policy
    // count it and wait before the first real retry.
    let replayed = false;
    try {
      await this.#retry.execute(
        async () => {
          if (!replayed) {
            replayed = true;
            throw firstError;
          }
          this.#breaker.acquire();
          try {
            await this.#transportPublish(event);
          } catch (error) {
            this.#breaker.recordFailure(error);
            throw error;
          }
          this.#breaker.recordSuccess();
        },
        {
          signal: this.#closeController.signal,
          isRetryable: (error) =>
            !isWatchtowerError(error, ErrorCode.CIRCUIT_OPEN) && isRetryableError(error),
        },
      );
    } catch (error) {
      throw toWatchtowerError(error);
    }
  }

  // ---- consume path --------------------------------------------------------------------

  /** What a subscription needs from its bus; kept off the public surface. */
  #host(): SubscriptionHost {
    return {
      transport: this.transport,
      clock: this.#clock,
      closeSignal: this.#closeController.signal,
      writeRetry: this.#retry,
      needsValidation: this.#catalog !== undefined && this.#validation !== 'ignore',
      counters: this.#counters,
      reportError: (error, context) => this.#reportError(error, context),
      emitDeadLetter: (letter) => this.#emitter.emit('deadLetter', letter),
      validateConsumed: (event) => this.#validateConsumed(event),
    };
  }

  #reportError(error: unknown, context: { subscription?: string; eventId?: string }): void {
    const wrapped = toWatchtowerError(error);
    if (this.#emitter.hasListeners('error')) this.#emitter.emit('error', wrapped, context);
    else this.#logger.error(wrapped.message, { code: wrapped.code, ...context });
  }

  /** Synchronous schemas answer synchronously, so the consume fast path stays synchronous. */
  #validateConsumed(event: Event): ConsumedCheck | Promise<ConsumedCheck> {
    const schema = this.#schemaFor(event.type, NOT_SET);
    if (schema === NOT_SET) return { event };
    if (schema instanceof ValidationError) {
      this.#counters.validationFailures++;
      return { error: schema };
    }
    const outcome = checkPayload(schema, event.payload, `payload of "${event.type}"`);
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
    this.#logger.warn(outcome.error.message, { eventId: event.id, type: event.type });
    return { event };
  }

  // ---- close ----------------------------------------------------------------------------

  async #close(timeoutMs: number): Promise<void> {
    const deadline = this.#clock.now() + timeoutMs;
    const remaining = (): number => Math.max(0, deadline - this.#clock.now());
    const failures: unknown[] = [];

    // 1. Send what was accepted.
    if (this.#queue.size > 0) {
      const flushed = await this.#waitFor((resolve) => (this.#flushed = resolve), remaining());
      this.#flushed = undefined;
      if (!flushed) {
        this.#closeController.abort(
          new ClosedError('the event bus closed before this publish was confirmed'),
        );
        for (const entry of this.#queue.close(new ClosedError('the event bus is closed'))) {
          this.#counters.publishFailed++;
          entry.reject(new ClosedError('the event bus closed before this event was sent'));
        }
      }
    }
    this.#queue.close(new ClosedError('the event bus is closed'));

    // 2. Stop pulling and wait for running handlers.
    const subscriptions = [...this.#subscriptions];
    const stopped = await Promise.allSettled(subscriptions.map((sub) => sub.stop(remaining())));
    for (const result of stopped) if (result.status === 'rejected') failures.push(result.reason);

    // 3. Close the transport.
    if (!this.#closeController.signal.aborted)
      this.#closeController.abort(new ClosedError('the event bus is closed'));
    try {
      await this.transport.close({ timeoutMs: remaining() });
    } catch (error) {
      failures.push(error);
    }
    this.#removeTransportListener?.();
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

interface ResolvedSubscribeOptions {
  group: string | undefined;
  concurrency: number;
  timeoutMs: number;
  retry: RetryPolicy;
  maxInFlight: number | undefined;
  startFrom: StartPosition | undefined;
  name: string | undefined;
}

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
    concurrency: positiveInteger(
      'concurrency',
      options.concurrency ?? defaults.concurrency ?? DEFAULT_EVENT_BUS_OPTIONS.concurrency,
    ),
    timeoutMs: nonNegative(
      'timeoutMs',
      options.timeoutMs ?? defaults.timeoutMs ?? DEFAULT_EVENT_BUS_OPTIONS.timeoutMs,
    ),
    retry: new RetryPolicy({ clock, ...defaults.retry, ...options.retry }),
    maxInFlight:
      maxInFlight === undefined ? undefined : positiveInteger('maxInFlight', maxInFlight),
    startFrom: options.startFrom,
    name: options.name,
  };
}

/** A consumed event after its schema: the (possibly transformed) event, or why it failed. */
type ConsumedCheck = { event: Event } | { error: ValidationError };

/** What a subscription uses of its bus. */
interface SubscriptionHost {
  readonly transport: Transport;
  readonly clock: Clock;
  /** Aborts when the bus closes: ends retry waits. */
  readonly closeSignal: AbortSignal;
  /** Retries writes that must not be given up easily (dead letters). */
  readonly writeRetry: RetryPolicy;
  readonly needsValidation: boolean;
  /** The bus's counters, incremented in place (a plain field store on the hot path). */
  readonly counters: Counters;
  reportError(error: unknown, context: { subscription?: string; eventId?: string }): void;
  emitDeadLetter(letter: DeadLetter): void;
  validateConsumed(event: Event): ConsumedCheck | Promise<ConsumedCheck>;
}

/** A running handler, watched for its deadline. */
/**
 * One handler call: its context, and what the timeout sweep needs. A class with a prototype
 * getter, so the hot path allocates one small object per call and an AbortController only
 * when the handler reads `signal`.
 */
class Running implements HandlerContext {
  controller: AbortController | undefined = undefined;
  timedOut: ((error: TimeoutError) => void) | undefined = undefined;
  /** Set when the handler turns out to be asynchronous; the sweep times it out after it. */
  deadline = Number.POSITIVE_INFINITY;

  constructor(
    /** The delivery (or a retry's count): read only if asked, as brokers may parse it. */
    private readonly source: { readonly attempt: number },
    readonly subscription: string,
  ) {}

  get attempt(): number {
    return this.source.attempt;
  }

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }
}

/**
 * Deliveries beyond maxAttempts + 1 that an event may get before it is taken for one that
 * never settles. A consumer that stops hands back what it had fetched but not yet handed to a
 * handler, and a broker that counts every delivery (JetStream) counts those too: an event
 * caught that way in a couple of restarts still gets all its attempts.
 */
const UNSEEN_DELIVERIES = 2;

/** What `#runHandler` returns when the handler finished synchronously without throwing. */
const DONE = Symbol('done');

/** A handler still running; `promise` settles with `DONE` or the failure. Never rejects. */
class Pending {
  constructor(readonly promise: Promise<unknown>) {}
}

let subscriptionSeq = 0;

/** One `subscribe()` call: a consume loop per pattern sharing one concurrency limit. */
class BusSubscription implements SubscriptionHandle {
  readonly id = `sub-${++subscriptionSeq}`;
  readonly name: string;
  readonly #bus: SubscriptionHost;
  readonly #patterns: readonly CompiledPattern[];
  readonly #handler: EventHandler;
  readonly #options: ResolvedSubscribeOptions;
  readonly #redelivery: boolean;
  readonly #maxDeliveries: number;
  /** Failures of events whose dead letter could not be written, by event id. */
  readonly #unwritten = new Map<string, unknown>();
  readonly #running = new Set<Running>();
  #transportSubs: TransportSubscription[] = [];
  #loops: Promise<void>[] = [];
  #active = 0;
  #slotWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #stopping: Promise<void> | undefined;
  #onStopped: (() => void) | undefined;

  constructor(
    bus: SubscriptionHost,
    patterns: readonly CompiledPattern[],
    handler: EventHandler,
    options: ResolvedSubscribeOptions,
  ) {
    this.#bus = bus;
    this.#patterns = patterns;
    this.#handler = handler;
    this.#options = options;
    this.#redelivery = bus.transport.info.capabilities.redelivery;
    // A handler gets maxAttempts + 1 deliveries; the broker counts them. More means that an
    // earlier one was never settled (the consumer stopped, or ran past the broker's ack wait).
    this.#maxDeliveries = this.#redelivery
      ? options.retry.maxAttempts + 1 + UNSEEN_DELIVERIES
      : Number.POSITIVE_INFINITY;
    this.name = options.name ?? options.group ?? patterns.map((p) => p.source).join(',');
  }

  get active(): number {
    return this.#active;
  }

  start(transportSubs: TransportSubscription[], onStopped: () => void): void {
    this.#transportSubs = transportSubs;
    this.#onStopped = onStopped;
    this.#loops = transportSubs.map((sub, index) => this.#consume(sub, index));
    if (this.#options.timeoutMs > 0) {
      // One coarse sweep per subscription instead of a timer per delivery.
      const every = Math.max(5, Math.min(1000, Math.floor(this.#options.timeoutMs / 4)));
      this.#sweepTimer = setInterval(() => this.#sweep(), every);
      this.#sweepTimer.unref();
    }
  }

  unsubscribe(): Promise<void> {
    return this.stop(Number.POSITIVE_INFINITY);
  }

  /** Stops pulling, then waits up to `timeoutMs` for running handlers. */
  stop(timeoutMs: number): Promise<void> {
    this.#stopping ??= this.#stop(timeoutMs);
    return this.#stopping;
  }

  async #stop(timeoutMs: number): Promise<void> {
    const results = await Promise.allSettled(this.#transportSubs.map((sub) => sub.unsubscribe()));
    // A loop holding a delivery while it waits for a slot hands it back now instead of
    // starting a handler after unsubscribe() was called.
    for (const waiter of this.#slotWaiters.splice(0)) waiter();
    if (this.#active > 0) {
      const clock = this.#bus.clock;
      let timer: TimerHandle | undefined;
      let timedOut = false;
      await new Promise<void>((resolve) => {
        this.#idleWaiters.push(resolve);
        if (Number.isFinite(timeoutMs)) {
          timer = clock.setTimeout(() => {
            timedOut = true;
            resolve();
          }, timeoutMs);
        }
      });
      if (timer !== undefined) clock.clearTimeout(timer);
      if (timedOut) {
        // Handlers still running past the deadline are told to stop; their deliveries are
        // settled by the transport's own close (requeued or redelivered).
        for (const running of this.#running)
          abortRunning(running, new ClosedError('the subscription stopped'));
      }
    }
    await Promise.allSettled(this.#loops);
    if (this.#sweepTimer !== undefined) clearInterval(this.#sweepTimer);
    this.#onStopped?.();
    const failed = results.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw toWatchtowerError(failed.reason);
  }

  async #consume(sub: TransportSubscription, index: number): Promise<void> {
    const iterator = sub[Symbol.asyncIterator]();
    try {
      for (;;) {
        // Drain what is already buffered without a promise per delivery, then wait.
        let delivery = sub.tryNext?.();
        if (delivery === undefined) {
          const next = await iterator.next();
          if (next.done === true) break;
          delivery = next.value;
        }
        while (this.#stopping === undefined && this.#active >= this.#options.concurrency) {
          await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
        }
        if (this.#stopping !== undefined) {
          await this.#settleQuietly(delivery.nack(), delivery);
          continue;
        }
        this.#active++;
        const pending = this.#process(delivery, index);
        if (pending === undefined) this.#release();
        else void pending.then(this.#release);
      }
    } catch (error) {
      this.#bus.reportError(error, { subscription: this.name });
    }
  }

  readonly #release = (): void => {
    this.#active--;
    const waiter = this.#slotWaiters.shift();
    if (waiter !== undefined) waiter();
    if (this.#active === 0 && this.#idleWaiters.length > 0) {
      for (const idle of this.#idleWaiters.splice(0)) idle();
    }
  };

  /**
   * Handles one delivery to its end (ack, retry or dead letter). Returns undefined when the
   * handler finished synchronously and only the ack is left in flight; the returned promise
   * never rejects.
   */
  #process(delivery: Delivery, index: number): Promise<void> | undefined {
    const bus = this.#bus;
    bus.counters.received++;
    if (delivery.kind === 'malformed') {
      bus.counters.malformed++;
      return this.#guard(
        this.#deadLetter(
          delivery,
          { raw: delivery.raw, origin: delivery.origin },
          delivery.error,
          delivery.attempt,
        ),
        delivery,
      );
    }
    if (!this.#isOwnedBy(index, delivery.event.type)) {
      this.#ackQuietly(delivery, false);
      return undefined;
    }
    const attempt = delivery.attempt;
    if (attempt > this.#maxDeliveries) {
      // Running it again would loop for good if it is what stops the consumer (a poison event).
      const id = delivery.event.id;
      const failure = this.#unwritten.get(id) ?? this.#unsettledTooOften(attempt);
      this.#unwritten.delete(id);
      return this.#guard(this.#deadLetter(delivery, delivery.event, failure, attempt), delivery);
    }
    if (!bus.needsValidation) return this.#handle(delivery, delivery.event);
    const checked = bus.validateConsumed(delivery.event);
    if (checked instanceof Promise) {
      return this.#guard(
        checked.then((settled) => this.#handleChecked(delivery, settled)),
        delivery,
      );
    }
    return this.#handleChecked(delivery, checked);
  }

  /** Keeps the failure of an event whose dead letter could not be written (at most 1000). */
  #rememberUnwritten(id: string, failure: unknown): void {
    this.#unwritten.delete(id);
    if (this.#unwritten.size >= 1000) {
      const oldest = this.#unwritten.keys().next();
      if (oldest.done !== true) this.#unwritten.delete(oldest.value);
    }
    this.#unwritten.set(id, failure);
  }

  #unsettledTooOften(attempt: number): WatchtowerError {
    return new WatchtowerError(
      ErrorCode.TIMEOUT,
      `delivered ${attempt} times, more than the ${this.#maxDeliveries} the retry policy allows ` +
        `(maxAttempts + 1, and ${UNSEEN_DELIVERIES} a stopping consumer may have fetched without ` +
        'handing them out): an earlier delivery was never settled (the consumer stopped on it, ' +
        "or its handler outlived the broker's ack wait), so the handler does not run again",
    );
  }

  #handleChecked(delivery: EventDelivery, checked: ConsumedCheck): Promise<void> | undefined {
    if ('error' in checked) {
      return this.#guard(
        this.#deadLetter(delivery, delivery.event, checked.error, delivery.attempt),
        delivery,
      );
    }
    return this.#handle(delivery, checked.event);
  }

  /** Runs the handler; synchronous success acks without waiting (undefined). */
  #handle(delivery: EventDelivery, event: Event): Promise<void> | undefined {
    const outcome = this.#runHandler(event, delivery);
    if (outcome === DONE) {
      this.#ackQuietly(delivery, true);
      return undefined;
    }
    return this.#guard(this.#afterFailure(delivery, event, outcome), delivery);
  }

  /** Acks without waiting; counts the event as handled once the ack is through. */
  #ackQuietly(delivery: Delivery, handled: boolean): void {
    const acked = delivery.ack();
    // Transports that ack without waiting hand back one settled promise every time. Once it
    // is known to have resolved (a promise never changes its state), an ack returning it
    // needs no reaction and no microtask.
    if (acked === this.#resolvedAck) {
      if (handled) this.#bus.counters.handled++;
      return;
    }
    if (acked !== this.#lastAck) {
      this.#lastAck = acked;
      acked.then(handled ? this.#countHandled : undefined, this.#onAckFailed);
      return;
    }
    // The same promise twice: a shared one. Learn whether it resolved.
    acked.then(() => {
      this.#resolvedAck = acked;
      if (handled) this.#bus.counters.handled++;
    }, this.#onAckFailed);
  }

  /** The promise the last ack returned, and the last one seen to resolve. */
  #lastAck: Promise<void> | undefined;
  #resolvedAck: Promise<void> | undefined;

  readonly #countHandled = (): void => {
    this.#bus.counters.handled++;
  };
  readonly #onAckFailed = (error: unknown): void => {
    this.#bus.reportError(error, { subscription: this.name });
  };

  #guard(work: Promise<void>, delivery: Delivery): Promise<void> {
    return work.catch((error: unknown) => this.#reportFor(error, delivery));
  }

  #reportFor(error: unknown, delivery: Delivery): void {
    this.#bus.reportError(error, {
      subscription: this.name,
      ...(delivery.kind === 'event' ? { eventId: delivery.event.id } : {}),
    });
  }

  /**
   * The delivery belongs to the first pattern that matches its type; later patterns of the
   * same subscription ack it, so an event is handled once. Transports that over-deliver
   * (AMQP `#` also matches zero tokens) are filtered here too.
   */
  #isOwnedBy(index: number, type: string): boolean {
    const patterns = this.#patterns;
    if (!(patterns[index] as CompiledPattern).matches(type)) return false;
    for (let i = 0; i < index; i++)
      if ((patterns[i] as CompiledPattern).matches(type)) return false;
    return true;
  }

  /**
   * Waits for a handler that returned a promise, and takes a failure through retry (nack with
   * delay, or in process on transports without redelivery) and then the dead-letter queue.
   */
  async #afterFailure(delivery: Delivery, event: Event, first: unknown): Promise<void> {
    const policy = this.#options.retry;
    let outcome = first;
    for (let attempt = delivery.attempt; ; attempt++) {
      const failure = outcome instanceof Pending ? await outcome.promise : outcome;
      if (failure === DONE) {
        await delivery.ack();
        this.#bus.counters.handled++;
        return;
      }
      this.#bus.counters.handlerFailures++;
      const retryable =
        !isWatchtowerError(failure, ErrorCode.NON_RETRYABLE) &&
        !isWatchtowerError(failure, ErrorCode.VALIDATION);
      if (
        !retryable ||
        !policy.canRetry(attempt - 1) ||
        (this.#stopping !== undefined && !this.#redelivery)
      ) {
        await this.#deadLetter(delivery, event, failure, attempt);
        return;
      }
      this.#bus.counters.retried++;
      const delayMs = policy.delayFor(attempt);
      // Transports without redelivery retry in process; the others hand the event back.
      if (this.#redelivery) {
        await delivery.nack({ delayMs });
        return;
      }
      try {
        await sleep(this.#bus.clock, delayMs, this.#bus.closeSignal);
      } catch {
        await this.#deadLetter(delivery, event, failure, attempt);
        return;
      }
      outcome = this.#runHandler(event, { attempt: attempt + 1 });
    }
  }

  /**
   * Runs the handler: `DONE` when it returned without a promise, what it threw, or a
   * {@link Pending} that settles with `DONE` or the failure (a timeout included).
   */
  #runHandler(event: Event, attempt: { readonly attempt: number }): unknown {
    const running = new Running(attempt, this.name);
    let result: unknown;
    try {
      result = this.#handler(event, running);
    } catch (error) {
      return error ?? new Error('handler threw undefined');
    }
    if (!isPromiseLike(result)) return DONE;
    const timeoutMs = this.#options.timeoutMs;
    if (timeoutMs > 0) running.deadline = this.#bus.clock.now() + timeoutMs;
    this.#running.add(running);
    return new Pending(
      new Promise<unknown>((resolve) => {
        running.timedOut = resolve;
        Promise.resolve(result).then(
          () => resolve(DONE),
          (error: unknown) => resolve(error ?? new Error('handler rejected with undefined')),
        );
      }).finally(() => this.#running.delete(running)),
    );
  }

  #sweep(): void {
    const now = this.#bus.clock.now();
    for (const running of this.#running) {
      if (running.deadline > now) continue;
      this.#running.delete(running);
      const error = new TimeoutError(
        `handler of "${this.name}" did not finish within ${this.#options.timeoutMs} ms`,
        this.#options.timeoutMs,
      );
      abortRunning(running, error);
      running.timedOut?.(error);
    }
  }

  /**
   * Writes the dead letter, then acks. When the write fails the delivery is handed back
   * (nack) so it is dead-lettered on a later attempt: it is never acked unwritten.
   */
  async #deadLetter(
    delivery: Delivery,
    subject: Event | { raw: Uint8Array; origin: string },
    failure: unknown,
    attempts: number,
  ): Promise<void> {
    const bus = this.#bus;
    const reason: DeadLetterReason = {
      message: describeError(failure),
      code: errorCode(failure),
      attempts,
      failedAt: new Date().toISOString(),
      originalType: 'raw' in subject ? subject.origin : subject.type,
      subscription: this.name,
    };
    try {
      await bus.writeRetry.execute(() => bus.transport.publishToDlq(subject, reason), {
        signal: bus.closeSignal,
      });
    } catch (error) {
      bus.reportError(error, {
        subscription: this.name,
        ...('raw' in subject ? {} : { eventId: subject.id }),
      });
      // Handed back past its last attempt, it comes again over the limit: it is then
      // dead-lettered with this failure, not run again.
      if (!('raw' in subject)) this.#rememberUnwritten(subject.id, failure);
      await this.#settleQuietly(
        delivery.nack({ delayMs: this.#options.retry.delayFor(1) }),
        delivery,
      );
      return;
    }
    bus.counters.deadLettered++;
    bus.emitDeadLetter(
      'raw' in subject ? { raw: subject.raw, reason } : { event: subject, reason },
    );
    await delivery.ack();
  }

  async #settleQuietly(settling: Promise<void>, delivery: Delivery): Promise<void> {
    try {
      await settling;
    } catch (error) {
      this.#bus.reportError(error, {
        subscription: this.name,
        ...(delivery.kind === 'event' ? { eventId: delivery.event.id } : {}),
      });
    }
  }
}

// ---- helpers ------------------------------------------------------------------------------

/**
 * `runSchema`, with a schema that throws (a bug in a refinement, say) reported as a failed
 * validation: publish then rejects with `VALIDATION` instead of throwing, and a consumed
 * event is dead-lettered instead of being left unsettled.
 */
function checkPayload(
  schema: StandardSchemaV1,
  value: unknown,
  what: string,
): SchemaOutcome | Promise<SchemaOutcome> {
  const thrown = (error: unknown): SchemaOutcome => ({
    ok: false,
    error: new ValidationError(`${what}: the schema threw: ${describeError(error)}`, [], {
      cause: error,
    }),
  });
  try {
    const outcome = runSchema(schema, value, what);
    return outcome instanceof Promise ? outcome.catch(thrown) : outcome;
  } catch (error) {
    return thrown(error);
  }
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

function checkEvent(event: Event): Event {
  if (typeof event !== 'object' || event === null) {
    throw new ValidationError('publish() needs an Event (use createEvent) or (type, payload)');
  }
  assertEventType(event.type);
  if (typeof event.id !== 'string' || event.id.length === 0) {
    throw new ValidationError('event.id must be a non-empty string', [
      { message: 'required', path: ['id'] },
    ]);
  }
  if (typeof event.timestamp !== 'string') {
    throw new ValidationError('event.timestamp must be an RFC 3339 string', [
      { message: 'required', path: ['timestamp'] },
    ]);
  }
  if (typeof event.headers !== 'object' || event.headers === null) {
    throw new ValidationError('event.headers must be an object of strings', [
      { message: 'required', path: ['headers'] },
    ]);
  }
  return event;
}

/**
 * Aborts a running handler's signal. The controller is made here when the handler has not
 * asked for its signal yet, so that a handler looking at it later still sees it aborted.
 */
function abortRunning(running: Running, reason: Error): void {
  running.controller ??= new AbortController();
  if (!running.controller.signal.aborted) running.controller.abort(reason);
}

function errorCode(error: unknown): string {
  if (isWatchtowerError(error)) return error.code;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : ErrorCode.HANDLER_FAILED;
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}

function positiveInteger(field: string, value: unknown): number {
  checkInteger(field, value, 1);
  return value;
}

function nonNegative(field: string, value: unknown): number {
  checkNumber(field, value, { min: 0 });
  return value;
}
