import {
  AckPolicy,
  DeliverPolicy,
  ReplayPolicy,
  jetstreamManager,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import {
  PermissionViolationError,
  connect,
  nanos,
  nuid,
  type Msg,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';
import {
  BackpressureError,
  ClosedError,
  ConnectionError,
  RetryPolicy,
  ErrorCode,
  TimeoutError,
  WatchtowerError,
  assertEventType,
  configError,
  describeError,
  encodeEventBytes,
  isWatchtowerError,
  type CloseOptions,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type DeadLetterReason,
  type Delivery,
  type Event,
  type HealthStatus,
  type MalformedMessage,
  type PublishOptions,
  type StartPosition,
  type SubscriptionHandle,
  type Transport,
  type TransportCapabilities,
  type TransportInfo,
  type TransportSubscribeOptions,
  type TransportSubscription,
} from '@watchtower/core';
import {
  TRANSPORT_OPTION_KEYS,
  checkOptionKeys,
  rejectedForUnknownKeys,
  BoundedMemo,
  Emitter,
} from '@watchtower/core/transport-kit';
import { resolveNatsConfig, type NatsConfig, type ResolvedNatsConfig } from './config.js';
import { toConnectionOptions } from './connection-options.js';
import {
  decodeDeadLetter,
  dlqRetryDelayMs,
  encodeDeadLetter,
  isMalformed,
} from './dead-letter-record.js';
import {
  coreDelivery,
  jetStreamDelivery,
  storedContent,
  toNatsHeaders,
  SettleBatcher,
  type JetStreamDeliveryContext,
} from './deliveries.js';
import { isNoResponders, mapNatsError } from './map-error.js';
import { maxDeliveriesSubject, parseMaxDeliveries } from './max-deliveries.js';
import {
  CoreSource,
  PullSource,
  type CoreSourceLimits,
  type MessageSource,
} from './message-source.js';
import { eventSubject, groupConsumerName, patternSubject, typeFromSubject } from './subjects.js';
import { dlqStreamSpec, ensureStream, eventStreamSpec, type StreamSpec } from './topology.js';

/** Connection state as `healthCheck` reports it. */
export type NatsConnectionState =
  'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed';

const CORE_CAPABILITIES: Readonly<Omit<TransportCapabilities, 'nativeDlq'>> = {
  persistence: false,
  replay: false,
  consumerGroups: true,
  ordering: true,
  redelivery: false,
  delayedRetry: false,
  brokerAttemptCount: false,
  wildcards: true,
  headers: true,
  reconnect: true,
};

const JETSTREAM_CAPABILITIES: Readonly<Omit<TransportCapabilities, 'nativeDlq'>> = {
  persistence: true,
  replay: true,
  consumerGroups: true,
  ordering: true,
  redelivery: true,
  delayedRetry: true,
  brokerAttemptCount: true,
  wildcards: true,
  headers: true,
  reconnect: true,
};

/** Listener map of {@link NatsTransport.on}. */
export type NatsTransportEvents = {
  /**
   * Background work failed where no caller can be told: a server refusal of a core publish, a
   * consumer or stream that could not be recreated, a dead-letter consumer that ended or whose
   * handler threw, a dead letter or ack that could not be written, the connection given up.
   * The transport goes on (and retries where it can); this is for logs and metrics.
   */
  error: [error: WatchtowerError];
};

/**
 * The NATS transport: core NATS (at most once) or JetStream (at least once, durable), chosen
 * by `mode`. Events go to `{subjectPrefix}.{type}` in the Rust Watchtower wire format, with the
 * event id as `Nats-Msg-Id` and the event headers as NATS headers; dead letters to
 * `{dlqPrefix}.{type}`.
 *
 * Use it through an `EventBus` (see `NatsSubscriber`) for retries, circuit breaking,
 * backpressure and dead-lettering; on its own it is the low-level `Transport` contract.
 *
 * @example
 * ```ts
 * const transport = new NatsTransport({ mode: 'jetstream', servers: 'nats://127.0.0.1:4222' });
 * await transport.connect();
 * ```
 */
export class NatsTransport implements Transport {
  /** The config with every default applied. */
  readonly config: ResolvedNatsConfig;
  #info: TransportInfo;
  /** The subject of each event type published, remembered. */
  readonly #subjects: BoundedMemo<string>;
  /** Dead letters go to a JetStream stream (decided at connect for `dlq.durable: 'auto'`). */
  #durableDlq: boolean;
  readonly #deliveries: Pick<JetStreamDeliveryContext, 'unsettled' | 'batcher' | 'closed'> = {
    unsettled: new Set(),
    batcher: new SettleBatcher((error) => this.#report(error)),
    closed: () => this.#nc === undefined || this.#nc.isClosed(),
  };
  // A listener that throws is reported as a process warning and never breaks the transport.
  readonly #emitter = new Emitter<NatsTransportEvents>();
  /** Set once close() starts draining: what fails from then on fails because of close(). */
  #silenced = false;

  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;
  #jsm: JetStreamManager | undefined;
  #connecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #closed = false;
  #state: NatsConnectionState = 'idle';
  #lastError: unknown;
  #topology: Promise<void> | undefined;
  readonly #sources = new Set<MessageSource<unknown>>();
  readonly #dlqConsumers = new Set<DlqConsumer>();
  readonly #background = new Set<Promise<unknown>>();
  /** Aborted by close(): ends background retries. */
  readonly #closeController = new AbortController();

  /** @throws `CONFIG` naming the first bad option. */
  constructor(config: Partial<NatsConfig> = {}) {
    this.config = resolveNatsConfig(config);
    this.#durableDlq = this.config.dlq.durable === true;
    this.#info = this.#describe();
    const { subjectPrefix } = this.config;
    this.#subjects = new BoundedMemo((type) => eventSubject(subjectPrefix, type));
  }

  /**
   * Name and capabilities. With `dlq.durable: 'auto'`, `nativeDlq` is false until `connect()`
   * finds JetStream on the server.
   */
  get info(): TransportInfo {
    return this.#info;
  }

  #describe(): TransportInfo {
    const base = this.config.mode === 'jetstream' ? JETSTREAM_CAPABILITIES : CORE_CAPABILITIES;
    return Object.freeze({
      name: this.config.mode === 'jetstream' ? 'nats-jetstream' : 'nats-core',
      capabilities: Object.freeze({ ...base, nativeDlq: this.#durableDlq }),
    });
  }

  /** The current connection state. */
  get state(): NatsConnectionState {
    return this.#state;
  }

  /**
   * Adds a listener; returns a function that removes it. `error` receives failures of
   * background work as Watchtower errors (mapped by `mapNatsError`); an `EventBus` over this
   * transport listens and reports them on its own `error` listeners or logger. Nothing is
   * reported for a normal `close()`.
   */
  on<K extends keyof NatsTransportEvents>(
    name: K,
    listener: (...args: NatsTransportEvents[K]) => void,
  ): () => void {
    return this.#emitter.on(name, listener);
  }

  #report(error: WatchtowerError): void {
    if (this.#silenced) return;
    this.#emitter.emit('error', error);
  }

  /** How much a core subscription to `filter` holds, and where its drops are reported. */
  #coreLimits(filter: string, maxInFlight: number | undefined): CoreSourceLimits {
    const field = maxInFlight === undefined ? 'pendingLimit' : 'maxInFlight';
    return {
      pending: maxInFlight ?? this.config.pendingLimit,
      onDropped: (dropped, limit) =>
        this.#report(
          new BackpressureError(
            ErrorCode.BACKPRESSURE_DROPPED,
            `subscription to ${filter}: ${dropped} event(s) dropped, the subscriber was ` +
              `${limit} events behind (${field}); core NATS delivers at most once`,
          ),
        ),
    };
  }

  /**
   * Connects, and in mode `jetstream` (or with a durable DLQ) creates or updates the streams.
   * Idempotent: concurrent calls share one attempt.
   *
   * @throws `CONNECTION` when no server can be reached; `CLOSED` after `close()`; `CONFIG`
   * when an existing stream conflicts with the config.
   */
  connect(): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError('the NATS transport is closed'));
    this.#connecting ??= this.#connect().catch((error: unknown) => {
      this.#connecting = undefined;
      throw error;
    });
    return this.#connecting;
  }

  async #connect(): Promise<void> {
    this.#state = 'connecting';
    let nc: NatsConnection;
    try {
      nc = await connect(toConnectionOptions(this.config));
    } catch (error) {
      this.#state = 'disconnected';
      this.#lastError = error;
      const mapped = mapNatsError(error, `connect to ${this.config.servers.join(',')}`);
      throw mapped.code === ErrorCode.TRANSPORT
        ? new ConnectionError(mapped.message, { cause: error })
        : mapped;
    }
    if (this.#closed) {
      await nc.close().catch(() => undefined);
      throw new ClosedError('the NATS transport was closed while connecting');
    }
    const durableDlq =
      this.config.dlq.durable === 'auto' ? nc.info?.jetstream === true : this.config.dlq.durable;
    if (durableDlq !== this.#durableDlq) {
      this.#durableDlq = durableDlq;
      this.#info = this.#describe();
    }
    if (this.config.mode === 'jetstream' || durableDlq) {
      try {
        this.#jsm = await jetstreamManager(nc, { timeout: this.config.requestTimeoutMs });
        this.#js = this.#jsm.jetstream();
        await this.#ensureTopology();
      } catch (error) {
        this.#js = undefined;
        this.#jsm = undefined;
        await nc.close().catch(() => undefined);
        this.#state = 'disconnected';
        if (isWatchtowerError(error)) throw error;
        throw mapNatsError(
          error,
          `set up JetStream on ${this.config.servers.join(',')} (is JetStream enabled on the server?)`,
          this.config.requestTimeoutMs,
        );
      }
    }
    if (this.#closed) {
      this.#js = undefined;
      this.#jsm = undefined;
      await nc.close().catch(() => undefined);
      throw new ClosedError('the NATS transport was closed while connecting');
    }
    // Only now is the connection handed to callers: a publish that saw it during the JetStream
    // set-up would go out as a plain NATS message, unstored and unacknowledged.
    this.#nc = nc;
    this.#state = 'connected';
    this.#track(this.#watchStatus(nc), 'watch the NATS connection status');
    this.#track(this.#watchClosed(nc), 'watch the NATS connection');
  }

  /** Creates or updates the event and DLQ streams; shared by concurrent callers. */
  #ensureTopology(): Promise<void> {
    this.#topology ??= (async () => {
      const jsm = this.#jsm;
      if (jsm === undefined) return;
      const specs: StreamSpec[] = [];
      if (this.config.mode === 'jetstream') specs.push(eventStreamSpec(this.config));
      if (this.#durableDlq) specs.push(dlqStreamSpec(this.config));
      for (const spec of specs) await ensureStream(jsm, spec);
    })().finally(() => {
      this.#topology = undefined;
    });
    return this.#topology;
  }

  async #watchStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (this.#nc !== nc) return;
      switch (status.type) {
        case 'disconnect':
          this.#state = 'disconnected';
          break;
        case 'reconnecting':
          this.#state = 'reconnecting';
          break;
        case 'reconnect':
          this.#state = 'connected';
          // A broker restarted without its storage has lost the streams: put them back
          // before the consumers look for them.
          this.#restoreTopology('after a reconnect');
          break;
        case 'error':
          this.#lastError = status.error;
          // A refused subscription fails its subscription, which reports it; a refused core
          // publish (or an authorization error) reaches nobody else.
          if (
            !(status.error instanceof PermissionViolationError) ||
            status.error.operation !== 'subscription'
          ) {
            this.#report(mapNatsError(status.error, 'the NATS server reported'));
          }
          break;
        default:
          break;
      }
    }
  }

  async #watchClosed(nc: NatsConnection): Promise<void> {
    const error = await nc.closed();
    if (this.#nc !== nc || this.#closed) return;
    // Closed without close(): reconnect attempts ran out. A later call connects afresh.
    this.#state = 'closed';
    this.#lastError = error ?? new Error('the connection was closed');
    this.#nc = undefined;
    this.#js = undefined;
    this.#jsm = undefined;
    this.#connecting = undefined;
    const operation = `the NATS connection to ${this.config.servers.join(',')} was given up (reconnect attempts ran out)`;
    const mapped = mapNatsError(this.#lastError, operation);
    this.#report(
      mapped.code === ErrorCode.CONNECTION
        ? mapped
        : new ConnectionError(mapped.message, { cause: this.#lastError }),
    );
  }

  /** Keeps `promise` for close() to wait on; a rejection is reported, as `operation` failing. */
  #track(promise: Promise<unknown>, operation: string): void {
    const tracked = promise
      .catch((error: unknown) => {
        this.#report(mapNatsError(error, operation, this.config.requestTimeoutMs));
      })
      .finally(() => this.#background.delete(tracked));
    this.#background.add(tracked);
  }

  /**
   * Puts the streams back in the background (they were found missing). When a restore is
   * already under way, its starter reports how it ends.
   */
  #restoreTopology(why: string): void {
    if (this.#topology !== undefined || this.#jsm === undefined) return;
    const restoring = this.#ensureTopology().catch((error: unknown) => {
      this.#lastError = error;
      throw error;
    });
    this.#track(restoring, `recreate the streams ${why}`);
  }

  /**
   * While the client reconnects, a core publish would be buffered and may be dropped, and a
   * JetStream publish would wait out its timeout: fail fast with a retryable `CONNECTION`
   * error instead, so the caller (the EventBus retry) knows and tries again.
   */
  #assertConnected(operation: string): void {
    if (this.#state !== 'connected') {
      throw new ConnectionError(`cannot ${operation}: the NATS connection is ${this.#state}`);
    }
  }

  async #connection(): Promise<NatsConnection> {
    if (this.#closed) throw new ClosedError('the NATS transport is closed');
    if (this.#nc === undefined) await this.connect();
    const nc = this.#nc;
    if (nc === undefined) throw new ConnectionError('the NATS connection was lost');
    return nc;
  }

  /**
   * Publishes to `{subjectPrefix}.{type}`. In mode `core` it resolves once the message is
   * written to the live connection (at most once); in mode `jetstream` once the server's
   * PubAck says it is stored. A republished id within the stream's duplicate window is stored
   * once.
   *
   * @throws `VALIDATION` for a bad event type (nothing is sent), `SERIALIZATION` for a payload
   * that is not JSON, `CLOSED`, `CONNECTION` (also at once while the client is reconnecting),
   * `TIMEOUT` (no PubAck in `requestTimeoutMs`),
   * `TRANSPORT` (no stream captures the subject, broker refusal), `ABORTED`.
   */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    // Core mode on a live connection needs no await: hand the bytes to the client and answer
    // with one settled promise, as the hot path of every core publish.
    const nc = this.#nc;
    if (this.config.mode === 'core' && nc !== undefined && options === undefined) {
      try {
        assertEventType(event.type);
        if (this.#closed) throw new ClosedError('the NATS transport is closed');
        this.#assertConnected('publish');
        this.#publishCore(nc, event);
      } catch (error) {
        return Promise.reject(error);
      }
      return SENT;
    }
    return this.#publish(event, options);
  }

  #publishCore(nc: NatsConnection, event: Event): void {
    const subject = this.#subjects.get(event.type);
    const headers = toNatsHeaders(event.headers);
    try {
      nc.publish(subject, encodeEventBytes(event), headers === undefined ? undefined : { headers });
    } catch (error) {
      throw mapNatsError(error, `publish to ${subject}`);
    }
  }

  async #publish(event: Event, options?: PublishOptions): Promise<void> {
    checkOptionKeys(options, TRANSPORT_OPTION_KEYS.publish, 'publish options');
    assertEventType(event.type);
    const signal = options?.signal;
    throwIfAborted(signal);
    const nc = this.#nc ?? (await this.#connection());
    if (this.#closed) throw new ClosedError('the NATS transport is closed');
    this.#assertConnected('publish');
    if (this.config.mode === 'core') {
      this.#publishCore(nc, event);
      return;
    }
    const subject = this.#subjects.get(event.type);
    const data = encodeEventBytes(event);
    const headers = toNatsHeaders(event.headers);
    const js = this.#js;
    if (js === undefined) throw new ConnectionError('cannot publish: JetStream is not set up');
    const ack = js.publish(subject, data, {
      msgID: event.id,
      timeout: this.config.requestTimeoutMs,
      ...(headers === undefined ? {} : { headers }),
    });
    try {
      await (signal === undefined ? ack : raceAbort(ack, signal));
    } catch (error) {
      // No stream answered: it was deleted, or the broker lost its storage. Put it back so
      // that a retry (the EventBus retries TRANSPORT errors) succeeds.
      if (isNoResponders(error)) this.#restoreTopology('after a publish found none');
      throw mapNatsError(error, `publish to ${subject}`, this.config.requestTimeoutMs);
    }
  }

  /**
   * Subscribes to `{subjectPrefix}.{pattern}`. Resolves once the server has the subscription
   * (mode `core`) or the consumer exists (mode `jetstream`), so what is published after that
   * is delivered.
   *
   * - `group`: core NATS queue group, or a durable JetStream consumer named after the group
   *   and the pattern, shared by every member and kept after they leave.
   * - without a group (mode `jetstream`): a consumer of its own, deleted on `unsubscribe()`.
   * - `startFrom` (mode `jetstream` only): where a new consumer starts; an existing group
   *   consumer goes on where it is.
   * - `maxInFlight`: in mode `jetstream` the consumer's `max_ack_pending` (instead of
   *   `consumer.maxAckPending`), which a group's members share; in mode `core` the events held
   *   in the client for this subscription (instead of `pendingLimit`), beyond which arriving
   *   events are dropped and reported as `BACKPRESSURE_DROPPED`.
   * - a group consumer that exists already gets the ack wait, max deliver and max ack pending
   *   of this config.
   *
   * @throws `VALIDATION` for a bad pattern, `CONFIG` for bad options (or `startFrom` other
   * than `'new'` in mode `core`), `CONNECTION`, `CLOSED`.
   */
  async subscribe(
    pattern: string,
    options: TransportSubscribeOptions = {},
  ): Promise<TransportSubscription> {
    checkOptionKeys(options, TRANSPORT_OPTION_KEYS.subscribe, 'subscribe options');
    const filter = patternSubject(this.config.subjectPrefix, pattern);
    const group = checkGroup(options.group, 'group');
    const maxInFlight = options.maxInFlight;
    if (maxInFlight !== undefined && (!Number.isInteger(maxInFlight) || maxInFlight < 1)) {
      throw configError('maxInFlight', `expected an integer >= 1, got ${String(maxInFlight)}`);
    }
    const startFrom = options.startFrom ?? 'new';
    checkStartFrom(startFrom);
    if (this.config.mode === 'core' && startFrom !== 'new') {
      throw configError(
        'startFrom',
        "core NATS keeps no history; only 'new' is supported (use mode 'jetstream')",
      );
    }
    const nc = await this.#connection();

    if (this.config.mode === 'core') {
      const source = new CoreSource<Delivery>(
        nc,
        filter,
        group,
        coreDelivery,
        this.#coreLimits(filter, maxInFlight),
      );
      this.#adopt(source);
      try {
        // After the flush the server has the subscription: nothing published later is missed.
        await nc.flush();
      } catch (error) {
        await source.stop();
        this.#sources.delete(source);
        throw mapNatsError(error, `subscribe to ${filter}`);
      }
      return new NatsSubscription(pattern, source, () => this.#sources.delete(source));
    }

    const { consumer } = this.config;
    const maxAckPending = maxInFlight ?? consumer.maxAckPending;
    const config: Partial<ConsumerConfig> & { durable_name: string } = {
      durable_name: group === undefined ? `wt_${nuid.next()}` : groupConsumerName(group, filter),
      description: `watchtower ${group === undefined ? 'subscription' : `group ${group}`} on ${filter}`,
      ack_policy: AckPolicy.Explicit,
      replay_policy: ReplayPolicy.Instant,
      filter_subject: filter,
      ack_wait: nanos(consumer.ackWaitMs),
      max_deliver: consumer.maxDeliver,
      max_ack_pending: maxAckPending,
      ...deliverPolicy(startFrom),
      ...(group === undefined ? { inactive_threshold: nanos(consumer.inactiveThresholdMs) } : {}),
    };
    const context: JetStreamDeliveryContext = {
      ...this.#deliveries,
      maxDeliver: consumer.maxDeliver,
      deadLetter: (message, reason) =>
        this.#deadLetterOfDelivery(message, { ...reason, subscription: group ?? pattern }),
    };
    const source = this.#pullSource(
      this.config.stream.name,
      config,
      group !== undefined,
      (msg) => jetStreamDelivery(msg, context),
      (delivery) => this.#track(this.#handBack(delivery), `hand back ${delivery.origin}`),
      Math.min(consumer.batchSize, maxAckPending),
    );
    // Listening before the consumer pulls: an advisory its first pull causes is not missed.
    const givenUp =
      consumer.maxDeliver > 0
        ? this.#watchGivenUp(nc, config.durable_name, group ?? pattern)
        : undefined;
    const stopWatching = (): void => {
      try {
        givenUp?.unsubscribe();
      } catch {
        // The connection is closed, and the subscription with it.
      }
    };
    this.#adopt(source);
    try {
      await source.open();
    } catch (error) {
      await source.stop();
      this.#sources.delete(source);
      stopWatching();
      throw mapNatsError(
        error,
        `create consumer ${config.durable_name} on ${filter}`,
        this.config.requestTimeoutMs,
      );
    }
    return new NatsSubscription(pattern, source, () => {
      this.#sources.delete(source);
      stopWatching();
    });
  }

  /**
   * Dead-letters the events the server gives up on for `consumerName` (see
   * `max-deliveries.ts`). The members of a group listen in one queue group, so each event is
   * dead-lettered once.
   */
  #watchGivenUp(nc: NatsConnection, consumerName: string, subscription: string): Subscription {
    const stream = this.config.stream.name;
    return nc.subscribe(maxDeliveriesSubject(stream, consumerName), {
      queue: consumerName,
      callback: (error, msg) => {
        if (error !== null) return;
        const advisory = msg.string();
        // The server will not deliver it again: a failed write is tried again for a while
        // (until close), or the event would stay unhandled for good.
        this.#track(
          GIVEN_UP_RETRY.execute(() => this.#deadLetterGivenUp(advisory, subscription), {
            signal: this.#closeController.signal,
          }),
          `dead-letter an event consumer ${consumerName} stopped delivering (consumer.maxDeliver)`,
        );
      },
    });
  }

  async #deadLetterGivenUp(advisory: string, subscription: string): Promise<void> {
    const given = parseMaxDeliveries(advisory);
    if (given === undefined) {
      throw new WatchtowerError(
        ErrorCode.TRANSPORT,
        `unreadable max-deliveries advisory from the server: ${advisory.slice(0, 200)}`,
        { retryable: false },
      );
    }
    const stream = this.config.stream.name;
    const jsm = this.#jsm;
    if (jsm === undefined) throw new ConnectionError('JetStream is not set up on this connection');
    const stored = await jsm.streams.getMessage(stream, { seq: given.streamSeq });
    if (stored === null) {
      throw new WatchtowerError(
        ErrorCode.TRANSPORT,
        `the server stopped delivering message ${given.streamSeq} of stream ${stream} after ` +
          `${given.deliveries} deliveries, and it is no longer in the stream: it cannot be dead-lettered`,
        { retryable: false },
      );
    }
    const content = storedContent(stored.data, stored.subject, stored.header);
    const { maxDeliver, ackWaitMs } = this.config.consumer;
    await this.#deadLetterOfDelivery(content, {
      message:
        `delivery ${given.deliveries} was not settled within consumer.ackWaitMs (${ackWaitMs} ms) ` +
        `and consumer.maxDeliver (${maxDeliver}) allows no more: the consumer stopped or its ` +
        'handler ran too long, and the server would not deliver it again',
      code: ErrorCode.TIMEOUT,
      attempts: given.deliveries,
      failedAt: new Date().toISOString(),
      originalType: 'raw' in content ? content.origin : content.type,
      subscription,
    });
  }

  #pullSource<T>(
    stream: string,
    config: Partial<ConsumerConfig> & { durable_name: string },
    shared: boolean,
    map: (msg: JsMsg) => T,
    release: (item: T) => void,
    batch: number,
  ): PullSource<T> {
    const jsm = this.#jsm;
    const js = this.#js;
    const nc = this.#nc;
    if (jsm === undefined || js === undefined || nc === undefined) {
      throw new ConnectionError('JetStream is not set up on this connection');
    }
    return new PullSource<T>({
      jsm,
      js,
      stream,
      config,
      shared,
      deleteOnStop: !shared,
      batch,
      ensureStream: () => this.#ensureTopology(),
      alive: () => !this.#closed && !nc.isClosed(),
      map,
      release,
      reportError: (error, operation) =>
        this.#report(mapNatsError(error, operation, this.config.requestTimeoutMs)),
    });
  }

  /**
   * Nacks a delivery nobody else will settle (never handed out, or unsettled at close). Not
   * settled because the connection is closed is no failure: the server delivers it again after
   * the ack wait, and a connection given up is reported once, on its own. Anything else (a
   * dead letter at the last attempt that could not be written) rejects.
   */
  async #handBack(delivery: Pick<Delivery, 'nack'>): Promise<void> {
    try {
      await delivery.nack();
    } catch (error) {
      if (!isWatchtowerError(error, ErrorCode.CLOSED)) throw error;
    }
  }

  /**
   * The dead letter of a delivery at its last attempt. Written on the open connection even
   * while close() hands deliveries back (before it drains): refused as `CLOSED` it would be
   * lost, since the server does not deliver it again.
   */
  #deadLetterOfDelivery(
    message: Event | MalformedMessage,
    reason: DeadLetterReason,
  ): Promise<void> {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return this.publishToDlq(message, reason);
    return this.#writeDeadLetter(nc, message, reason);
  }

  #adopt(source: MessageSource<unknown>): void {
    this.#sources.add(source);
  }

  /**
   * Never rejects. Healthy when connected and a server round trip (and in mode `jetstream` a
   * stream info request) succeeds within `requestTimeoutMs`.
   */
  async healthCheck(): Promise<HealthStatus> {
    const nc = this.#nc;
    if (this.#closed)
      return { healthy: false, state: 'closed', message: 'the NATS transport is closed' };
    if (nc === undefined || this.#state !== 'connected') {
      const status: HealthStatus = {
        healthy: false,
        state: nc === undefined && this.#state !== 'connecting' ? 'disconnected' : this.#state,
      };
      status.message =
        this.#lastError === undefined ? 'not connected' : describeError(this.#lastError);
      return status;
    }
    const details: Record<string, unknown> = {
      mode: this.config.mode,
      server: nc.getServer(),
      serverVersion: nc.info?.version,
      subscriptions: this.#sources.size,
    };
    const started = performance.now();
    try {
      await withTimeout(nc.rtt(), this.config.requestTimeoutMs, 'round trip to the server');
      const latencyMs = performance.now() - started;
      if (this.config.mode === 'jetstream' && this.#jsm !== undefined) {
        const info = await withTimeout(
          this.#jsm.streams.info(this.config.stream.name),
          this.config.requestTimeoutMs,
          'stream info',
        );
        details['streamMessages'] = info.state.messages;
        details['streamConsumers'] = info.state.consumer_count;
      }
      return { healthy: true, state: 'connected', latencyMs, details };
    } catch (error) {
      return { healthy: false, state: this.#state, message: describeError(error), details };
    }
  }

  /**
   * Publishes a dead letter to `{dlqPrefix}.{type}`, body `{event, error, original_subject,
   * reason}`; for bytes that never decoded, `event` is their text and the type comes from the
   * subject they arrived on. With a durable DLQ it resolves on the PubAck (stored); otherwise
   * once the server has received it.
   */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    const nc = await this.#connection();
    return this.#writeDeadLetter(nc, message, reason);
  }

  async #writeDeadLetter(
    nc: NatsConnection,
    message: Event | MalformedMessage,
    reason: DeadLetterReason,
  ): Promise<void> {
    this.#assertConnected('publish a dead letter');
    const { subjectPrefix, dlqPrefix } = this.config;
    let originalSubject: string;
    let type: string;
    if (isMalformed(message)) {
      originalSubject = message.origin;
      type = typeFromSubject(subjectPrefix, message.origin) ?? sanitizeSubject(message.origin);
    } else {
      originalSubject = eventSubject(subjectPrefix, message.type);
      type = message.type;
    }
    const subject = `${dlqPrefix}.${type}`;
    const body = encodeDeadLetter(message, reason, originalSubject);
    const js = this.#js;
    // A durable dead letter never falls back to a plain message: its write must be stored.
    if (this.#durableDlq && js === undefined) {
      throw new ConnectionError('cannot publish a dead letter: JetStream is not set up');
    }
    try {
      if (js !== undefined && this.#durableDlq) {
        await js.publish(subject, body, { timeout: this.config.requestTimeoutMs });
      } else {
        nc.publish(subject, body);
        await withTimeout(nc.flush(), this.config.requestTimeoutMs, `flush of ${subject}`);
      }
    } catch (error) {
      if (isNoResponders(error)) this.#restoreTopology('after a dead letter found none');
      throw mapNatsError(error, `publish dead letter to ${subject}`, this.config.requestTimeoutMs);
    }
  }

  /**
   * Calls `handler` for every dead letter on `{dlqPrefix}.>`, one at a time. With a durable
   * DLQ, letters written before the call come first (unless `fromStart` is false), a handler
   * that throws gets the letter again after a second, then after a doubling delay of at most a
   * minute (so a letter it can never take does not spin), and `group` members share one durable
   * consumer. Without one, only letters published while this runs arrive.
   */
  async consumeDlq(
    handler: DeadLetterHandler,
    options: ConsumeDlqOptions = {},
  ): Promise<SubscriptionHandle> {
    if (typeof handler !== 'function') throw configError('handler', 'expected a function');
    checkOptionKeys(options, TRANSPORT_OPTION_KEYS.consumeDlq, 'consumeDlq options');
    const group = checkGroup(options.group, 'group');
    const fromStart = options.fromStart ?? true;
    if (typeof fromStart !== 'boolean') throw configError('fromStart', 'expected a boolean');
    const nc = await this.#connection();
    const filter = `${this.config.dlqPrefix}.>`;

    let source: MessageSource<DlqMessage>;
    if (this.#durableDlq) {
      const config: Partial<ConsumerConfig> & { durable_name: string } = {
        durable_name:
          group === undefined ? `wt_dlq_${nuid.next()}` : groupConsumerName(group, filter),
        description: `watchtower dead-letter consumer${group === undefined ? '' : ` (group ${group})`}`,
        ack_policy: AckPolicy.Explicit,
        replay_policy: ReplayPolicy.Instant,
        filter_subject: filter,
        ack_wait: nanos(this.config.consumer.ackWaitMs),
        max_ack_pending: this.config.consumer.maxAckPending,
        deliver_policy: fromStart ? DeliverPolicy.All : DeliverPolicy.New,
        ...(group === undefined
          ? { inactive_threshold: nanos(this.config.consumer.inactiveThresholdMs) }
          : {}),
      };
      const pull = this.#pullSource(
        this.config.dlq.streamName,
        config,
        group !== undefined,
        dlqMessageFromJs,
        (message) => message.release(),
        64,
      );
      try {
        await pull.open();
      } catch (error) {
        await pull.stop();
        throw mapNatsError(
          error,
          `create dead-letter consumer on ${filter}`,
          this.config.requestTimeoutMs,
        );
      }
      source = pull;
    } else {
      const core = new CoreSource(
        nc,
        filter,
        group,
        dlqMessageFromCore,
        this.#coreLimits(filter, undefined),
      );
      try {
        await nc.flush();
      } catch (error) {
        await core.stop();
        throw mapNatsError(error, `subscribe to ${filter}`);
      }
      source = core;
    }
    const consumer = new DlqConsumer(
      source,
      handler,
      this.config.dlqPrefix,
      this.#durableDlq,
      (error) => this.#report(error),
      () => {
        this.#dlqConsumers.delete(consumer);
      },
    );
    this.#dlqConsumers.add(consumer);
    consumer.start();
    return consumer;
  }

  /**
   * Stops every subscription and dead-letter consumer, drains the connection (pending
   * publishes and acks are flushed) within `timeoutMs`, then closes it. Idempotent; every step
   * runs even if an earlier one fails.
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.#closing === undefined) {
      const refused = rejectedForUnknownKeys(options, TRANSPORT_OPTION_KEYS.close, 'close options');
      if (refused !== undefined) return refused;
    }
    this.#closing ??= this.#close(options.timeoutMs ?? 10_000);
    return this.#closing;
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    this.#closeController.abort(new ClosedError('the NATS transport is closed'));
    const deadline = Date.now() + timeoutMs;
    const remaining = (): number => Math.max(1, deadline - Date.now());
    if (this.#connecting !== undefined) {
      await this.#connecting.catch(() => undefined);
    }
    const nc = this.#nc;
    try {
      await withTimeout(
        Promise.allSettled([
          ...[...this.#dlqConsumers].map((c) => c.unsubscribe()),
          ...[...this.#sources].map((s) => s.stop()),
        ]),
        remaining(),
        'stopping subscriptions',
      );
    } catch {
      // Timed out: the connection close below ends them.
    }
    this.#sources.clear();
    this.#dlqConsumers.clear();
    // Handed out and never settled (a handler past the deadline, a caller that stopped
    // iterating): hand them back so another consumer gets them without waiting for the ack wait.
    const { unsettled, batcher } = this.#deliveries;
    const handedBack = [...unsettled].map((delivery) =>
      this.#handBack(delivery).catch((error: unknown) => {
        this.#report(mapNatsError(error, `hand back ${delivery.origin}`));
      }),
    );
    unsettled.clear();
    // Settles of this turn go out now, before the connection drains.
    batcher.flush();
    await Promise.all(handedBack);
    batcher.flush();
    // From here on, what fails (an ack of a handler past the deadline, a drain cut short)
    // fails because of close(): the server delivers those messages again.
    this.#silenced = true;
    if (nc !== undefined) {
      try {
        if (!nc.isClosed()) await withTimeout(nc.drain(), remaining(), 'drain');
      } catch {
        // A drain that cannot finish (disconnected) gives way to a plain close.
      }
      try {
        if (!nc.isClosed()) await nc.close();
      } catch {
        // Already closed.
      }
    }
    this.#nc = undefined;
    this.#js = undefined;
    this.#jsm = undefined;
    this.#state = 'closed';
    await Promise.allSettled([...this.#background]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Writing the dead letter of an event the server gave up on: about 30 s of tries. */
const GIVEN_UP_RETRY = new RetryPolicy({ maxAttempts: 6, minDelayMs: 250, maxDelayMs: 8000 });

/** A subscription as the `Transport` contract wants it, over a message source. */
class NatsSubscription implements TransportSubscription {
  #unsubscribing: Promise<void> | undefined;

  constructor(
    readonly pattern: string,
    private readonly source: MessageSource<Delivery>,
    private readonly onStop: () => void,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return this.source[Symbol.asyncIterator]();
  }

  tryNext(): Delivery | undefined {
    return this.source.tryNext();
  }

  /** Stops delivery; deliveries already handed out can still be acked. Idempotent. */
  unsubscribe(): Promise<void> {
    this.#unsubscribing ??= this.source.stop().finally(this.onStop);
    return this.#unsubscribing;
  }
}

/**
 * Feeds dead letters to a handler one at a time; ack on success, redeliver later on a throw.
 * What goes wrong (a handler that throws, a letter that cannot be settled, the source ending
 * with an error) goes to `report`: nobody awaits this loop.
 */
class DlqConsumer implements SubscriptionHandle {
  readonly id = `nats-dlq-${nuid.next()}`;
  #running: Promise<void> = Promise.resolve();
  #stopping: Promise<void> | undefined;

  constructor(
    private readonly source: MessageSource<DlqMessage>,
    private readonly handler: DeadLetterHandler,
    private readonly dlqPrefix: string,
    /** Letters are stored in JetStream, so one whose handler threw comes back. */
    private readonly redelivers: boolean,
    private readonly report: (error: WatchtowerError) => void,
    private readonly onStop: () => void,
  ) {}

  start(): void {
    this.#running = this.#run();
  }

  /** Stops; resolves once the handler running now has returned. Idempotent. */
  unsubscribe(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.source.stop();
      await this.#running;
      this.onStop();
    })();
    return this.#stopping;
  }

  async #run(): Promise<void> {
    try {
      for await (const message of this.source) {
        const type = typeFromSubject(this.dlqPrefix, message.subject) ?? message.subject;
        const letter = decodeDeadLetter(message.data, type, message.time);
        let handled: boolean;
        try {
          await this.handler(letter);
          handled = true;
        } catch (error) {
          handled = false;
          const after = this.redelivers
            ? 'the letter comes back later'
            : 'core NATS cannot deliver the letter again';
          this.report(
            new WatchtowerError(
              ErrorCode.HANDLER_FAILED,
              `the dead-letter handler failed on ${message.subject}; ${after}: ${describeError(error)}`,
              { cause: error },
            ),
          );
        }
        try {
          // A letter whose handler threw is left for later: JetStream delivers it again,
          // core NATS cannot.
          if (handled) message.ack();
          else message.retryLater(dlqRetryDelayMs(message.attempt));
        } catch (error) {
          // The server delivers again what was not acked, after the ack wait.
          this.report(mapNatsError(error, `${handled ? 'ack' : 'nak'} ${message.subject}`));
        }
      }
    } catch (error) {
      // The source failed (the server refused the subscription, the connection was given up):
      // the consumer ends. stop() ends it without an error.
      if (this.#stopping === undefined) {
        this.report(mapNatsError(error, `dead-letter consumer on ${this.dlqPrefix}.>`));
      }
    }
  }
}

/** A dead-letter message from either kind of source. */
interface DlqMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly time: Date;
  /** Deliveries of this letter to the consumer so far, 1 the first time. */
  readonly attempt: number;
  ack(): void;
  retryLater(delayMs: number): void;
  /** Back to the server for another consumer, at once. */
  release(): void;
}

function dlqMessageFromJs(msg: JsMsg): DlqMessage {
  return {
    subject: msg.subject,
    data: msg.data,
    time: msg.time,
    attempt: msg.info.deliveryCount,
    ack: () => msg.ack(),
    retryLater: (delayMs) => msg.nak(delayMs),
    release: () => msg.nak(),
  };
}

function dlqMessageFromCore(msg: Msg): DlqMessage {
  return {
    subject: msg.subject,
    data: msg.data,
    time: new Date(),
    attempt: 1,
    ack: () => undefined,
    retryLater: () => undefined,
    release: () => undefined,
  };
}

function checkGroup(group: unknown, field: string): string | undefined {
  if (group === undefined) return undefined;
  if (typeof group !== 'string' || group.length === 0 || /\s/.test(group)) {
    throw configError(
      field,
      `expected a non-empty string without whitespace, got ${JSON.stringify(group)}`,
    );
  }
  return group;
}

function checkStartFrom(start: StartPosition): void {
  if (start === 'new' || start === 'earliest') return;
  if (typeof start === 'object' && start !== null) {
    if ('sequence' in start) {
      if (Number.isInteger(start.sequence) && start.sequence >= 1) return;
      throw configError(
        'startFrom.sequence',
        `expected an integer >= 1, got ${String(start.sequence)}`,
      );
    }
    if ('time' in start) {
      if (start.time instanceof Date && !Number.isNaN(start.time.getTime())) return;
      throw configError('startFrom.time', 'expected a valid Date');
    }
  }
  throw configError('startFrom', "expected 'new', 'earliest', { sequence } or { time }");
}

function deliverPolicy(start: StartPosition): Partial<ConsumerConfig> {
  if (start === 'new') return { deliver_policy: DeliverPolicy.New };
  if (start === 'earliest') return { deliver_policy: DeliverPolicy.All };
  if ('sequence' in start)
    return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.sequence };
  return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.time.toISOString() };
}

/** Tokens of a subject outside our prefix, made safe for a DLQ subject. */
function sanitizeSubject(subject: string): string {
  const cleaned = subject
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .replace(/\.{2,}/g, '.')
    .replace(/^\.|\.$/g, '');
  return cleaned.length === 0 ? 'unknown' : cleaned;
}

/** The answer of every core publish that went out: one settled promise, shared. */
const SENT: Promise<void> = Promise.resolve();

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abortError(signal);
}

function abortError(signal: AbortSignal): WatchtowerError {
  return new WatchtowerError(ErrorCode.ABORTED, 'the operation was aborted', {
    cause: signal.reason,
    retryable: false,
  });
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/** Rejects with a `TIMEOUT` error when `promise` has not settled after `ms`; clears its timer. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new TimeoutError(`${what} took longer than ${ms} ms`, ms));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
