/**
 * {@link NatsTransport}: the Transport contract over one NATS connection, in core NATS or
 * JetStream mode. What is here is what is NATS's own: connecting and the JetStream set-up, the
 * publish, subscribe and dead-letter commands, the consumer configs, the server's
 * max-deliveries advisories, and which steps close takes with the connection. The plumbing
 * (lifecycle, subscriptions, the dead-letter loop, time limits, option checks) is the kit's.
 *
 * Nothing here may wait for the server without a time limit: every await in close shares its
 * deadline, and the force step ends the connection without asking the server.
 */
import {
  AckPolicy,
  DeliverPolicy,
  ReplayPolicy,
  jetstreamManager,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import {
  PermissionViolationError,
  connect,
  nanos,
  nuid,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';
import {
  BackpressureError,
  ConnectionError,
  ErrorCode,
  RetryPolicy,
  WatchtowerError,
  assertEventType,
  describeError,
  encodeEventBytes,
  isWatchtowerError,
  sleep,
  type Clock,
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
  BoundedMemo,
  DeadLetterConsumer,
  RESOLVED,
  SourceSubscription,
  TransportLifecycle,
  checkConsumeDlqOptions,
  checkPublishOptions,
  checkSubscribeOptions,
  deadLetterReason,
  isMalformedMessage,
  raceAbort,
  throwIfAborted,
  withTimeout,
  Backoff,
  Deadline as DeadlineTimer,
  type DeadLetterSource,
  type Deadline,
  type TransportErrorEvents,
} from '@watchtower/core/transport-kit';
import { resolveNatsConfig, type NatsConfig, type ResolvedNatsConfig } from './config.js';
import { toConnectionOptions } from './connection-options.js';
import { encodeDeadLetter } from './dead-letter-record.js';
import {
  coreDeadLetterEntry,
  coreDelivery,
  jetStreamDelivery,
  jsDeadLetterEntry,
  settleBatcher,
  storedContent,
  toNatsHeaders,
  type JetStreamDeliveryContext,
  type JsDelivery,
} from './deliveries.js';
import { isNoResponders, mapNatsError } from './map-error.js';
import { maxDeliveriesSubject, parseMaxDeliveries } from './max-deliveries.js';
import {
  CoreSource,
  PullSource,
  type CoreSourceOptions,
  type MessageSource,
  type Pulled,
  type PullSourceOptions,
} from './message-source.js';
import {
  eventSubject,
  groupConsumerName,
  patternSubject,
  sanitizeSubject,
  typeFromSubject,
} from './subjects.js';
import {
  dlqStreamSpec,
  ensureStream,
  eventStreamSpec,
  jetStreamHint,
  type StreamSpec,
} from './topology.js';

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

/**
 * Listener map of {@link NatsTransport.on}. `error` gets failures of background work where no
 * caller can be told: a server refusal of a core publish, a consumer or stream that could not
 * be recreated, a dead-letter consumer that ended or whose handler threw, a dead letter or ack
 * that could not be written, the connection given up.
 */
export type NatsTransportEvents = TransportErrorEvents;

/** A group name is a consumer and queue name: no whitespace. */
const GROUP_NAME = { pattern: /^\S+$/, hint: 'a name without whitespace' } as const;

/** Waits between publishes that found no stream (a cluster electing a stream leader). */
const NO_RESPONDERS_BACKOFF = { baseMs: 50, maxMs: 1000 } as const;

/** `sleep` on the clock; an aborted `signal` ends it with the `ABORTED` error. */
async function sleepOn(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return sleep(clock, ms);
  return raceAbort(sleep(clock, ms), signal, 'the publish');
}

/** What `close()` waits at most when it is given no `timeoutMs`. */
const CLOSE_TIMEOUT_MS = 10_000;

/** The live connection, with the JetStream API where it is set up. */
interface NatsLink {
  readonly nc: NatsConnection;
  readonly jetstream: { readonly js: JetStreamClient; readonly jsm: JetStreamManager } | undefined;
}

type ConsumerSpec = Partial<ConsumerConfig> & { durable_name: string };

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
  readonly #life: TransportLifecycle;
  readonly #batcher = settleBatcher((error) => this.#life.report(error));
  /** Writing the dead letter of an event the server gave up on: about 30 s of tries. */
  readonly #givenUpRetry: RetryPolicy;

  #link: NatsLink | undefined;
  #state: NatsConnectionState = 'idle';
  #lastError: unknown;
  #topology: Promise<void> | undefined;
  /** Subscriptions' sources, kept until stopped with nothing handed out left unsettled. */
  readonly #sources = new Set<MessageSource<Delivery>>();
  readonly #dlqConsumers = new Set<DeadLetterConsumer>();

  /** @throws `CONFIG` naming the first bad option. */
  constructor(config: Partial<NatsConfig> = {}) {
    this.config = resolveNatsConfig(config);
    const { clock, requestTimeoutMs, subjectPrefix } = this.config;
    this.#durableDlq = this.config.dlq.durable === true;
    this.#info = this.#describe();
    this.#subjects = new BoundedMemo((type) => eventSubject(subjectPrefix, type));
    this.#life = new TransportLifecycle({
      name: 'the NATS transport',
      clock,
      closeTimeoutMs: CLOSE_TIMEOUT_MS,
      mapError: (error, operation) => mapNatsError(error, operation, requestTimeoutMs),
    });
    this.#givenUpRetry = new RetryPolicy({
      maxAttempts: 7,
      minDelayMs: 250,
      maxDelayMs: 8000,
      clock,
    });
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
      system: 'nats',
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
    return this.#life.on(name, listener);
  }

  /**
   * Connects, and in mode `jetstream` (or with a durable DLQ) creates or updates the streams.
   * Idempotent: concurrent calls share one attempt.
   *
   * @throws `CONNECTION` when no server can be reached; `CLOSED` after `close()`; `CONFIG`
   * when an existing stream conflicts with the config.
   */
  connect(): Promise<void> {
    return this.#life.connect(() => this.#open());
  }

  async #open(): Promise<void> {
    this.#state = 'connecting';
    let nc: NatsConnection;
    try {
      nc = await connect(toConnectionOptions(this.config));
    } catch (error) {
      this.#state = this.#life.closed ? 'closed' : 'disconnected';
      this.#lastError = error;
      const mapped = mapNatsError(error, `connect to ${this.config.servers.join(',')}`);
      throw mapped.code === ErrorCode.TRANSPORT
        ? new ConnectionError(mapped.message, { cause: error })
        : mapped;
    }
    // A close() that starts during the set-up ends this connection at once (it would be let
    // go anyway), which also ends the JetStream requests that wait on it.
    const abandon = (): void => void nc.close().catch(() => undefined);
    const { signal } = this.#life;
    signal.addEventListener('abort', abandon, { once: true });
    try {
      this.#life.assertOpen('connect');
      const durableDlq =
        this.config.dlq.durable === 'auto' ? nc.info?.jetstream === true : this.config.dlq.durable;
      if (durableDlq !== this.#durableDlq) {
        this.#durableDlq = durableDlq;
        this.#info = this.#describe();
      }
      const jetstream =
        this.config.mode === 'jetstream' || durableDlq ? await this.#setUpJetStream(nc) : undefined;
      this.#life.assertOpen('connect');
      // Only now is the connection handed to callers: a publish that saw it during the
      // JetStream set-up would go out as a plain NATS message, unstored and unacknowledged.
      this.#link = { nc, jetstream };
    } catch (error) {
      await nc.close().catch(() => undefined);
      this.#state = this.#life.closed ? 'closed' : 'disconnected';
      throw this.#life.closed ? this.#life.closedError('connect') : error;
    } finally {
      signal.removeEventListener('abort', abandon);
    }
    this.#state = 'connected';
    this.#life.track(this.#watchStatus(nc), 'watch the NATS connection status');
    this.#life.track(this.#watchClosed(nc), 'watch the NATS connection');
  }

  async #setUpJetStream(nc: NatsConnection): Promise<NatsLink['jetstream']> {
    try {
      const jsm = await jetstreamManager(nc, { timeout: this.config.requestTimeoutMs });
      await this.#ensureTopology(jsm);
      return { js: jsm.jetstream(), jsm };
    } catch (error) {
      if (isWatchtowerError(error)) throw error;
      throw mapNatsError(
        error,
        `set up JetStream on ${this.config.servers.join(',')}${jetStreamHint(error)}`,
        this.config.requestTimeoutMs,
      );
    }
  }

  /** Creates or updates the event and DLQ streams; shared by concurrent callers. */
  #ensureTopology(jsm: JetStreamManager): Promise<void> {
    this.#topology ??= (async () => {
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
      if (this.#link?.nc !== nc) return;
      switch (status.type) {
        case 'disconnect':
          this.#state = 'disconnected';
          this.#life.connectionLost(
            new ConnectionError(`the connection to the NATS server at ${status.server} was lost`, {
              cause: this.#lastError,
            }),
          );
          break;
        case 'reconnecting':
          this.#state = 'reconnecting';
          break;
        case 'reconnect':
          this.#state = 'connected';
          // A broker restarted without its storage has lost the streams: put them back
          // before the consumers look for them.
          // Back once the streams are there again (publishes would find no responders before).
          void this.#restoreTopology('after a reconnect').then(() => {
            if (this.#link?.nc === nc && this.#state === 'connected') {
              this.#life.connectionRestored();
            }
          });
          break;
        case 'error':
          this.#lastError = status.error;
          // A refused subscription fails its subscription, which reports it; a refused core
          // publish (or an authorization error) reaches nobody else.
          if (
            !(status.error instanceof PermissionViolationError) ||
            status.error.operation !== 'subscription'
          ) {
            this.#life.report(mapNatsError(status.error, 'the NATS server reported'));
          }
          break;
        default:
          break;
      }
    }
  }

  async #watchClosed(nc: NatsConnection): Promise<void> {
    const error = await nc.closed();
    if (this.#link?.nc !== nc || this.#life.closed) return;
    // Closed without close(): reconnect attempts ran out. A later call connects afresh.
    this.#state = 'closed';
    this.#lastError = error ?? new Error('the connection was closed');
    this.#link = undefined;
    this.#life.lost();
    const operation = `the NATS connection to ${this.config.servers.join(',')} was given up (reconnect attempts ran out)`;
    const mapped = mapNatsError(this.#lastError, operation);
    this.#life.report(
      mapped.code === ErrorCode.CONNECTION
        ? mapped
        : new ConnectionError(mapped.message, { cause: this.#lastError }),
    );
  }

  /**
   * Puts the streams back in the background (they were found missing, or the connection is
   * back); resolves, never rejects, once that is done. When a restore is already under way,
   * this waits for it, and its starter reports how it ends.
   */
  #restoreTopology(why: string): Promise<void> {
    const jsm = this.#link?.jetstream?.jsm;
    if (jsm === undefined) return RESOLVED;
    if (this.#topology !== undefined) return this.#topology.then(ignore, ignore);
    const operation = `recreate the streams ${why}`;
    const restoring = this.#ensureTopology(jsm).catch((error: unknown) => {
      this.#lastError = error;
      // A conflict with another stream is a CONFIG error at connect; here it is the reason
      // the restore failed.
      throw isWatchtowerError(error)
        ? new WatchtowerError(ErrorCode.TRANSPORT, `${operation}: ${error.message}`, {
            cause: error,
            retryable: error.retryable,
          })
        : mapNatsError(error, `${operation}${jetStreamHint(error)}`, this.config.requestTimeoutMs);
    });
    this.#life.track(restoring, operation);
    return restoring.then(ignore, ignore);
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

  /** The connection, connecting first when there is none. `CLOSED` after `close()`. */
  async #connection(operation: string): Promise<NatsLink> {
    this.#life.assertOpen(operation);
    if (this.#link === undefined) await this.connect();
    const link = this.#link;
    if (link === undefined) throw new ConnectionError('the NATS connection was lost');
    return link;
  }

  /** The JetStream API of `link`. */
  #jetstream(link: NatsLink): NonNullable<NatsLink['jetstream']> {
    if (link.jetstream === undefined) {
      throw new ConnectionError('JetStream is not set up on this connection');
    }
    return link.jetstream;
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
    const link = this.#link;
    if (this.config.mode === 'core' && link !== undefined && options === undefined) {
      try {
        assertEventType(event.type);
        this.#life.assertOpen('publish');
        this.#assertConnected('publish');
        this.#publishCore(link.nc, event);
      } catch (error) {
        return Promise.reject(error);
      }
      return RESOLVED;
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
    checkPublishOptions(options);
    assertEventType(event.type);
    const signal = options?.signal;
    throwIfAborted(signal, 'the publish');
    const link = this.#link ?? (await this.#connection('publish'));
    this.#life.assertOpen('publish');
    this.#assertConnected('publish');
    if (this.config.mode === 'core') {
      this.#publishCore(link.nc, event);
      return;
    }
    const { js } = this.#jetstream(link);
    const subject = this.#subjects.get(event.type);
    const headers = toNatsHeaders(event.headers);
    const body = encodeEventBytes(event);
    const { clock, requestTimeoutMs } = this.config;
    let ridingOut: { deadline: Deadline; backoff: Backoff } | undefined;
    for (;;) {
      const ack = js.publish(subject, body, {
        msgID: event.id,
        timeout: requestTimeoutMs,
        ...(headers === undefined ? {} : { headers }),
      });
      try {
        await (signal === undefined ? ack : raceAbort(ack, signal, 'the publish'));
        return;
      } catch (error) {
        if (!isNoResponders(error)) {
          throw mapNatsError(error, `publish to ${subject}`, requestTimeoutMs);
        }
        // No stream answered: it was deleted, the broker lost its storage, or (on a cluster)
        // the stream is electing a new leader. Put it back if it is gone, and try again for up
        // to requestTimeoutMs (the same id, so the server stores it once), so that a failover
        // of a few seconds is ridden out instead of counted as a failed publish.
        void this.#restoreTopology('after a publish found none');
        ridingOut ??= {
          deadline: new DeadlineTimer(clock, requestTimeoutMs),
          backoff: new Backoff(NO_RESPONDERS_BACKOFF),
        };
        const left = ridingOut.deadline.remaining();
        if (left <= 0) throw mapNatsError(error, `publish to ${subject}`, requestTimeoutMs);
        await sleepOn(clock, Math.min(left, ridingOut.backoff.next()), signal);
        this.#life.assertOpen('publish');
        this.#assertConnected('publish');
      }
    }
  }

  /**
   * Subscribes to `{subjectPrefix}.{pattern}`. Resolves once the server has the subscription
   * (mode `core`) or the consumer exists (mode `jetstream`), so what is published after that
   * is delivered. `unsubscribe()` resolves within `requestTimeoutMs` whatever the server does.
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
   * than `'new'` in mode `core`), `CONNECTION`, `TIMEOUT`, `CLOSED`.
   */
  async subscribe(
    pattern: string,
    options?: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    const core = this.config.mode === 'core';
    const { group, maxInFlight, startFrom } = checkSubscribeOptions(options, {
      startFrom: core ? ['new'] : ['new', 'earliest', 'sequence', 'time'],
      startFromHint: "core NATS keeps no history: use mode 'jetstream' to replay",
      groupName: GROUP_NAME,
    });
    const filter = patternSubject(this.config.subjectPrefix, pattern);
    const link = await this.#connection('subscribe');
    if (core) {
      const source = this.#coreSource<Delivery>(link, filter, group, coreDelivery, maxInFlight);
      this.#sources.add(source);
      await this.#confirm(link, filter, () => this.#abandon(source));
      return this.#subscription(pattern, source);
    }

    const { consumer } = this.config;
    const maxAckPending = maxInFlight ?? consumer.maxAckPending;
    const config: ConsumerSpec = {
      durable_name: group === undefined ? `wt_${nuid.next()}` : groupConsumerName(group, filter),
      description: `watchtower ${group === undefined ? 'subscription' : `group ${group}`} on ${filter}`,
      ack_policy: AckPolicy.Explicit,
      replay_policy: ReplayPolicy.Instant,
      filter_subject: filter,
      ack_wait: nanos(consumer.ackWaitMs),
      max_deliver: consumer.maxDeliver,
      max_ack_pending: maxAckPending,
      ...deliverPolicy(startFrom ?? 'new'),
      ...(group === undefined ? { inactive_threshold: nanos(consumer.inactiveThresholdMs) } : {}),
    };
    const { nc } = link;
    const context: JetStreamDeliveryContext = {
      batcher: this.#batcher,
      closed: () => nc.isClosed(),
      // Every delivery of the context is one the source made.
      settled: (delivery) => source.settled(delivery as JsDelivery),
      maxDeliver: consumer.maxDeliver,
      subscription: group ?? pattern,
      clock: this.config.clock,
      deadLetter: (message, reason) => this.#deadLetterOfDelivery(message, reason),
    };
    const source: PullSource<JsDelivery> = this.#pullSource(link, {
      stream: this.config.stream.name,
      config,
      shared: group !== undefined,
      track: true,
      batch: Math.min(consumer.batchSize, maxAckPending),
      map: (msg) => jetStreamDelivery(msg, context),
      release: (delivery) =>
        this.#life.track(this.#handBack(delivery), `hand back ${delivery.origin}`),
    });
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
    this.#sources.add(source);
    try {
      await source.open();
    } catch (error) {
      stopWatching();
      await this.#abandon(source);
      throw mapNatsError(
        error,
        `create consumer ${config.durable_name} on ${filter}`,
        this.config.requestTimeoutMs,
      );
    }
    return this.#subscription(pattern, source, stopWatching);
  }

  #subscription(
    pattern: string,
    source: MessageSource<Delivery>,
    onStop?: () => void,
  ): TransportSubscription {
    return new SourceSubscription(pattern, source, {
      clock: this.config.clock,
      stopTimeoutMs: this.config.requestTimeoutMs,
      background: (stop, operation) => this.#life.track(stop, operation),
      onStop: () => {
        onStop?.();
        // Handed-out deliveries may still be settled; close() hands back those that are not.
        void source.whenIdle().then(() => this.#sources.delete(source));
      },
    });
  }

  /** A source that failed to start: stopped and forgotten. */
  async #abandon(source: MessageSource<Delivery>): Promise<void> {
    this.#sources.delete(source);
    await source.stop();
  }

  /**
   * Resolves once the server has a core subscription to `filter` (after a flush nothing
   * published later is missed). When the server does not confirm it within
   * `requestTimeoutMs`, `abandon` undoes it and this rejects.
   */
  async #confirm(link: NatsLink, filter: string, abandon: () => Promise<void>): Promise<void> {
    const { clock, requestTimeoutMs } = this.config;
    try {
      await withTimeout(clock, link.nc.flush(), requestTimeoutMs, `subscribe to ${filter}`);
    } catch (error) {
      await abandon();
      throw mapNatsError(error, `subscribe to ${filter}`, requestTimeoutMs);
    }
  }

  #coreSource<T>(
    link: NatsLink,
    subject: string,
    queue: string | undefined,
    map: CoreSourceOptions<T>['map'],
    maxInFlight: number | undefined,
  ): CoreSource<T> {
    const field = maxInFlight === undefined ? 'pendingLimit' : 'maxInFlight';
    return new CoreSource<T>(link.nc, {
      subject,
      queue,
      map,
      pending: maxInFlight ?? this.config.pendingLimit,
      onDropped: (dropped, limit) =>
        this.#life.report(
          new BackpressureError(
            ErrorCode.BACKPRESSURE_DROPPED,
            `subscription to ${subject}: ${dropped} event(s) dropped, the subscriber was ` +
              `${limit} events behind (${field}); core NATS delivers at most once`,
          ),
        ),
      clock: this.config.clock,
      stopTimeoutMs: this.config.requestTimeoutMs,
    });
  }

  #pullSource<T extends Pulled>(
    link: NatsLink,
    options: Pick<
      PullSourceOptions<T>,
      'stream' | 'config' | 'shared' | 'track' | 'batch' | 'map' | 'release'
    >,
  ): PullSource<T> {
    const { js, jsm } = this.#jetstream(link);
    const { nc } = link;
    return new PullSource<T>({
      ...options,
      jsm,
      js,
      deleteOnStop: !options.shared,
      clock: this.config.clock,
      ensureStream: () => this.#ensureTopology(jsm),
      alive: () => !this.#life.closed && !nc.isClosed(),
      reportError: (error, operation) =>
        this.#life.report(mapNatsError(error, operation, this.config.requestTimeoutMs)),
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
        this.#life.track(
          this.#givenUpRetry.execute(() => this.#deadLetterGivenUp(advisory, subscription), {
            signal: this.#life.signal,
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
    const link = this.#link;
    if (link === undefined) throw new ConnectionError('the NATS connection was lost');
    const stored = await this.#jetstream(link).jsm.streams.getMessage(stream, {
      seq: given.streamSeq,
    });
    if (stored === null) {
      throw new WatchtowerError(
        ErrorCode.TRANSPORT,
        `the server stopped delivering message ${given.streamSeq} of stream ${stream} after ` +
          `${given.deliveries} deliveries, and it is no longer in the stream: it cannot be dead-lettered`,
        { retryable: false },
      );
    }
    const message = storedContent(stored.data, stored.subject, stored.header);
    const { maxDeliver, ackWaitMs } = this.config.consumer;
    const failure = new WatchtowerError(
      ErrorCode.TIMEOUT,
      `delivery ${given.deliveries} was not settled within consumer.ackWaitMs (${ackWaitMs} ms) ` +
        `and consumer.maxDeliver (${maxDeliver}) allows no more: the consumer stopped or its ` +
        'handler ran too long, and the server would not deliver it again',
    );
    await this.#deadLetterOfDelivery(
      message,
      deadLetterReason({
        failure,
        attempts: given.deliveries,
        message,
        subscription,
        clock: this.config.clock,
      }),
    );
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
    const link = this.#link;
    if (link === undefined || link.nc.isClosed()) return this.publishToDlq(message, reason);
    return this.#writeDeadLetter(link, message, reason);
  }

  /**
   * Never rejects. Healthy when connected and a server round trip (and in mode `jetstream` a
   * stream info request) succeeds within `requestTimeoutMs`.
   */
  async healthCheck(): Promise<HealthStatus> {
    if (this.#life.closed) {
      return { healthy: false, state: 'closed', message: 'the NATS transport is closed' };
    }
    const link = this.#link;
    if (link === undefined || this.#state !== 'connected') {
      const status: HealthStatus = {
        healthy: false,
        state: link === undefined && this.#state !== 'connecting' ? 'disconnected' : this.#state,
      };
      status.message =
        this.#lastError === undefined ? 'not connected' : describeError(this.#lastError);
      return status;
    }
    const { nc, jetstream } = link;
    const { clock, requestTimeoutMs } = this.config;
    const details: Record<string, unknown> = {
      mode: this.config.mode,
      server: nc.getServer(),
      serverVersion: nc.info?.version,
      subscriptions: this.#sources.size,
    };
    const started = clock.now();
    try {
      await withTimeout(clock, nc.rtt(), requestTimeoutMs, 'round trip to the server');
      const latencyMs = clock.now() - started;
      if (this.config.mode === 'jetstream' && jetstream !== undefined) {
        const info = await withTimeout(
          clock,
          jetstream.jsm.streams.info(this.config.stream.name),
          requestTimeoutMs,
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
   * reason}`; for bytes that never decoded, `event` is their text (`raw_base64` when they are
   * not UTF-8) and the type comes from the subject they arrived on. With a durable DLQ it
   * resolves on the PubAck (stored); otherwise once the server has received it.
   */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    const link = await this.#connection('publish a dead letter');
    return this.#writeDeadLetter(link, message, reason);
  }

  async #writeDeadLetter(
    link: NatsLink,
    message: Event | MalformedMessage,
    reason: DeadLetterReason,
  ): Promise<void> {
    this.#assertConnected('publish a dead letter');
    const { subjectPrefix, dlqPrefix, requestTimeoutMs } = this.config;
    let originalSubject: string;
    let type: string;
    if (isMalformedMessage(message)) {
      originalSubject = message.origin;
      type = typeFromSubject(subjectPrefix, message.origin) ?? sanitizeSubject(message.origin);
    } else {
      originalSubject = eventSubject(subjectPrefix, message.type);
      type = message.type;
    }
    const subject = `${dlqPrefix}.${type}`;
    const body = encodeDeadLetter(message, reason, originalSubject);
    // A durable dead letter never falls back to a plain message: its write must be stored.
    const js = this.#durableDlq ? this.#jetstream(link).js : undefined;
    try {
      if (js !== undefined) {
        await js.publish(subject, body, { timeout: requestTimeoutMs });
      } else {
        link.nc.publish(subject, body);
        await withTimeout(
          this.config.clock,
          link.nc.flush(),
          requestTimeoutMs,
          `flush of ${subject}`,
        );
      }
    } catch (error) {
      if (isNoResponders(error)) void this.#restoreTopology('after a dead letter found none');
      throw mapNatsError(error, `publish dead letter to ${subject}`, requestTimeoutMs);
    }
  }

  /**
   * Calls `handler` for every dead letter on `{dlqPrefix}.>`, one at a time. With a durable
   * DLQ, letters written before the call come first (unless `fromStart` is false), a handler
   * that throws gets the letter again after a second, then after a doubling delay of at most a
   * minute (so a letter it can never take does not spin), and `group` members share one durable
   * consumer. Without one, only letters published while this runs arrive. `unsubscribe()`
   * waits at most `requestTimeoutMs` for the server, then for the handler running now.
   */
  async consumeDlq(
    handler: DeadLetterHandler,
    options?: ConsumeDlqOptions,
  ): Promise<SubscriptionHandle> {
    const { group, fromStart } = checkConsumeDlqOptions(handler, options, {
      groupName: GROUP_NAME,
    });
    const link = await this.#connection('consume dead letters');
    const filter = `${this.config.dlqPrefix}.>`;
    const source = this.#durableDlq
      ? await this.#durableDlqSource(link, filter, group, fromStart)
      : await this.#coreDlqSource(link, filter, group);
    const { clock, requestTimeoutMs } = this.config;
    const consumer: DeadLetterConsumer = new DeadLetterConsumer({
      id: `nats-dlq-${nuid.next()}`,
      source,
      handler,
      afterFailure: this.#durableDlq
        ? 'the letter comes back later'
        : 'core NATS cannot deliver the letter again',
      report: (error) => this.#life.report(error),
      mapError: (error, operation) => mapNatsError(error, operation, requestTimeoutMs),
      clock,
      stopTimeoutMs: requestTimeoutMs,
      background: (stop, operation) => this.#life.track(stop, operation),
      onStop: () => this.#dlqConsumers.delete(consumer),
    });
    this.#dlqConsumers.add(consumer);
    return consumer.start();
  }

  async #durableDlqSource(
    link: NatsLink,
    filter: string,
    group: string | undefined,
    fromStart: boolean,
  ): Promise<DeadLetterSource> {
    const { consumer, dlqPrefix } = this.config;
    const config: ConsumerSpec = {
      durable_name:
        group === undefined ? `wt_dlq_${nuid.next()}` : groupConsumerName(group, filter),
      description: `watchtower dead-letter consumer${group === undefined ? '' : ` (group ${group})`}`,
      ack_policy: AckPolicy.Explicit,
      replay_policy: ReplayPolicy.Instant,
      filter_subject: filter,
      ack_wait: nanos(consumer.ackWaitMs),
      max_ack_pending: consumer.maxAckPending,
      deliver_policy: fromStart ? DeliverPolicy.All : DeliverPolicy.New,
      ...(group === undefined ? { inactive_threshold: nanos(consumer.inactiveThresholdMs) } : {}),
    };
    const pull = this.#pullSource(link, {
      stream: this.config.dlq.streamName,
      config,
      shared: group !== undefined,
      // The consumer settles each letter before it takes the next.
      track: false,
      batch: 64,
      map: (msg) => jsDeadLetterEntry(msg, dlqPrefix),
      release: (entry) => entry.msg.nak(),
    });
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
    return pull;
  }

  async #coreDlqSource(
    link: NatsLink,
    filter: string,
    group: string | undefined,
  ): Promise<DeadLetterSource> {
    const { dlqPrefix, clock } = this.config;
    const source = this.#coreSource(
      link,
      filter,
      group,
      (msg) => coreDeadLetterEntry(msg, dlqPrefix, clock),
      undefined,
    );
    await this.#confirm(link, filter, () => source.stop());
    return source;
  }

  /**
   * Stops every subscription and dead-letter consumer, hands back what handlers hold
   * unsettled, drains the connection (pending publishes and acks are flushed) and closes it,
   * all within `timeoutMs` (default 10 s); when the server does not answer by then, the
   * connection is closed without it, and close resolves at most `CLOSE_MARGIN_MS` later. What
   * was not acked is delivered again by the server. Idempotent; every step runs even if an
   * earlier one fails.
   *
   * @throws `CONFIG` for unknown options or a bad `timeoutMs`.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      (deadline) => this.#close(deadline),
      () => this.#disconnect(),
    );
  }

  async #close(deadline: Deadline): Promise<void> {
    // A connect under way lets go of what it opened itself once it sees the transport closed.
    const connecting = this.#life.connecting;
    if (connecting !== undefined) await deadline.within(connecting.catch(() => undefined));
    const link = this.#link;
    const sources = [...this.#sources];
    this.#sources.clear();
    const dlqConsumers = [...this.#dlqConsumers];
    this.#dlqConsumers.clear();
    await deadline.within(
      Promise.allSettled([
        ...dlqConsumers.map((consumer) => consumer.unsubscribe()),
        ...sources.map((source) => source.stop()),
      ]),
    );
    // Handed out and never settled (a handler past the deadline, a caller that stopped
    // iterating): hand them back so another consumer gets them without waiting for the ack wait.
    const handedBack: Promise<void>[] = [];
    for (const source of sources) {
      for (const delivery of source.takeUnsettled()) {
        handedBack.push(
          this.#handBack(delivery).catch((error: unknown) => {
            this.#life.report(mapNatsError(error, `hand back ${delivery.origin}`));
          }),
        );
      }
    }
    // Settles of this turn go out now, before the connection drains.
    this.#batcher.flush();
    await deadline.within(Promise.all(handedBack));
    this.#batcher.flush();
    // From here on, what fails (an ack of a handler past the deadline, a drain cut short)
    // fails because of close(): the server delivers those messages again.
    this.#life.silence();
    if (link !== undefined && !link.nc.isClosed()) {
      // A drain that cannot finish (a server away or not answering) gives way to the close.
      await deadline.within(link.nc.drain().catch(() => undefined));
    }
    this.#disconnect();
    await this.#life.settleBackground(deadline);
  }

  /**
   * Ends the connection without asking the server: `close()` of the v3 client writes nothing
   * more, destroys the socket and rejects pending requests, whatever the server does; a
   * pending flush is left unanswered (every wait for one here has a time limit).
   */
  #disconnect(): void {
    const link = this.#link;
    this.#link = undefined;
    this.#state = 'closed';
    if (link !== undefined) void link.nc.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function deliverPolicy(start: StartPosition): Partial<ConsumerConfig> {
  if (start === 'new') return { deliver_policy: DeliverPolicy.New };
  if (start === 'earliest') return { deliver_policy: DeliverPolicy.All };
  if ('sequence' in start)
    return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.sequence };
  return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.time.toISOString() };
}

function ignore(): void {
  // Settled either way: only the end matters here.
}
