/**
 * The options of {@link WebSocketHub}: their types with documented defaults, and
 * `resolveHubConfig`, which checks each with core's option validators. Nothing here listens
 * or talks to a client.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { configError, systemClock, type Clock, type Transport } from '@watchtower/core';
import {
  booleanOption,
  clockOption,
  functionOption,
  integerOption,
  numberOption,
  objectOption,
  oneOfOption,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import { isValidPattern } from '@watchtower/core';

/**
 * Decides who a connecting client is, from its upgrade request (headers, query, TLS client
 * certificate). Returns the principal (any value but `undefined`, `null` and `false`), or one of
 * those to refuse the client with HTTP 401 before the upgrade completes. A throw refuses too.
 */
export type Authenticate = (request: IncomingMessage) => unknown;

/**
 * Decides whether `principal` may subscribe to a pattern or publish an event of a type. `true`
 * allows; anything else (or a throw) refuses with a `FORBIDDEN` error frame.
 */
export type Authorize = (
  principal: unknown,
  action: 'subscribe' | 'publish',
  subject: string,
) => boolean | Promise<boolean>;

/** A per-connection token bucket for publishes. */
export interface PublishRate {
  /** Publishes per second, sustained. */
  perSecond: number;
  /** Publishes allowed at once. @defaultValue `perSecond` */
  burst?: number;
}

/** Relay between a broker and the hub's clients. */
export interface HubBridge {
  /**
   * The broker's transport (`NatsTransport`, `RedisTransport`, ...). The hub connects it,
   * subscribes with `patterns` and publishes there what its clients publish; closing it is
   * the caller's.
   */
  transport: Transport;
  /**
   * What the hub reads from the broker for its clients.
   * @defaultValue `['>']` (everything)
   */
  patterns?: string[];
}

/** Options of {@link WebSocketHub}. */
export interface WebSocketHubOptions {
  /** Port of the hub's own HTTP server; `0` picks a free one. Not with `server`. @defaultValue `8080` */
  port?: number;
  /** Interface of the hub's own server. Not with `server`. @defaultValue `'127.0.0.1'` */
  host?: string;
  /**
   * An HTTP(S) server to embed into: the hub takes its upgrades on `path` and leaves other
   * paths and requests alone (mount `hub.handleHealth` yourself). @defaultValue none: the hub
   * makes its own server on `port`
   */
  server?: Server | HttpsServer;
  /** The path clients connect to. @defaultValue `'/events'` */
  path?: string;
  /** GET here on the hub's own server returns `hub.stats()` as JSON. @defaultValue `'/health'` */
  healthPath?: string;
  /** @defaultValue none: every client is let in, with principal `undefined` */
  authenticate?: Authenticate;
  /** @defaultValue none: everything is allowed */
  authorize?: Authorize;
  /** Connections at once; the next is refused with HTTP 503. @defaultValue `10000` */
  maxConnections?: number;
  /** Largest frame a client may send, in bytes; larger ones close it with 1009. @defaultValue `1048576` */
  maxPayload?: number;
  /**
   * Bytes waiting to be sent to one client before it counts as a slow consumer.
   * @defaultValue `4194304` (4 MiB)
   */
  maxBufferedBytes?: number;
  /**
   * What happens to a slow consumer: `'disconnect'` closes it with 1008 (it may reconnect and
   * catch up from now on), `'drop'` skips events for it until its buffer drains, counting them.
   * @defaultValue `'disconnect'`
   */
  slowConsumer?: 'disconnect' | 'drop';
  /** Per-connection publish limit; over it a publish is refused with `RATE_LIMITED`. @defaultValue none */
  publishRate?: PublishRate;
  /** @defaultValue `1000` */
  maxSubscriptionsPerConnection?: number;
  /**
   * The patterns a client that does not speak the hub protocol is subscribed to from the
   * moment it connects, until it sends a `subscribe` of its own. The Rust client never
   * subscribes at the hub (it takes every event of the connection and filters locally), nor does
   * a plain script; with `['>']` they receive what they would from a plain server. Watchtower
   * clients announce the hub protocol on upgrade (subprotocol `watchtower.v1`) and never get
   * these. Each pattern goes through `authorize(principal, 'subscribe', pattern)`; `[]` turns
   * it off. At most `maxSubscriptionsPerConnection` patterns.
   * @defaultValue `['>']`
   */
  defaultSubscriptions?: readonly string[];
  /**
   * The hub pings every client this often and drops one that did not answer the previous ping;
   * `0` turns it off.
   * @defaultValue `30000`
   */
  pingIntervalMs?: number;
  /** Accept permessage-deflate from clients that offer it. @defaultValue `false` */
  perMessageDeflate?: boolean;
  /** @defaultValue none */
  bridge?: HubBridge;
  /** @defaultValue `10000` */
  closeTimeoutMs?: number;
  /** @defaultValue `systemClock` */
  clock?: Clock;
}

/** {@link WebSocketHubOptions.defaultSubscriptions} by default: everything. */
const DEFAULT_SUBSCRIPTIONS: readonly string[] = Object.freeze(['>']);

/** The defaults of {@link WebSocketHubOptions}. */
export const DEFAULT_HUB_OPTIONS = {
  port: 8080,
  host: '127.0.0.1',
  path: '/events',
  healthPath: '/health',
  maxConnections: 10_000,
  maxPayload: 1_048_576,
  maxBufferedBytes: 4_194_304,
  slowConsumer: 'disconnect',
  maxSubscriptionsPerConnection: 1000,
  defaultSubscriptions: DEFAULT_SUBSCRIPTIONS,
  pingIntervalMs: 30_000,
  perMessageDeflate: false,
  closeTimeoutMs: 10_000,
} as const satisfies Partial<WebSocketHubOptions>;

/** {@link WebSocketHubOptions} checked, with the defaults applied. */
export interface ResolvedHubConfig {
  readonly port: number;
  readonly host: string;
  readonly server: Server | HttpsServer | undefined;
  readonly path: string;
  readonly healthPath: string;
  readonly authenticate: Authenticate | undefined;
  readonly authorize: Authorize | undefined;
  readonly maxConnections: number;
  readonly maxPayload: number;
  readonly maxBufferedBytes: number;
  readonly slowConsumer: 'disconnect' | 'drop';
  readonly publishRate: Readonly<Required<PublishRate>> | undefined;
  readonly maxSubscriptionsPerConnection: number;
  readonly defaultSubscriptions: readonly string[];
  readonly pingIntervalMs: number;
  readonly perMessageDeflate: boolean;
  readonly bridge:
    { readonly transport: Transport; readonly patterns: readonly string[] } | undefined;
  readonly closeTimeoutMs: number;
  readonly clock: Clock;
}

const HUB_KEYS = Object.keys({
  port: true,
  host: true,
  server: true,
  path: true,
  healthPath: true,
  authenticate: true,
  authorize: true,
  maxConnections: true,
  maxPayload: true,
  maxBufferedBytes: true,
  slowConsumer: true,
  publishRate: true,
  maxSubscriptionsPerConnection: true,
  defaultSubscriptions: true,
  pingIntervalMs: true,
  perMessageDeflate: true,
  bridge: true,
  closeTimeoutMs: true,
  clock: true,
} satisfies Record<keyof WebSocketHubOptions, true>);

const PATH = /^\/[^\s?#]*$/;

/** @throws a `CONFIG` error naming the field. */
export function resolveHubConfig(options: WebSocketHubOptions): ResolvedHubConfig {
  rejectUnknownOptions(options, HUB_KEYS, 'WebSocketHub');
  const d = DEFAULT_HUB_OPTIONS;
  const server = options.server;
  if (server !== undefined) {
    if (typeof server !== 'object' || server === null || typeof server.on !== 'function') {
      throw configError('server', 'must be an http.Server or https.Server');
    }
    if (options.port !== undefined || options.host !== undefined) {
      throw configError(
        options.port === undefined ? 'host' : 'port',
        "is for the hub's own server; not with server",
      );
    }
  }
  const path = stringOption('path', options.path ?? d.path, {
    pattern: PATH,
    hint: 'a path starting with /',
  });
  const healthPath = stringOption('healthPath', options.healthPath ?? d.healthPath, {
    pattern: PATH,
    hint: 'a path starting with /',
  });
  if (healthPath === path) throw configError('healthPath', `must differ from path (${path})`);
  const maxSubscriptionsPerConnection = integerOption(
    'maxSubscriptionsPerConnection',
    options.maxSubscriptionsPerConnection ?? d.maxSubscriptionsPerConnection,
    1,
  );
  const defaultSubscriptions = patternsOption(
    'defaultSubscriptions',
    options.defaultSubscriptions ?? d.defaultSubscriptions,
    { allowEmpty: true },
  );
  if (defaultSubscriptions.length > maxSubscriptionsPerConnection) {
    throw configError(
      'defaultSubscriptions',
      `must have at most maxSubscriptionsPerConnection (${maxSubscriptionsPerConnection}) patterns`,
    );
  }
  return {
    port: integerOption('port', options.port ?? d.port, 0, { max: 65_535 }),
    host: stringOption('host', options.host ?? d.host),
    server,
    path,
    healthPath,
    authenticate:
      options.authenticate === undefined
        ? undefined
        : functionOption('authenticate', options.authenticate),
    authorize:
      options.authorize === undefined ? undefined : functionOption('authorize', options.authorize),
    maxConnections: integerOption('maxConnections', options.maxConnections ?? d.maxConnections, 1),
    maxPayload: integerOption('maxPayload', options.maxPayload ?? d.maxPayload, 64),
    maxBufferedBytes: integerOption(
      'maxBufferedBytes',
      options.maxBufferedBytes ?? d.maxBufferedBytes,
      0,
    ),
    slowConsumer: oneOfOption('slowConsumer', options.slowConsumer ?? d.slowConsumer, [
      'disconnect',
      'drop',
    ]),
    publishRate: resolvePublishRate(options.publishRate),
    maxSubscriptionsPerConnection,
    defaultSubscriptions,
    pingIntervalMs: numberOption('pingIntervalMs', options.pingIntervalMs ?? d.pingIntervalMs, {
      min: 0,
      hint: '0 turns keepalive off',
    }),
    perMessageDeflate: booleanOption(
      'perMessageDeflate',
      options.perMessageDeflate ?? d.perMessageDeflate,
    ),
    bridge: resolveBridge(options.bridge),
    closeTimeoutMs: numberOption('closeTimeoutMs', options.closeTimeoutMs ?? d.closeTimeoutMs, {
      min: 0,
    }),
    clock: options.clock === undefined ? systemClock : clockOption('clock', options.clock),
  };
}

function resolvePublishRate(rate: PublishRate | undefined): Required<PublishRate> | undefined {
  const given = objectOption('publishRate', rate, ['perSecond', 'burst']);
  if (rate === undefined) return undefined;
  const perSecond = numberOption('publishRate.perSecond', given.perSecond, { above: 0 });
  const burst = numberOption('publishRate.burst', given.burst ?? Math.max(1, perSecond), {
    min: 1,
  });
  return { perSecond, burst };
}

function resolveBridge(bridge: HubBridge | undefined): ResolvedHubConfig['bridge'] {
  const given = objectOption('bridge', bridge, ['transport', 'patterns']);
  if (bridge === undefined) return undefined;
  const transport = given.transport;
  if (
    typeof transport !== 'object' ||
    transport === null ||
    typeof transport.publish !== 'function' ||
    typeof transport.subscribe !== 'function'
  ) {
    throw configError('bridge.transport', 'must be a Watchtower Transport');
  }
  return {
    transport,
    patterns: patternsOption('bridge.patterns', given.patterns ?? ['>'], { allowEmpty: false }),
  };
}

/** An array of patterns, copied; `CONFIG` naming the entry that is not one. */
function patternsOption(
  field: string,
  patterns: unknown,
  { allowEmpty }: { allowEmpty: boolean },
): readonly string[] {
  if (!Array.isArray(patterns) || (!allowEmpty && patterns.length === 0)) {
    throw configError(field, `must be ${allowEmpty ? 'an' : 'a non-empty'} array of patterns`);
  }
  for (const [i, pattern] of patterns.entries()) {
    if (!isValidPattern(pattern)) {
      throw configError(`${field}[${i}]`, `must be a pattern, got ${JSON.stringify(pattern)}`);
    }
  }
  return Object.freeze([...(patterns as string[])]);
}

/**
 * The bearer token of an upgrade request, for `authenticate`: the `Authorization: Bearer`
 * header (what the Node client sends) or else the `access_token` query parameter (what the
 * browser client sends, since a browser cannot set headers). `undefined` when there is none.
 */
export function bearerToken(request: IncomingMessage): string | undefined {
  const header = request.headers.authorization;
  if (typeof header === 'string' && /^bearer /i.test(header)) {
    const token = header.slice('bearer '.length).trim();
    if (token !== '') return token;
  }
  const url = request.url ?? '';
  const query = url.indexOf('?');
  if (query < 0) return undefined;
  const token = new URLSearchParams(url.slice(query + 1)).get('access_token');
  return token === null || token === '' ? undefined : token;
}
