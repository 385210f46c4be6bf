/**
 * The options of {@link RabbitMQTransport}: their types with documented defaults, and
 * `resolveRabbitMQConfig`, which merges them over the defaults and checks each one with core's
 * option validators. Only rules of RabbitMQ itself (the URL, names, queue arguments a queue
 * type cannot take) are written here; nothing here talks to a broker.
 */
import { hostname } from 'node:os';
import { configError, systemClock, type Clock } from '@watchtower/core';
import {
  DEFAULT_UNSUBSCRIBE_TIMEOUT_MS,
  booleanOption,
  clockOption,
  describeValue,
  integerOption,
  oneOfOption,
  recordOption,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import type { SocketOptions } from 'amqplib';

/** The AMQP exchange types the transport publishes to. */
export type RabbitMQExchangeType = 'topic' | 'direct' | 'fanout' | 'headers';

/** The queue types a subscription's queue can be. */
export type RabbitMQQueueType = 'classic' | 'quorum';

/** What a full queue (`maxLength`) does with a new message (RabbitMQ's `x-overflow`). */
export type RabbitMQOverflow = 'drop-head' | 'reject-publish' | 'reject-publish-dlx';

/** Options of {@link RabbitMQTransport}. Every field is optional; see the defaults. */
export interface RabbitMQConfig {
  /**
   * AMQP URL: `amqp://` or `amqps://` (TLS), user and password, host, port and vhost (the path,
   * `%2F` for `/`) as RabbitMQ reads them; query parameters such as `heartbeat` and `frameMax`
   * pass through to amqplib. Several URLs (the nodes of a cluster) are tried in turn: a connect
   * goes down the list until one node takes it, and after a lost connection the reconnect
   * starts with the node after the one lost, so it fails over to another node.
   * @defaultValue `'amqp://guest:guest@127.0.0.1:5672'`
   */
  url?: string | readonly string[];
  /**
   * Socket options passed to amqplib unchanged: TLS (`ca`, `cert`, `key`, `servername`,
   * `rejectUnauthorized`), `credentials` (e.g. `amqplib.credentials.external()`), `timeout`,
   * `keepAlive`. `clientProperties.connection_name` is set from `connectionName`.
   * @defaultValue `{}`
   */
  socketOptions?: SocketOptions;
  /**
   * The connection's name as the broker shows it (`rabbitmqctl list_connections name
   * client_properties`, the management UI).
   * @defaultValue `'watchtower-{hostname}-{pid}'`
   */
  connectionName?: string;
  /**
   * Heartbeat interval asked of the broker, in seconds: a connection that is silent for two
   * of them is taken for lost and reconnected. `0` turns heartbeats off.
   * @defaultValue 10
   */
  heartbeatSeconds?: number;
  /**
   * The exchange events are published to (durable). Its dead-letter exchange is
   * `{exchange}.dlx` and its dead-letter queue `{exchange}.dlq`.
   * @defaultValue `'watchtower.events'`
   */
  exchange?: string;
  /**
   * Type of {@link RabbitMQConfig.exchange}. `topic` routes by type with wildcards (`*`, and
   * `>` as `#`); `direct` by exact type (wildcard patterns are refused); `fanout` gives every
   * queue every event and `headers` routes on the `x-watchtower-type` header (for both, patterns
   * are matched in process too).
   * @defaultValue `'topic'`
   */
  exchangeType?: RabbitMQExchangeType;
  /**
   * Type of the queues subscriptions read: `classic`, or `quorum` (replicated; always
   * durable, so only for `group` subscriptions: a subscription without a group keeps an
   * exclusive classic queue of its own).
   * @defaultValue `'classic'`
   */
  queueType?: RabbitMQQueueType;
  /**
   * Group queues, the exchanges and the DLQ survive a broker restart. Messages are always
   * published persistent.
   * @defaultValue true
   */
  durable?: boolean;
  /**
   * Per-message TTL set on every published message (`expiration`), in milliseconds: a message
   * not consumed by then is dead-lettered by the broker to the DLQ. `null`: no TTL.
   * @defaultValue null
   */
  messageTtlMs?: number | null;
  /**
   * Per-queue message TTL of subscription queues (`x-message-ttl`), in milliseconds; expired
   * messages are dead-lettered to the DLQ. `null`: no TTL.
   * @defaultValue null
   */
  queueMessageTtlMs?: number | null;
  /**
   * Most messages a subscription queue holds (`x-max-length`); `null`: no bound.
   * @defaultValue null
   */
  maxLength?: number | null;
  /**
   * What a full queue does (`x-overflow`): `drop-head` dead-letters the oldest message to the
   * DLQ, `reject-publish` nacks the new one (its publish rejects with a retryable `TRANSPORT`
   * error), `reject-publish-dlx` nacks it and dead-letters it (`reject-publish-dlx` needs a
   * classic queue). Needs `maxLength`.
   * @defaultValue `'drop-head'`
   */
  overflow?: RabbitMQOverflow;
  /**
   * Quorum queues only: the broker dead-letters a message (to the DLQ, never dropped) once it
   * has been handed back this many times without an ack (`x-delivery-limit`): consumers that
   * crashed or lost their connection while holding it. Retries of a failed handler are not
   * counted: they are new messages through the delay queues, so the bus's `maxAttempts` always
   * wins. `null`: no limit.
   * @defaultValue null
   */
  deliveryLimit?: number | null;
  /**
   * Publish with `mandatory`: a message no queue is bound for is returned by the broker and
   * its publish rejects with a non-retryable `TRANSPORT` error, instead of resolving.
   * @defaultValue false
   */
  mandatory?: boolean;
  /**
   * Most publishes sent and not yet confirmed by the broker; later ones wait in order.
   * @defaultValue 1024
   */
  publishWindow?: number;
  /**
   * Prefetch of every subscription's channel: how many messages the broker sends ahead of the
   * acks. A subscription's own `maxInFlight` wins over it. `null`: each subscription's prefetch
   * is its `concurrency` (as the bus passes it; 1 by default), which shares a group's queue
   * fairly among consumers but waits a round trip per event at concurrency 1 (see the README
   * for the rates), else 64 for a subscription that gives neither (the transport used without
   * the bus).
   * @defaultValue null
   */
  prefetch?: number | null;
  /**
   * First wait before reconnecting after the connection was lost, in milliseconds; it doubles
   * per failed attempt, with full jitter, up to `reconnectMaxMs`.
   * @defaultValue 100
   */
  reconnectBaseMs?: number;
  /**
   * Longest wait between reconnect attempts, in milliseconds.
   * @defaultValue 5000
   */
  reconnectMaxMs?: number;
  /**
   * Reconnect attempts in a row before the connection is given up for good (waiting
   * publishes then reject with `CONNECTION`); `Infinity` never gives up.
   * @defaultValue Infinity
   */
  reconnectAttempts?: number;
  /**
   * Longest wait for a connection to open (TCP, TLS and the AMQP handshake), in milliseconds.
   * @defaultValue 10000
   */
  connectTimeoutMs?: number;
  /**
   * The `timeoutMs` of a `close()` that gives none: cancelling consumers, waiting for
   * in-flight handlers and outstanding confirms, and closing channels and the connection
   * share it; past it the socket is destroyed and `close()` resolves.
   * @defaultValue 10000
   */
  closeTimeoutMs?: number;
  /**
   * How long `unsubscribe()` waits for the broker (cancel, hand back, delete an own queue)
   * before it resolves anyway.
   * @defaultValue 5000
   */
  unsubscribeTimeoutMs?: number;
  /**
   * Time limit of the health probe (a passive declare of the exchange), in milliseconds.
   * @defaultValue 2000
   */
  healthCheckTimeoutMs?: number;
  /**
   * Timers and timestamps: reconnect backoff, deadlines of `close()` and `unsubscribe()`,
   * the health check's limit, `failedAt` of dead letters.
   * @defaultValue `systemClock`
   */
  clock?: Clock;
}

/** Every field of {@link RabbitMQConfig}: anything else is refused. */
export const RABBITMQ_CONFIG_KEYS = [
  'url',
  'socketOptions',
  'connectionName',
  'heartbeatSeconds',
  'exchange',
  'exchangeType',
  'queueType',
  'durable',
  'messageTtlMs',
  'queueMessageTtlMs',
  'maxLength',
  'overflow',
  'deliveryLimit',
  'mandatory',
  'publishWindow',
  'prefetch',
  'reconnectBaseMs',
  'reconnectMaxMs',
  'reconnectAttempts',
  'connectTimeoutMs',
  'closeTimeoutMs',
  'unsubscribeTimeoutMs',
  'healthCheckTimeoutMs',
  'clock',
] as const satisfies ReadonlyArray<keyof RabbitMQConfig>;

// A field added to RabbitMQConfig and not listed above fails to compile.
type Unlisted = Exclude<keyof RabbitMQConfig, (typeof RABBITMQ_CONFIG_KEYS)[number]>;
const everyFieldListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyFieldListed;

/** The defaults of {@link RabbitMQConfig}. */
export const DEFAULT_RABBITMQ_CONFIG = Object.freeze({
  url: 'amqp://guest:guest@127.0.0.1:5672',
  heartbeatSeconds: 10,
  exchange: 'watchtower.events',
  exchangeType: 'topic',
  queueType: 'classic',
  durable: true,
  messageTtlMs: null,
  queueMessageTtlMs: null,
  maxLength: null,
  overflow: 'drop-head',
  deliveryLimit: null,
  mandatory: false,
  publishWindow: 1024,
  prefetch: null,
  reconnectBaseMs: 100,
  reconnectMaxMs: 5000,
  reconnectAttempts: Number.POSITIVE_INFINITY,
  connectTimeoutMs: 10_000,
  closeTimeoutMs: 10_000,
  unsubscribeTimeoutMs: DEFAULT_UNSUBSCRIBE_TIMEOUT_MS,
  healthCheckTimeoutMs: 2000,
  clock: systemClock,
} as const);

/** A validated {@link RabbitMQConfig} with every default filled in. */
export interface ResolvedRabbitMQConfig {
  /** The URLs of {@link RabbitMQConfig.url}, at least one, in the order they are tried. */
  readonly urls: readonly string[];
  readonly socketOptions: SocketOptions;
  readonly connectionName: string;
  readonly heartbeatSeconds: number;
  readonly exchange: string;
  readonly exchangeType: RabbitMQExchangeType;
  readonly queueType: RabbitMQQueueType;
  readonly durable: boolean;
  readonly messageTtlMs: number | null;
  readonly queueMessageTtlMs: number | null;
  readonly maxLength: number | null;
  readonly overflow: RabbitMQOverflow;
  readonly deliveryLimit: number | null;
  readonly mandatory: boolean;
  readonly publishWindow: number;
  readonly prefetch: number | null;
  readonly reconnectBaseMs: number;
  readonly reconnectMaxMs: number;
  readonly reconnectAttempts: number;
  readonly connectTimeoutMs: number;
  readonly closeTimeoutMs: number;
  readonly unsubscribeTimeoutMs: number;
  readonly healthCheckTimeoutMs: number;
  readonly clock: Clock;
}

const AMQP_URL = /^amqps?:\/\/[^\s]+$/;
/** Exchange names: what RabbitMQ allows (letters, digits, `-_.:`), not the reserved `amq.`. */
const EXCHANGE_NAME = /^(?!amq\.)[A-Za-z0-9_.:-]{1,200}$/;
/** Largest TTL and length RabbitMQ takes (a 32-bit signed integer for `x-*` arguments). */
const MAX_ARGUMENT = 2 ** 31 - 1;

/**
 * Merges `config` over {@link DEFAULT_RABBITMQ_CONFIG} and validates it.
 *
 * @throws a `CONFIG` error naming the first bad field.
 */
export function resolveRabbitMQConfig(config: RabbitMQConfig = {}): ResolvedRabbitMQConfig {
  if (typeof config !== 'object' || config === null) {
    throw configError('config', `must be an options object, got ${describeValue(config)}`);
  }
  rejectUnknownOptions(config, RABBITMQ_CONFIG_KEYS, 'RabbitMQTransport');
  const d = DEFAULT_RABBITMQ_CONFIG;
  const queueType = oneOfOption('queueType', config.queueType ?? d.queueType, [
    'classic',
    'quorum',
  ]);
  const durable = booleanOption('durable', config.durable ?? d.durable);
  if (queueType === 'quorum' && !durable) {
    throw configError(
      'durable',
      'must be true with queueType "quorum" (quorum queues are durable)',
    );
  }
  const maxLength = nullableInteger('maxLength', config.maxLength, 1);
  const overflow = oneOfOption('overflow', config.overflow ?? d.overflow, [
    'drop-head',
    'reject-publish',
    'reject-publish-dlx',
  ]);
  if (config.overflow !== undefined && maxLength === null) {
    throw configError('overflow', 'needs maxLength: a queue without a bound never overflows');
  }
  if (overflow === 'reject-publish-dlx' && queueType === 'quorum') {
    throw configError('overflow', '"reject-publish-dlx" is not supported by quorum queues');
  }
  const deliveryLimit = nullableInteger('deliveryLimit', config.deliveryLimit, 1);
  if (deliveryLimit !== null && queueType !== 'quorum') {
    throw configError(
      'deliveryLimit',
      'needs queueType "quorum" (classic queues count no deliveries)',
    );
  }
  const reconnectBaseMs = integerOption(
    'reconnectBaseMs',
    config.reconnectBaseMs ?? d.reconnectBaseMs,
    1,
  );
  const reconnectMaxMs = integerOption(
    'reconnectMaxMs',
    config.reconnectMaxMs ?? d.reconnectMaxMs,
    1,
  );
  if (reconnectMaxMs < reconnectBaseMs) {
    throw configError(
      'reconnectMaxMs',
      `must be at least reconnectBaseMs (${reconnectBaseMs}), got ${reconnectMaxMs}`,
    );
  }
  return {
    urls: urlsOption(config.url ?? d.url),
    socketOptions:
      recordOption('socketOptions', config.socketOptions, 'an object of amqplib socket options') ??
      {},
    connectionName: stringOption(
      'connectionName',
      config.connectionName ?? `watchtower-${hostname()}-${process.pid}`,
    ),
    heartbeatSeconds: integerOption(
      'heartbeatSeconds',
      config.heartbeatSeconds ?? d.heartbeatSeconds,
      0,
      {
        max: 65_535,
      },
    ),
    exchange: stringOption('exchange', config.exchange ?? d.exchange, {
      pattern: EXCHANGE_NAME,
      hint: 'an exchange name of letters, digits and -_.: not starting with "amq."',
    }),
    exchangeType: oneOfOption('exchangeType', config.exchangeType ?? d.exchangeType, [
      'topic',
      'direct',
      'fanout',
      'headers',
    ]),
    queueType,
    durable,
    messageTtlMs: nullableInteger('messageTtlMs', config.messageTtlMs, 0),
    queueMessageTtlMs: nullableInteger('queueMessageTtlMs', config.queueMessageTtlMs, 0),
    maxLength,
    overflow,
    deliveryLimit,
    mandatory: booleanOption('mandatory', config.mandatory ?? d.mandatory),
    publishWindow: integerOption('publishWindow', config.publishWindow ?? d.publishWindow, 1, {
      max: MAX_ARGUMENT,
    }),
    prefetch:
      config.prefetch === undefined || config.prefetch === null
        ? d.prefetch
        : integerOption('prefetch', config.prefetch, 1, { max: MAX_PREFETCH }),
    reconnectBaseMs,
    reconnectMaxMs,
    reconnectAttempts: integerOption(
      'reconnectAttempts',
      config.reconnectAttempts ?? d.reconnectAttempts,
      0,
      { allowInfinity: true },
    ),
    connectTimeoutMs: integerOption(
      'connectTimeoutMs',
      config.connectTimeoutMs ?? d.connectTimeoutMs,
      1,
    ),
    closeTimeoutMs: integerOption('closeTimeoutMs', config.closeTimeoutMs ?? d.closeTimeoutMs, 0),
    unsubscribeTimeoutMs: integerOption(
      'unsubscribeTimeoutMs',
      config.unsubscribeTimeoutMs ?? d.unsubscribeTimeoutMs,
      0,
    ),
    healthCheckTimeoutMs: integerOption(
      'healthCheckTimeoutMs',
      config.healthCheckTimeoutMs ?? d.healthCheckTimeoutMs,
      1,
    ),
    clock: config.clock === undefined ? d.clock : clockOption('clock', config.clock),
  };
}

/** The largest prefetch AMQP can say (a 16-bit field). */
const MAX_PREFETCH = 65_535;

/**
 * Prefetch of a subscription that gives neither `maxInFlight` nor `concurrency` (the transport
 * used without the bus), when the config's `prefetch` is `null`.
 */
export const FALLBACK_PREFETCH = 64;

/**
 * The prefetch of a subscription's channel: its `maxInFlight`, else the config's `prefetch`,
 * else its `concurrency`, else {@link FALLBACK_PREFETCH}; at most what AMQP can say.
 */
export function prefetchFor(
  config: Pick<ResolvedRabbitMQConfig, 'prefetch'>,
  subscription: {
    readonly maxInFlight: number | undefined;
    readonly concurrency: number | undefined;
  },
): number {
  const wanted =
    subscription.maxInFlight ?? config.prefetch ?? subscription.concurrency ?? FALLBACK_PREFETCH;
  return Math.min(wanted, MAX_PREFETCH);
}

/** One AMQP URL, or a non-empty array of them (the nodes of a cluster). */
function urlsOption(value: unknown): readonly string[] {
  const hint = { pattern: AMQP_URL, hint: 'an amqp:// or amqps:// URL' };
  if (!Array.isArray(value)) return [stringOption('url', value, hint)];
  if (value.length === 0) {
    throw configError('url', 'must be an amqp:// or amqps:// URL or a non-empty array of them');
  }
  return Object.freeze(value.map((url, i) => stringOption(`url[${i}]`, url, hint)));
}

/** `null` (the default, no bound) or an integer in [min, 2^31 - 1]. */
function nullableInteger(field: string, value: unknown, min: number): number | null {
  if (value === undefined || value === null) return null;
  return integerOption(field, value, min, { max: MAX_ARGUMENT });
}
