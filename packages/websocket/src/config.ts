/**
 * The options of the WebSocket client transport (Node and browser alike): their types with
 * documented defaults, and `resolveClientConfig`, which merges them over the defaults and checks
 * each with core's option validators. The Node-only options (`headers`, `tls`,
 * `perMessageDeflate`) are resolved by the Node transport; this file must not import `ws` or a
 * Node built-in, since the browser build uses it too.
 */
import {
  InMemoryDeadLetterQueue,
  configError,
  systemClock,
  type Clock,
  type DeadLetterQueue,
} from '@watchtower/core';
import {
  clockOption,
  integerOption,
  limitOption,
  numberOption,
  oneOfOption,
  stringOption,
} from '@watchtower/core/transport-kit';

/**
 * What the peer speaks.
 *
 * - `'hub'`: the hub protocol of `WebSocketHub` (see the README): subscriptions are sent to the
 *   hub, which routes only matching events; a publish resolves when the hub has taken it.
 * - `'plain'`: events only, as the Rust client sends them, to any WebSocket server (an echo
 *   server, a Rust Watchtower service): a publish resolves once the frame is handed to the
 *   socket, subscriptions filter what arrives by pattern, here.
 */
export type WebSocketProtocol = 'hub' | 'plain';

/** Options shared by the Node and the browser client. */
export interface WebSocketClientConfig {
  /**
   * The server: `ws://` or `wss://`.
   * @defaultValue `'ws://127.0.0.1:8080/events'`
   */
  url?: string;
  /** @defaultValue `'hub'` */
  protocol?: WebSocketProtocol;
  /**
   * Reconnect attempts after the connection is lost; `-1` for no limit. When they run out,
   * waiting publishes reject with `CONNECTION`, subscriptions end with a `CONNECTION` error
   * and the next `connect()` starts afresh.
   * @defaultValue `-1`
   */
  maxReconnectAttempts?: number;
  /**
   * The first reconnect waits up to this long; each failure doubles the cap up to
   * `maxReconnectDelayMs`, and each wait is drawn at random below the cap (full jitter).
   * @defaultValue `1000`
   */
  reconnectDelayMs?: number;
  /** @defaultValue `30000` */
  maxReconnectDelayMs?: number;
  /**
   * Time limit of one connection attempt (TCP, TLS and the upgrade).
   * @defaultValue `10000`
   */
  connectTimeoutMs?: number;
  /**
   * A keepalive probe every this long (a protocol ping from Node, a `ping` frame from a
   * browser); `0` turns keepalive off.
   * @defaultValue `30000`
   */
  pingIntervalMs?: number;
  /**
   * A probe not answered within this long means the peer is gone: the socket is dropped and
   * the client reconnects.
   * @defaultValue `10000`
   */
  pongTimeoutMs?: number;
  /**
   * Largest frame, in bytes, in both directions: a larger publish rejects (`TRANSPORT`, not
   * retryable) before it is sent, and a larger incoming frame closes the connection with
   * code 1009 (the client reconnects).
   * @defaultValue `1048576` (1 MiB)
   */
  maxMessageSize?: number;
  /**
   * Time limit of the hub's answer to a subscribe or unsubscribe.
   * @defaultValue `10000`
   */
  requestTimeoutMs?: number;
  /**
   * Deliveries one subscription may hold that its consumer has not taken. Beyond it, arriving
   * events are dropped (this transport delivers at most once) and reported as
   * `BACKPRESSURE_DROPPED` on `on('error')`, instead of growing memory without bound. The
   * subscribe option `maxInFlight` replaces it for one subscription.
   * @defaultValue `65536`
   */
  pendingLimit?: number;
  /**
   * A bearer token for the hub's `authenticate`: sent as `Authorization: Bearer <token>` from
   * Node, as the `access_token` query parameter from a browser (which cannot set headers).
   * @defaultValue none
   */
  authToken?: string;
  /**
   * Where dead letters go. @defaultValue a new `InMemoryDeadLetterQueue` of `dlqCapacity`
   */
  deadLetterQueue?: DeadLetterQueue;
  /**
   * Capacity of the in-memory dead-letter queue the transport creates (oldest dropped and
   * counted when full). Not with `deadLetterQueue`.
   * @defaultValue `10000`
   */
  dlqCapacity?: number;
  /** What `close()` without `timeoutMs` waits at most. @defaultValue `10000` */
  closeTimeoutMs?: number;
  /** Timers (reconnects, keepalive, time limits) and `failedAt`. @defaultValue `systemClock` */
  clock?: Clock;
}

/** The defaults of {@link WebSocketClientConfig}. */
export const DEFAULT_WEBSOCKET_CONFIG = {
  url: 'ws://127.0.0.1:8080/events',
  protocol: 'hub',
  maxReconnectAttempts: -1,
  reconnectDelayMs: 1000,
  maxReconnectDelayMs: 30_000,
  connectTimeoutMs: 10_000,
  pingIntervalMs: 30_000,
  pongTimeoutMs: 10_000,
  maxMessageSize: 1_048_576,
  requestTimeoutMs: 10_000,
  pendingLimit: 65_536,
  dlqCapacity: 10_000,
  closeTimeoutMs: 10_000,
} as const satisfies Partial<WebSocketClientConfig>;

/** A {@link WebSocketClientConfig} with every default applied and every value checked. */
export interface ResolvedClientConfig {
  readonly url: string;
  readonly protocol: WebSocketProtocol;
  readonly maxReconnectAttempts: number;
  readonly reconnectDelayMs: number;
  readonly maxReconnectDelayMs: number;
  readonly connectTimeoutMs: number;
  readonly pingIntervalMs: number;
  readonly pongTimeoutMs: number;
  readonly maxMessageSize: number;
  readonly requestTimeoutMs: number;
  readonly pendingLimit: number;
  readonly authToken: string | undefined;
  readonly deadLetterQueue: DeadLetterQueue;
  readonly closeTimeoutMs: number;
  readonly clock: Clock;
}

/** The keys of {@link WebSocketClientConfig}; a field left out here fails to compile. */
export const CLIENT_CONFIG_KEYS: readonly string[] = Object.keys({
  url: true,
  protocol: true,
  maxReconnectAttempts: true,
  reconnectDelayMs: true,
  maxReconnectDelayMs: true,
  connectTimeoutMs: true,
  pingIntervalMs: true,
  pongTimeoutMs: true,
  maxMessageSize: true,
  requestTimeoutMs: true,
  pendingLimit: true,
  authToken: true,
  deadLetterQueue: true,
  dlqCapacity: true,
  closeTimeoutMs: true,
  clock: true,
} satisfies Record<keyof WebSocketClientConfig, true>);

const WS_URL = /^wss?:\/\/[^\s/?#]+[^\s]*$/i;

/**
 * Checks the shared client options (the caller has refused unknown keys) and applies the
 * defaults.
 * @throws a `CONFIG` error naming the field.
 */
export function resolveClientConfig(config: WebSocketClientConfig): ResolvedClientConfig {
  const d = DEFAULT_WEBSOCKET_CONFIG;
  const url = stringOption('url', config.url ?? d.url, {
    pattern: WS_URL,
    hint: 'a ws:// or wss:// URL',
  });
  try {
    new URL(url);
  } catch {
    throw configError('url', `must be a ws:// or wss:// URL, got ${JSON.stringify(url)}`);
  }
  const maxReconnectDelayMs = numberOption(
    'maxReconnectDelayMs',
    config.maxReconnectDelayMs ?? d.maxReconnectDelayMs,
    { min: 0 },
  );
  const reconnectDelayMs = numberOption(
    'reconnectDelayMs',
    config.reconnectDelayMs ?? d.reconnectDelayMs,
    { min: 0 },
  );
  if (reconnectDelayMs > maxReconnectDelayMs) {
    throw configError(
      'reconnectDelayMs',
      `must be <= maxReconnectDelayMs (${maxReconnectDelayMs}), got ${reconnectDelayMs}`,
    );
  }
  if (config.deadLetterQueue !== undefined && config.dlqCapacity !== undefined) {
    throw configError(
      'dlqCapacity',
      'sizes the queue the transport creates; not with deadLetterQueue',
    );
  }
  const deadLetterQueue =
    config.deadLetterQueue ?? deadLetterQueueOf(config.dlqCapacity ?? d.dlqCapacity);
  if (
    typeof deadLetterQueue !== 'object' ||
    deadLetterQueue === null ||
    typeof deadLetterQueue.add !== 'function' ||
    typeof deadLetterQueue.list !== 'function'
  ) {
    throw configError('deadLetterQueue', 'must be a DeadLetterQueue (add, list, remove, on ...)');
  }
  return {
    url,
    protocol: oneOfOption('protocol', config.protocol ?? d.protocol, ['hub', 'plain']),
    maxReconnectAttempts: limitOption(
      'maxReconnectAttempts',
      config.maxReconnectAttempts ?? d.maxReconnectAttempts,
      0,
    ),
    reconnectDelayMs,
    maxReconnectDelayMs,
    connectTimeoutMs: numberOption(
      'connectTimeoutMs',
      config.connectTimeoutMs ?? d.connectTimeoutMs,
      { above: 0 },
    ),
    pingIntervalMs: numberOption('pingIntervalMs', config.pingIntervalMs ?? d.pingIntervalMs, {
      min: 0,
      hint: '0 turns keepalive off',
    }),
    pongTimeoutMs: numberOption('pongTimeoutMs', config.pongTimeoutMs ?? d.pongTimeoutMs, {
      above: 0,
    }),
    maxMessageSize: integerOption('maxMessageSize', config.maxMessageSize ?? d.maxMessageSize, 64),
    requestTimeoutMs: numberOption(
      'requestTimeoutMs',
      config.requestTimeoutMs ?? d.requestTimeoutMs,
      { above: 0 },
    ),
    pendingLimit: integerOption('pendingLimit', config.pendingLimit ?? d.pendingLimit, 1),
    authToken:
      config.authToken === undefined ? undefined : stringOption('authToken', config.authToken),
    deadLetterQueue,
    closeTimeoutMs: numberOption('closeTimeoutMs', config.closeTimeoutMs ?? d.closeTimeoutMs, {
      min: 0,
    }),
    clock: config.clock === undefined ? systemClock : clockOption('clock', config.clock),
  };
}

function deadLetterQueueOf(capacity: unknown): DeadLetterQueue {
  return new InMemoryDeadLetterQueue({ capacity: integerOption('dlqCapacity', capacity, 1) });
}
