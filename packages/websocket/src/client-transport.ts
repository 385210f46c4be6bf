/**
 * The WebSocket client transport, written once for Node and the browser: what it does with a
 * socket (connect, reconnect with backoff, keepalive, the hub protocol, dispatch of incoming
 * events to every matching subscription, publishes held while the connection is down, the
 * in-memory dead-letter queue) is here; how a socket is opened is given by a
 * {@link SocketFactory} (`ws` in Node, the native `WebSocket` in a browser).
 *
 * It must never import `ws` or a Node built-in: the browser build is made from this file.
 *
 * One reader: every frame that arrives goes through `#receive`, which hands a decoded event to
 * every local subscription whose pattern matches, each its own copy, so no subscription takes
 * another's event. The hub sends an event once per connection however many of its
 * subscriptions match.
 */
import {
  ConnectionError,
  ErrorCode,
  MemoryTransport,
  SerializationError,
  WatchtowerError,
  assertEventType,
  assertPattern,
  compilePattern,
  configError,
  decodeEvent,
  encodeEvent,
  PatternIndex,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type DeadLetterQueue,
  type DeadLetterReason,
  type Event,
  type HealthStatus,
  type MalformedMessage,
  type PublishOptions,
  type SubscriptionHandle,
  type Transport,
  type TransportInfo,
  type TransportSubscribeOptions,
  type TransportSubscription,
  type CloseOptions,
  type CompiledPattern,
  type TimerHandle,
} from '@watchtower/core';
import {
  Backoff,
  Fifo,
  Pause,
  RESOLVED,
  SourceSubscription,
  TransportLifecycle,
  abortError,
  checkPublishOptions,
  checkSubscribeOptions,
  deadLetterReason,
  repeat,
  type Deadline,
  type TransportErrorEvents,
} from '@watchtower/core/transport-kit';
import { ClientDelivery, ClientSubscription } from './client-subscription.js';
import type { ResolvedClientConfig } from './config.js';
import { frameError, lostConnection, mapSocketError } from './map-error.js';
import {
  CLOSE_CODES,
  claimedType,
  exceedsSize,
  frameText,
  isRef,
  parseFrame,
  publishFrameText,
} from './protocol.js';

/** What a {@link SocketFactory}'s socket reports. Called with `this` unbound. */
export interface SocketHandlers {
  readonly open: () => void;
  /** A frame: text as a string, binary as bytes. */
  readonly message: (data: string | Uint8Array) => void;
  /** The answer to a protocol ping. */
  readonly pong: () => void;
  readonly close: (code: number, reason: string) => void;
  /** A failure; `close` follows. */
  readonly error: (error: unknown) => void;
}

/** One WebSocket connection, as the transport uses it. */
export interface ClientSocket {
  send(text: string): void;
  /** Starts the closing handshake. */
  close(code: number, reason: string): void;
  /** Drops the connection at once. */
  terminate(): void;
  /**
   * Sends a protocol ping, or returns false when the socket cannot (a browser's): the client
   * then sends a `ping` frame, which the hub answers with a `pong` frame.
   */
  ping(): boolean;
}

/** Opens a socket to `url`; it reports to `handlers`. */
export type SocketFactory = (url: string, handlers: SocketHandlers) => ClientSocket;

/**
 * Listener map of the client's `on()`, the kit's: `error` for background failures (an event
 * dropped for a full subscription, a frame the client could not use), `connection` when the
 * connection is lost, for each reconnect attempt that failed (`reconnect-failed`, which the
 * bus's circuit breaker counts), and when it is back after a reconnect (not the first
 * connect, nor `close()`).
 */
export type WebSocketTransportEvents = TransportErrorEvents;

/** A plain snapshot from `stats()`. */
export interface WebSocketClientStats {
  /** `connecting`, `connected`, `reconnecting`, `disconnected` or `closed`. */
  state: string;
  /** Reconnects that succeeded. */
  reconnects: number;
  /** Publishes sent (the hub confirmed them in `'hub'` mode). */
  published: number;
  /** Events received and handed to at least one subscription. */
  received: number;
  /** Events dropped because a subscription's buffer was full (`pendingLimit`). */
  dropped: number;
  /** Frames that were neither events nor control frames. */
  malformed: number;
  /** Publishes waiting for the connection to come back. */
  waitingPublishes: number;
  subscriptions: number;
}

/** What the client transport declares; it never claims more. */
export const WEBSOCKET_TRANSPORT_INFO: TransportInfo = {
  name: 'websocket',
  capabilities: {
    persistence: false,
    replay: false,
    consumerGroups: false,
    ordering: true,
    redelivery: false,
    delayedRetry: false,
    brokerAttemptCount: false,
    nativeDlq: false,
    wildcards: true,
    headers: true,
    reconnect: true,
  },
};

type LinkState = 'down' | 'connecting' | 'up' | 'reconnecting';

/** A publish sent or waiting to be sent. */
interface OutgoingPublish {
  readonly event: Event;
  readonly json: string;
  ref: number;
  settled: boolean;
  resolve(): void;
  reject(error: unknown): void;
  cleanup: (() => void) | undefined;
}

/** A subscribe sent to the hub, waiting for `subscribed` or `error`. */
interface PendingRequest {
  resolve(): void;
  reject(error: WatchtowerError): void;
  timer: TimerHandle;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Ended subscriptions remembered while the hub has not confirmed them (a bound, in case it never does). */
const MAX_RETIRING = 1024;

/**
 * The client transport on a {@link SocketFactory}. `WebSocketTransport` (Node, `ws`) and the
 * browser build's `WebSocketTransport` (native `WebSocket`) are this class with their socket.
 */
export class WebSocketClientTransport implements Transport {
  readonly info: TransportInfo = WEBSOCKET_TRANSPORT_INFO;
  readonly config: ResolvedClientConfig;
  readonly #openSocket: SocketFactory;
  readonly #life: TransportLifecycle;
  readonly #subscriptions = new Map<string, ClientSubscription>();
  readonly #index = new PatternIndex<ClientSubscription>();
  readonly #requests = new Map<string, PendingRequest>();
  /** Sent in `'hub'` mode, waiting for the hub's ack, in ref order. */
  readonly #unconfirmed = new Fifo<OutgoingPublish>();
  /** Waiting for the connection to come back, in publish order. */
  readonly #waiting = new Fifo<OutgoingPublish>();
  #confirmedWaiters: (() => void)[] = [];
  /** Subscriptions ended here that the hub has not confirmed ended, by id. */
  readonly #retiring = new Map<string, CompiledPattern>();
  readonly #pause: Pause;
  readonly #dlq: MemoryTransport;
  #link: LinkState = 'down';
  #socket: ClientSocket | undefined;
  /** Bumped for each socket, so that a dropped socket's late events are ignored. */
  #generation = 0;
  #refSeq = 0;
  #subscriptionSeq = 0;
  #stopKeepalive: (() => void) | undefined;
  #pongTimer: TimerHandle | undefined;
  #socketClosed: (() => void) | undefined;
  #reconnects = 0;
  /** Ends the connection attempt under way, if any. */
  #abortDial: (() => void) | undefined;
  /** A reconnect loop is running. */
  #reconnecting = false;
  #published = 0;
  #received = 0;
  #dropped = 0;
  #malformed = 0;

  constructor(config: ResolvedClientConfig, openSocket: SocketFactory, name: string) {
    this.config = config;
    this.#openSocket = openSocket;
    this.#life = new TransportLifecycle({
      name,
      clock: config.clock,
      closeTimeoutMs: config.closeTimeoutMs,
      mapError: (error, operation) => mapSocketError(error, operation),
    });
    this.#pause = new Pause(config.clock);
    this.#dlq = new MemoryTransport({
      deadLetterQueue: config.deadLetterQueue,
      clock: config.clock,
    });
  }

  /** The dead-letter queue (in memory, bounded) that `publishToDlq` writes and `consumeDlq` reads. */
  get deadLetterQueue(): DeadLetterQueue {
    return this.#dlq.deadLetterQueue;
  }

  /**
   * Opens the connection; concurrent callers share the attempt. Rejects with `CONNECTION` when
   * the server cannot be reached or refuses the upgrade (not retryable for 401 and 403), with
   * `CLOSED` after `close()`.
   */
  connect(): Promise<void> {
    return this.#life.connect(() => this.#dial(false));
  }

  /**
   * `'error'`: failures of background work; `'connection'`: the connection was lost or is back.
   * Returns a function that removes the listener.
   */
  on<K extends keyof WebSocketTransportEvents>(
    name: K,
    listener: (...args: WebSocketTransportEvents[K]) => void,
  ): () => void {
    return this.#life.on(name, listener);
  }

  /**
   * Sends the event as its Rust-format JSON. In `'hub'` mode resolves when the hub has taken it
   * (rejects with the hub's refusal: `TRANSPORT`, not retryable, for `FORBIDDEN`); in `'plain'`
   * mode when the frame is handed to the socket. While the connection is down the publish waits
   * for it to come back; it rejects when `options.signal` aborts, with `CLOSED` at `close()`, and
   * with `CONNECTION` when reconnecting is given up. A publish sent but not confirmed when the
   * connection drops is sent again after the reconnect (it may arrive twice).
   */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    let json: string;
    try {
      this.#life.assertOpen('publish');
      checkPublishOptions(options);
      assertEventType(event.type);
      json = encodeEvent(event);
      // The publish frame around the event takes at most 48 bytes (`ref` up to 15 digits).
      const envelope = this.config.protocol === 'hub' ? 48 : 0;
      const size = exceedsSize(json, this.config.maxMessageSize - envelope);
      if (size !== undefined) {
        throw new WatchtowerError(
          ErrorCode.TRANSPORT,
          `cannot publish ${event.type}: the event is ${size} bytes, over maxMessageSize (${this.config.maxMessageSize})`,
          { retryable: false },
        );
      }
      const signal = options?.signal;
      if (signal?.aborted === true) throw abortError(signal, 'the publish');
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<void>((resolve, reject) => {
      const outgoing: OutgoingPublish = {
        event,
        json,
        ref: -1,
        settled: false,
        resolve,
        reject,
        cleanup: undefined,
      };
      const signal = options?.signal;
      if (signal !== undefined) {
        const onAbort = (): void => this.#settle(outgoing, abortError(signal, 'the publish'));
        signal.addEventListener('abort', onAbort, { once: true });
        outgoing.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      if (this.#link === 'up') {
        this.#send(outgoing);
        return;
      }
      this.#waiting.push(outgoing);
      if (this.#link === 'down') this.#connectForWork();
    });
  }

  /**
   * Subscribes to `pattern` (`*` one token, `>` the rest). In `'hub'` mode resolves when the hub
   * has confirmed it (rejects with `TRANSPORT` when `authorize` refused it); while the connection
   * is down it resolves at once and is sent when the connection is back. No `group` (the hub
   * gives every subscriber every event) and `startFrom: 'new'` only.
   */
  async subscribe(
    pattern: string,
    options?: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    this.#life.assertOpen('subscribe');
    const checked = checkSubscribeOptions(options, {
      startFrom: ['new'],
      startFromHint: 'the WebSocket transport keeps no history',
    });
    if (checked.group !== undefined) {
      throw configError('group', 'the WebSocket transport has no consumer groups; omit group');
    }
    assertPattern(pattern);
    if (this.#link === 'down' || this.#link === 'connecting') await this.connect();
    this.#life.assertOpen('subscribe');
    const id = `s${++this.#subscriptionSeq}`;
    const subscription = new ClientSubscription(
      id,
      pattern,
      checked.maxInFlight ?? this.config.pendingLimit,
    );
    this.#subscriptions.set(id, subscription);
    this.#index.add(pattern, subscription);
    if (this.config.protocol === 'hub' && this.#link === 'up') {
      subscription.sentOn = this.#generation;
      try {
        await this.#request(id, { op: 'subscribe', id, pattern });
      } catch (error) {
        this.#forget(subscription);
        throw error;
      }
    }
    return new SourceSubscription(
      pattern,
      {
        [Symbol.asyncIterator]: () => subscription.buffer,
        tryNext: () => subscription.buffer.tryNext(),
        stop: () => this.#unsubscribe(subscription),
      },
      {
        clock: this.config.clock,
        background: (stop, operation) => this.#life.track(stop, operation),
      },
    );
  }

  /** Never rejects. Healthy while the connection is up. */
  healthCheck(): Promise<HealthStatus> {
    const state = this.#state();
    const details = { url: this.config.url, subscriptions: this.#subscriptions.size };
    if (state === 'connected') return Promise.resolve({ healthy: true, state, details });
    return Promise.resolve({
      healthy: false,
      state,
      message: `the WebSocket connection is ${state}`,
      details,
    });
  }

  /** A plain snapshot of the client's counters. */
  stats(): WebSocketClientStats {
    return {
      state: this.#state(),
      reconnects: this.#reconnects,
      published: this.#published,
      received: this.#received,
      dropped: this.#dropped,
      malformed: this.#malformed,
      waitingPublishes: this.#waiting.size,
      subscriptions: this.#subscriptions.size,
    };
  }

  /**
   * Stores the dead letter in the in-memory queue (bounded; the oldest is dropped and counted
   * when full). Rejects with `SERIALIZATION` (not retryable) for an event that cannot be
   * encoded, `CLOSED` after `close()`.
   */
  publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    if (this.#life.closed) return Promise.reject(this.#life.closedError('publish a dead letter'));
    return this.#dlq.publishToDlq(message, reason);
  }

  /**
   * Calls `handler` for each dead letter of the in-memory queue (those already there first,
   * unless `fromStart` is false); a letter is removed when the handler returns and stays when it
   * throws. No `group`: consumers of one transport compete for its one queue.
   */
  consumeDlq(handler: DeadLetterHandler, options?: ConsumeDlqOptions): Promise<SubscriptionHandle> {
    if (this.#life.closed) return Promise.reject(this.#life.closedError('consume dead letters'));
    return this.#dlq.consumeDlq(handler, options);
  }

  /**
   * Closes within `timeoutMs`: publishes waiting for the connection reject with `CLOSED`, those
   * sent are given until the deadline for the hub's ack, subscriptions end, and the socket is
   * closed with code 1000 (dropped when the peer does not answer by the deadline). Idempotent.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      (deadline) => this.#close(deadline),
      () => this.#dropSocket(),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- the connection -------------------------------------------------------------------

  #state(): string {
    if (this.#life.closed) return 'closed';
    if (this.#link === 'up') return 'connected';
    if (this.#link === 'down') return 'disconnected';
    return this.#link;
  }

  /** One connection attempt; resolves once the socket is open (and subscriptions re-sent). */
  #dial(reconnecting: boolean): Promise<void> {
    this.#link = reconnecting ? 'reconnecting' : 'connecting';
    const generation = ++this.#generation;
    const { clock, connectTimeoutMs } = this.config;
    return new Promise<void>((resolveOpen, rejectOpen) => {
      let opened = false;
      let failure: unknown;
      let socket: ClientSocket | undefined;
      const resolve = (): void => {
        this.#abortDial = undefined;
        // The first connect sends what waited for it; a reconnect does, once re-subscribed.
        if (!reconnecting) this.#flushWaiting();
        resolveOpen();
      };
      const reject = (error: unknown): void => {
        this.#abortDial = undefined;
        if (this.#link === 'connecting') this.#link = 'down';
        rejectOpen(error);
      };
      const timer = clock.setTimeout(() => {
        if (opened || generation !== this.#generation) return;
        this.#generation++;
        socket?.terminate();
        reject(
          new ConnectionError(
            `cannot connect to ${this.config.url}: no answer within connectTimeoutMs (${connectTimeoutMs} ms)`,
          ),
        );
      }, connectTimeoutMs);
      const current = (): boolean => generation === this.#generation;
      // close() ends an attempt under way at once, instead of waiting for connectTimeoutMs.
      this.#abortDial = () => {
        if (opened || !current()) return;
        clock.clearTimeout(timer);
        this.#generation++;
        socket?.terminate();
        reject(this.#life.closedError('connect'));
      };
      const handlers: SocketHandlers = {
        open: () => {
          if (!current()) return;
          opened = true;
          clock.clearTimeout(timer);
          if (this.#life.closed) {
            // close() came while this attempt was under way: let go of what it opened.
            this.#generation++;
            socket?.terminate();
            reject(this.#life.closedError('connect'));
            return;
          }
          this.#socket = socket;
          // A reconnect is up for new publishes only once re-subscribed and the held ones sent.
          if (!reconnecting) this.#link = 'up';
          this.#startKeepalive();
          resolve();
        },
        message: (data) => {
          if (current() && opened) this.#receive(data);
        },
        pong: () => {
          if (current()) this.#alive();
        },
        error: (error) => {
          failure ??= error;
        },
        close: (code, reason) => {
          if (!current()) {
            return;
          }
          if (!opened) {
            clock.clearTimeout(timer);
            this.#generation++;
            reject(
              mapSocketError(failure ?? closeReason(code, reason), `connect to ${this.config.url}`),
            );
            return;
          }
          this.#socketGone(code, reason, failure);
        },
      };
      try {
        socket = this.#openSocket(this.config.url, handlers);
      } catch (error) {
        clock.clearTimeout(timer);
        reject(mapSocketError(error, `connect to ${this.config.url}`));
      }
    });
  }

  /** The open socket closed without `close()`: reconnect. */
  #socketGone(code: number, reason: string, failure: unknown): void {
    this.#generation++;
    this.#socket = undefined;
    this.#stopKeepaliveTimers();
    const wake = this.#socketClosed;
    this.#socketClosed = undefined;
    wake?.();
    if (this.#life.closed) return;
    const error = lostConnection(this.config.url, code, reason, failure);
    this.#connectionLost(error);
  }

  #connectionLost(error: WatchtowerError): void {
    this.#link = 'reconnecting';
    // The next connection starts with only the subscriptions that are left.
    this.#retiring.clear();
    // What the hub never confirmed goes out again after the reconnect, first and in order.
    const resend = this.#unconfirmed.drain().filter((outgoing) => !outgoing.settled);
    if (resend.length > 0) {
      const waiting = this.#waiting.drain();
      for (const outgoing of [...resend, ...waiting]) this.#waiting.push(outgoing);
    }
    this.#wakeConfirmed();
    for (const [id, request] of this.#requests) {
      this.#requests.delete(id);
      this.config.clock.clearTimeout(request.timer);
      // The subscription stays: it is sent again after the reconnect.
      request.resolve();
    }
    // A connection lost while reconnecting (during re-subscribing) leaves the loop to go on.
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    this.#life.connectionLost(error);
    const loop = this.#reconnect().finally(() => (this.#reconnecting = false));
    this.#life.track(loop, 'reconnect');
  }

  async #reconnect(): Promise<void> {
    const { maxReconnectAttempts, reconnectDelayMs, maxReconnectDelayMs } = this.config;
    const backoff = new Backoff({ baseMs: reconnectDelayMs, maxMs: maxReconnectDelayMs });
    let last: WatchtowerError | undefined;
    while (!this.#life.closed) {
      if (maxReconnectAttempts !== -1 && backoff.failures >= maxReconnectAttempts) break;
      await this.#pause.sleep(backoff.next());
      if (this.#life.closed) return;
      let generation = -1;
      try {
        await this.#dial(true);
        generation = this.#generation;
        await this.#resubscribe();
      } catch (error) {
        last = mapSocketError(error, `reconnect to ${this.config.url}`);
        // The socket may have opened and re-subscribing failed: drop it and try again.
        if (this.#socket !== undefined) this.#dropSocket();
        // The bus's circuit breaker counts it (ignored once close() has begun).
        this.#life.reconnectFailed(last);
        if (!last.retryable) break;
        continue;
      }
      if (this.#life.closed) return;
      if (this.#socket === undefined || this.#generation !== generation) {
        // The new connection dropped while re-subscribing.
        last = new ConnectionError(
          `the connection to ${this.config.url} dropped while re-subscribing`,
        );
        this.#life.reconnectFailed(last);
        continue;
      }
      this.#link = 'up';
      this.#reconnects++;
      this.#flushWaiting();
      this.#life.connectionRestored();
      return;
    }
    if (this.#life.closed) return;
    this.#giveUp(last);
  }

  /**
   * Reconnecting ran out: everything waiting fails with `CONNECTION`, and the publishes that
   * were held are kept in the dead-letter queue first, so that none is lost unseen; the next
   * call starts afresh.
   */
  #giveUp(last: WatchtowerError | undefined): void {
    this.#link = 'down';
    this.#life.lost();
    const error = new ConnectionError(
      `gave up reconnecting to ${this.config.url} after ${this.config.maxReconnectAttempts} attempts` +
        (last === undefined ? '' : `: ${last.message}`) +
        '; a publish that waited is kept in the dead-letter queue',
      { retryable: false, ...(last === undefined ? {} : { cause: last }) },
    );
    for (const outgoing of this.#waiting.drain()) {
      if (outgoing.settled) continue;
      const reason = deadLetterReason({
        failure: error,
        attempts: 1,
        message: outgoing.event,
        clock: this.config.clock,
      });
      this.#dlq.publishToDlq(outgoing.event, reason).then(
        () => this.#settle(outgoing, error),
        (failure: unknown) => {
          this.#life.report(mapSocketError(failure, 'keep an unsent publish as a dead letter'));
          this.#settle(outgoing, error);
        },
      );
    }
    for (const subscription of [...this.#subscriptions.values()]) {
      this.#forget(subscription);
      subscription.buffer.fail(error);
    }
    this.#life.report(error);
  }

  /** A publish found no connection and none is being made (never connected, or given up). */
  #connectForWork(): void {
    this.connect().then(
      () => this.#flushWaiting(),
      (error: unknown) => {
        const failure = mapSocketError(error, `connect to ${this.config.url}`);
        for (const outgoing of this.#waiting.drain()) this.#settle(outgoing, failure);
      },
    );
  }

  /**
   * Sends every subscription on the new connection, again for those added while this ran, so
   * that none is left out.
   */
  async #resubscribe(): Promise<void> {
    if (this.config.protocol !== 'hub') return;
    for (;;) {
      const generation = this.#generation;
      const pending = [...this.#subscriptions.values()].filter((s) => s.sentOn !== generation);
      if (pending.length === 0 || this.#socket === undefined) return;
      await this.#sendSubscriptions(pending, generation);
    }
  }

  async #sendSubscriptions(
    subscriptions: readonly ClientSubscription[],
    generation: number,
  ): Promise<void> {
    const requests: Promise<void>[] = [];
    for (const subscription of subscriptions) {
      subscription.sentOn = generation;
      const { id, pattern } = subscription;
      requests.push(
        this.#request(id, { op: 'subscribe', id, pattern }).catch((error: unknown) => {
          if ((error as WatchtowerError).code === ErrorCode.CONNECTION) throw error;
          // The hub refuses it now (its authorize changed its mind): end that subscription.
          this.#forget(subscription);
          subscription.buffer.fail(error);
        }),
      );
    }
    await Promise.all(requests);
  }

  #flushWaiting(): void {
    while (this.#link === 'up' && this.#waiting.size > 0) {
      const outgoing = this.#waiting.shift() as OutgoingPublish;
      if (!outgoing.settled) this.#send(outgoing);
    }
  }

  #send(outgoing: OutgoingPublish): void {
    const socket = this.#socket as ClientSocket;
    if (this.config.protocol === 'plain') {
      try {
        socket.send(outgoing.json);
      } catch (error) {
        this.#waiting.push(outgoing);
        this.#dropAndReconnect(mapSocketError(error, 'publish'));
        return;
      }
      this.#published++;
      this.#settle(outgoing, undefined);
      return;
    }
    outgoing.ref = ++this.#refSeq;
    this.#unconfirmed.push(outgoing);
    try {
      socket.send(publishFrameText(outgoing.ref, outgoing.json));
    } catch (error) {
      this.#dropAndReconnect(mapSocketError(error, 'publish'));
    }
  }

  #settle(outgoing: OutgoingPublish, error: unknown): void {
    if (outgoing.settled) return;
    outgoing.settled = true;
    outgoing.cleanup?.();
    if (error === undefined) outgoing.resolve();
    else outgoing.reject(error);
  }

  /** Sends a control frame and waits for `subscribed` (or `error`) with the same id. */
  #request(id: string, frame: { op: 'subscribe'; id: string; pattern: string }): Promise<void> {
    const socket = this.#socket;
    if (socket === undefined) return RESOLVED;
    const { clock, requestTimeoutMs } = this.config;
    return new Promise<void>((resolve, reject) => {
      const timer = clock.setTimeout(() => {
        this.#requests.delete(id);
        try {
          // The hub may take it later: tell it not to route to a subscription given up on.
          socket.send(frameText({ op: 'unsubscribe', id }));
        } catch {
          // The connection is going anyway.
        }
        reject(
          new WatchtowerError(
            ErrorCode.TIMEOUT,
            `the hub did not answer subscribe ${frame.pattern} within requestTimeoutMs (${requestTimeoutMs} ms)`,
          ),
        );
      }, requestTimeoutMs);
      this.#requests.set(id, { resolve, reject, timer });
      try {
        socket.send(frameText(frame));
      } catch (error) {
        this.#requests.delete(id);
        clock.clearTimeout(timer);
        reject(mapSocketError(error, `subscribe to ${frame.pattern}`));
      }
    });
  }

  #answer(id: unknown, error: WatchtowerError | undefined): boolean {
    if (typeof id !== 'string') return false;
    const request = this.#requests.get(id);
    if (request === undefined) return false;
    this.#requests.delete(id);
    this.config.clock.clearTimeout(request.timer);
    if (error === undefined) request.resolve();
    else request.reject(error);
    return true;
  }

  /** The socket is unusable: drop it and reconnect. */
  #dropAndReconnect(error: WatchtowerError): void {
    if (this.#socket === undefined) return;
    this.#dropSocket();
    if (!this.#life.closed) this.#connectionLost(error);
  }

  #dropSocket(): void {
    this.#abortDial?.();
    const socket = this.#socket;
    this.#socket = undefined;
    this.#generation++;
    this.#stopKeepaliveTimers();
    if (this.#link === 'up') this.#link = 'reconnecting';
    try {
      socket?.terminate();
    } catch {
      // Already gone.
    }
    const wake = this.#socketClosed;
    this.#socketClosed = undefined;
    wake?.();
  }

  // --- keepalive ------------------------------------------------------------------------

  #startKeepalive(): void {
    const { pingIntervalMs, clock } = this.config;
    if (pingIntervalMs === 0) return;
    this.#stopKeepalive = repeat(
      clock,
      pingIntervalMs,
      () => this.#probe(),
      (error) => this.#life.report(mapSocketError(error, 'keepalive ping')),
    );
  }

  #probe(): void {
    const socket = this.#socket;
    if (socket === undefined || this.#pongTimer !== undefined) return;
    const { clock, pongTimeoutMs } = this.config;
    this.#pongTimer = clock.setTimeout(() => {
      this.#pongTimer = undefined;
      this.#dropAndReconnect(
        new ConnectionError(
          `${this.config.url} did not answer a ping within pongTimeoutMs (${pongTimeoutMs} ms)`,
        ),
      );
    }, pongTimeoutMs);
    if (!socket.ping()) socket.send(frameText({ op: 'ping' }));
  }

  #alive(): void {
    if (this.#pongTimer !== undefined) this.config.clock.clearTimeout(this.#pongTimer);
    this.#pongTimer = undefined;
  }

  #stopKeepaliveTimers(): void {
    this.#stopKeepalive?.();
    this.#stopKeepalive = undefined;
    this.#alive();
  }

  // --- what arrives ---------------------------------------------------------------------

  #receive(data: string | Uint8Array): void {
    let text: string;
    if (typeof data === 'string') {
      text = data;
    } else {
      if (data.byteLength > this.config.maxMessageSize) {
        this.#tooBig(data.byteLength);
        return;
      }
      try {
        text = decoder.decode(data);
      } catch (error) {
        this.#malformedFrame(
          data,
          new SerializationError('cannot decode frame: the bytes are not valid UTF-8', data, {
            cause: error,
          }),
          undefined,
        );
        return;
      }
    }
    if (text.length > this.config.maxMessageSize) {
      const size = exceedsSize(text, this.config.maxMessageSize);
      if (size !== undefined) {
        this.#tooBig(size);
        return;
      }
    }
    const parsed = parseFrame(text);
    if (parsed.kind === 'event' || parsed.kind === 'publish') {
      // A publish frame from a server is an echo of a client's (a relay): its event counts.
      this.#dispatch(parsed.event, parsed.text);
    } else if (parsed.kind === 'control') {
      this.#control(parsed.op, parsed.frame);
    } else {
      this.#malformedFrame(
        typeof data === 'string' ? new TextEncoder().encode(data) : data,
        new SerializationError(`cannot decode frame: ${parsed.problem}`, undefined),
        claimedType(parsed.value),
      );
    }
  }

  /** Browsers cannot refuse a large frame before it arrives: close as ws would (1009). */
  #tooBig(size: number): void {
    const socket = this.#socket;
    const error = new ConnectionError(
      `a frame of ${size} bytes from ${this.config.url} is over maxMessageSize (${this.config.maxMessageSize})`,
    );
    this.#life.report(error);
    try {
      socket?.close(CLOSE_CODES.messageTooBig, 'frame over maxMessageSize');
    } catch {
      // Closing anyway.
    }
    this.#dropAndReconnect(error);
  }

  #dispatch(event: Event, text: string): void {
    let matching = this.#index.match(event.type);
    if (matching.length === 0) {
      const misrouted = this.#misrouted(event);
      if (misrouted === undefined) return;
      matching = [misrouted];
    }
    this.#received++;
    for (let i = 0; i < matching.length; i++) {
      const subscription = matching[i] as ClientSubscription;
      // Each subscription gets its own copy, as from a broker; the first takes the decoded one.
      const copy = i === 0 ? event : decodeEvent(text);
      if (!subscription.offer(new ClientDelivery(copy, undefined, subscription))) {
        this.#dropped++;
        this.#life.report(subscription.droppedError(event.type));
      }
    }
  }

  /**
   * An event that matches none of the subscriptions. With `'plain'` that is how subscriptions
   * work: the server sends everything and they filter. From a hub it is a mistake (the hub
   * routes by subscription), unless it is late for a subscription just ended: that is dropped,
   * as it would have been a moment earlier. A mistake is handed to the oldest subscription, so
   * that the bus dead-letters it as `MISROUTED` once instead of it vanishing.
   */
  #misrouted(event: Event): ClientSubscription | undefined {
    if (this.config.protocol === 'plain') return undefined;
    for (const pattern of this.#retiring.values())
      if (pattern.matches(event.type)) return undefined;
    const oldest: ClientSubscription | undefined = this.#subscriptions.values().next().value;
    if (oldest === undefined) {
      this.#life.report(
        new WatchtowerError(
          ErrorCode.TRANSPORT,
          `${this.config.url} sent an event of ${event.type} (${event.id}) to a client with no subscription`,
        ),
      );
    }
    return oldest;
  }

  /**
   * Bytes that are no event: dead-lettered once, by the subscriptions of the type they claim,
   * else by the oldest subscription, so one frame is never dead-lettered twice.
   */
  #malformedFrame(raw: Uint8Array, error: SerializationError, type: string | undefined): void {
    this.#malformed++;
    let target: ClientSubscription | undefined;
    if (type !== undefined) {
      try {
        target = this.#index.match(type)[0];
      } catch {
        target = undefined;
      }
    }
    target ??= this.#subscriptions.values().next().value;
    if (target === undefined) {
      this.#life.report(error);
      return;
    }
    const malformed = new SerializationError(error.message, raw, { cause: error });
    if (!target.offer(new ClientDelivery(undefined, malformed, target))) {
      this.#dropped++;
      this.#life.report(malformed);
    }
  }

  #control(op: string, frame: Record<string, unknown>): void {
    switch (op) {
      case 'ack':
        if (isRef(frame.ref)) this.#confirm(frame.ref, undefined);
        return;
      case 'subscribed':
        this.#answer(frame.id, undefined);
        return;
      case 'unsubscribed':
        if (typeof frame.id === 'string') this.#retiring.delete(frame.id);
        return;
      case 'pong':
        this.#alive();
        return;
      case 'error': {
        const error = frameError(frame);
        if (isRef(frame.ref)) this.#confirm(frame.ref, error);
        else if (!this.#answer(frame.id, error)) this.#life.report(error);
        return;
      }
      default:
        this.#life.report(
          new WatchtowerError(
            ErrorCode.TRANSPORT,
            `${this.config.url} sent a control frame the client does not know: ${JSON.stringify(op)}`,
          ),
        );
    }
  }

  /** `ack` up to `ref` (error: `ref` alone was refused, those before it were taken). */
  #confirm(ref: number, error: WatchtowerError | undefined): void {
    const unconfirmed = this.#unconfirmed;
    while (unconfirmed.size > 0) {
      const head = unconfirmed.peek() as OutgoingPublish;
      if (head.ref > ref || (error !== undefined && head.ref === ref)) break;
      unconfirmed.shift();
      if (!head.settled) this.#published++;
      this.#settle(head, undefined);
    }
    if (error !== undefined && unconfirmed.peek()?.ref === ref) {
      this.#settle(unconfirmed.shift() as OutgoingPublish, error);
    }
    this.#wakeConfirmed();
  }

  // --- subscriptions and close ----------------------------------------------------------

  #forget(subscription: ClientSubscription): void {
    if (!this.#subscriptions.delete(subscription.id)) return;
    this.#index.remove(subscription.pattern, subscription);
  }

  #unsubscribe(subscription: ClientSubscription): Promise<void> {
    const known = this.#subscriptions.has(subscription.id);
    this.#forget(subscription);
    // At most once: what was received and not taken is dropped with the subscription.
    subscription.buffer.drain();
    subscription.buffer.end();
    const socket = this.#socket;
    if (known && socket !== undefined && this.config.protocol === 'hub') {
      // Until the hub says `unsubscribed`, events it sent for this one are late, not misrouted.
      this.#retiring.set(subscription.id, compilePattern(subscription.pattern));
      if (this.#retiring.size > MAX_RETIRING) {
        this.#retiring.delete(this.#retiring.keys().next().value as string);
      }
      try {
        socket.send(frameText({ op: 'unsubscribe', id: subscription.id }));
      } catch {
        // The connection is going; the hub forgets its subscriptions with it.
      }
    }
    return RESOLVED;
  }

  async #close(deadline: Deadline): Promise<void> {
    this.#pause.wake();
    this.#abortDial?.();
    const closed = this.#life.closedError('publish');
    for (const outgoing of this.#waiting.drain()) this.#settle(outgoing, closed);
    // Sent publishes get until the deadline for the hub's ack.
    await deadline.within(this.#whenConfirmed());
    for (const outgoing of this.#unconfirmed.drain()) this.#settle(outgoing, closed);
    const idle: Promise<void>[] = [];
    for (const subscription of [...this.#subscriptions.values()]) {
      this.#forget(subscription);
      subscription.buffer.drain();
      subscription.buffer.end();
      idle.push(subscription.buffer.whenIdle());
    }
    await deadline.within(Promise.all(idle));
    for (const [id, request] of this.#requests) {
      this.#requests.delete(id);
      this.config.clock.clearTimeout(request.timer);
      request.reject(this.#life.closedError('subscribe'));
    }
    await this.#dlq.close({ timeoutMs: deadline.remaining() });
    await this.#closeSocket(deadline);
    await this.#life.settleBackground(deadline);
  }

  /** Resolves once no sent publish waits for the hub's ack. */
  #whenConfirmed(): Promise<void> {
    if (!this.#hasUnconfirmed()) return RESOLVED;
    return new Promise<void>((resolve) => this.#confirmedWaiters.push(resolve));
  }

  #hasUnconfirmed(): boolean {
    for (const outgoing of this.#unconfirmed.values()) if (!outgoing.settled) return true;
    return false;
  }

  #wakeConfirmed(): void {
    if (this.#confirmedWaiters.length === 0 || this.#hasUnconfirmed()) return;
    for (const wake of this.#confirmedWaiters.splice(0)) wake();
  }

  async #closeSocket(deadline: Deadline): Promise<void> {
    const socket = this.#socket;
    this.#stopKeepaliveTimers();
    this.#link = 'down';
    if (socket === undefined) return;
    const gone = new Promise<void>((resolve) => (this.#socketClosed = resolve));
    try {
      socket.close(CLOSE_CODES.normal, 'closed');
    } catch {
      this.#dropSocket();
      return;
    }
    await deadline.within(gone);
    if (this.#socket !== undefined) this.#dropSocket();
  }
}

function closeReason(code: number, reason: string): Error {
  return new Error(`the connection closed with code ${code}${reason === '' ? '' : ` (${reason})`}`);
}
