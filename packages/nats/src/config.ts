/**
 * The options of {@link NatsTransport}: their types with documented defaults, and
 * `resolveNatsConfig`, which merges them over the defaults and checks each section with core's
 * option validators. Only rules of NATS itself (stream names, replicas, subject prefixes that
 * must not overlap) are written here; nothing here talks to a server.
 */
import { isIP } from 'node:net';
import type { Authenticator, NodeConnectionOptions } from '@nats-io/transport-node';
import { configError, systemClock, type Clock } from '@watchtower/core';
import {
  clockOption,
  describeValue,
  integerOption,
  limitOption,
  numberOption,
  objectOption,
  oneOfOption,
  recordOption,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';

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
   * be at least the EventBus retry `maxAttempts` (`NatsSubscriber` refuses it otherwise), so
   * the EventBus sees the last attempt and dead-letters it. A delivery nacked when the server
   * would not deliver it again is dead-lettered by the transport itself, never dropped.
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
   * Server URL(s): `nats://host:port`, `tls://host:port` or `host:port` (the port defaults to
   * 4222), as an array or a comma-separated string. `tls://` requires TLS (as `tls: {}` does
   * when neither `tls` nor `connectionOptions.tls` is set); the client applies one TLS setting
   * to every server, so `tls://` is used for all of them or none. The Node client does not
   * connect over WebSocket (`ws://`, `wss://`), and takes credentials from `auth`, not from
   * the URL.
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
  /**
   * Wait between reconnect attempts to one server: a server that is back is found within
   * this (plus the jitter). @defaultValue `500`
   */
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
  /**
   * The time of the transport's own timers and timestamps: time limits of close, unsubscribe
   * and flushes, reconnect backoff of consumers, the keep-alive of buffered JetStream messages,
   * drop reports, `failedAt` of the dead letters it writes. The NATS client keeps its own
   * timers (reconnects, pings, request timeouts).
   * @defaultValue `systemClock`
   */
  clock: Clock;
}

/** The defaults of {@link NatsConfig}. */
export const DEFAULT_NATS_CONFIG = {
  servers: 'nats://127.0.0.1:4222',
  mode: 'core',
  subjectPrefix: 'watchtower.events',
  dlqPrefix: 'dlq',
  name: 'watchtower',
  maxReconnectAttempts: -1,
  reconnectTimeWaitMs: 500,
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
  readonly clock: Clock;
}

/**
 * The keys of {@link NatsConfig}, for `NatsSubscriber` to tell them from EventBus options.
 * Listed as a record so that a field added to NatsConfig and left out here fails to compile.
 */
export const NATS_CONFIG_KEYS: readonly string[] = Object.keys({
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
  clock: true,
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
// A server is a URL with a scheme, or host[:port]; the hostname as the client resolves it, or a
// bracketed IPv6 address.
const URL_SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
const SERVER_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$/;
const SERVER_HINT = 'a server URL like "nats://host:4222", "tls://host:4222" or "host:4222"';
const NON_NEGATIVE = { min: 0 } as const;
const POSITIVE = { above: 0 } as const;

/**
 * Merges `config` over the defaults and checks every value, one section at a time.
 *
 * @throws `WatchtowerError` with code `CONFIG` naming the first bad field.
 */
export function resolveNatsConfig(config: Partial<NatsConfig> = {}): ResolvedNatsConfig {
  if (typeof config !== 'object' || config === null) {
    throw configError('config', `must be an options object, got ${describeValue(config)}`);
  }
  // A misspelt option (`maxDeliver` at the top, `consumer.ackWait`) must not be ignored.
  rejectUnknownOptions(config, NATS_CONFIG_KEYS, 'NatsTransport');
  const mode = oneOfOption('mode', config.mode ?? DEFAULT_NATS_CONFIG.mode, ['core', 'jetstream']);
  const connection = resolveConnection(config);
  const subjects = resolveSubjects(config);
  const stream = resolveStream(config.stream);
  return {
    mode,
    ...connection,
    ...subjects,
    stream,
    dlq: resolveDlq(config.dlq, mode, stream.name),
    consumer: resolveConsumer(config.consumer),
    pendingLimit: integerOption(
      'pendingLimit',
      config.pendingLimit ?? DEFAULT_NATS_CONFIG.pendingLimit,
      1,
    ),
    auth: resolveAuth(config.auth),
    tls: resolveTls(config.tls, connection),
    clock: config.clock === undefined ? systemClock : clockOption('clock', config.clock),
  };
}

/**
 * The client reads a server as host and port only, whatever its scheme: `tls://` would connect
 * in plain text to a server that offers no TLS. It requires TLS here, as it says.
 */
function resolveTls(
  value: NatsTlsOptions | undefined,
  { servers, connectionOptions }: Pick<ResolvedNatsConfig, 'servers' | 'connectionOptions'>,
): NatsTlsOptions | undefined {
  const tls = recordOption('tls', value, 'an object of TLS options');
  const secure = servers.filter((server) => server.toLowerCase().startsWith('tls://'));
  if (secure.length === 0) return tls;
  if (secure.length < servers.length) {
    throw configError(
      'servers',
      `must all use tls:// or none (the client applies one TLS setting to every server), got ${describeValue(servers.join(','))}`,
    );
  }
  return tls ?? ('tls' in connectionOptions ? undefined : {});
}

type NatsConnectionConfig = Pick<
  ResolvedNatsConfig,
  | 'servers'
  | 'name'
  | 'maxReconnectAttempts'
  | 'reconnectTimeWaitMs'
  | 'reconnectJitterMs'
  | 'connectTimeoutMs'
  | 'requestTimeoutMs'
  | 'connectionOptions'
>;

function resolveConnection(config: Partial<NatsConfig>): NatsConnectionConfig {
  const d = DEFAULT_NATS_CONFIG;
  return {
    servers: resolveServers(config.servers ?? d.servers),
    name: stringOption('name', config.name ?? d.name),
    maxReconnectAttempts: limitOption(
      'maxReconnectAttempts',
      config.maxReconnectAttempts ?? d.maxReconnectAttempts,
      0,
    ),
    reconnectTimeWaitMs: numberOption(
      'reconnectTimeWaitMs',
      config.reconnectTimeWaitMs ?? d.reconnectTimeWaitMs,
      NON_NEGATIVE,
    ),
    reconnectJitterMs: numberOption(
      'reconnectJitterMs',
      config.reconnectJitterMs ?? d.reconnectJitterMs,
      NON_NEGATIVE,
    ),
    connectTimeoutMs: numberOption(
      'connectTimeoutMs',
      config.connectTimeoutMs ?? d.connectTimeoutMs,
      POSITIVE,
    ),
    requestTimeoutMs: numberOption(
      'requestTimeoutMs',
      config.requestTimeoutMs ?? d.requestTimeoutMs,
      POSITIVE,
    ),
    connectionOptions:
      recordOption(
        'connectionOptions',
        config.connectionOptions,
        'an object of connection options',
      ) ?? {},
  };
}

function resolveServers(value: unknown): string[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (!Array.isArray(list) || list.length === 0) {
    throw configError(
      'servers',
      `must be a URL or a non-empty array of URLs, got ${describeValue(value)}`,
    );
  }
  return list.map(serverOption);
}

/**
 * Checks one server the way the client will read it, so that a URL it cannot use is a `CONFIG`
 * error now rather than a retryable `CONNECTION` error at every connect.
 */
function serverOption(value: unknown): string {
  const server = stringOption('servers', value, { pattern: /^\S+$/, hint: SERVER_HINT });
  const scheme = URL_SCHEME.exec(server)?.[1]?.toLowerCase();
  if (scheme === 'ws' || scheme === 'wss') {
    throw configError(
      'servers',
      `must be ${SERVER_HINT} (the Node client does not connect over WebSocket), got ${describeValue(server)}`,
    );
  }
  if (scheme !== undefined && scheme !== 'nats' && scheme !== 'tls') {
    throw configError('servers', `must be ${SERVER_HINT}, got ${describeValue(server)}`);
  }
  // The client brackets a bare IPv6 address itself.
  if (scheme === undefined && isIP(server) === 6) return server;
  let url: URL;
  try {
    url = new URL(scheme === undefined ? `nats://${server}` : server);
  } catch {
    throw configError(
      'servers',
      `must be ${SERVER_HINT}, with a port of 1-65535, got ${describeValue(server)}`,
    );
  }
  if (url.username !== '' || url.password !== '') {
    // The client ignores credentials in the URL; the message must not repeat them.
    throw configError(
      'servers',
      `must not hold credentials (the client ignores them; set auth), got ${describeValue(`${url.protocol}//***@${url.host}`)}`,
    );
  }
  if (
    !SERVER_HOST.test(url.hostname) ||
    url.port === '0' ||
    (url.pathname !== '' && url.pathname !== '/') ||
    url.search !== '' ||
    url.hash !== ''
  ) {
    throw configError(
      'servers',
      `must be ${SERVER_HINT}, a host and a port of 1-65535 only, got ${describeValue(server)}`,
    );
  }
  return server;
}

function resolveSubjects(
  config: Partial<NatsConfig>,
): Pick<ResolvedNatsConfig, 'subjectPrefix' | 'dlqPrefix'> {
  const subjectPrefix = prefixOption(
    'subjectPrefix',
    config.subjectPrefix ?? DEFAULT_NATS_CONFIG.subjectPrefix,
  );
  const dlqPrefix = prefixOption('dlqPrefix', config.dlqPrefix ?? DEFAULT_NATS_CONFIG.dlqPrefix);
  if (tokenPrefixOf(subjectPrefix, dlqPrefix) || tokenPrefixOf(dlqPrefix, subjectPrefix)) {
    // Overlapping subject spaces would deliver dead letters as events (and the two JetStream
    // streams would claim the same subjects, which the server refuses).
    throw configError(
      'dlqPrefix',
      `must not overlap subjectPrefix (${describeValue(subjectPrefix)}), got ${describeValue(dlqPrefix)}`,
    );
  }
  return { subjectPrefix, dlqPrefix };
}

function tokenPrefixOf(prefix: string, subject: string): boolean {
  return subject === prefix || subject.startsWith(`${prefix}.`);
}

function resolveStream(input: Partial<NatsStreamOptions> | undefined): NatsStreamOptions {
  const given = objectOption('stream', input, STREAM_KEYS);
  const merged = { ...DEFAULT_NATS_STREAM_OPTIONS, ...given };
  const stream: NatsStreamOptions = {
    name: streamNameOption('stream.name', merged.name),
    retention: oneOfOption('stream.retention', merged.retention, [
      'limits',
      'interest',
      'workqueue',
    ]),
    storage: storageOption('stream.storage', merged.storage),
    maxAgeMs: numberOption('stream.maxAgeMs', merged.maxAgeMs, NON_NEGATIVE),
    maxBytes: limitOption('stream.maxBytes', merged.maxBytes),
    maxMsgs: limitOption('stream.maxMsgs', merged.maxMsgs),
    replicas: replicasOption('stream.replicas', merged.replicas),
    duplicateWindowMs: numberOption('stream.duplicateWindowMs', merged.duplicateWindowMs, POSITIVE),
  };
  // The server refuses a duplicate window longer than the max age: the default follows it.
  if (stream.maxAgeMs > 0 && given.duplicateWindowMs === undefined) {
    stream.duplicateWindowMs = Math.min(stream.duplicateWindowMs, stream.maxAgeMs);
  }
  if (stream.maxAgeMs > 0 && stream.duplicateWindowMs > stream.maxAgeMs) {
    throw configError(
      'stream.duplicateWindowMs',
      `must be at most stream.maxAgeMs (${stream.maxAgeMs}), got ${stream.duplicateWindowMs}`,
    );
  }
  return stream;
}

function resolveDlq(
  input: Partial<NatsDlqOptions> | undefined,
  mode: NatsMode,
  streamName: string,
): NatsDlqOptions {
  const merged = {
    durable: mode === 'jetstream' ? true : 'auto',
    ...DEFAULT_NATS_DLQ_OPTIONS,
    ...objectOption('dlq', input, DLQ_KEYS),
  };
  const dlq: NatsDlqOptions = {
    durable: oneOfOption('dlq.durable', merged.durable, [true, false, 'auto']),
    streamName: streamNameOption('dlq.streamName', merged.streamName),
    storage: storageOption('dlq.storage', merged.storage),
    maxAgeMs: numberOption('dlq.maxAgeMs', merged.maxAgeMs, NON_NEGATIVE),
    maxBytes: limitOption('dlq.maxBytes', merged.maxBytes),
    maxMsgs: limitOption('dlq.maxMsgs', merged.maxMsgs),
    replicas: replicasOption('dlq.replicas', merged.replicas),
  };
  if (dlq.durable !== false && mode === 'jetstream' && dlq.streamName === streamName) {
    throw configError(
      'dlq.streamName',
      `must differ from stream.name, got ${describeValue(dlq.streamName)}`,
    );
  }
  return dlq;
}

function resolveConsumer(input: Partial<NatsConsumerOptions> | undefined): NatsConsumerOptions {
  const merged = {
    ...DEFAULT_NATS_CONSUMER_OPTIONS,
    ...objectOption('consumer', input, CONSUMER_KEYS),
  };
  return {
    ackWaitMs: numberOption('consumer.ackWaitMs', merged.ackWaitMs, POSITIVE),
    maxAckPending: integerOption('consumer.maxAckPending', merged.maxAckPending, 1),
    batchSize: integerOption('consumer.batchSize', merged.batchSize, 1),
    maxDeliver: limitOption('consumer.maxDeliver', merged.maxDeliver),
    inactiveThresholdMs: numberOption(
      'consumer.inactiveThresholdMs',
      merged.inactiveThresholdMs,
      POSITIVE,
    ),
  };
}

function resolveAuth(input: NatsAuthOptions | undefined): NatsAuthOptions {
  const auth = objectOption('auth', input, AUTH_KEYS);
  const kinds = [
    auth.token !== undefined && 'token',
    (auth.user !== undefined || auth.pass !== undefined) && 'user/pass',
    auth.nkeySeed !== undefined && 'nkeySeed',
    auth.creds !== undefined && 'creds',
    auth.authenticator !== undefined && 'authenticator',
  ].filter((kind) => kind !== false);
  if (kinds.length > 1) {
    throw configError(
      'auth',
      `must hold one kind of credentials (token, user/pass, nkeySeed, creds or authenticator), got ${kinds.join(' and ')}`,
    );
  }
  if (auth.token !== undefined) stringOption('auth.token', auth.token);
  if (auth.pass !== undefined && auth.user === undefined) {
    throw configError('auth.user', 'must be set when auth.pass is, got undefined');
  }
  if (auth.user !== undefined) stringOption('auth.user', auth.user, { allowEmpty: true });
  if (auth.pass !== undefined) stringOption('auth.pass', auth.pass, { allowEmpty: true });
  for (const field of ['nkeySeed', 'creds'] as const) {
    const value = auth[field];
    if (value !== undefined && typeof value !== 'string' && !(value instanceof Uint8Array)) {
      throw configError(
        `auth.${field}`,
        `must be a string or a Uint8Array, got ${describeValue(value)}`,
      );
    }
  }
  return auth;
}

function prefixOption(field: string, value: unknown): string {
  return stringOption(field, value, {
    pattern: SUBJECT_PREFIX,
    hint: 'dotted tokens of [A-Za-z0-9_-] without wildcards',
  });
}

function streamNameOption(field: string, value: unknown): string {
  return stringOption(field, value, {
    pattern: STREAM_NAME,
    hint: '1-255 characters of [A-Za-z0-9_-]',
  });
}

function storageOption(field: string, value: unknown): 'file' | 'memory' {
  return oneOfOption(field, value, ['file', 'memory']);
}

// A JetStream stream has at most 5 replicas.
function replicasOption(field: string, value: unknown): number {
  return integerOption(field, value, 1, { max: 5 });
}
