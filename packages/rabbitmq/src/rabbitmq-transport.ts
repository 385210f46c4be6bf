/**
 * {@link RabbitMQTransport}: RabbitMQ (AMQP 0-9-1, amqplib) behind the Watchtower `Transport`
 * contract. What is here is what RabbitMQ asks for: the connection and its reconnects (with
 * the topology declared again and every consumer restored), the confirm channel publishes go
 * through ({@link Publisher}), the queues subscriptions read ({@link QueueConsumer}), the
 * dead-letter exchange and queue, and the order of the close steps. The life of the transport,
 * subscriptions, the dead-letter loop and option checks are the transport kit's. Nothing here
 * waits on the broker without a deadline or a way to be cut short by `close()`.
 */
import { randomBytes } from 'node:crypto';
import {
  ConnectionError,
  ErrorCode,
  SerializationError,
  ValidationError,
  assertEventType,
  configError,
  encodeEvent,
  sleep,
  type CloseOptions,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type DeadLetterReason,
  type Event,
  type HealthStatus,
  type MalformedMessage,
  type PublishOptions,
  type PublishReceipt,
  type SubscriptionHandle,
  type Transport,
  type TransportInfo,
  type TransportSubscribeOptions,
  type TransportSubscription,
  type WatchtowerError,
} from '@watchtower/core';
import {
  Backoff,
  DeadLetterConsumer,
  SourceSubscription,
  TransportLifecycle,
  checkConsumeDlqOptions,
  checkPublishOptions,
  checkSubscribeOptions,
  rejection,
  throwIfAborted,
  withTimeout,
  type Deadline,
  type TransportErrorEvents,
} from '@watchtower/core/transport-kit';
import amqp, { type ChannelModel, type ConfirmChannel, type Options } from 'amqplib';
import {
  prefetchFor,
  resolveRabbitMQConfig,
  type RabbitMQConfig,
  type RabbitMQExchangeType,
  type ResolvedRabbitMQConfig,
} from './config.js';
import {
  AmqpDeadLetterEntry,
  AmqpEventDelivery,
  AmqpMalformedDelivery,
  deadLetterMessage,
  decodeReceived,
  hasKeys,
  readDeadLetter,
  type AmqpDelivery,
} from './deliveries.js';
import { amqpReplyCode, mapAmqpError } from './map-error.js';
import { NACK_RIDE_OUT_MS, Publisher, type Outgoing } from './publisher.js';
import { corkOf } from './write-cork.js';
import {
  QueueConsumer,
  type ManagedConsumer,
  type QueueConsumerHost,
  type Received,
} from './queue-consumer.js';
import {
  TYPE_HEADER,
  bindingFor,
  dlqName,
  dlqQueueOptions,
  dlqRoutingKey,
  dlxName,
  groupQueueName,
  ownQueueName,
  subscriptionQueueOptions,
} from './topology.js';

/** `url` with the heartbeat asked for, unless the URL names its own. */
function withHeartbeat(url: string, heartbeatSeconds: number): string {
  const parsed = new URL(url);
  if (!parsed.searchParams.has('heartbeat')) {
    parsed.searchParams.set('heartbeat', String(heartbeatSeconds));
  }
  return parsed.toString();
}

/** The capabilities of the transport on an exchange of `type`. */
function infoFor(type: RabbitMQExchangeType): TransportInfo {
  return Object.freeze({
    name: 'rabbitmq',
    capabilities: Object.freeze({
      persistence: true,
      // A queue holds what was published after it was bound, nothing before.
      replay: false,
      consumerGroups: true,
      ordering: true,
      redelivery: true,
      // Delay queues: the broker times the retry, and it survives a consumer crash.
      delayedRetry: true,
      // The attempt travels in the message (and a quorum queue's x-delivery-count).
      brokerAttemptCount: true,
      nativeDlq: true,
      wildcards: type !== 'direct',
      headers: true,
      reconnect: true,
    }),
  });
}

/** Where the connection is. */
export type RabbitMQConnectionState =
  'idle' | 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed';

/** A change of the connection, for `on('connection')`. */
export type ConnectionChange =
  { readonly state: 'lost'; readonly error?: WatchtowerError } | { readonly state: 'restored' };

/**
 * Listener map of {@link RabbitMQTransport.on}: `error` for background work that failed (a
 * lost connection, an ack, a reconnect attempt, a dead-letter handler), `connection` when the
 * connection is lost and when it is back after a reconnect. Nothing is reported after
 * `close()`.
 */
export type RabbitMQTransportEvents = TransportErrorEvents;

const SUBSCRIBE_RULES = {
  startFrom: ['new'],
  startFromHint: 'a RabbitMQ queue holds only what was published after it was bound',
  groupName: {
    // No `:`: it separates the group from the pattern in the queue's name.
    pattern: /^[A-Za-z0-9_.-]{1,100}$/,
    hint: 'at most 100 letters, digits and -_.',
  },
} as const;

const DLQ_RULES = {
  groupUnsupported:
    'is not supported: the dead-letter queue is one queue that every dead-letter consumer competes for',
} as const;

/**
 * RabbitMQ behind the Watchtower `Transport` contract.
 *
 * - Publish: persistent messages on a confirm channel to `exchange` (topic by default), routing
 *   key the event type, `message_id` the event id, content type JSON, event headers as AMQP
 *   headers; resolves on the broker's ack, rejects on a nack or (with `mandatory`) a return.
 * - Subscribe: a `group` reads a durable queue shared by its members (competing consumers);
 *   without one, an exclusive queue of its own. Prefetch is `maxInFlight`, else the config's
 *   `prefetch`, else the subscription's `concurrency`; acks are manual.
 * - Retry: `nack()` sends a copy with the next attempt in `x-watchtower-attempt` through a delay
 *   queue back to the same queue, then acks: never an immediate requeue loop.
 * - Dead letters: `{exchange}.dlx`, routing key `dlq.{type}`, headers `x-error` and
 *   `x-original-routing-key` (as Rust Watchtower writes them), into the durable `{exchange}.dlq`.
 * - Reconnect: with backoff and full jitter; the topology is declared again, consumers restored
 *   with their prefetch, and publishes that waited (or were unconfirmed) are sent.
 */
export class RabbitMQTransport implements Transport {
  readonly info: TransportInfo;
  /** The validated configuration, defaults filled in. */
  readonly config: ResolvedRabbitMQConfig;
  readonly #life: TransportLifecycle;
  readonly #publisher: Publisher;
  readonly #consumers = new Set<ManagedConsumer>();
  readonly #dlqConsumers = new Set<DeadLetterConsumer>();
  readonly #host: QueueConsumerHost;
  #model: ChannelModel | undefined;
  #state: RabbitMQConnectionState = 'idle';
  #blocked: string | undefined;
  #lastError: WatchtowerError | undefined;
  #reconnecting: Promise<void> | undefined;
  #replacingChannel: Promise<void> | undefined;
  /** The URL of `config.urls` the next connect tries first: the node last reached. */
  #urlIndex = 0;
  #queueSeq = 0;
  /** Names this transport's own queues apart from those of others with its connection name. */
  readonly #instance = randomBytes(3).toString('hex');
  #dlqSeq = 0;

  /** @throws a `CONFIG` error naming the first bad option. */
  constructor(config: RabbitMQConfig = {}) {
    this.config = resolveRabbitMQConfig(config);
    this.info = infoFor(this.config.exchangeType);
    this.#life = new TransportLifecycle({
      name: 'the RabbitMQ transport',
      clock: this.config.clock,
      closeTimeoutMs: this.config.closeTimeoutMs,
      mapError: (error, operation) => mapAmqpError(error, operation, this.#life.closed),
    });
    this.#publisher = new Publisher({
      window: this.config.publishWindow,
      clock: this.config.clock,
      replaceChannel: () => this.#replacePublishChannel(),
      // A full queue that rejects publishes nacks them on purpose: those reject at once.
      nackRideOutMs: this.config.overflow === 'drop-head' ? NACK_RIDE_OUT_MS : 0,
    });
    this.#host = {
      publisher: this.#publisher,
      exchange: this.config.exchange,
      report: (error) => this.#life.report(error),
      channelLost: (consumer) => this.#restoreConsumer(consumer),
    };
  }

  /** Where the connection is now. */
  get connectionState(): RabbitMQConnectionState {
    return this.#state;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof RabbitMQTransportEvents>(
    name: K,
    listener: (...args: RabbitMQTransportEvents[K]) => void,
  ): () => void {
    return this.#life.on(name, listener);
  }

  /**
   * Connects and declares the exchanges and the dead-letter queue; idempotent. Rejects with a
   * `CONNECTION` error when the broker cannot be reached (call again to retry), `TRANSPORT`
   * when it refuses the topology (an exchange declared before with another type), `CLOSED`
   * after `close()`.
   */
  connect(): Promise<void> {
    return this.#life.connect(async () => {
      this.#state = 'connecting';
      try {
        await this.#establish();
      } catch (error) {
        if (!this.#life.closed) this.#state = 'idle';
        throw this.#connectError(error, `connect to ${this.#target()}`);
      }
    });
  }

  #target(): string {
    // The URLs without their passwords.
    return this.config.urls
      .map((url) => url.replace(/(\/\/[^:/@]*):[^@/]*@/, '$1:***@'))
      .join(', ');
  }

  #mapError(error: unknown, context: string): WatchtowerError {
    return mapAmqpError(error, context, this.#life.closed);
  }

  /**
   * A failed or lost connection: what the broker refused or closed with a reply code keeps its
   * mapping (a topology declared before with other arguments); anything else (a socket that
   * closed, a handshake cut short) is `CONNECTION`.
   */
  #connectError(error: unknown, context: string): WatchtowerError {
    const mapped = this.#mapError(error, context);
    if (mapped.code !== ErrorCode.TRANSPORT || amqpReplyCode(error) !== undefined) return mapped;
    return new ConnectionError(mapped.message, { cause: error });
  }

  /**
   * Establishes the connection on the first of the URLs that takes it, starting with
   * `#urlIndex`; rejects with the last failure when none does.
   */
  async #establish(): Promise<void> {
    const { urls } = this.config;
    let failure: unknown;
    for (let i = 0; i < urls.length; i++) {
      const index = (this.#urlIndex + i) % urls.length;
      try {
        await this.#establishOn(urls[index] as string);
        this.#urlIndex = index;
        return;
      } catch (error) {
        if (this.#life.closed) throw error;
        failure = error;
      }
    }
    throw failure;
  }

  /** Opens a connection to `url`, the publish channel and the topology; restores the consumers. */
  async #establishOn(url: string): Promise<void> {
    const { clock, connectTimeoutMs } = this.config;
    const opening = amqp.connect(withHeartbeat(url, this.config.heartbeatSeconds), {
      ...this.config.socketOptions,
      clientProperties: {
        ...(this.config.socketOptions.clientProperties ?? {}),
        connection_name: this.config.connectionName,
      },
    });
    let model: ChannelModel;
    try {
      model = await withTimeout(clock, opening, connectTimeoutMs, 'the AMQP handshake');
    } catch (error) {
      // A handshake that ends after the limit still opens a connection: close it then.
      opening
        .then(
          (late) => late.close(),
          () => undefined,
        )
        .catch(() => undefined);
      throw error;
    }
    model.on('error', (error: unknown) => {
      this.#lastError = this.#mapError(error, 'the AMQP connection');
    });
    model.on('blocked', (reason: string) => {
      this.#blocked = reason;
    });
    model.on('unblocked', () => {
      this.#blocked = undefined;
    });
    model.on('close', (error?: unknown) => this.#onConnectionClose(model, error));
    this.#model = model;
    try {
      if (this.#life.closed) throw this.#life.closedError('connect');
      const channel = await model.createConfirmChannel();
      await this.#declareTopology(channel);
      this.#watchPublishChannel(model, channel);
      for (const consumer of this.#consumers) {
        if (!consumer.stopping) await consumer.openOn(model);
      }
      if (this.#life.closed) throw this.#life.closedError('connect');
      this.#publisher.attach(channel, corkOf(model));
      this.#state = 'connected';
    } catch (error) {
      this.#model = undefined;
      for (const consumer of this.#consumers) consumer.detach();
      model.close().catch(() => undefined);
      throw error;
    }
  }

  async #declareTopology(channel: ConfirmChannel): Promise<void> {
    const { exchange, exchangeType, durable } = this.config;
    const dlx = dlxName(exchange);
    const dlq = dlqName(exchange);
    await channel.assertExchange(exchange, exchangeType, { durable });
    await channel.assertExchange(dlx, 'topic', { durable: true });
    await channel.assertQueue(dlq, dlqQueueOptions(this.config));
    // `dlq.#` is the binding Rust Watchtower makes; `#` also takes what the broker
    // dead-letters itself (TTL, overflow, delivery limit), which keeps its original key.
    await channel.bindQueue(dlq, dlx, 'dlq.#');
    await channel.bindQueue(dlq, dlx, '#');
  }

  #onConnectionClose(model: ChannelModel, error: unknown): void {
    if (this.#model !== model) return;
    this.#model = undefined;
    const wasUp = this.#state === 'connected';
    this.#publisher.detach();
    for (const consumer of this.#consumers) consumer.detach();
    // Lost while it was being opened: the connect (or the reconnect loop) that opens it fails
    // and decides what comes next.
    if (this.#life.closed || !wasUp) return;
    const lost = this.#connectError(
      error ?? new Error('the connection closed'),
      'the AMQP connection was lost',
    );
    this.#lastError = lost;
    // The node may be gone: the reconnect tries the next one first.
    this.#urlIndex = (this.#urlIndex + 1) % this.config.urls.length;
    this.#state = 'reconnecting';
    this.#life.report(lost);
    this.#life.connectionLost(lost);
    this.#reconnect();
  }

  #watchPublishChannel(model: ChannelModel, channel: ConfirmChannel): void {
    channel.on('error', () => {
      // The close that follows is what matters.
    });
    channel.on('close', () => this.#onPublishChannelClose(model, channel));
  }

  /**
   * The publish channel closed while the connection stayed: start the connection over. A
   * channel the publisher replaced is closed by it, and that is no loss.
   */
  #onPublishChannelClose(model: ChannelModel, channel: ConfirmChannel): void {
    if (this.#model !== model || this.#life.closed || this.#publisher.replaced(channel)) return;
    model.close().catch(() => undefined);
    // close emits 'close' on the model, which reconnects; a model that is gone already did.
  }

  /**
   * The publish channel keeps nacking (see {@link Publisher}): a fresh confirm channel on the
   * same connection takes the publishes over. When none can be opened the old one stays; a
   * connection lost meanwhile is the reconnect's to handle.
   */
  #replacePublishChannel(): void {
    const model = this.#model;
    if (model === undefined || this.#replacingChannel !== undefined || this.#life.closed) return;
    const work = (async () => {
      let channel: ConfirmChannel;
      try {
        channel = await model.createConfirmChannel();
      } catch (error) {
        if (this.#model === model) throw error;
        return;
      }
      if (this.#model !== model || this.#life.closed) {
        await channel.close().catch(() => undefined);
        return;
      }
      this.#watchPublishChannel(model, channel);
      this.#publisher.attach(channel, corkOf(model));
    })().finally(() => {
      this.#replacingChannel = undefined;
    });
    this.#replacingChannel = work;
    this.#life.track(work, 'open a new publish channel');
  }

  #reconnect(): void {
    if (this.#reconnecting !== undefined) return;
    this.#reconnecting = this.#reconnectLoop().finally(() => {
      this.#reconnecting = undefined;
    });
    this.#life.track(this.#reconnecting, 'reconnect to RabbitMQ');
  }

  async #reconnectLoop(): Promise<void> {
    const { clock, reconnectBaseMs, reconnectMaxMs, reconnectAttempts } = this.config;
    const backoff = new Backoff({ baseMs: reconnectBaseMs, maxMs: reconnectMaxMs });
    while (!this.#life.closed) {
      if (backoff.failures >= reconnectAttempts) {
        this.#giveUp();
        return;
      }
      try {
        await sleep(clock, backoff.next(), this.#life.signal);
      } catch {
        return;
      }
      try {
        await this.#establish();
      } catch (error) {
        if (this.#life.closed) return;
        const failed = this.#connectError(error, `reconnect to ${this.#target()}`);
        this.#lastError = failed;
        if (!failed.retryable && failed.code !== ErrorCode.CONNECTION) this.#life.report(failed);
        continue;
      }
      this.#life.connectionRestored();
      return;
    }
  }

  #giveUp(): void {
    this.#state = 'failed';
    const error = new ConnectionError(
      `gave up reconnecting to ${this.#target()} after ${this.config.reconnectAttempts} attempts`,
      { cause: this.#lastError },
    );
    this.#publisher.failAll(error);
    // Their subscriptions end with the error; a later connect starts without them.
    for (const consumer of this.#consumers) consumer.fail(error);
    this.#consumers.clear();
    this.#life.report(error);
    this.#life.lost();
  }

  /** A consumer's channel closed with the connection up: open it again, with backoff. */
  #restoreConsumer(consumer: ManagedConsumer): void {
    const work = (async () => {
      const backoff = new Backoff({
        baseMs: this.config.reconnectBaseMs,
        maxMs: this.config.reconnectMaxMs,
      });
      while (!this.#life.closed && !consumer.stopping && !consumer.open) {
        // Waits first: a channel closed with its connection hears of it before the
        // connection's own close, and then the reconnect restores every consumer.
        try {
          await sleep(this.config.clock, backoff.next(), this.#life.signal);
        } catch {
          return;
        }
        const model = this.#model;
        if (model === undefined || consumer.open) return;
        try {
          await consumer.openOn(model);
          return;
        } catch (error) {
          if (this.#model === model) {
            this.#life.report(this.#mapError(error, `consume from ${consumer.queue}`));
          }
        }
      }
    })();
    this.#life.track(work, `consume from ${consumer.queue}`);
  }

  // -----------------------------------------------------------------------------------------------
  // Publish

  /**
   * Publishes `event` persistent to the exchange with its type as routing key; resolves when
   * the broker has confirmed it. Connects first when needed. While the connection is being
   * restored it waits (in order, with the publishes sent and not confirmed when it was lost)
   * until it is back, its `signal` aborts, the transport closes (`CLOSED`) or gives the
   * connection up (`CONNECTION`).
   *
   * @throws `VALIDATION` for an invalid event type, `SERIALIZATION` when the event cannot be
   * written as JSON, `CONFIG` for bad options, `ABORTED` when `signal` aborts, `TRANSPORT` on a
   * nack (retryable) or an unroutable message with `mandatory` (not retryable).
   */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    let message: Outgoing;
    try {
      this.#life.assertOpen('publish');
      if (options !== undefined) {
        checkPublishOptions(options);
        throwIfAborted(options.signal, 'the publish');
      }
      message = this.#outgoing(event, options?.signal);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#life.phase !== 'open') return this.connect().then(() => this.#send(message));
    return this.#send(message);
  }

  /**
   * {@link publish} (without options) that tells `receipt` the outcome instead of returning a
   * promise: the bus's way, which saves it a promise and a reaction per publish.
   */
  publishTo(event: Event, receipt: PublishReceipt): void {
    let message: Outgoing;
    try {
      this.#life.assertOpen('publish');
      message = this.#outgoing(event, undefined);
    } catch (error) {
      receipt.failed(error);
      return;
    }
    if (this.#life.phase === 'open') {
      this.#publisher.send(message, receipt);
      return;
    }
    this.connect().then(
      () => this.#publisher.send(message, receipt),
      (error: unknown) => receipt.failed(error),
    );
  }

  /** The message `event` is published as; throws what `publish` rejects with before sending. */
  #outgoing(event: Event, signal: AbortSignal | undefined): Outgoing {
    assertEventType(event.type);
    // Event types are ASCII, so characters are bytes.
    if (event.type.length > 255) {
      throw new ValidationError(
        `event type ${JSON.stringify(event.type)} is longer than an AMQP routing key (255 bytes)`,
        [{ message: 'longer than 255 bytes', path: ['type'] }],
      );
    }
    const content = Buffer.from(encodeEvent(event), 'utf8');
    const { messageTtlMs, mandatory, exchange, exchangeType } = this.config;
    const publishOptions: Options.Publish = {
      persistent: true,
      mandatory,
      messageId: event.id,
      contentType: 'application/json',
    };
    // The event's own headers; the type too where a headers exchange routes on it. None at all
    // for an event without headers: amqplib makes the headers object the prototype of its own
    // (`Object.create`), which costs V8 a new prototype per message.
    if (exchangeType === 'headers') {
      publishOptions.headers = { ...event.headers, [TYPE_HEADER]: event.type };
    } else if (hasKeys(event.headers)) {
      publishOptions.headers = event.headers;
    }
    if (messageTtlMs !== null) publishOptions.expiration = String(messageTtlMs);
    return { exchange, routingKey: event.type, content, options: publishOptions, signal };
  }

  /**
   * Hands `message` to the publisher. What is outstanding when `close()` ends is rejected
   * there with `CLOSED` (`failAll`), so no error needs mapping here.
   */
  #send(message: Outgoing): Promise<void> {
    return this.#publisher.publish(message);
  }

  // -----------------------------------------------------------------------------------------------
  // Subscribe

  /**
   * Subscribes to an event type or a pattern. Resolves once the queue is declared, bound and
   * consumed: events published after that are delivered. `group` reads the group's durable
   * queue (one per group and pattern; competing consumers); without it the subscription gets
   * an exclusive queue of its own, deleted on unsubscribe. The channel's prefetch is
   * `maxInFlight`, else the config's `prefetch`, else `concurrency` (what the bus passes), else
   * 64.
   *
   * @throws `VALIDATION` for an invalid pattern, `CONFIG` for bad options (`startFrom` other
   * than `'new'`; a wildcard on a direct exchange), `CONNECTION`, `TRANSPORT` when the broker
   * refuses the queue, `CLOSED`.
   */
  async subscribe(
    pattern: string,
    options?: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    const checked = checkSubscribeOptions(options, SUBSCRIBE_RULES);
    const { group } = checked;
    this.#life.assertOpen('subscribe');
    const binding = bindingFor(pattern, this.config.exchangeType);
    await this.connect();
    const { exchange, durable } = this.config;
    const own = group === undefined;
    const queue = own
      ? ownQueueName(exchange, this.config.connectionName, this.#instance, ++this.#queueSeq)
      : groupQueueName(exchange, group, pattern);
    const consumer: QueueConsumer<AmqpDelivery> = new QueueConsumer<AmqpDelivery>(this.#host, {
      queue,
      queueOptions: subscriptionQueueOptions(this.config, own),
      bindings: [binding],
      prefetch: prefetchFor(this.config, checked),
      durableDelays: !own && durable,
      deleteOnStop: own,
      toItem: (received) => {
        const decoded = decodeReceived(received);
        if (decoded instanceof SerializationError) {
          return new AmqpMalformedDelivery(consumer, received, decoded);
        }
        if (binding.filter && !binding.pattern.matches(decoded.type)) return undefined;
        return new AmqpEventDelivery(consumer, received, decoded);
      },
      onReturn: () => this.#life.track(subscription.unsubscribe(), `unsubscribe from ${pattern}`),
    });
    await this.#startConsumer(consumer, `subscribe to ${pattern}`);
    const subscription = new SourceSubscription(
      pattern,
      {
        [Symbol.asyncIterator]: () => consumer.buffer,
        tryNext: () => consumer.buffer.tryNext(),
        receive: (receiver) => consumer.buffer.receive(receiver),
        stop: () => this.#stopConsumer(consumer),
      },
      {
        clock: this.config.clock,
        stopTimeoutMs: this.config.unsubscribeTimeoutMs,
        background: (stop, operation) => this.#life.track(stop, operation),
      },
    );
    return subscription;
  }

  async #startConsumer(consumer: ManagedConsumer, what: string): Promise<void> {
    const model = this.#model;
    this.#consumers.add(consumer);
    // While reconnecting, the reconnect opens it with the others.
    if (model === undefined) return;
    try {
      await consumer.openOn(model);
    } catch (error) {
      this.#consumers.delete(consumer);
      throw this.#life.closed ? this.#life.closedError(what) : this.#mapError(error, what);
    }
  }

  async #stopConsumer(consumer: ManagedConsumer): Promise<void> {
    try {
      await consumer.stop();
    } finally {
      this.#consumers.delete(consumer);
    }
  }

  // -----------------------------------------------------------------------------------------------
  // Dead letters

  /**
   * Writes a dead letter to `{exchange}.dlx` with routing key `dlq.{type}` and the headers
   * `x-error`, `x-original-routing-key` and `x-watchtower-reason`; resolves when the broker has
   * confirmed it (it is then in the durable `{exchange}.dlq`). Rejects with `CLOSED` after
   * close, `CONNECTION` when the connection was given up (retryable), `NON_RETRYABLE` for a
   * record larger than the broker takes.
   */
  publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    const refused = rejection(() => this.#life.assertOpen('write a dead letter'));
    if (refused !== undefined) return refused;
    let record: ReturnType<typeof deadLetterMessage>;
    try {
      record = deadLetterMessage(message, reason);
    } catch (error) {
      return Promise.reject(error);
    }
    const send = (): Promise<void> =>
      this.#send({
        exchange: dlxName(this.config.exchange),
        routingKey: dlqRoutingKey(reason.originalType).slice(0, 255),
        content: record.content,
        options: record.options,
        what: `dead-letter ${reason.originalType}`,
      });
    if (this.#life.phase !== 'open') return this.connect().then(send);
    return send();
  }

  /**
   * Reads `{exchange}.dlq`: every dead letter, dotted types included, and those the broker
   * dead-lettered itself. A letter whose handler returned is acked; one whose handler threw
   * comes again after a growing delay (through a delay queue). `group` is refused (the DLQ is
   * one queue that all dead-letter consumers compete for), and so is `fromStart: false`.
   */
  async consumeDlq(
    handler: DeadLetterHandler,
    options?: ConsumeDlqOptions,
  ): Promise<SubscriptionHandle> {
    const { fromStart } = checkConsumeDlqOptions(handler, options, DLQ_RULES);
    if (!fromStart) {
      throw configError(
        'fromStart',
        'false is not supported: the dead-letter queue hands out every letter it holds',
      );
    }
    this.#life.assertOpen('consume the DLQ');
    await this.connect();
    const queue = dlqName(this.config.exchange);
    const consumer: QueueConsumer<AmqpDeadLetterEntry> = new QueueConsumer<AmqpDeadLetterEntry>(
      this.#host,
      {
        queue,
        queueOptions: dlqQueueOptions(this.config),
        bindings: [],
        prefetch: 1,
        durableDelays: true,
        deleteOnStop: false,
        toItem: (received: Received) =>
          new AmqpDeadLetterEntry(
            consumer,
            received,
            readDeadLetter(received, new Date(this.config.clock.now())),
          ),
      },
    );
    await this.#startConsumer(consumer, 'consume the DLQ');
    const dlq: DeadLetterConsumer = new DeadLetterConsumer({
      id: `dlq-${++this.#dlqSeq}`,
      source: {
        [Symbol.asyncIterator]: () => consumer.buffer,
        stop: () => this.#stopConsumer(consumer),
      },
      handler,
      afterFailure: 'it comes back after a delay',
      report: (error) => this.#life.report(error),
      mapError: (error, operation) => this.#mapError(error, operation),
      onStop: () => this.#dlqConsumers.delete(dlq),
      clock: this.config.clock,
      stopTimeoutMs: this.config.unsubscribeTimeoutMs,
      background: (stop, operation) => this.#life.track(stop, operation),
    });
    this.#dlqConsumers.add(dlq);
    return dlq.start();
  }

  // -----------------------------------------------------------------------------------------------
  // Health and close

  /** Never rejects: `healthy` while connected, not blocked, and the exchange answers. */
  async healthCheck(): Promise<HealthStatus> {
    if (this.#life.closed) {
      return { healthy: false, state: 'closed', message: 'the RabbitMQ transport is closed' };
    }
    const details: Record<string, unknown> = {
      exchange: this.config.exchange,
      subscriptions: this.#consumers.size,
      outstandingPublishes: this.#publisher.outstanding,
      publishChannelsReplaced: this.#publisher.replacements,
    };
    const model = this.#model;
    if (model === undefined || this.#state !== 'connected') {
      return {
        healthy: false,
        state: this.#state,
        message: this.#lastError?.message ?? 'not connected',
        details,
      };
    }
    details.server = model.connection.serverProperties.version;
    if (this.#blocked !== undefined) {
      return {
        healthy: false,
        state: 'blocked',
        message: `the broker blocked publishing: ${this.#blocked}`,
        details,
      };
    }
    const { clock, healthCheckTimeoutMs, exchange } = this.config;
    const started = clock.now();
    const probe = (async () => {
      const channel = await model.createChannel();
      channel.on('error', () => undefined);
      try {
        await channel.checkExchange(exchange);
      } finally {
        await channel.close().catch(() => undefined);
      }
    })();
    try {
      await withTimeout(clock, probe, healthCheckTimeoutMs, 'the health probe');
      return { healthy: true, state: 'connected', latencyMs: clock.now() - started, details };
    } catch (error) {
      probe.catch(() => undefined);
      return {
        healthy: false,
        state: 'connected',
        message: error instanceof Error ? error.message : String(error),
        details,
      };
    }
  }

  /**
   * Graceful and idempotent, within `timeoutMs` (default `closeTimeoutMs`) whatever the broker
   * does: stops the dead-letter consumers and subscriptions (cancel, hand back what no handler
   * took), waits for handed-out deliveries to be settled and for outstanding confirms, then
   * closes the channels and the connection. Past the deadline the socket is destroyed: what
   * was not acked is delivered again by the broker, and publishes not confirmed reject with
   * `CLOSED`.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      (deadline) => this.#closeSteps(deadline),
      () => this.#force(),
    );
  }

  async #closeSteps(deadline: Deadline): Promise<void> {
    const connecting = this.#life.connecting;
    if (connecting !== undefined) await deadline.within(connecting.catch(() => undefined));
    await deadline.within(
      Promise.allSettled([...this.#dlqConsumers].map((dlq) => dlq.unsubscribe())),
    );
    // Stop consuming; deliveries handed out may still be settled until their handlers end.
    const consumers = [...this.#consumers];
    const stops = consumers.map((consumer) => consumer.stop());
    await deadline.within(Promise.allSettled(stops));
    for (const consumer of consumers) consumer.handBackUnsettled();
    // Publishes and retries outstanding are confirmed (or the deadline passes).
    if (this.#model !== undefined) await deadline.within(this.#publisher.whenIdle());
    await this.#life.settleBackground(deadline);
    this.#finish();
    const model = this.#model;
    this.#model = undefined;
    if (model !== undefined) await deadline.within(model.close().catch(() => undefined));
    this.#state = 'closed';
  }

  #finish(): void {
    this.#publisher.failAll(this.#life.closedError('publish'));
    for (const consumer of this.#consumers) consumer.abandon();
    this.#consumers.clear();
  }

  #force(): void {
    this.#finish();
    const model = this.#model;
    this.#model = undefined;
    this.#state = 'closed';
    if (model !== undefined) {
      const stream = (model.connection as unknown as { stream?: { destroy(): void } }).stream;
      stream?.destroy();
    }
  }
}
