/**
 * `WebSocketHub`: the server side. WebSocket clients subscribe with patterns and publish
 * events; the hub routes each event once to every connection with a matching subscription,
 * and, given a bridge `Transport`, relays between that broker and its clients.
 *
 * Routing uses core's `PatternIndex`, so the cost of an event follows the subscriptions that
 * match it, not the number of connections. What the hub holds per connection is bounded: its
 * send buffer (`maxBufferedBytes`, then the slow-consumer policy), its subscriptions
 * (`maxSubscriptionsPerConnection`) and its publish rate (`publishRate`). It never trusts a
 * frame: anything it cannot read is answered with an `error` frame, and the connection goes on.
 */
import {
  STATUS_CODES,
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  ErrorCode,
  PatternIndex,
  WatchtowerError,
  assertEventType,
  decodeEventFromValue,
  describeError,
  encodeEvent,
  isValidPattern,
  toWatchtowerError,
  type CloseOptions,
  type Event,
  type TransportSubscription,
} from '@watchtower/core';
import {
  Fifo,
  TransportLifecycle,
  deadLetterReason,
  repeat,
  type Deadline,
} from '@watchtower/core/transport-kit';
import { sendCorked } from './corked-send.js';
import { frameError } from './map-error.js';
import {
  resolveHubConfig,
  type ResolvedHubConfig,
  type WebSocketHubOptions,
} from './hub-config.js';
import {
  CLOSE_CODES,
  HUB_ERROR_CODES,
  HUB_SUBPROTOCOL,
  frameText,
  isRef,
  isSubscriptionId,
  parseFrame,
  type HubControlFrame,
} from './protocol.js';

/** A plain snapshot from {@link WebSocketHub.stats}. */
export interface WebSocketHubStats {
  /** `idle`, `open`, `closing` or `closed`. */
  state: string;
  connections: number;
  subscriptions: number;
  /** Events accepted from clients (and from the bridge). */
  eventsIn: number;
  /** Event frames sent to clients. */
  eventsOut: number;
  /** Event frames not sent to a slow consumer (policy `'drop'`). */
  dropped: number;
  /** Connections cut off as slow consumers (policy `'disconnect'`). */
  slowConsumersDisconnected: number;
  /** Frames the hub could not read. */
  malformed: number;
  /** Upgrades refused: failed authentication, full, wrong path. */
  refusedConnections: number;
  /** Publishes and subscriptions refused (authorization, rate limit, bad input). */
  refusedRequests: number;
  /** Connections ended because they did not answer a ping. */
  keepaliveTimeouts: number;
}

/** Listener map of {@link WebSocketHub.on}. */
export type WebSocketHubEvents = {
  /** Background failures: a bridge publish or subscription that failed, a callback that threw. */
  error: [error: WatchtowerError];
};

/** One client connection. */
interface Connection {
  readonly socket: WebSocket;
  readonly principal: unknown;
  readonly subscriptions: Map<string, string>;
  /** The route pass that last sent to this connection, so an event goes once per connection. */
  routed: number;
  alive: boolean;
  tokens: number;
  refilledAt: number;
  /** Highest publish ref received. */
  lastRef: number;
  /** Highest publish ref taken and not yet acked. */
  ackRef: number;
  ackScheduled: boolean;
  /** Publishes whose outcome is not known yet (async authorize, bridge), in ref order. */
  readonly answers: Fifo<PendingAnswer>;
  cutOff: boolean;
  /**
   * It says what it wants: it spoke the hub protocol on upgrade, or sent a `subscribe`. Until
   * then it has the hub's `defaultSubscriptions`.
   */
  explicit: boolean;
  /** The routes of `defaultSubscriptions` it has now, by pattern. */
  defaults: Map<string, Route> | undefined;
}

interface PendingAnswer {
  readonly ref: number | undefined;
  done: boolean;
  error: Refusal | undefined;
}

interface Route {
  readonly connection: Connection;
  readonly id: string;
}

/** Why the hub refused a request, as its `error` frame says it. */
interface Refusal {
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
}

type Outcome = Refusal | undefined;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A WebSocket event hub, standalone on a port or on an existing HTTP(S) server.
 *
 * ```ts
 * const hub = new WebSocketHub({ port: 8080 });
 * await hub.start();          // ws://127.0.0.1:8080/events, GET /health
 * ...
 * await hub.close({ timeoutMs: 5000 });
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebSocketHub {
  readonly config: ResolvedHubConfig;
  readonly #life: TransportLifecycle;
  readonly #wss: WebSocketServer;
  readonly #connections = new Set<Connection>();
  readonly #index = new PatternIndex<Route>();
  /** Ids of events this hub sent to the bridge, so that they are not routed again on return. */
  readonly #relayed = new Set<string>();
  readonly #bridgeSubscriptions: TransportSubscription[] = [];
  #server: Server | HttpsServer | undefined;
  #ownsServer = false;
  #upgrading = 0;
  #routeSeq = 0;
  #subscriptionCount = 0;
  #stopKeepalive: (() => void) | undefined;
  #counters = {
    eventsIn: 0,
    eventsOut: 0,
    dropped: 0,
    slowConsumersDisconnected: 0,
    malformed: 0,
    refusedConnections: 0,
    refusedRequests: 0,
    keepaliveTimeouts: 0,
  };

  constructor(options: WebSocketHubOptions = {}) {
    this.config = resolveHubConfig(options);
    this.#life = new TransportLifecycle({
      name: 'the WebSocket hub',
      clock: this.config.clock,
      closeTimeoutMs: this.config.closeTimeoutMs,
      mapError: (error, operation) =>
        toWatchtowerError(error, ErrorCode.TRANSPORT, `${operation}: ${describeError(error)}`),
    });
    this.#wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: this.config.maxPayload,
      perMessageDeflate: this.config.perMessageDeflate,
      // The hub protocol when the client offers it; otherwise what ws picks by itself.
      handleProtocols: (protocols) =>
        protocols.has(HUB_SUBPROTOCOL)
          ? HUB_SUBPROTOCOL
          : (protocols.values().next().value ?? false),
    });
  }

  /**
   * Starts listening (standalone: on `port` and `host`; embedded: on the given server's
   * upgrades) and subscribes the bridge. Idempotent; rejects with `CONNECTION` when the port is
   * taken or the bridge cannot subscribe, `CLOSED` after `close()`.
   */
  start(): Promise<void> {
    return this.#life.connect(() => this.#start());
  }

  /** The `ws://` URL clients connect to (standalone, once started). */
  get url(): string {
    const address = this.#server?.address() as AddressInfo | null | undefined;
    if (address === null || address === undefined) {
      throw new WatchtowerError(ErrorCode.CLOSED, 'the WebSocket hub is not listening');
    }
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    // Only an embedding server can be HTTPS (a tls.Server has setSecureContext).
    const scheme = 'setSecureContext' in (this.#server as object) ? 'wss' : 'ws';
    return `${scheme}://${host}:${address.port}${this.config.path}`;
  }

  /** The port the hub listens on, once started. */
  get port(): number {
    return (this.#server?.address() as AddressInfo).port;
  }

  /** Failures no caller hears of (bridge publishes, callbacks that threw). */
  on<K extends keyof WebSocketHubEvents>(
    name: K,
    listener: (...args: WebSocketHubEvents[K]) => void,
  ): () => void {
    return this.#life.on(name, listener);
  }

  /** A plain snapshot of the hub's counters. */
  stats(): WebSocketHubStats {
    return {
      state: this.#life.phase,
      connections: this.#connections.size,
      subscriptions: this.#subscriptionCount,
      ...this.#counters,
    };
  }

  /**
   * The health endpoint: `200` with the stats as JSON while open, `503` otherwise. Served at
   * `healthPath` on the hub's own server; mount it yourself on an embedding server.
   */
  readonly handleHealth = (_request: IncomingMessage, response: ServerResponse): void => {
    const stats = this.stats();
    const healthy = stats.state === 'open';
    const body = JSON.stringify({ healthy, ...stats });
    response.writeHead(healthy ? 200 : 503, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    response.end(body);
  };

  /**
   * Routes an event from the server side to the clients whose subscriptions match (and to the
   * bridge). Rejects with `VALIDATION` for a bad type, `SERIALIZATION` when it cannot be
   * encoded, `CLOSED` when the hub is not open; resolves once routed (and, with a bridge, once
   * the bridge's broker has it).
   */
  async publish(event: Event): Promise<void> {
    this.#life.assertOpen('publish');
    if (this.#life.phase !== 'open') {
      throw new WatchtowerError(
        ErrorCode.CLOSED,
        'cannot publish: the WebSocket hub is not started',
      );
    }
    assertEventType(event.type);
    const refused = await this.#accept(event, encodeEvent(event));
    if (refused !== undefined) throw frameError({ ...refused });
  }

  /**
   * Sends `data` as it is to every connection with a subscription matching `type`, without
   * any check: for testing how clients take bad input.
   */
  sendRaw(type: string, data: string | Uint8Array): void {
    this.#life.assertOpen('send');
    const seq = ++this.#routeSeq;
    for (const route of this.#index.match(type)) {
      const connection = route.connection;
      if (connection.routed === seq) continue;
      connection.routed = seq;
      connection.socket.send(data, { binary: typeof data !== 'string' });
    }
  }

  /**
   * Stops accepting connections, closes every client with code 1001 and waits for them within
   * `timeoutMs` (those still open then are dropped), ends the bridge subscriptions and, when
   * the hub made its own server, closes it. The bridge transport itself is the caller's to
   * close. Idempotent.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      (deadline) => this.#close(deadline),
      () => this.#force(),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- start and close ------------------------------------------------------------------

  async #start(): Promise<void> {
    const { server, port, host } = this.config;
    if (server === undefined) {
      const own = createServer((request, response) => this.#onRequest(request, response));
      this.#server = own;
      this.#ownsServer = true;
      own.on('upgrade', this.#onUpgrade);
      await new Promise<void>((resolve, reject) => {
        own.once('error', reject);
        own.listen(port, host, () => {
          own.off('error', reject);
          resolve();
        });
      }).catch((error: unknown) => {
        this.#server = undefined;
        throw new WatchtowerError(
          ErrorCode.CONNECTION,
          `the WebSocket hub cannot listen on ${host}:${port}: ${describeError(error)}`,
          { cause: error, retryable: true },
        );
      });
    } else {
      this.#server = server;
      server.on('upgrade', this.#onUpgrade);
    }
    const { pingIntervalMs, clock } = this.config;
    if (pingIntervalMs > 0) {
      this.#stopKeepalive = repeat(
        clock,
        pingIntervalMs,
        () => this.#sweep(),
        (error) =>
          this.#life.report(toWatchtowerError(error, ErrorCode.TRANSPORT, 'keepalive sweep')),
      );
    }
    try {
      await this.#startBridge();
    } catch (error) {
      await this.#stopListening();
      throw error;
    }
  }

  #onRequest(request: IncomingMessage, response: ServerResponse): void {
    const path = pathOf(request);
    if (request.method === 'GET' && path === this.config.healthPath) {
      this.handleHealth(request, response);
      return;
    }
    const status = path === this.config.path ? 426 : 404;
    response.writeHead(status, { 'content-type': 'text/plain', connection: 'close' });
    response.end(status === 426 ? 'a WebSocket upgrade is required\n' : 'not found\n');
  }

  async #close(deadline: Deadline): Promise<void> {
    this.#stopKeepalive?.();
    await Promise.allSettled(this.#bridgeSubscriptions.map((s) => s.unsubscribe()));
    const gone: Promise<void>[] = [];
    for (const connection of this.#connections) {
      gone.push(closed(connection.socket));
      connection.socket.close(CLOSE_CODES.goingAway, 'the hub is closing');
    }
    await deadline.within(Promise.all(gone));
    for (const connection of this.#connections) connection.socket.terminate();
    await this.#life.settleBackground(deadline);
    await deadline.within(this.#stopListening());
  }

  #force(): void {
    for (const connection of this.#connections) connection.socket.terminate();
    const server = this.#server;
    if (this.#ownsServer && server !== undefined && 'closeAllConnections' in server) {
      server.closeAllConnections();
    }
  }

  async #stopListening(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    server.off('upgrade', this.#onUpgrade);
    this.#wss.close();
    if (!this.#ownsServer) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  // --- connections ----------------------------------------------------------------------

  readonly #onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (pathOf(request) !== this.config.path) {
      // On an embedding server other paths belong to someone else.
      if (this.#ownsServer) this.#refuse(socket, 404);
      return;
    }
    if (this.#life.phase !== 'open') {
      this.#refuse(socket, 503);
      return;
    }
    if (this.#connections.size + this.#upgrading >= this.config.maxConnections) {
      this.#refuse(socket, 503);
      return;
    }
    this.#upgrading++;
    socket.on('error', () => socket.destroy());
    void this.#authenticate(request).then((verdict) => {
      this.#upgrading--;
      if (!verdict.ok || this.#life.phase !== 'open') {
        this.#refuse(socket, verdict.ok ? 503 : 401);
        return;
      }
      this.#wss.handleUpgrade(request, socket, head, (ws) =>
        this.#onConnection(ws, verdict.principal),
      );
    });
  };

  async #authenticate(request: IncomingMessage): Promise<{ ok: boolean; principal: unknown }> {
    const authenticate = this.config.authenticate;
    if (authenticate === undefined) return { ok: true, principal: undefined };
    try {
      const principal = await authenticate(request);
      return principal === undefined || principal === null || principal === false
        ? { ok: false, principal: undefined }
        : { ok: true, principal };
    } catch (error) {
      // A throwing authenticate refuses the client; the failure itself is worth a log line.
      this.#life.report(
        toWatchtowerError(
          error,
          ErrorCode.TRANSPORT,
          `authenticate threw: ${describeError(error)}`,
        ),
      );
      return { ok: false, principal: undefined };
    }
  }

  #refuse(socket: Duplex, status: number): void {
    this.#counters.refusedConnections++;
    const text = STATUS_CODES[status] ?? 'Error';
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${text.length + 1}\r\n\r\n${text}\n`,
    );
    socket.destroy();
  }

  #onConnection(socket: WebSocket, principal: unknown): void {
    const connection: Connection = {
      socket,
      principal,
      subscriptions: new Map(),
      routed: 0,
      alive: true,
      tokens: this.config.publishRate?.burst ?? 0,
      refilledAt: this.config.clock.now(),
      lastRef: -1,
      ackRef: -1,
      ackScheduled: false,
      answers: new Fifo(),
      cutOff: false,
      explicit: socket.protocol === HUB_SUBPROTOCOL,
      defaults: undefined,
    };
    this.#connections.add(connection);
    if (!connection.explicit) this.#subscribeDefaults(connection);
    socket.on('message', (data, isBinary) => this.#onFrame(connection, data as Buffer, isBinary));
    socket.on('pong', () => (connection.alive = true));
    // ws closes the socket itself after a protocol error (1002, 1007, 1009): nothing to add.
    socket.on('error', () => undefined);
    socket.on('close', () => this.#forget(connection));
    if (this.#life.phase !== 'open') socket.close(CLOSE_CODES.goingAway, 'the hub is closing');
  }

  #forget(connection: Connection): void {
    if (!this.#connections.delete(connection)) return;
    this.#dropDefaults(connection);
    for (const [id, pattern] of connection.subscriptions) {
      this.#index.remove(pattern, routeOf(connection, id));
    }
    this.#subscriptionCount -= connection.subscriptions.size;
    connection.subscriptions.clear();
  }

  #sweep(): void {
    for (const connection of this.#connections) {
      if (!connection.alive) {
        this.#counters.keepaliveTimeouts++;
        connection.socket.terminate();
        continue;
      }
      connection.alive = false;
      connection.socket.ping();
    }
  }

  // --- frames ---------------------------------------------------------------------------

  #onFrame(connection: Connection, data: Buffer, isBinary: boolean): void {
    let text: string;
    try {
      text = isBinary ? utf8.decode(data) : data.toString('utf8');
    } catch {
      this.#malformed(connection, 'the binary frame is not UTF-8 JSON');
      return;
    }
    const parsed = parseFrame(text);
    // The event's bytes are forwarded as they arrived (checked UTF-8), never encoded again.
    if (parsed.kind === 'event') {
      // A bare event, as the Rust client sends: a publish without an answer unless refused.
      this.#publishFrom(connection, undefined, parsed.event, data);
      return;
    }
    if (parsed.kind === 'publish') {
      if (parsed.ref <= connection.lastRef) {
        this.#malformed(connection, 'a publish needs a ref above the last one');
        return;
      }
      connection.lastRef = parsed.ref;
      // The envelope around the event is ASCII and ends with one `}`: as many bytes as characters.
      const start = text.length - parsed.text.length - 1;
      this.#publishFrom(connection, parsed.ref, parsed.event, data.subarray(start, -1));
      return;
    }
    if (parsed.kind === 'malformed') {
      this.#malformed(connection, parsed.problem);
      return;
    }
    const frame = parsed.frame;
    switch (parsed.op) {
      case 'publish':
        this.#onPublishFrame(connection, frame);
        return;
      case 'subscribe':
        this.#onSubscribe(connection, frame);
        return;
      case 'unsubscribe':
        this.#onUnsubscribe(connection, frame);
        return;
      case 'ping':
        connection.socket.send(frameText({ op: 'pong' }));
        return;
      default:
        this.#malformed(connection, `unknown op ${JSON.stringify(parsed.op)}`);
    }
  }

  #malformed(connection: Connection, problem: string): void {
    this.#counters.malformed++;
    this.#reply(connection, {
      op: 'error',
      code: ErrorCode.SERIALIZATION,
      message: `the hub cannot read the frame: ${problem}`,
    });
  }

  #onPublishFrame(connection: Connection, frame: Record<string, unknown>): void {
    const ref = frame.ref;
    if (!isRef(ref) || ref <= connection.lastRef) {
      this.#malformed(connection, 'a publish needs a ref: an integer >= 0 above the last one');
      return;
    }
    connection.lastRef = ref;
    let event: Event;
    try {
      event = decodeEventFromValue(frame.event);
    } catch (error) {
      this.#counters.malformed++;
      this.#answer(connection, ref, refusal(ErrorCode.SERIALIZATION, describeError(error)));
      return;
    }
    this.#publishFrom(connection, ref, event, undefined);
  }

  #publishFrom(
    connection: Connection,
    ref: number | undefined,
    event: Event,
    bytes: Buffer | undefined,
  ): void {
    const limited = this.#rateLimited(connection);
    if (limited !== undefined) {
      this.#answer(connection, ref, limited);
      return;
    }
    const authorize = this.config.authorize;
    if (authorize === undefined) {
      this.#answer(connection, ref, this.#accept(event, bytes ?? encodeEvent(event)));
      return;
    }
    const verdict = this.#authorized(connection, 'publish', event.type);
    if (verdict instanceof Promise) {
      this.#answer(
        connection,
        ref,
        verdict.then((error) =>
          error === undefined ? this.#accept(event, bytes ?? encodeEvent(event)) : error,
        ),
      );
    } else {
      this.#answer(
        connection,
        ref,
        verdict === undefined ? this.#accept(event, bytes ?? encodeEvent(event)) : verdict,
      );
    }
  }

  #rateLimited(connection: Connection): Refusal | undefined {
    const rate = this.config.publishRate;
    if (rate === undefined) return undefined;
    const now = this.config.clock.now();
    const elapsed = Math.max(0, now - connection.refilledAt);
    connection.refilledAt = now;
    connection.tokens = Math.min(rate.burst, connection.tokens + (elapsed * rate.perSecond) / 1000);
    if (connection.tokens >= 1) {
      connection.tokens -= 1;
      return undefined;
    }
    return refusal(
      HUB_ERROR_CODES.rateLimited,
      `this connection publishes faster than ${rate.perSecond}/s (burst ${rate.burst})`,
      true,
    );
  }

  /** `authorize`'s verdict as an outcome; a throw refuses, and is reported. */
  #authorized(
    connection: Connection,
    action: 'publish' | 'subscribe',
    subject: string,
  ): Outcome | Promise<Outcome> {
    const authorize = this.config.authorize;
    if (authorize === undefined) return undefined;
    const forbidden = (): Refusal =>
      refusal(HUB_ERROR_CODES.forbidden, `not authorized to ${action} ${subject}`);
    const failed = (error: unknown): Refusal => {
      this.#life.report(
        toWatchtowerError(error, ErrorCode.TRANSPORT, `authorize threw: ${describeError(error)}`),
      );
      return forbidden();
    };
    try {
      const result = authorize(connection.principal, action, subject);
      if (result instanceof Promise) {
        return result.then((allowed) => (allowed === true ? undefined : forbidden()), failed);
      }
      return result === true ? undefined : forbidden();
    } catch (error) {
      return failed(error);
    }
  }

  /**
   * Takes an event: routes it to the matching connections and, with a bridge, publishes it
   * there (the outcome is then the bridge's).
   */
  #accept(event: Event, frame: Buffer | string): Outcome | Promise<Outcome> {
    this.#counters.eventsIn++;
    this.#route(event.type, frame);
    const bridge = this.config.bridge;
    if (bridge === undefined) return undefined;
    this.#remember(event.id);
    return bridge.transport.publish(event).then(
      () => undefined,
      (error: unknown) => refusalOf(error, `the bridge could not publish ${event.type}`),
    );
  }

  /** Sends the event's JSON (its UTF-8 bytes, or its text) to each matching connection once. */
  #route(type: string, json: Buffer | string): void {
    const routes = this.#index.match(type);
    if (routes.length === 0) return;
    const seq = ++this.#routeSeq;
    const { maxBufferedBytes, slowConsumer } = this.config;
    // UTF-8 once, however many connections it goes to.
    const frame = typeof json === 'string' ? Buffer.from(json, 'utf8') : json;
    for (let i = 0; i < routes.length; i++) {
      const connection = (routes[i] as Route).connection;
      if (connection.routed === seq || connection.cutOff) continue;
      connection.routed = seq;
      const socket = connection.socket;
      if (socket.bufferedAmount > maxBufferedBytes) {
        if (slowConsumer === 'drop') {
          this.#counters.dropped++;
          continue;
        }
        this.#cutOff(connection);
        continue;
      }
      sendCorked(socket, frame);
      this.#counters.eventsOut++;
    }
  }

  /** A slow consumer: closed with 1008, dropped if it does not finish closing soon. */
  #cutOff(connection: Connection): void {
    connection.cutOff = true;
    this.#counters.slowConsumersDisconnected++;
    this.#forget(connection);
    const socket = connection.socket;
    socket.close(CLOSE_CODES.policyViolation, 'slow consumer: send buffer over maxBufferedBytes');
    const timer = this.config.clock.setTimeout(() => socket.terminate(), 1000);
    socket.once('close', () => this.config.clock.clearTimeout(timer));
  }

  /** Answers a publish in ref order: cumulative acks, an error frame per refusal. */
  #answer(
    connection: Connection,
    ref: number | undefined,
    outcome: Outcome | Promise<Outcome>,
  ): void {
    if (!(outcome instanceof Promise) && connection.answers.size === 0) {
      this.#settleAnswer(connection, ref, outcome);
      return;
    }
    const pending: PendingAnswer = { ref, done: false, error: undefined };
    connection.answers.push(pending);
    const settle = (error: Outcome): void => {
      pending.done = true;
      pending.error = error;
      while (connection.answers.size > 0 && (connection.answers.peek() as PendingAnswer).done) {
        const head = connection.answers.shift() as PendingAnswer;
        this.#settleAnswer(connection, head.ref, head.error);
      }
    };
    if (outcome instanceof Promise) {
      void outcome.then(settle, (error: unknown) => settle(refusalOf(error, 'publish')));
    } else {
      settle(outcome);
    }
  }

  #settleAnswer(connection: Connection, ref: number | undefined, error: Outcome): void {
    if (error !== undefined) {
      this.#counters.refusedRequests++;
      this.#flushAck(connection);
      this.#reply(connection, {
        op: 'error',
        code: error.code,
        message: error.message,
        retryable: error.retryable,
        ...(ref === undefined ? {} : { ref }),
      });
      return;
    }
    if (ref === undefined) return;
    connection.ackRef = ref;
    if (connection.ackScheduled) return;
    connection.ackScheduled = true;
    // One cumulative ack for what one read of the socket brought.
    setImmediate(() => this.#flushAck(connection));
  }

  #flushAck(connection: Connection): void {
    if (!connection.ackScheduled) return;
    connection.ackScheduled = false;
    this.#reply(connection, { op: 'ack', ref: connection.ackRef });
  }

  #reply(connection: Connection, frame: HubControlFrame): void {
    const socket = connection.socket;
    if (socket.readyState !== socket.OPEN || connection.cutOff) return;
    // A client that publishes and never reads would pile up its answers here.
    if (socket.bufferedAmount > this.config.maxBufferedBytes) {
      this.#cutOff(connection);
      return;
    }
    sendCorked(socket, frameText(frame));
  }

  // --- subscriptions --------------------------------------------------------------------

  #onSubscribe(connection: Connection, frame: Record<string, unknown>): void {
    const { id, pattern } = frame;
    if (!isSubscriptionId(id)) {
      this.#malformed(connection, 'a subscribe needs an id: a string of 1 to 128 characters');
      return;
    }
    // From its first subscribe on, a client has what it asks for, no more.
    this.#dropDefaults(connection);
    const refuse = (error: Refusal): void => {
      this.#counters.refusedRequests++;
      this.#reply(connection, {
        op: 'error',
        id,
        code: error.code,
        message: error.message,
        retryable: error.retryable,
      });
    };
    if (!isValidPattern(pattern)) {
      refuse(refusal(ErrorCode.VALIDATION, `invalid pattern ${JSON.stringify(pattern)}`));
      return;
    }
    if (
      !connection.subscriptions.has(id) &&
      connection.subscriptions.size >= this.config.maxSubscriptionsPerConnection
    ) {
      refuse(
        refusal(
          ErrorCode.VALIDATION,
          `this connection has maxSubscriptionsPerConnection (${this.config.maxSubscriptionsPerConnection}) subscriptions`,
        ),
      );
      return;
    }
    const add = (error: Outcome): void => {
      if (error !== undefined) {
        refuse(error);
        return;
      }
      if (!this.#connections.has(connection)) return;
      this.#removeSubscription(connection, id);
      connection.subscriptions.set(id, pattern);
      this.#index.add(pattern, routeOf(connection, id));
      this.#subscriptionCount++;
      this.#reply(connection, { op: 'subscribed', id });
    };
    const verdict = this.#authorized(connection, 'subscribe', pattern);
    if (verdict instanceof Promise) void verdict.then(add);
    else add(verdict);
  }

  /**
   * `defaultSubscriptions` for a client that has not said it speaks the hub protocol, each as
   * `authorize` allows it; a refused one is answered with an `error` frame.
   */
  #subscribeDefaults(connection: Connection): void {
    for (const pattern of this.config.defaultSubscriptions) {
      const add = (error: Outcome): void => {
        if (connection.explicit || !this.#connections.has(connection)) return;
        if (error !== undefined) {
          this.#counters.refusedRequests++;
          this.#reply(connection, {
            op: 'error',
            code: error.code,
            message: `${error.message} (a default subscription)`,
            retryable: error.retryable,
          });
          return;
        }
        const defaults = (connection.defaults ??= new Map());
        if (defaults.has(pattern)) return;
        const route: Route = { connection, id: '' };
        defaults.set(pattern, route);
        this.#index.add(pattern, route);
        this.#subscriptionCount++;
      };
      const verdict = this.#authorized(connection, 'subscribe', pattern);
      if (verdict instanceof Promise) void verdict.then(add);
      else add(verdict);
    }
  }

  #dropDefaults(connection: Connection): void {
    connection.explicit = true;
    const defaults = connection.defaults;
    if (defaults === undefined) return;
    connection.defaults = undefined;
    for (const [pattern, route] of defaults) this.#index.remove(pattern, route);
    this.#subscriptionCount -= defaults.size;
  }

  #onUnsubscribe(connection: Connection, frame: Record<string, unknown>): void {
    if (!isSubscriptionId(frame.id)) {
      this.#malformed(connection, 'an unsubscribe needs the id of a subscription');
      return;
    }
    this.#removeSubscription(connection, frame.id);
    this.#reply(connection, { op: 'unsubscribed', id: frame.id });
  }

  #removeSubscription(connection: Connection, id: string): void {
    const pattern = connection.subscriptions.get(id);
    if (pattern === undefined) return;
    connection.subscriptions.delete(id);
    this.#index.remove(pattern, routeOf(connection, id));
    this.#subscriptionCount--;
  }

  // --- the bridge -----------------------------------------------------------------------

  async #startBridge(): Promise<void> {
    const bridge = this.config.bridge;
    if (bridge === undefined) return;
    await bridge.transport.connect();
    for (const pattern of bridge.patterns) {
      const subscription = await bridge.transport.subscribe(pattern);
      this.#bridgeSubscriptions.push(subscription);
      this.#life.track(this.#relay(subscription), `relay ${pattern} from the bridge`);
    }
  }

  /** Events from the bridge's broker go to the clients, except those this hub sent there. */
  async #relay(subscription: TransportSubscription): Promise<void> {
    const transport = (this.config.bridge as { transport: import('@watchtower/core').Transport })
      .transport;
    for await (const delivery of subscription) {
      if (delivery.kind === 'malformed') {
        const message = { raw: delivery.raw, origin: delivery.origin };
        const reason = deadLetterReason({
          failure: delivery.error,
          attempts: delivery.attempt,
          message,
          subscription: `websocket hub bridge ${subscription.pattern}`,
          clock: this.config.clock,
        });
        try {
          await transport.publishToDlq(message, reason);
          await delivery.ack();
        } catch (error) {
          this.#life.report(
            toWatchtowerError(
              error,
              ErrorCode.TRANSPORT,
              `the bridge could not dead-letter bytes from ${delivery.origin}`,
            ),
          );
          await delivery.nack().catch(() => undefined);
        }
        continue;
      }
      const event = delivery.event;
      if (!this.#relayed.delete(event.id)) {
        this.#counters.eventsIn++;
        this.#route(event.type, encodeEvent(event));
      }
      await delivery.ack();
    }
  }

  #remember(id: string): void {
    const relayed = this.#relayed;
    relayed.add(id);
    if (relayed.size > 10_000) {
      // The oldest: an event that never came back (no bridge pattern matched it).
      relayed.delete(relayed.values().next().value as string);
    }
  }
}

const routeCache = new WeakMap<Connection, Map<string, Route>>();

/** The one `Route` object of a connection's subscription, so the index can remove it by identity. */
function routeOf(connection: Connection, id: string): Route {
  let routes = routeCache.get(connection);
  if (routes === undefined) {
    routes = new Map();
    routeCache.set(connection, routes);
  }
  let route = routes.get(id);
  if (route === undefined) {
    route = { connection, id };
    routes.set(id, route);
  }
  return route;
}

function refusal(code: string, message: string, retryable = false): Refusal {
  return { code, message, retryable };
}

/** A failure of the bridge (or anything thrown) as the refusal a client is sent. */
function refusalOf(error: unknown, context: string): Refusal {
  const mapped = toWatchtowerError(
    error,
    ErrorCode.TRANSPORT,
    `${context}: ${describeError(error)}`,
  );
  return { code: mapped.code, message: mapped.message, retryable: mapped.retryable };
}

function pathOf(request: IncomingMessage): string {
  const url = request.url ?? '/';
  const query = url.indexOf('?');
  return query < 0 ? url : url.slice(0, query);
}

function closed(socket: WebSocket): Promise<void> {
  if (socket.readyState === socket.CLOSED) return Promise.resolve();
  return new Promise<void>((resolve) => socket.once('close', () => resolve()));
}
