import type { Authenticator, NodeConnectionOptions } from '@nats-io/transport-node';
import { configError } from '@watchtower/core';

/** TLS options of the NATS client (`ca`/`caFile`, `cert`/`certFile`, `key`/`keyFile` ...). */
export type NatsTlsOptions = NonNullable<NodeConnectionOptions['tls']>;

/**
 * How events travel.
 *
 * - `core`: plain NATS publish/subscribe. At most once, lowest latency; nothing is stored, a
 *   subscriber only sees what is published while it is subscribed.
 * - `jetstream`: events are stored in a JetStream stream and read through pull consumers with
 *   explicit acks. At least once, durable, redelivery with delay, replay.
 */
export type NatsMode = 'core' | 'jetstream';

/** The JetStream stream that stores events (mode `jetstream`). */
export interface NatsStreamOptions {
  /**
   * Stream name. Letters, digits, `_` and `-` only.
   * @defaultValue `'WATCHTOWER_EVENTS'`
   */
  name: string;
  /**
   * `limits` keeps events until a limit is reached (needed for replay), `interest` until every
   * consumer acked them, `workqueue` until one consumer acked them.
   * @defaultValue `'limits'`
   */
  retention: 'limits' | 'interest' | 'workqueue';
  /** @defaultValue `'file'` */
  storage: 'file' | 'memory';
  /**
   * Oldest event kept, in milliseconds; `0` keeps them until another limit applies.
   * @defaultValue `0`
   */
  maxAgeMs: number;
  /** Total size kept; `-1` for no limit. @defaultValue `-1` */
  maxBytes: number;
  /** Number of events kept; `-1` for no limit. @defaultValue `-1` */
  maxMsgs: number;
  /** Replicas in a cluster. @defaultValue `1` */
  replicas: number;
  /**
   * How long the server remembers event ids (`Nats-Msg-Id`) to drop a republished event.
   * At most `maxAgeMs` when that is set.
   * @defaultValue `120000`, or `maxAgeMs` when that is set and shorter
   */
  duplicateWindowMs: number;
}

/** Where dead letters go. */
export interface NatsDlqOptions {
  /**
   * Store dead letters in a JetStream stream that captures `{dlqPrefix}.>`, so they survive
   * restarts and `consumeDlq` also reads those written before it started. `true` needs a
   * server with JetStream (in mode `core` too); `false` sends dead letters as plain NATS
   * messages, which only a `consumeDlq` running at that moment receives; `'auto'` is `true`
   * when the server has JetStream and `false` otherwise, decided at connect (the capability
   * `nativeDlq` follows).
   * @defaultValue `true` in mode `jetstream`, `'auto'` in mode `core`
   */
  durable: boolean | 'auto';
  /** Stream name for durable dead letters. @defaultValue `'WATCHTOWER_DLQ'` */
  streamName: string;
  /** @defaultValue `'file'` */
  storage: 'file' | 'memory';
  /** Oldest dead letter kept, in milliseconds; `0` keeps them. @defaultValue `0` */
  maxAgeMs: number;
  /** Total size kept; `-1` for no limit. @defaultValue `-1` */
  maxBytes: number;
  /** Number of dead letters kept; `-1` for no limit. @defaultValue `-1` */
  maxMsgs: number;
  /** Replicas in a cluster. @defaultValue `1` */
  replicas: number;
}

/** Pull consumers (mode `jetstream`). */
export interface NatsConsumerOptions {
  /**
   * How long the server waits for an ack before it delivers the event again.
   * @defaultValue `30000`
   */
  ackWaitMs: number;
  /**
   * Deliveries the server hands to one consumer (or one group) without an ack yet; the
   * subscribe option `maxInFlight` replaces it for that subscription (members of a group share
   * their consumer's limit).
   * @defaultValue `1000`
   */
  maxAckPending: number;
  /**
   * Events pulled per request and buffered in the client. Under 256 the pull loop lags under
   * load; more than `maxAckPending` is pointless.
   * @defaultValue `256`
   */
  batchSize: number;
  /**
   * The server stops delivering an event after this many deliveries; `-1` for never. It must
   * exceed the EventBus retry `maxAttempts` (`NatsSubscriber` refuses it otherwise), so the
   * EventBus sees the last attempt and dead-letters it. A delivery nacked when the server would
   * not deliver it again is dead-lettered by the transport itself, never dropped.
   * @defaultValue `-1`
   */
  maxDeliver: number;
  /**
   * A subscription without a group gets its own consumer; the server deletes it after this
   * long without a client (a crashed process), and `unsubscribe()` deletes it at once.
   * @defaultValue `300000`
   */
  inactiveThresholdMs: number;
}

/** Credentials passed to the NATS client. Set one kind only. */
export interface NatsAuthOptions {
  token?: string;
  user?: string;
  pass?: string;
  /** An nkey seed (`SU...`); the client signs the server nonce with it. */
  nkeySeed?: string | Uint8Array;
  /** The contents of a `.creds` file (JWT + nkey seed). */
  creds?: string | Uint8Array;
  /** Any other authenticator built with the `@nats-io` helpers. */
  authenticator?: Authenticator | Authenticator[];
}

/** Options of {@link NatsTransport}. Every field is optional; see each default. */
export interface NatsConfig {
  /**
   * Server URL(s).
   * @defaultValue `'nats://127.0.0.1:4222'`
   */
  servers: string | string[];
  /** @defaultValue `'core'` */
  mode: NatsMode;
  /**
   * Events are published to `{subjectPrefix}.{type}`.
   * @defaultValue `'watchtower.events'`
   */
  subjectPrefix: string;
  /**
   * Dead letters are published to `{dlqPrefix}.{type}`.
   * @defaultValue `'dlq'`
   */
  dlqPrefix: string;
  /** Connection name shown by the server's monitoring. @defaultValue `'watchtower'` */
  name: string;
  /** @defaultValue see {@link NatsStreamOptions} */
  stream: Partial<NatsStreamOptions>;
  /** @defaultValue see {@link NatsDlqOptions} */
  dlq: Partial<NatsDlqOptions>;
  /** @defaultValue see {@link NatsConsumerOptions} */
  consumer: Partial<NatsConsumerOptions>;
  /**
   * Events a core NATS subscription (every subscription in mode `core`, and `consumeDlq` of a
   * DLQ that is not durable) holds in the client, received and not yet taken by the
   * subscriber. Core NATS does not wait for a slow subscriber: beyond this, arriving events are
   * dropped, as the server drops them for a slow consumer, and reported as
   * `BACKPRESSURE_DROPPED` on `on('error')` (with the count, at most once a second), instead of
   * growing the process without bound. The subscribe option `maxInFlight` replaces it for one
   * subscription.
   * @defaultValue `65536`
   */
  pendingLimit: number;
  /**
   * Reconnect attempts after a lost connection; `-1` for no limit. After the last one fails
   * the connection is given up: live subscriptions end with a `CONNECTION` error (the EventBus
   * reports it) and the next publish or subscribe connects afresh.
   * @defaultValue `-1`
   */
  maxReconnectAttempts: number;
  /** Wait between reconnect attempts to one server. @defaultValue `2000` */
  reconnectTimeWaitMs: number;
  /** Random extra wait added to each reconnect wait. @defaultValue `100` */
  reconnectJitterMs: number;
  /** Time limit of the first connect. @defaultValue `20000` */
  connectTimeoutMs: number;
  /**
   * Time limit of a JetStream publish ack and of JetStream API calls.
   * @defaultValue `5000`
   */
  requestTimeoutMs: number;
  /** @defaultValue none */
  auth: NatsAuthOptions;
  /** TLS options passed to the client as they are. @defaultValue none (plain TCP) */
  tls: NatsTlsOptions;
  /**
   * Further `@nats-io/transport-node` connection options, for what this config does not name.
   * The fields above win over the same fields here.
   * @defaultValue `{}`
   */
  connectionOptions: Partial<NodeConnectionOptions>;
}

/** The defaults of {@link NatsConfig}. */
export const DEFAULT_NATS_CONFIG = {
  servers: 'nats://127.0.0.1:4222',
  mode: 'core',
  subjectPrefix: 'watchtower.events',
  dlqPrefix: 'dlq',
  name: 'watchtower',
  maxReconnectAttempts: -1,
  reconnectTimeWaitMs: 2000,
  reconnectJitterMs: 100,
  connectTimeoutMs: 20_000,
  requestTimeoutMs: 5000,
  pendingLimit: 65_536,
} as const satisfies Partial<NatsConfig>;

/** The defaults of {@link NatsStreamOptions}. */
export const DEFAULT_NATS_STREAM_OPTIONS: Readonly<NatsStreamOptions> = {
  name: 'WATCHTOWER_EVENTS',
  retention: 'limits',
  storage: 'file',
  maxAgeMs: 0,
  maxBytes: -1,
  maxMsgs: -1,
  replicas: 1,
  duplicateWindowMs: 120_000,
};

/** The defaults of {@link NatsDlqOptions} other than `durable` (which follows the mode). */
export const DEFAULT_NATS_DLQ_OPTIONS: Readonly<Omit<NatsDlqOptions, 'durable'>> = {
  streamName: 'WATCHTOWER_DLQ',
  storage: 'file',
  maxAgeMs: 0,
  maxBytes: -1,
  maxMsgs: -1,
  replicas: 1,
};

/** The defaults of {@link NatsConsumerOptions}. */
export const DEFAULT_NATS_CONSUMER_OPTIONS: Readonly<NatsConsumerOptions> = {
  ackWaitMs: 30_000,
  maxAckPending: 1000,
  batchSize: 256,
  maxDeliver: -1,
  inactiveThresholdMs: 300_000,
};

/** A {@link NatsConfig} with every default applied and every value checked. */
export interface ResolvedNatsConfig {
  readonly servers: readonly string[];
  readonly mode: NatsMode;
  readonly subjectPrefix: string;
  readonly dlqPrefix: string;
  readonly name: string;
  readonly stream: Readonly<NatsStreamOptions>;
  readonly dlq: Readonly<NatsDlqOptions>;
  readonly consumer: Readonly<NatsConsumerOptions>;
  readonly pendingLimit: number;
  readonly maxReconnectAttempts: number;
  readonly reconnectTimeWaitMs: number;
  readonly reconnectJitterMs: number;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly auth: Readonly<NatsAuthOptions>;
  readonly tls: NatsTlsOptions | undefined;
  readonly connectionOptions: Readonly<Partial<NodeConnectionOptions>>;
}

// Listed as records so that a field added to NatsConfig and left out here fails to compile.
const NATS_CONFIG_KEYS = Object.keys({
  servers: true,
  mode: true,
  subjectPrefix: true,
  dlqPrefix: true,
  name: true,
  stream: true,
  dlq: true,
  consumer: true,
  pendingLimit: true,
  maxReconnectAttempts: true,
  reconnectTimeWaitMs: true,
  reconnectJitterMs: true,
  connectTimeoutMs: true,
  requestTimeoutMs: true,
  auth: true,
  tls: true,
  connectionOptions: true,
} satisfies Record<keyof NatsConfig, true>);
const STREAM_KEYS = Object.keys(DEFAULT_NATS_STREAM_OPTIONS);
const DLQ_KEYS = ['durable', ...Object.keys(DEFAULT_NATS_DLQ_OPTIONS)];
const CONSUMER_KEYS = Object.keys(DEFAULT_NATS_CONSUMER_OPTIONS);
const AUTH_KEYS = Object.keys({
  token: true,
  user: true,
  pass: true,
  nkeySeed: true,
  creds: true,
  authenticator: true,
} satisfies Record<keyof NatsAuthOptions, true>);

// Subject prefixes follow the event type syntax: dotted tokens, no wildcards, no spaces.
const SUBJECT_PREFIX = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;
// JetStream stream and consumer names may not hold `.`, `*`, `>`, whitespace or path separators.
const STREAM_NAME = /^[A-Za-z0-9_-]{1,255}$/;

/**
 * Merges `config` over the defaults and checks every value.
 *
 * @throws `WatchtowerError` with code `CONFIG` naming the first bad field.
 */
export function resolveNatsConfig(config: Partial<NatsConfig> = {}): ResolvedNatsConfig {
  if (typeof config !== 'object' || config === null) {
    throw configError('config', 'expected an object');
  }
  // A misspelt option (`maxDeliver` at the top, `consumer.ackWait`) must not be ignored.
  rejectUnknown('', config, NATS_CONFIG_KEYS);
  const mode = config.mode ?? DEFAULT_NATS_CONFIG.mode;
  if (mode !== 'core' && mode !== 'jetstream') {
    throw configError('mode', `expected 'core' or 'jetstream', got ${show(mode)}`);
  }

  const servers = resolveServers(config.servers ?? DEFAULT_NATS_CONFIG.servers);

  const subjectPrefix = config.subjectPrefix ?? DEFAULT_NATS_CONFIG.subjectPrefix;
  checkPrefix('subjectPrefix', subjectPrefix);
  const dlqPrefix = config.dlqPrefix ?? DEFAULT_NATS_CONFIG.dlqPrefix;
  checkPrefix('dlqPrefix', dlqPrefix);
  if (tokenPrefixOf(subjectPrefix, dlqPrefix) || tokenPrefixOf(dlqPrefix, subjectPrefix)) {
    // Overlapping subject spaces would deliver dead letters as events (and the two JetStream
    // streams would claim the same subjects, which the server refuses).
    throw configError(
      'dlqPrefix',
      `must not overlap subjectPrefix (${show(dlqPrefix)} vs ${show(subjectPrefix)})`,
    );
  }

  const name = config.name ?? DEFAULT_NATS_CONFIG.name;
  if (typeof name !== 'string' || name.length === 0) {
    throw configError('name', `expected a non-empty string, got ${show(name)}`);
  }

  const stream = resolveStream(config.stream);
  const dlq = resolveDlq(config.dlq, mode);
  if (dlq.durable !== false && mode === 'jetstream' && dlq.streamName === stream.name) {
    throw configError('dlq.streamName', `must differ from stream.name (${show(stream.name)})`);
  }
  const consumer = resolveConsumer(config.consumer);

  const maxReconnectAttempts =
    config.maxReconnectAttempts ?? DEFAULT_NATS_CONFIG.maxReconnectAttempts;
  if (!Number.isInteger(maxReconnectAttempts) || maxReconnectAttempts < -1) {
    throw configError(
      'maxReconnectAttempts',
      `expected -1 (no limit) or an integer >= 0, got ${show(maxReconnectAttempts)}`,
    );
  }
  const reconnectTimeWaitMs = nonNegative(
    'reconnectTimeWaitMs',
    config.reconnectTimeWaitMs ?? DEFAULT_NATS_CONFIG.reconnectTimeWaitMs,
  );
  const reconnectJitterMs = nonNegative(
    'reconnectJitterMs',
    config.reconnectJitterMs ?? DEFAULT_NATS_CONFIG.reconnectJitterMs,
  );
  const connectTimeoutMs = positive(
    'connectTimeoutMs',
    config.connectTimeoutMs ?? DEFAULT_NATS_CONFIG.connectTimeoutMs,
  );
  const requestTimeoutMs = positive(
    'requestTimeoutMs',
    config.requestTimeoutMs ?? DEFAULT_NATS_CONFIG.requestTimeoutMs,
  );
  const pendingLimit = positiveInteger(
    'pendingLimit',
    config.pendingLimit ?? DEFAULT_NATS_CONFIG.pendingLimit,
  );

  const auth = resolveAuth(config.auth);
  const tls = config.tls;
  if (tls !== undefined && (typeof tls !== 'object' || tls === null)) {
    throw configError('tls', `expected an object of TLS options, got ${show(tls)}`);
  }
  const connectionOptions = config.connectionOptions === undefined ? {} : config.connectionOptions;
  if (
    typeof connectionOptions !== 'object' ||
    connectionOptions === null ||
    Array.isArray(connectionOptions)
  ) {
    throw configError('connectionOptions', `expected an object, got ${show(connectionOptions)}`);
  }

  return {
    servers,
    mode,
    subjectPrefix,
    dlqPrefix,
    name,
    stream,
    dlq,
    consumer,
    pendingLimit,
    maxReconnectAttempts,
    reconnectTimeWaitMs,
    reconnectJitterMs,
    connectTimeoutMs,
    requestTimeoutMs,
    auth,
    tls,
    connectionOptions,
  };
}

function resolveServers(value: unknown): string[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (!Array.isArray(list) || list.length === 0) {
    throw configError('servers', `expected a URL or a non-empty array of URLs, got ${show(value)}`);
  }
  for (const server of list) {
    if (typeof server !== 'string' || server.length === 0 || /\s/.test(server)) {
      throw configError(
        'servers',
        `expected server URLs like 'nats://host:4222', got ${show(server)}`,
      );
    }
  }
  return list as string[];
}

function checkPrefix(field: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || !SUBJECT_PREFIX.test(value)) {
    throw configError(
      field,
      `expected dotted tokens of [A-Za-z0-9_-] without wildcards, got ${show(value)}`,
    );
  }
}

function tokenPrefixOf(prefix: string, subject: string): boolean {
  return subject === prefix || subject.startsWith(`${prefix}.`);
}

function resolveStream(input: Partial<NatsStreamOptions> | undefined): NatsStreamOptions {
  const given = objectField('stream', input, STREAM_KEYS);
  const merged = { ...DEFAULT_NATS_STREAM_OPTIONS, ...given };
  // The server refuses a duplicate window longer than the max age: the default follows it.
  if (given.duplicateWindowMs === undefined && merged.maxAgeMs > 0) {
    merged.duplicateWindowMs = Math.min(merged.duplicateWindowMs, merged.maxAgeMs);
  }
  streamName('stream.name', merged.name);
  if (!['limits', 'interest', 'workqueue'].includes(merged.retention)) {
    throw configError(
      'stream.retention',
      `expected 'limits', 'interest' or 'workqueue', got ${show(merged.retention)}`,
    );
  }
  storage('stream.storage', merged.storage);
  nonNegative('stream.maxAgeMs', merged.maxAgeMs);
  limit('stream.maxBytes', merged.maxBytes);
  limit('stream.maxMsgs', merged.maxMsgs);
  replicas('stream.replicas', merged.replicas);
  positive('stream.duplicateWindowMs', merged.duplicateWindowMs);
  if (merged.maxAgeMs > 0 && merged.duplicateWindowMs > merged.maxAgeMs) {
    throw configError(
      'stream.duplicateWindowMs',
      `must not exceed stream.maxAgeMs (${merged.duplicateWindowMs} > ${merged.maxAgeMs})`,
    );
  }
  return merged;
}

function resolveDlq(input: Partial<NatsDlqOptions> | undefined, mode: NatsMode): NatsDlqOptions {
  const merged: NatsDlqOptions = {
    durable: mode === 'jetstream' ? true : 'auto',
    ...DEFAULT_NATS_DLQ_OPTIONS,
    ...objectField('dlq', input, DLQ_KEYS),
  };
  if (typeof merged.durable !== 'boolean' && merged.durable !== 'auto') {
    throw configError('dlq.durable', `expected true, false or 'auto', got ${show(merged.durable)}`);
  }
  streamName('dlq.streamName', merged.streamName);
  storage('dlq.storage', merged.storage);
  nonNegative('dlq.maxAgeMs', merged.maxAgeMs);
  limit('dlq.maxBytes', merged.maxBytes);
  limit('dlq.maxMsgs', merged.maxMsgs);
  replicas('dlq.replicas', merged.replicas);
  return merged;
}

function resolveConsumer(input: Partial<NatsConsumerOptions> | undefined): NatsConsumerOptions {
  const merged = {
    ...DEFAULT_NATS_CONSUMER_OPTIONS,
    ...objectField('consumer', input, CONSUMER_KEYS),
  };
  positive('consumer.ackWaitMs', merged.ackWaitMs);
  positiveInteger('consumer.maxAckPending', merged.maxAckPending);
  positiveInteger('consumer.batchSize', merged.batchSize);
  if (!Number.isInteger(merged.maxDeliver) || (merged.maxDeliver < 1 && merged.maxDeliver !== -1)) {
    throw configError(
      'consumer.maxDeliver',
      `expected -1 (no limit) or an integer >= 1, got ${show(merged.maxDeliver)}`,
    );
  }
  positive('consumer.inactiveThresholdMs', merged.inactiveThresholdMs);
  return merged;
}

function resolveAuth(input: NatsAuthOptions | undefined): NatsAuthOptions {
  const auth = objectField('auth', input, AUTH_KEYS);
  const kinds = [
    auth.token !== undefined,
    auth.user !== undefined || auth.pass !== undefined,
    auth.nkeySeed !== undefined,
    auth.creds !== undefined,
    auth.authenticator !== undefined,
  ].filter(Boolean).length;
  if (kinds > 1) {
    throw configError(
      'auth',
      'set one kind of credentials: token, user/pass, nkeySeed, creds or authenticator',
    );
  }
  if (auth.token !== undefined && (typeof auth.token !== 'string' || auth.token === '')) {
    throw configError('auth.token', 'expected a non-empty string');
  }
  if (auth.pass !== undefined && auth.user === undefined) {
    throw configError('auth.user', 'is required when auth.pass is set');
  }
  if (auth.user !== undefined && typeof auth.user !== 'string') {
    throw configError('auth.user', `expected a string, got ${show(auth.user)}`);
  }
  if (auth.pass !== undefined && typeof auth.pass !== 'string') {
    throw configError('auth.pass', `expected a string, got ${show(auth.pass)}`);
  }
  for (const field of ['nkeySeed', 'creds'] as const) {
    const value = auth[field];
    if (value !== undefined && typeof value !== 'string' && !(value instanceof Uint8Array)) {
      throw configError(`auth.${field}`, 'expected a string or a Uint8Array');
    }
  }
  return auth;
}

function objectField<T extends object>(
  field: string,
  value: T | undefined,
  known: readonly string[],
): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw configError(field, `expected an object, got ${show(value)}`);
  }
  rejectUnknown(`${field}.`, value, known);
  // Explicit `undefined` fields must not overwrite defaults when spread.
  const out: Partial<T> = {};
  for (const [key, v] of Object.entries(value)) {
    if (v !== undefined) (out as Record<string, unknown>)[key] = v;
  }
  return out;
}

/** A `CONFIG` error naming the first own field of `value` (not `undefined`) not in `known`. */
function rejectUnknown(path: string, value: object, known: readonly string[]): void {
  for (const [key, v] of Object.entries(value)) {
    if (v !== undefined && !known.includes(key)) {
      throw configError(
        `${path}${key}`,
        `is not an option${path === '' ? '' : ` of ${path.slice(0, -1)}`} (known: ${known.join(', ')})`,
      );
    }
  }
}

function streamName(field: string, value: unknown): void {
  if (typeof value !== 'string' || !STREAM_NAME.test(value)) {
    throw configError(field, `expected 1-255 characters of [A-Za-z0-9_-], got ${show(value)}`);
  }
}

function storage(field: string, value: unknown): void {
  if (value !== 'file' && value !== 'memory') {
    throw configError(field, `expected 'file' or 'memory', got ${show(value)}`);
  }
}

function nonNegative(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw configError(field, `expected a finite number >= 0, got ${show(value)}`);
  }
  return value;
}

function positive(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw configError(field, `expected a finite number > 0, got ${show(value)}`);
  }
  return value;
}

function positiveInteger(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw configError(field, `expected an integer >= 1, got ${show(value)}`);
  }
  return value;
}

function limit(field: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || (value < 1 && value !== -1)) {
    throw configError(field, `expected -1 (no limit) or an integer >= 1, got ${show(value)}`);
  }
}

function replicas(field: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 5) {
    throw configError(field, `expected an integer from 1 to 5, got ${show(value)}`);
  }
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null)
    return String(value);
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}
