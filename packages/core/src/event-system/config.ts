/**
 * The configuration of an event system, as one object (`createEventSystem(config)`, for
 * configuration files) and as the builder assembles it, and its validation: every field is
 * read here, checked, and either used or refused with a `CONFIG` error naming it. Nothing is
 * accepted and ignored. It is apart from the system so that the whole configuration is
 * judged before anything is connected.
 */
import type { Clock } from '../clock.js';
import { configError } from '../errors.js';
import {
  DEFAULT_EVENT_BUS_OPTIONS,
  type EventBusOptions,
  type ValidationMode,
} from '../event-bus.js';
import { isValidEventType, type Event } from '../event.js';
import type { Logger } from '../logger.js';
import {
  booleanOption,
  clockOption,
  describeValue,
  functionOption,
  integerOption,
  numberOption,
  objectOption,
  oneOfOption,
  recordOption,
  rejectUnknownOptions,
  stringOption,
} from '../options.js';
import {
  compilePattern,
  isValidPattern,
  patternsOverlap,
  type CompiledPattern,
} from '../pattern.js';
import { RetryPolicy, type RetryPolicyOptions } from '../retry-policy.js';
import type { EventCatalog } from '../schema.js';
import type { DeadLetterReason, Transport } from '../transport.js';
import {
  resolveCompression,
  type CompressionOptions,
  type ResolvedCompression,
} from './compression.js';
import type { OrderingKey } from './ordering.js';
import { resolveRateLimit, type RateLimitOptions, type ResolvedRateLimit } from './rate-limiter.js';

/** Options of one route: where the events matching its pattern go. */
export interface RouteOptions {
  /** The name of a transport given in `transports`. */
  transport: string;
  /**
   * The name the transport uses instead of the event type (a stream, a subject): every event
   * of the route is published under it, and subscribers read it back as its own type.
   * Dotted tokens, no wildcards.
   */
  topic?: string;
  /**
   * Among routes whose patterns match an event, the highest priority wins; two routes of equal
   * priority whose patterns can match the same event are refused.
   * @defaultValue 0
   */
  priority?: number;
  /** A rate limit on the publishes of this route. */
  rateLimit?: RateLimitOptions;
  /**
   * Compress payloads over a threshold (gzip or brotli); subscribers get them back as they
   * were. Not readable by services without this layer (Rust ones see a base64 string).
   * @defaultValue off
   */
  compression?: CompressionOptions;
  /**
   * The ordering key of each event of the route, sent in its `partition-key` header so that a
   * transport (and a consumer) can keep the events of one key in order. A key the publisher
   * gives in `metadata.headers['partition-key']` is kept; undefined sends none.
   * @defaultValue the publisher's `orderingKey`
   */
  orderingKey?: OrderingKey;
}

/** A route: a pattern (`*` one token, `>` the rest) and where its events go. */
export interface RouteConfig extends RouteOptions {
  pattern: string;
}

/** Time/size batching of publishes. */
export interface BatchingOptions {
  /** A batch is sent when it holds this many events: an integer >= 1. */
  maxSize: number;
  /** ... or when its first event has waited this long, in ms (>= 0). */
  maxWaitMs: number;
}

/** Options of the publishing side. */
export interface PublisherOptions {
  /** Hold publishes and send them in batches. @defaultValue off: each publish goes at once */
  batching?: BatchingOptions;
  /**
   * Retries of a publish that failed with a retryable error, per event (a batch's events
   * too): `strategy` `exponential | fixed | fibonacci`, `maxAttempts` counting the first (1 =
   * no retry, 0 refused).
   * @defaultValue `DEFAULT_RETRY_OPTIONS`
   */
  retry?: RetryPolicyOptions;
  /** A rate limit on every publish of the system (`per: 'type'`: one per event type). */
  rateLimit?: RateLimitOptions;
  /**
   * The ordering key of each event published, sent in its `partition-key` header (see
   * `RouteOptions.orderingKey`, which a route's own replaces).
   * @defaultValue none: no `partition-key` header unless the publisher gives one
   */
  orderingKey?: OrderingKey;
}

/** Called after an event was written to the dead-letter queue. */
export type PoisonHandler = (
  /** The event as subscribers read it (its original type); undefined for undecodable bytes. */
  event: Event | undefined,
  reason: DeadLetterReason,
) => void | Promise<void>;

/** Options of the consuming side. */
export interface ConsumerOptions {
  /**
   * Subscriptions join consumer groups (competing consumers: each event to one instance of
   * the service): a subscription without a `group` joins `{service}-{origin}-{name}`
   * (`{service}-{name}` without an origin). Every transport the system routes to must offer
   * consumer groups.
   * @defaultValue false
   */
  groups?: boolean;
  /**
   * Called with each dead-lettered event and its reason, after the dead-letter write (for
   * alerting): a throw is reported on `error` and loses nothing.
   */
  poisonHandler?: PoisonHandler;
}

/** Options of the `EventBus` of each transport, passed through (see `EventBusOptions`). */
export type SystemBusOptions = Pick<
  EventBusOptions,
  | 'circuitBreaker'
  | 'backpressure'
  | 'publishConcurrency'
  | 'subscriptionDefaults'
  | 'publishTimeoutMs'
  | 'connectWaitMs'
  | 'closeTimeoutMs'
  | 'telemetry'
>;

/** The whole configuration of {@link createEventSystem}. */
export interface EventSystemConfig<C extends EventCatalog = EventCatalog> {
  /** The service's name: the `source` of its events and the base of its group names. */
  service: string;
  /**
   * The service's origin (`eu.de`): every event it publishes carries it in the `origin`
   * header, and its subscribers receive only this origin's events unless they ask for others.
   */
  origin?: string;
  /**
   * Also put the origin before the topic (`eu.de.user.created`), so that brokers keep the
   * origins apart. Needs `origin`.
   * @defaultValue false
   */
  originAsTopicPrefix?: boolean;
  /** The transports by name; the system connects and closes them. */
  transports: Record<string, Transport>;
  /** Payload schemas by event type, from `defineEvents`. */
  events?: C;
  /**
   * `strict`: a payload that fails its schema (or a type not in the catalog) is refused on
   * publish and dead-lettered with `VALIDATION` on consume; `warn`: logged and let through;
   * `ignore`: schemas are not run.
   * @defaultValue `'strict'`
   */
  validationMode?: ValidationMode;
  /** Routes by pattern and priority. */
  routes?: readonly RouteConfig[];
  /**
   * Where events that no route matches go.
   * @defaultValue the only transport, when there is one
   */
  defaultTransport?: string;
  publisher?: PublisherOptions;
  consumer?: ConsumerOptions;
  /** Options of every transport's `EventBus`. */
  bus?: SystemBusOptions;
  /** @defaultValue `consoleLogger` */
  logger?: Logger;
  /** @defaultValue `systemClock` */
  clock?: Clock;
}

const CONFIG_KEYS = [
  'service',
  'origin',
  'originAsTopicPrefix',
  'transports',
  'events',
  'validationMode',
  'routes',
  'defaultTransport',
  'publisher',
  'consumer',
  'bus',
  'logger',
  'clock',
] as const satisfies readonly (keyof EventSystemConfig)[];

const ROUTE_KEYS = [
  'pattern',
  'transport',
  'topic',
  'priority',
  'rateLimit',
  'compression',
  'orderingKey',
] as const satisfies readonly (keyof RouteConfig)[];
const PUBLISHER_KEYS = [
  'batching',
  'retry',
  'rateLimit',
  'orderingKey',
] as const satisfies readonly (keyof PublisherOptions)[];
const BATCHING_KEYS = [
  'maxSize',
  'maxWaitMs',
] as const satisfies readonly (keyof BatchingOptions)[];
const CONSUMER_KEYS = [
  'groups',
  'poisonHandler',
] as const satisfies readonly (keyof ConsumerOptions)[];
const BUS_KEYS = [
  'circuitBreaker',
  'backpressure',
  'publishConcurrency',
  'subscriptionDefaults',
  'publishTimeoutMs',
  'connectWaitMs',
  'closeTimeoutMs',
  'telemetry',
] as const satisfies readonly (keyof SystemBusOptions)[];

/**
 * Transports known to send the publishes of one turn together (a Redis pipeline, one NATS
 * flush, AMQP confirms in one window, memory). A transport may also say so itself with a
 * `batchPublish: true` capability.
 */
const BATCHING_TRANSPORTS: ReadonlySet<string> = new Set([
  'memory',
  'redis',
  'nats-core',
  'nats-jetstream',
  'rabbitmq',
]);

/** True when `transport` sends publishes made together as one write. */
export function canPublishBatch(transport: Transport): boolean {
  const declared = (transport.info.capabilities as { batchPublish?: unknown }).batchPublish;
  if (typeof declared === 'boolean') return declared;
  return BATCHING_TRANSPORTS.has(transport.info.name);
}

/** A checked route. */
export interface ResolvedRoute {
  readonly index: number;
  /** How errors and stats name it: `routes[0] ("order.>")`. */
  readonly label: string;
  readonly pattern: CompiledPattern;
  readonly transport: string;
  readonly topic: string | undefined;
  readonly priority: number;
  readonly rateLimit: ResolvedRateLimit | undefined;
  readonly compression: ResolvedCompression | undefined;
  readonly orderingKey: OrderingKey | undefined;
}

/** A configuration checked whole, ready to build a system from. */
export interface ResolvedConfig<C extends EventCatalog = EventCatalog> {
  readonly service: string;
  readonly origin: string | undefined;
  readonly originAsTopicPrefix: boolean;
  readonly transports: ReadonlyMap<string, Transport>;
  readonly catalog: C | undefined;
  readonly validationMode: ValidationMode;
  /** Highest priority first; equal priorities never overlap. */
  readonly routes: readonly ResolvedRoute[];
  readonly defaultTransport: string | undefined;
  readonly batching: Readonly<BatchingOptions> | undefined;
  readonly retry: RetryPolicyOptions | undefined;
  readonly rateLimit: ResolvedRateLimit | undefined;
  /** The publisher's `orderingKey`, for routes without their own. */
  readonly orderingKey: OrderingKey | undefined;
  readonly groups: boolean;
  readonly poisonHandler: PoisonHandler | undefined;
  readonly bus: SystemBusOptions;
  readonly logger: Logger | undefined;
  readonly clock: Clock | undefined;
}

const DOTTED = 'dotted tokens of [A-Za-z0-9_-] without wildcards';

/**
 * Checks a whole configuration. Throws a `CONFIG` error naming the field, the route or the
 * transport at fault; returns the configuration resolved.
 */
export function resolveEventSystemConfig<C extends EventCatalog>(
  config: EventSystemConfig<C>,
): ResolvedConfig<C> {
  rejectUnknownOptions(config, CONFIG_KEYS, 'the event system configuration');
  const service = stringOption('service', config.service);
  const origin = config.origin === undefined ? undefined : checkedDotted('origin', config.origin);
  const originAsTopicPrefix = booleanOption(
    'originAsTopicPrefix',
    config.originAsTopicPrefix ?? false,
  );
  if (originAsTopicPrefix && origin === undefined) {
    throw configError('originAsTopicPrefix', 'needs an origin (withOrigin or `origin`)');
  }
  const transports = resolveTransports(config.transports);
  if (
    config.events !== undefined &&
    (typeof config.events !== 'object' || config.events === null)
  ) {
    throw configError('events', 'must be a catalog from defineEvents()');
  }
  const validationMode = oneOfOption(
    'validationMode',
    config.validationMode ?? DEFAULT_EVENT_BUS_OPTIONS.validation,
    ['strict', 'warn', 'ignore'],
  );
  const routes = resolveRoutes(config.routes ?? [], transports);
  const defaultTransport = resolveDefault(config.defaultTransport, transports, routes);
  const used = usedTransports(routes, defaultTransport);
  for (const name of transports.keys()) {
    if (!used.has(name)) {
      throw configError(
        `transports.${name}`,
        'no route and not the default transport: it would never be used',
      );
    }
  }

  const publisher = objectOption('publisher', config.publisher, PUBLISHER_KEYS);
  let batching: BatchingOptions | undefined;
  if (publisher.batching !== undefined) {
    const given = objectOption('publisher.batching', publisher.batching, BATCHING_KEYS);
    batching = {
      maxSize: integerOption('publisher.batching.maxSize', given.maxSize, 1),
      maxWaitMs: numberOption('publisher.batching.maxWaitMs', given.maxWaitMs, { min: 0 }),
    };
    for (const [name, where] of used) {
      const transport = transports.get(name) as Transport;
      if (!canPublishBatch(transport)) {
        throw configError(
          'publisher.batching',
          `${where} goes to transport "${name}" (${transport.info.name}), which cannot publish ` +
            'a batch in one write',
        );
      }
    }
  }
  const retry = recordOption('publisher.retry', publisher.retry, 'an options object');
  // Checked now, so that `maxAttempts: 0` fails at build, not at the first publish.
  if (retry !== undefined) prefixed('publisher.retry', () => new RetryPolicy(retry));
  const rateLimit =
    publisher.rateLimit === undefined
      ? undefined
      : resolveRateLimit('publisher.rateLimit', publisher.rateLimit, true);
  const orderingKey =
    publisher.orderingKey === undefined
      ? undefined
      : functionOption<OrderingKey>('publisher.orderingKey', publisher.orderingKey);

  const consumer = objectOption('consumer', config.consumer, CONSUMER_KEYS);
  const groups = booleanOption('consumer.groups', consumer.groups ?? false);
  if (groups) {
    for (const [name, where] of used) {
      const transport = transports.get(name) as Transport;
      if (!transport.info.capabilities.consumerGroups) {
        throw configError(
          'consumer.groups',
          `${where} goes to transport "${name}" (${transport.info.name}), which has no consumer groups`,
        );
      }
    }
  }
  const poisonHandler =
    consumer.poisonHandler === undefined
      ? undefined
      : functionOption<PoisonHandler>('consumer.poisonHandler', consumer.poisonHandler);
  const bus = objectOption('bus', config.bus, BUS_KEYS);

  return {
    service,
    origin,
    originAsTopicPrefix,
    transports,
    catalog: config.events,
    validationMode,
    routes,
    defaultTransport,
    batching,
    retry,
    rateLimit,
    orderingKey,
    groups,
    poisonHandler,
    bus,
    logger: recordOption('logger', config.logger, 'a logger object'),
    clock: config.clock === undefined ? undefined : clockOption('clock', config.clock),
  };
}

function checkedDotted(field: string, value: unknown): string {
  if (!isValidEventType(value)) {
    throw configError(field, `must be ${DOTTED}, got ${describeValue(value)}`);
  }
  return value;
}

/** Runs `build`, with the field of a `CONFIG` error it throws put under `prefix`. */
function prefixed(prefix: string, build: () => unknown): void {
  try {
    build();
  } catch (error) {
    const message = (error as Error).message;
    const field = /`([^`]+)`/.exec(message)?.[1];
    if (field === undefined) throw error;
    throw configError(`${prefix}.${field}`, message.replace(/^invalid option `[^`]+`: /, ''));
  }
}

function resolveTransports(value: unknown): Map<string, Transport> {
  if (value === undefined || value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw configError('transports', 'give at least one transport by name (withTransport)');
  }
  const transports = new Map<string, Transport>();
  for (const [name, transport] of Object.entries(value as Record<string, unknown>)) {
    const candidate = transport as Partial<Transport> | undefined;
    if (
      typeof candidate?.publish !== 'function' ||
      typeof candidate.subscribe !== 'function' ||
      typeof candidate.info?.capabilities !== 'object'
    ) {
      throw configError(
        `transports.${name}`,
        `must be a Transport, got ${describeValue(transport)}`,
      );
    }
    transports.set(name, candidate as Transport);
  }
  if (transports.size === 0) {
    throw configError('transports', 'give at least one transport by name (withTransport)');
  }
  return transports;
}

function resolveRoutes(
  value: readonly RouteConfig[],
  transports: ReadonlyMap<string, Transport>,
): ResolvedRoute[] {
  if (!Array.isArray(value)) throw configError('routes', 'must be an array of routes');
  const routes = (value as readonly RouteConfig[]).map((route, index): ResolvedRoute => {
    const field = `routes[${index}]`;
    rejectUnknownOptions(route, ROUTE_KEYS, field);
    if (typeof route.pattern !== 'string' || route.pattern.length === 0) {
      throw configError(`${field}.pattern`, 'must be a non-empty pattern');
    }
    if (!isValidPattern(route.pattern)) {
      throw configError(
        `${field}.pattern`,
        `must be dotted tokens, \`*\` or \`>\`, got ${describeValue(route.pattern)}`,
      );
    }
    const label = `${field} ("${route.pattern}")`;
    const transport = stringOption(`${field}.transport`, route.transport);
    if (!transports.has(transport)) {
      throw configError(
        `${field}.transport`,
        `route "${route.pattern}" names transport "${transport}", which is not configured ` +
          `(configured: ${[...transports.keys()].join(', ')})`,
      );
    }
    return {
      index,
      label,
      pattern: compilePattern(route.pattern),
      transport,
      topic: route.topic === undefined ? undefined : checkedDotted(`${field}.topic`, route.topic),
      priority: integerOption(`${field}.priority`, route.priority ?? 0, Number.MIN_SAFE_INTEGER),
      rateLimit:
        route.rateLimit === undefined
          ? undefined
          : resolveRateLimit(`${field}.rateLimit`, route.rateLimit, true),
      compression:
        route.compression === undefined
          ? undefined
          : resolveCompression(`${field}.compression`, route.compression),
      orderingKey:
        route.orderingKey === undefined
          ? undefined
          : functionOption<OrderingKey>(`${field}.orderingKey`, route.orderingKey),
    };
  });
  for (let i = 0; i < routes.length; i++) {
    for (let j = i + 1; j < routes.length; j++) {
      const a = routes[i] as ResolvedRoute;
      const b = routes[j] as ResolvedRoute;
      if (a.priority === b.priority && patternsOverlap(a.pattern, b.pattern)) {
        throw configError(
          `routes[${b.index}]`,
          `route "${b.pattern.source}" and route "${a.pattern.source}" (routes[${a.index}]) ` +
            `have the same priority (${a.priority}) and match some of the same events: give ` +
            'one a higher priority',
        );
      }
    }
  }
  return routes.sort((a, b) => b.priority - a.priority || a.index - b.index);
}

function resolveDefault(
  value: unknown,
  transports: ReadonlyMap<string, Transport>,
  routes: readonly ResolvedRoute[],
): string | undefined {
  if (value !== undefined) {
    const name = stringOption('defaultTransport', value);
    if (!transports.has(name)) {
      throw configError(
        'defaultTransport',
        `names transport "${name}", which is not configured (configured: ${[...transports.keys()].join(', ')})`,
      );
    }
    return name;
  }
  if (routes.some((route) => isCatchAll(route.pattern))) return undefined;
  if (transports.size === 1) return transports.keys().next().value;
  throw configError(
    'defaultTransport',
    'with several transports, name the one for events no route matches, or add a route for ">"',
  );
}

/** A pattern every event type matches. */
export function isCatchAll(pattern: CompiledPattern): boolean {
  return pattern.tokens.length === 1 && pattern.tokens[0] === '>';
}

/** Each transport in use, with the first route (or the default) that uses it. */
function usedTransports(
  routes: readonly ResolvedRoute[],
  defaultTransport: string | undefined,
): Map<string, string> {
  const used = new Map<string, string>();
  for (const route of routes)
    if (!used.has(route.transport)) used.set(route.transport, `route ${route.label}`);
  if (defaultTransport !== undefined && !used.has(defaultTransport)) {
    used.set(defaultTransport, 'the default route');
  }
  return used;
}
