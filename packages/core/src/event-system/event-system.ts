/**
 * The `EventSystem`: one validated configuration over several transports, each behind its own
 * `EventBus`. The publish path is: event factory -> publish middleware -> schema (newest
 * version) -> route (highest priority first, then the default) -> wire form (topic, origin
 * header or prefix, compression) -> rate limits -> batch window or straight to the route's
 * bus. The consume path reads the wire form back (original type, origin filter,
 * decompression, schema version and upcast, content filter, consume middleware, ordering key,
 * idempotency, rate limit) before the user's handler. With none of that in the way both paths
 * go straight through. Everything else (retries, circuit breaker, dead letters, acks) is the
 * bus's, so this layer never acks what the bus would not, and it acts on every option it
 * accepts.
 */
import { systemClock, type Clock, type TimerHandle } from '../clock.js';
import {
  ClosedError,
  ErrorCode,
  TimeoutError,
  ValidationError,
  WatchtowerError,
  configError,
  describeError,
  toWatchtowerError,
} from '../errors.js';
import {
  DEFAULT_EVENT_BUS_OPTIONS,
  EventBus,
  type EventBusStats,
  type EventFor,
  type EventHandler,
  type HandlerContext,
  type SubscribeOptions,
} from '../event-bus.js';
import { createEventAt, isValidEventType, type Event, type EventMetadataInput } from '../event.js';
import { RESOLVED } from '../transport-kit/resolved.js';
import { consoleLogger, toBusLog, type BusLog } from '../logger.js';
import {
  describeValue,
  functionOption,
  integerOption,
  numberOption,
  objectOption,
  recordOption,
  rejectUnknownOptions,
} from '../options.js';
import { compilePattern, patternsOverlap, type CompiledPattern } from '../pattern.js';
import { RetryPolicy } from '../retry-policy.js';
import {
  runPayloadSchema,
  type EventCatalog,
  type SchemaInput,
  type StandardSchemaV1,
} from '../schema.js';
import type { DeadLetter, HealthStatus, SubscriptionHandle, Transport } from '../transport.js';
import {
  resolveEventSystemConfig,
  type BatchingOptions,
  type EventSystemConfig,
  type ResolvedConfig,
  type ResolvedRoute,
} from './config.js';
import { CONTENT_ENCODING_HEADER, compressPayload, decompressPayload } from './compression.js';
import { DeliveryBatcher, type BatchHandler } from './batch-consumer.js';
import type { IdempotencyStore } from './idempotency.js';
import { KeyedQueue, runWithRetries, type OrderingKey } from './ordering.js';
import { telemetryOf } from '../telemetry/bus-telemetry.js';
import { SCHEMA_VERSION_HEADER, checkVersioned, publishedVersion } from './schema-versions.js';
import {
  checkMiddleware,
  runConsumeChain,
  runPublishChain,
  type EventMiddleware,
} from './middleware.js';
import {
  RateLimiter,
  resolveRateLimit,
  type RateLimitOptions,
  type RateLimiterCounters,
  type ResolvedRateLimit,
} from './rate-limiter.js';

/** The header that carries the publishing service's origin. */
export const ORIGIN_HEADER = 'origin';
/**
 * The header that carries an event's own type when the wire type differs (a route's `topic`,
 * an origin prefix); subscribers read the event back under it.
 */
export const EVENT_TYPE_HEADER = 'event-type';
/** The header a subscription's idempotency check reads before the event id. */
export const IDEMPOTENCY_KEY_HEADER = 'idempotency-key';
/**
 * The header that carries an event's ordering key (the route's or the publisher's
 * `orderingKey`, or one the caller gives), so that a transport can keep a key's events in order.
 */
export const PARTITION_KEY_HEADER = 'partition-key';

/** Options of {@link EventSystem.subscribe}: the bus's, and the system's own. */
export interface SystemSubscribeOptions extends SubscribeOptions {
  /**
   * The origins whose events this subscription receives: a list, or `'*'` for all.
   * @defaultValue the system's own origin (without one: every event)
   */
  origins?: readonly string[] | '*';
  /** A content filter: events it returns false for are acked without running the handler. */
  filter?: (event: Event) => boolean;
  /** At most so many handler starts per interval (the wait counts in the handler's `timeoutMs`). */
  rateLimit?: RateLimitOptions;
  /**
   * Skip (and ack) a delivery whose `idempotency-key` header, else event id, was handled
   * within `ttlMs`. A handler that failed does not mark its key.
   */
  idempotency?: { store: IdempotencyStore; ttlMs: number };
  /** Consume middleware of this subscription, run after the system's (see `use`). */
  middleware?: readonly EventMiddleware[];
  /**
   * Events with the same key run one at a time in arrival order, different keys side by side
   * up to `concurrency`; undefined runs an event without ordering. A failed run is retried in
   * place per `retry` (holding its key; `timeoutMs` bounds each run) and then dead-lettered.
   */
  orderingKey?: OrderingKey;
}

const SYSTEM_SUBSCRIBE_KEYS = [
  'origins',
  'filter',
  'rateLimit',
  'idempotency',
  'middleware',
  'orderingKey',
] as const;
const BUS_SUBSCRIBE_KEYS = [
  'group',
  'concurrency',
  'timeoutMs',
  'retry',
  'maxInFlight',
  'startFrom',
  'signal',
  'name',
] as const satisfies readonly (keyof SubscribeOptions)[];

/** Options of {@link EventSystem.subscribeBatch}. */
export interface BatchSubscribeOptions extends Omit<SystemSubscribeOptions, 'orderingKey'> {
  /** Events in a batch at most: an integer >= 1. */
  maxBatchSize: number;
  /** How long the first event of a batch waits for more, in ms (>= 0). */
  maxWaitMs: number;
  /** Batches handled at once. @defaultValue 1 */
  concurrency?: number;
}

/** One event of {@link EventSystem.publishBatch}. */
export interface BatchEvent<T extends string = string, P = unknown> {
  type: T;
  payload: P;
  metadata?: EventMetadataInput;
}

/** How one event of a batch ended. */
export type BatchOutcome =
  | {
      readonly type: string;
      readonly id: string | undefined;
      readonly ok: true;
      /** A publish middleware kept it back: it was not sent. */
      readonly skipped: boolean;
    }
  | {
      readonly type: string;
      readonly id: string | undefined;
      readonly ok: false;
      readonly error: WatchtowerError;
    };

/** A snapshot from {@link EventSystem.stats}. */
export interface EventSystemStats {
  /** Publishes the transports confirmed. */
  published: number;
  /** Publishes that rejected (validation, rate limit, transport), after retries. */
  publishFailed: number;
  /** Publishes a publish middleware kept back (it did not call `next`). */
  skipped: number;
  /** Batches sent (`publishBatch` calls and batching windows). */
  batches: number;
  /** Publishes and handler starts that waited for a rate-limit permit. */
  rateLimitWaits: number;
  /** Publishes and handler starts refused by a rate limit. */
  rateLimitRejections: number;
  /**
   * Deliveries acked without running the handler because they were not for it: another
   * origin, another type sharing the route's topic, or the subscription's `filter`.
   */
  filtered: number;
  /** Deliveries acked without running the handler because their key was handled already. */
  duplicates: number;
  /** Poison-handler calls that threw or rejected (the dead letter was written). */
  poisonHandlerFailures: number;
  /** Each transport's bus. */
  transports: Record<string, EventBusStats>;
}

/** What {@link EventSystem.health} reports. */
export interface EventSystemHealth {
  /** True when every transport is healthy. */
  healthy: boolean;
  transports: Record<string, HealthStatus>;
}

/** A subscription's ordering keys: the key function, its in-place retries and key chains. */
interface Ordering {
  readonly key: OrderingKey;
  readonly retry: RetryPolicy;
  readonly timeoutMs: number;
  readonly queue: KeyedQueue;
}

/** A route with its bus; `plain` when it has no rate limit, compression or ordering key. */
interface RouteTarget {
  readonly route: ResolvedRoute;
  readonly bus: EventBus;
  readonly plain: boolean;
}

/** A publish checked and routed: its bus and its wire form. */
interface Prepared {
  readonly bus: EventBus;
  readonly wire: Event;
}

interface BatchEntry {
  readonly bus: EventBus;
  readonly wire: Event;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

type SystemPhase = 'open' | 'closing' | 'closed';

let systemSubscriptionSeq = 0;

/**
 * Builds an {@link EventSystem} from one configuration object. Throws a `CONFIG` error naming
 * the field, route or transport at fault; nothing is connected until the first use.
 */
export function createEventSystem<C extends EventCatalog = EventCatalog>(
  config: EventSystemConfig<C>,
): EventSystem<C> {
  return new EventSystem(config);
}

/**
 * Publish and subscribe across several transports by route, with origins, batching, rate
 * limits and idempotency. Made by {@link createEventSystem} or the builder.
 */
export class EventSystem<C extends EventCatalog = EventCatalog> implements AsyncDisposable {
  readonly #config: ResolvedConfig<C>;
  readonly #buses = new Map<string, EventBus>();
  readonly #clock: Clock;
  readonly #logger: BusLog;
  readonly #systemLimit: ResolvedRateLimit | undefined;
  readonly #systemLimiters = new Map<string, RateLimiter>();
  readonly #routeLimiters = new Map<ResolvedRoute, Map<string, RateLimiter>>();
  readonly #subscriptionLimiters = new Set<RateLimiter>();
  readonly #limitCounters: RateLimiterCounters = { waited: 0, rejected: 0 };
  readonly #batching: Readonly<BatchingOptions> | undefined;
  #pending: BatchEntry[] = [];
  #batchTimer: TimerHandle | undefined;
  #phase: SystemPhase = 'open';
  /** The routes in priority order, with their buses. */
  readonly #routeTargets: readonly RouteTarget[];
  /** The default route's bus (without one, a `>` route catches every type before it). */
  readonly #defaultBus: EventBus;
  /** No schema, system rate limit, batching or ordering key: publishes may take the fast path. */
  readonly #plainPublish: boolean;
  /** Events get a wire form of their own (an origin header or prefix). */
  readonly #rewrites: boolean;
  readonly #sourceOnly: EventMetadataInput;
  /** Middleware from `use()`, outermost first; read at each publish and delivery. */
  readonly #middleware: EventMiddleware[] = [];
  /** Publishes accepted and not yet handed to a bus or the batch window. */
  readonly #preparing = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;
  readonly #counters = {
    /** Publishes refused before a bus had them (validation, rate limits, middleware). */
    refused: 0,
    skipped: 0,
    batches: 0,
    filtered: 0,
    duplicates: 0,
    poisonHandlerFailures: 0,
  };

  /**
   * The same as {@link createEventSystem}.
   * @throws a `CONFIG` error naming the field, route or transport at fault.
   */
  constructor(options: EventSystemConfig<C>) {
    const config = resolveEventSystemConfig(options);
    this.#config = config;
    this.#clock = config.clock ?? systemClock;
    this.#logger = toBusLog(config.logger ?? consoleLogger);
    this.#systemLimit = config.rateLimit;
    this.#batching = config.batching;
    for (const [name, transport] of config.transports) {
      const bus = new EventBus({
        ...config.bus,
        transport,
        // Schemas run in this layer, on the event's own type: the bus sees the wire type.
        validation: 'ignore',
        source: config.service,
        clock: this.#clock,
        logger: config.logger ?? consoleLogger,
        ...(config.retry === undefined ? {} : { retry: config.retry }),
      });
      const poison = config.poisonHandler;
      if (poison !== undefined) bus.on('deadLetter', (letter) => this.#poisoned(letter, poison));
      this.#buses.set(name, bus);
    }
    this.#routeTargets = config.routes.map((route) => ({
      route,
      bus: this.#buses.get(route.transport) as EventBus,
      plain:
        route.rateLimit === undefined &&
        route.compression === undefined &&
        route.orderingKey === undefined,
    }));
    this.#defaultBus = this.#buses.get(
      config.defaultTransport ?? config.routes[config.routes.length - 1]?.transport ?? '',
    ) as EventBus;
    this.#plainPublish =
      (config.catalog === undefined || config.validationMode === 'ignore') &&
      config.rateLimit === undefined &&
      config.batching === undefined &&
      config.orderingKey === undefined;
    this.#rewrites = config.origin !== undefined;
    this.#sourceOnly = Object.freeze({ source: config.service });
  }

  /** The service's name, set as `source` on every event it publishes. */
  get service(): string {
    return this.#config.service;
  }

  /** The service's origin, if it has one. */
  get origin(): string | undefined {
    return this.#config.origin;
  }

  /** Connects every transport; called on first use anyway, early to surface errors early. */
  async connect(): Promise<void> {
    if (this.#phase !== 'open') throw new ClosedError('the event system is closed');
    await Promise.all([...this.#buses.values()].map((bus) => bus.connect()));
  }

  /**
   * Publishes an event on the transport of its route. Resolves when that transport confirmed
   * it (with batching: when its batch was confirmed); rejects with `VALIDATION` (type or
   * payload), `BACKPRESSURE_FULL` (a rate limit with `onLimit: 'reject'`), `CLOSED`, or the
   * bus's error after its retries.
   */
  publish<T extends keyof C & string>(
    type: T,
    payload: SchemaInput<C[T]>,
    metadata?: EventMetadataInput,
  ): Promise<void> {
    // Fast path, no feature in the way: straight to the route's bus, which counts the outcome.
    if (
      this.#phase === 'open' &&
      this.#plainPublish &&
      this.#middleware.length === 0 &&
      isValidEventType(type)
    ) {
      const target = this.#targetOf(type);
      if (target === undefined || target.plain) {
        const bus = target?.bus ?? this.#defaultBus;
        const route = target?.route;
        if (route?.topic === undefined && !this.#rewrites) {
          return bus.publish(type, payload, this.#withSource(metadata));
        }
        return this.#publishRouted(bus, route, type, payload, metadata);
      }
    }
    return this.#publish(type, payload, metadata);
  }

  /** {@link publish} of an event that only needs its wire form (a topic, an origin). */
  #publishRouted(
    bus: EventBus,
    route: ResolvedRoute | undefined,
    type: string,
    payload: unknown,
    metadata: EventMetadataInput | undefined,
  ): Promise<void> {
    let wire: Event;
    try {
      wire = this.#toWire(
        createEventAt(type, payload, this.#withSource(metadata), this.#clock),
        route,
      );
    } catch (error) {
      this.#counters.refused++;
      return Promise.reject(error);
    }
    return bus.publish(wire);
  }

  #withSource(metadata: EventMetadataInput | undefined): EventMetadataInput {
    if (metadata === undefined) return this.#sourceOnly;
    return metadata.source === undefined ? { ...metadata, source: this.#config.service } : metadata;
  }

  /**
   * Publishes several events together: each is checked and routed on its own, then all are
   * handed to their transports in one turn, so that transports that batch (a Redis pipeline,
   * one NATS flush) send them in one write. Each event stays an ordinary event on the wire.
   * Resolves with one outcome per event, in order; never rejects for an event's failure.
   */
  async publishBatch<T extends keyof C & string>(
    events: readonly BatchEvent<T, SchemaInput<C[T]>>[],
  ): Promise<BatchOutcome[]> {
    if (this.#phase !== 'open') throw new ClosedError('the event system is closed');
    const given: unknown = events;
    if (!Array.isArray(given)) throw configError('events', 'must be an array of events');
    const prepared = await Promise.all(
      events.map((input) =>
        this.#prepare(input.type, input.payload, input.metadata).then(
          (ready) => ready,
          (error: unknown) => toWatchtowerError(error),
        ),
      ),
    );
    this.#counters.batches++;
    const sent = prepared.map((ready) => {
      if (ready instanceof WatchtowerError) return Promise.reject(ready);
      return ready === undefined ? RESOLVED : ready.bus.publish(ready.wire);
    });
    const settled = await Promise.allSettled(sent);
    return settled.map((result, index): BatchOutcome => {
      const ready = prepared[index];
      const type = String(events[index]?.type);
      const id =
        ready instanceof WatchtowerError || ready === undefined ? undefined : ready.wire.id;
      if (result.status === 'fulfilled') {
        if (ready === undefined) this.#counters.skipped++;
        return { type, id, ok: true, skipped: ready === undefined };
      }
      // The bus counted the failures of what it was handed; the rest failed before it.
      if (ready instanceof WatchtowerError) this.#counters.refused++;
      return { type, id, ok: false, error: toWatchtowerError(result.reason) };
    });
  }

  /**
   * Calls `handler` for every event whose type matches `patterns`, from the transports of the
   * routes those patterns can reach (and the default one), read back under its own type.
   * Resolves once every transport subscription is live.
   *
   * @throws `CONFIG` for a bad option, or a `group` on a transport without consumer groups.
   */
  async subscribe<P extends string>(
    patterns: P | readonly P[],
    handler: EventHandler<EventFor<C, P>>,
    options: SystemSubscribeOptions = {},
  ): Promise<SubscriptionHandle> {
    if (this.#phase !== 'open') throw new ClosedError('the event system is closed');
    rejectUnknownOptions(options, [...BUS_SUBSCRIBE_KEYS, ...SYSTEM_SUBSCRIBE_KEYS], 'subscribe()');
    const list: readonly string[] = typeof patterns === 'string' ? [patterns] : patterns;
    if (!Array.isArray(list) || list.length === 0) {
      throw configError('patterns', 'give at least one event type or pattern');
    }
    const compiled = list.map((pattern: string) => compilePattern(pattern));
    functionOption('handler', handler);
    const { origins, filter, rateLimit, idempotency, middleware, orderingKey, ...given } = options;
    let busOptions: SubscribeOptions = given;
    let ordering: Ordering | undefined;
    if (orderingKey !== undefined) {
      functionOption('orderingKey', orderingKey);
      // Retries happen in place, holding the key; each run has the subscription's timeout.
      const { retry, timeoutMs, ...rest } = given;
      ordering = {
        key: orderingKey,
        retry: new RetryPolicy({
          clock: this.#clock,
          ...recordOption(
            'retry',
            retry ?? this.#config.bus.subscriptionDefaults?.retry,
            'an options object',
          ),
        }),
        timeoutMs: numberOption(
          'timeoutMs',
          timeoutMs ??
            this.#config.bus.subscriptionDefaults?.timeoutMs ??
            DEFAULT_EVENT_BUS_OPTIONS.timeoutMs,
          { min: 0 },
        ),
        queue: new KeyedQueue(),
      };
      busOptions = { ...rest, retry: { maxAttempts: 1 }, timeoutMs: 0 };
    }
    const own = checkMiddlewareList(middleware);
    const allowed = this.#allowedOrigins(origins);
    if (filter !== undefined) functionOption('filter', filter);
    const idempotent = checkIdempotency(idempotency);
    const name = options.name ?? list.join(',');
    // Per origin: a group shared across origins would hand one region's events to another
    // region's members, which skip them, and the region they belong to would never see them.
    const { service, origin } = this.#config;
    const base = origin === undefined ? service : `${service}-${slug(origin)}`;
    const group = busOptions.group ?? (this.#config.groups ? `${base}-${slug(name)}` : undefined);
    const targets = this.#targets(compiled, allowed);
    for (const transport of targets.keys()) {
      if (group !== undefined && !this.#transport(transport).info.capabilities.consumerGroups) {
        throw configError(
          'group',
          `"${list.join(', ')}" is read from transport "${transport}", which has no consumer groups`,
        );
      }
    }
    let limiter: RateLimiter | undefined;
    if (rateLimit !== undefined) {
      limiter = new RateLimiter(
        resolveRateLimit('rateLimit', rateLimit, false),
        this.#clock,
        this.#limitCounters,
        `the handler starts of "${name}"`,
      );
    }

    const wrapped = this.#consumer(
      compiled,
      allowed,
      filter,
      limiter,
      idempotent,
      own,
      ordering,
      handler as EventHandler,
    );
    const handles: SubscriptionHandle[] = [];
    try {
      for (const [transport, wirePatterns] of targets) {
        const bus = this.#buses.get(transport) as EventBus;
        handles.push(
          await bus.subscribe([...wirePatterns], wrapped, {
            ...busOptions,
            name,
            ...(group === undefined ? {} : { group }),
          }),
        );
      }
    } catch (error) {
      await Promise.allSettled(handles.map((handle) => handle.unsubscribe()));
      limiter?.close(new ClosedError('the subscription could not start'));
      throw error;
    }
    if (limiter !== undefined) this.#subscriptionLimiters.add(limiter);
    let stopping: Promise<void> | undefined;
    return {
      id: `system-sub-${++systemSubscriptionSeq}`,
      unsubscribe: () => {
        stopping ??= Promise.all(handles.map((handle) => handle.unsubscribe())).then(() => {
          if (limiter !== undefined) {
            limiter.close(new ClosedError('the subscription is closed'));
            this.#subscriptionLimiters.delete(limiter);
          }
        });
        return stopping;
      },
    };
  }

  /**
   * Adds middleware around every publish and every delivery of the system's subscriptions
   * (those made before too), after the middleware added earlier. Returns a function that
   * removes it.
   */
  use(middleware: EventMiddleware): () => void {
    this.#middleware.push(checkMiddleware('middleware', middleware, false));
    return () => {
      const index = this.#middleware.indexOf(middleware);
      if (index !== -1) this.#middleware.splice(index, 1);
    };
  }

  /**
   * Like {@link subscribe}, with a handler of batches: deliveries are gathered until
   * `maxBatchSize` are waiting or the first has waited `maxWaitMs`, then handed over together.
   * Each event is acked, retried or dead-lettered on its own, by the outcome the handler gives
   * it (see `BatchResult`); a throw fails them all. `concurrency` is the number of batches
   * handled at once. Not with `orderingKey`.
   */
  async subscribeBatch<P extends string>(
    patterns: P | readonly P[],
    handler: BatchHandler<EventFor<C, P>>,
    options: BatchSubscribeOptions,
  ): Promise<SubscriptionHandle> {
    if (options === null || typeof options !== 'object') {
      throw configError('options', 'give maxBatchSize and maxWaitMs');
    }
    const { maxBatchSize, maxWaitMs, concurrency, ...rest } = options;
    if ((rest as SystemSubscribeOptions).orderingKey !== undefined) {
      throw configError('orderingKey', 'does not go with subscribeBatch');
    }
    functionOption('handler', handler);
    const telemetry = telemetryOf(this.#defaultBus);
    const label = typeof patterns === 'string' ? patterns : patterns.join(',');
    const batcher = new DeliveryBatcher(
      integerOption('maxBatchSize', maxBatchSize, 1),
      numberOption('maxWaitMs', maxWaitMs, { min: 0 }),
      this.#clock,
      handler as BatchHandler,
      telemetry === undefined
        ? undefined
        : (events, handle) => telemetry.processBatch(label, events, handle),
    );
    const batches = integerOption('concurrency', concurrency ?? 1, 1);
    // Each waiting delivery holds a handler slot: a batch fills only with that many slots.
    return this.subscribe(patterns, (event) => batcher.add(event), {
      ...rest,
      concurrency: maxBatchSize * batches,
    });
  }

  /** Counters of the system and a snapshot of each transport's bus. */
  stats(): EventSystemStats {
    const transports: Record<string, EventBusStats> = {};
    for (const [name, bus] of this.#buses) transports[name] = bus.stats();
    let published = 0;
    let failed = 0;
    for (const bus of Object.values(transports)) {
      published += bus.published;
      failed += bus.publishFailed;
    }
    const { refused, ...counters } = this.#counters;
    return {
      published,
      publishFailed: refused + failed,
      ...counters,
      rateLimitWaits: this.#limitCounters.waited,
      rateLimitRejections: this.#limitCounters.rejected,
      transports,
    };
  }

  /** Asks every transport; never rejects. */
  async health(): Promise<EventSystemHealth> {
    const names = [...this.#buses.keys()];
    const statuses = await Promise.all([...this.#buses.values()].map((bus) => bus.healthCheck()));
    const transports: Record<string, HealthStatus> = {};
    names.forEach((name, index) => (transports[name] = statuses[index] as HealthStatus));
    return { healthy: statuses.every((status) => status.healthy), transports };
  }

  /**
   * Graceful and idempotent: refuses new publishes (`CLOSED`), sends the open batch, ends
   * rate-limit waits with `CLOSED`, then closes every bus (each sends what it accepted and
   * waits for its handlers, within `timeoutMs`). Every bus is closed even if one fails; the
   * first failure rejects.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#phase = 'closing';
    this.#closing = this.#close(options).finally(() => {
      this.#phase = 'closed';
    });
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- publish path ---------------------------------------------------------------------

  async #publish(
    type: string,
    payload: unknown,
    metadata: EventMetadataInput | undefined,
  ): Promise<void> {
    if (this.#phase !== 'open') throw new ClosedError('the event system is closed');
    let prepared: Prepared | undefined;
    try {
      prepared = await this.#prepare(type, payload, metadata);
    } catch (error) {
      this.#counters.refused++;
      throw toWatchtowerError(error);
    }
    if (prepared === undefined) {
      this.#counters.skipped++;
      return;
    }
    const { bus, wire } = prepared;
    // Accepted before close() began: it is sent, straight to the bus once the window is shut.
    if (this.#batching === undefined || this.#phase !== 'open') {
      await bus.publish(wire);
    } else {
      await new Promise<void>((resolve, reject) =>
        this.#addToBatch({ bus, wire, resolve, reject }),
      );
    }
  }

  /**
   * The event made, checked, routed, written in its wire form, and let through the limits.
   * `close()` waits for the prepares under way, so that what was accepted before it is sent.
   */
  #prepare(
    type: string,
    payload: unknown,
    metadata: EventMetadataInput | undefined,
  ): Promise<Prepared | undefined> {
    const preparing = this.#prepareNow(type, payload, metadata);
    this.#preparing.add(preparing);
    const done = (): void => void this.#preparing.delete(preparing);
    preparing.then(done, done);
    return preparing;
  }

  async #prepareNow(
    type: string,
    payload: unknown,
    metadata: EventMetadataInput | undefined,
  ): Promise<Prepared | undefined> {
    const made = createEventAt(type, payload, this.#withSource(metadata), this.#clock);
    let event =
      this.#middleware.length === 0 ? made : await runPublishChain(this.#middleware, made);
    if (event === undefined) return undefined;
    await this.#validate(event, 'publish');
    const version = publishedVersion(this.#schemaOf(event.type));
    if (version !== undefined) {
      event = { ...event, headers: { ...event.headers, [SCHEMA_VERSION_HEADER]: version } };
    }
    const route = this.#route(event.type);
    // Resolved config: without a default route, a `>` route matches every type.
    const transport = route?.transport ?? this.#config.defaultTransport ?? '';
    const plain = this.#toWire(this.#withPartitionKey(event, route), route);
    const wire =
      route?.compression === undefined ? plain : await compressPayload(plain, route.compression);
    for (const limiter of this.#limitersFor(event.type, route)) {
      const wait = limiter.acquire();
      if (wait !== undefined) await wait;
    }
    return { bus: this.#buses.get(transport) as EventBus, wire };
  }

  /** {@link #route} with the route's bus, for the fast path. */
  #targetOf(type: string): RouteTarget | undefined {
    for (const target of this.#routeTargets) if (target.route.pattern.matches(type)) return target;
    return undefined;
  }

  /** The highest-priority route matching `type`; undefined means the default transport. */
  #route(type: string): ResolvedRoute | undefined {
    for (const route of this.#config.routes) if (route.pattern.matches(type)) return route;
    return undefined;
  }

  /**
   * The event with its `partition-key` header: the one the caller gave, else the key of the
   * route's `orderingKey` (or the publisher's). Rejects a key that is not a non-empty string.
   */
  #withPartitionKey(event: Event, route: ResolvedRoute | undefined): Event {
    const orderingKey = route?.orderingKey ?? this.#config.orderingKey;
    if (orderingKey === undefined || event.headers[PARTITION_KEY_HEADER] !== undefined) {
      return event;
    }
    const key: unknown = orderingKey(event);
    if (key === undefined) return event;
    if (typeof key !== 'string' || key.length === 0) {
      const owner = route?.orderingKey === undefined ? 'publisher' : `route ${route.label}`;
      throw new ValidationError(
        `the orderingKey of the ${owner} must return a non-empty string or undefined, got ` +
          `${describeValue(key)} for ${event.type}`,
      );
    }
    return { ...event, headers: { ...event.headers, [PARTITION_KEY_HEADER]: key } };
  }

  #toWire(event: Event, route: ResolvedRoute | undefined): Event {
    const { origin, originAsTopicPrefix } = this.#config;
    const topic = route?.topic ?? event.type;
    const wireType = originAsTopicPrefix ? `${origin as string}.${topic}` : topic;
    if (origin === undefined && wireType === event.type) return event;
    const headers = { ...event.headers };
    if (origin !== undefined) headers[ORIGIN_HEADER] = origin;
    if (wireType !== event.type) headers[EVENT_TYPE_HEADER] = event.type;
    return { ...event, type: wireType, headers };
  }

  #limitersFor(type: string, route: ResolvedRoute | undefined): RateLimiter[] {
    const limiters: RateLimiter[] = [];
    if (this.#systemLimit !== undefined) {
      limiters.push(this.#limiter(this.#systemLimiters, this.#systemLimit, type, 'the system'));
    }
    if (route?.rateLimit !== undefined) {
      let byKey = this.#routeLimiters.get(route);
      if (byKey === undefined)
        this.#routeLimiters.set(route, (byKey = new Map<string, RateLimiter>()));
      limiters.push(this.#limiter(byKey, route.rateLimit, type, `route ${route.label}`));
    }
    return limiters;
  }

  #limiter(
    byKey: Map<string, RateLimiter>,
    limit: ResolvedRateLimit,
    type: string,
    scope: string,
  ): RateLimiter {
    const key = limit.per === 'type' ? type : '';
    let limiter = byKey.get(key);
    if (limiter === undefined) {
      const what =
        limit.per === 'type' ? `the publishes of ${type} on ${scope}` : `the publishes of ${scope}`;
      limiter = new RateLimiter(limit, this.#clock, this.#limitCounters, what);
      byKey.set(key, limiter);
    }
    return limiter;
  }

  #addToBatch(entry: BatchEntry): void {
    const batching = this.#batching as BatchingOptions;
    this.#pending.push(entry);
    if (this.#pending.length >= batching.maxSize) this.#flush();
    else this.#batchTimer ??= this.#clock.setTimeout(() => this.#flush(), batching.maxWaitMs);
  }

  /**
   * Sends the open batch: every event handed to its bus in one turn, each settling its own
   * caller (the bus retries each per the retry policy). Never throws.
   */
  #flush(): void {
    if (this.#batchTimer !== undefined) this.#clock.clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    this.#counters.batches++;
    for (const entry of batch) entry.bus.publish(entry.wire).then(entry.resolve, entry.reject);
  }

  // ---- consume path ---------------------------------------------------------------------

  #allowedOrigins(
    origins: SystemSubscribeOptions['origins'],
  ): ReadonlySet<string> | '*' | undefined {
    if (origins === '*') return '*';
    if (origins === undefined) {
      return this.#config.origin === undefined ? undefined : new Set([this.#config.origin]);
    }
    if (!Array.isArray(origins) || origins.length === 0) {
      throw configError('origins', 'must be "*" or a non-empty array of origins');
    }
    const checked = (origins as readonly unknown[]).map((origin, index) => {
      if (
        typeof origin !== 'string' ||
        origin.length === 0 ||
        origin.includes('*') ||
        origin.includes('>')
      ) {
        throw configError(`origins[${index}]`, 'must be an origin such as "eu.de"');
      }
      compilePattern(origin);
      return origin;
    });
    return new Set(checked);
  }

  /**
   * Where to read `patterns` from: for each route they can reach, its transport and topic (or
   * the patterns themselves), and the default transport; with origin prefixes, one wire pattern
   * per origin.
   */
  #targets(
    patterns: readonly CompiledPattern[],
    origins: ReadonlySet<string> | '*' | undefined,
  ): Map<string, Set<string>> {
    const targets = new Map<string, Set<string>>();
    const add = (transport: string, topic: string): void => {
      let set = targets.get(transport);
      if (set === undefined) targets.set(transport, (set = new Set()));
      for (const wire of this.#wirePatterns(topic, origins)) set.add(wire);
    };
    for (const pattern of patterns) {
      for (const route of this.#config.routes) {
        if (patternsOverlap(route.pattern, pattern))
          add(route.transport, route.topic ?? pattern.source);
      }
      if (this.#config.defaultTransport !== undefined)
        add(this.#config.defaultTransport, pattern.source);
    }
    return targets;
  }

  #wirePatterns(topic: string, origins: ReadonlySet<string> | '*' | undefined): string[] {
    const { origin, originAsTopicPrefix } = this.#config;
    if (!originAsTopicPrefix) return [topic];
    if (origins === '*') {
      // Origins of the system's own token count: `eu.de` reads `*.*.{topic}`.
      const anyOrigin = (origin as string)
        .split('.')
        .map(() => '*')
        .join('.');
      return [`${anyOrigin}.${topic}`];
    }
    return [...(origins ?? [origin as string])].map((one) => `${one}.${topic}`);
  }

  /** The handler the buses run: the wire form read back, then the subscription's checks. */
  #consumer(
    patterns: readonly CompiledPattern[],
    origins: ReadonlySet<string> | '*' | undefined,
    filter: ((event: Event) => boolean) | undefined,
    limiter: RateLimiter | undefined,
    idempotency: { store: IdempotencyStore; ttlMs: number } | undefined,
    own: readonly EventMiddleware[],
    ordering: Ordering | undefined,
    handler: EventHandler,
  ): EventHandler {
    const run = async (event: Event, context: HandlerContext): Promise<void> => {
      const key =
        idempotency === undefined ? undefined : (event.headers[IDEMPOTENCY_KEY_HEADER] ?? event.id);
      if (idempotency !== undefined && (await idempotency.store.seen(key as string))) {
        this.#counters.duplicates++;
        return;
      }
      if (limiter !== undefined) {
        const wait = limiter.acquire();
        if (wait !== undefined) await wait;
      }
      await handler(event, context);
      if (idempotency !== undefined) await idempotency.store.mark(key as string, idempotency.ttlMs);
    };
    const unchecked = idempotency === undefined && limiter === undefined;
    const last =
      ordering === undefined
        ? unchecked
          ? handler
          : run
        : (event: Event, context: HandlerContext): Promise<void> => {
            const key = ordering.key(event);
            if (key === undefined) return run(event, context);
            if (typeof key !== 'string') {
              throw new WatchtowerError(
                ErrorCode.NON_RETRYABLE,
                'orderingKey must return a string or undefined',
                { retryable: false },
              );
            }
            return ordering.queue.run(key, () =>
              runWithRetries(ordering.retry, context.signal, key, () =>
                this.#withinTimeout(ordering.timeoutMs, run(event, context)),
              ),
            );
          };
    const { catalog, validationMode } = this.#config;
    const schemasRun = catalog !== undefined && validationMode !== 'ignore';
    const slow = async (wire: Event, context: HandlerContext): Promise<void> => {
      const event = readBack(wire);
      if (
        !patterns.some((pattern) => pattern.matches(event.type)) ||
        (origins !== undefined &&
          origins !== '*' &&
          !origins.has(wire.headers[ORIGIN_HEADER] ?? ''))
      ) {
        this.#counters.filtered++;
        return;
      }
      const plain =
        event.headers[CONTENT_ENCODING_HEADER] === undefined
          ? event
          : await decompressPayload(event);
      const checked = schemasRun ? await this.#validate(plain, 'consume') : plain;
      if (filter !== undefined && !filter(checked)) {
        this.#counters.filtered++;
        return;
      }
      if (this.#middleware.length === 0 && own.length === 0) {
        await last(checked, context);
        return;
      }
      const chain = own.length === 0 ? this.#middleware : [...this.#middleware, ...own];
      const reached = await runConsumeChain(chain, checked, context, async (next) => {
        await last(next, context);
      });
      if (!reached) this.#counters.filtered++;
    };
    const checksNothing =
      !schemasRun &&
      filter === undefined &&
      limiter === undefined &&
      idempotency === undefined &&
      ordering === undefined &&
      own.length === 0;
    if (!checksNothing) return slow;
    // Fast path: an uncompressed event with no check to run is read back under its own type
    // (a topic's or prefix's), filtered by origin and pattern, and goes to the handler at once,
    // synchronously as the bus calls it: an async step here would send every delivery down the
    // bus's path for handlers that return a promise.
    const anyOrigin = origins === undefined || origins === '*';
    return (wire: Event, context: HandlerContext): unknown => {
      const headers = wire.headers;
      if (this.#middleware.length > 0 || headers[CONTENT_ENCODING_HEADER] !== undefined) {
        return slow(wire, context);
      }
      const event = headers[EVENT_TYPE_HEADER] === undefined ? wire : readBack(wire);
      if (
        (anyOrigin || origins.has(headers[ORIGIN_HEADER] ?? '')) &&
        matchesAny(patterns, event.type)
      ) {
        return handler(event, context);
      }
      this.#counters.filtered++;
      return undefined;
    };
  }

  /**
   * Runs the catalog's schema of `event.type`. Resolves with the event (its payload as the
   * schema output); rejects with `VALIDATION` in strict mode (on consume the bus then
   * dead-letters it at once: a validation error is not retried).
   */
  async #validate(event: Event, side: 'publish' | 'consume'): Promise<Event> {
    const { catalog, validationMode } = this.#config;
    if (catalog === undefined || validationMode === 'ignore') return event;
    const schema = this.#schemaOf(event.type);
    let error: ValidationError;
    if (schema === undefined) {
      error = new ValidationError(
        `unknown event type "${event.type}": it is not in the event catalog`,
      );
    } else {
      let outcome;
      try {
        outcome =
          (side === 'consume' ? await checkVersioned(schema, event) : undefined) ??
          (await runPayloadSchema(schema, event.payload, event.type));
      } catch (thrown) {
        outcome = {
          ok: false as const,
          error: new ValidationError(
            `payload of "${event.type}": the schema threw: ${describeError(thrown)}`,
          ),
        };
      }
      if (outcome.ok) {
        // Publish sends the payload as given; consumers get the schema's output.
        return side === 'consume' && outcome.value !== event.payload
          ? { ...event, payload: outcome.value }
          : event;
      }
      error = outcome.error;
    }
    if (validationMode === 'strict') throw error;
    this.#logger.warn({ eventId: event.id, type: event.type }, error.message);
    return event;
  }

  /** `run`, failing with `TIMEOUT` after `limit` ms (0: no limit). */
  #withinTimeout(limit: number, run: Promise<void>): Promise<void> {
    if (limit === 0) return run;
    return new Promise<void>((resolve, reject) => {
      const timer = this.#clock.setTimeout(
        () => reject(new TimeoutError(`the handler did not finish within ${limit} ms`, limit)),
        limit,
      );
      run.then(
        () => {
          this.#clock.clearTimeout(timer);
          resolve();
        },
        (error: unknown) => {
          this.#clock.clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  /** The catalog's schema of `type`, when schemas run. */
  #schemaOf(type: string): StandardSchemaV1 | undefined {
    const { catalog, validationMode } = this.#config;
    if (catalog === undefined || validationMode === 'ignore') return undefined;
    return Object.hasOwn(catalog, type) ? catalog[type] : undefined;
  }

  #poisoned(
    letter: DeadLetter,
    handler: (event: Event | undefined, reason: DeadLetter['reason']) => unknown,
  ): void {
    const event = letter.event === undefined ? undefined : readBack(letter.event);
    const failed = (error: unknown): void => {
      this.#counters.poisonHandlerFailures++;
      this.#logger.error(
        { code: ErrorCode.HANDLER_FAILED, eventId: event?.id },
        `the poison handler failed (the dead letter is stored): ${describeError(error)}`,
      );
    };
    const call = (shown: Event | undefined): void => {
      try {
        const result = handler(shown, letter.reason);
        if (result instanceof Promise) result.catch(failed);
      } catch (error) {
        failed(error);
      }
    };
    if (event?.headers[CONTENT_ENCODING_HEADER] === undefined) {
      call(event);
      return;
    }
    // Shown as subscribers read it; a payload that does not decompress is shown as it is.
    decompressPayload(event).then(call, () => call(event));
  }

  // ---- close ----------------------------------------------------------------------------

  async #close(options: { timeoutMs?: number }): Promise<void> {
    rejectUnknownOptions(options, ['timeoutMs'], 'close options');
    if (options.timeoutMs !== undefined) numberOption('timeoutMs', options.timeoutMs, { min: 0 });
    this.#flush();
    const closed = new ClosedError('the event system is closed');
    for (const limiters of [this.#systemLimiters, ...this.#routeLimiters.values()]) {
      for (const limiter of limiters.values()) limiter.close(closed);
    }
    for (const limiter of this.#subscriptionLimiters) limiter.close(closed);
    // Publishes accepted before close() go to their bus (the window is shut: straight there).
    await Promise.allSettled([...this.#preparing]);
    this.#flush();
    const results = await Promise.allSettled(
      [...this.#buses.values()].map((bus) => bus.close(options)),
    );
    const failed = results.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw toWatchtowerError(failed.reason);
  }

  #transport(name: string): Transport {
    return this.#config.transports.get(name) as Transport;
  }
}

function matchesAny(patterns: readonly CompiledPattern[], type: string): boolean {
  for (const pattern of patterns) if (pattern.matches(type)) return true;
  return false;
}

function checkMiddlewareList(value: unknown): readonly EventMiddleware[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw configError('middleware', 'must be an array of middleware');
  return (value as unknown[]).map((one, index) =>
    checkMiddleware(`middleware[${index}]`, one, true),
  );
}

/** The event as its publisher made it: its own type, from the header when the wire type differs. */
function readBack(wire: Event): Event {
  const type = wire.headers[EVENT_TYPE_HEADER];
  return type === undefined || type === wire.type ? wire : { ...wire, type };
}

function checkIdempotency(
  value: SystemSubscribeOptions['idempotency'],
): { store: IdempotencyStore; ttlMs: number } | undefined {
  if (value === undefined) return undefined;
  const options = objectOption('idempotency', value, ['store', 'ttlMs']);
  const store = options.store as Partial<IdempotencyStore> | undefined;
  if (typeof store?.seen !== 'function' || typeof store.mark !== 'function') {
    throw configError('idempotency.store', 'must be an IdempotencyStore (seen and mark)');
  }
  return {
    store: store as IdempotencyStore,
    ttlMs: numberOption('idempotency.ttlMs', options.ttlMs, { above: 0 }),
  };
}

/** A group name from a subscription name: tokens kept, wildcards spelt out. */
function slug(name: string): string {
  return name
    .replaceAll('>', 'all')
    .replaceAll('*', 'any')
    .replaceAll(/[^A-Za-z0-9_-]+/g, '_');
}
