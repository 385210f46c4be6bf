/**
 * `WebhookTransport`: webhooks behind the Transport contract. Publishing delivers an event to
 * the endpoint subscriptions whose patterns match its type (through a `WebhookClient`);
 * subscribing receives the events that senders POST to this process's receiver (a verifying
 * `createWebhookReceiver` whose requests become deliveries, answered 2xx only once acked).
 *
 * Publish resolves when the delivery is accepted, not when every endpoint has it: into a
 * bounded in-memory queue, or, with `queue`, into a broker transport (Redis Streams, JetStream)
 * that a consumer group of webhook transports takes deliveries from, so a crash loses none.
 * What fails for good goes to the client's dead-letter store (list and replay it there).
 * Dead letters of the receiving side (handlers that failed on events received here) go to the
 * `queue` transport's DLQ when there is one, else to an in-memory one.
 *
 * It never acks a queued delivery before each endpoint has it or its dead letter is stored, and
 * never answers a sender 2xx for an event no subscription has acked.
 */
import { Buffer } from 'node:buffer';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ErrorCode,
  MemoryTransport,
  assertPattern,
  compilePattern,
  systemClock,
  type CompiledPattern,
  SerializationError,
  WatchtowerError,
  configError,
  encodeEvent,
  toWatchtowerError,
  type CloseOptions,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type DeadLetterReason,
  type Delivery,
  type Event,
  type HealthStatus,
  type MalformedMessage,
  type NackOptions,
  type PublishOptions,
  type SubscriptionHandle,
  type Transport,
  type TransportCapabilities,
  type TransportInfo,
  type TransportSubscribeOptions,
  type TransportSubscription,
} from '@watchtower/core';
import {
  DeliveryBuffer,
  RESOLVED,
  SourceSubscription,
  TransportLifecycle,
  checkNackOptions,
  checkPublishOptions,
  checkSubscribeOptions,
  deadLetterReason,
  integerOption,
  objectOption,
  raceAbort,
  rejection,
  rejectUnknownOptions,
  stringOption,
  throwIfAborted,
  within,
  type TransportErrorEvents,
} from '@watchtower/core/transport-kit';
import {
  decodeWebhookEvent,
  buildReceiver,
  type DispatchOutcome,
  type WebhookReceiver,
  type WebhookReceiverOptions,
} from './receiver.js';
import {
  WEBHOOK_CLIENT_OPTION_KEYS,
  WebhookClient,
  deliverEncoded,
  type WebhookClientOptions,
} from './webhook-client.js';
import { WebhookVerificationError } from './errors.js';

/** The receiving side of a {@link WebhookTransport}. */
export interface WebhookTransportReceiver extends Pick<
  WebhookReceiverOptions,
  'secrets' | 'publicKeys' | 'toleranceSeconds' | 'maxBodyBytes' | 'maxRememberedIds'
> {
  /**
   * Listen on this port at `connect()` (0: one the OS picks; see `receiverUrl`). Without it
   * nothing listens: mount `transport.receiver` in your own server.
   * @defaultValue not set
   */
  port?: number;
  /** Address to listen on. @defaultValue `'127.0.0.1'` */
  host?: string;
}

/** Options of {@link WebhookTransport}: the {@link WebhookClientOptions} and these. */
export interface WebhookTransportConfig extends WebhookClientOptions {
  /**
   * Receive webhooks: `subscribe()` needs it. Keys to verify senders with, and where to listen.
   * @defaultValue not set: `subscribe()` is refused with `UNSUPPORTED`
   */
  receiver?: WebhookTransportReceiver;
  /**
   * The durable delivery queue: a connected-on-demand broker transport (for example a
   * `RedisTransport` or a JetStream `NatsTransport`). Publish puts the event there; the
   * transports sharing `queueGroup` take deliveries from it and ack each once every endpoint
   * has it or its dead letter is stored, so a crash loses no webhook (it is delivered again,
   * and a Watchtower receiver answers a repeat as already handled). The webhook transport
   * connects and closes it.
   * @defaultValue not set: pending deliveries are held in memory
   */
  queue?: Transport;
  /**
   * Where dead letters of the receiving side go (`publishToDlq`, `consumeDlq`: events whose
   * handlers failed here, bytes that were no event): any transport's DLQ, for example the one
   * of a `RedisTransport` so they survive a restart and every instance reads them.
   * @defaultValue `queue` when set, else a `MemoryTransport` of this transport's own (bounded, lost at exit)
   */
  deadLetterTransport?: Transport;
  /** Consumer group on `queue`. @defaultValue `'watchtower-webhook-delivery'` */
  queueGroup?: string;
  /**
   * Deliveries in progress at once: in memory, a publish waits for room beyond this (until its
   * signal aborts, so the bus's backpressure settings decide what happens); with `queue`, the
   * `maxInFlight` of the queue subscription.
   * @defaultValue 1000
   */
  maxPendingDeliveries?: number;
  /**
   * Most received deliveries a subscription holds unsettled; a request beyond is answered 503
   * with `Retry-After`, so the sender comes back later. `subscribe({ maxInFlight })` overrides.
   * @defaultValue 256
   */
  maxInFlight?: number;
}

export const WEBHOOK_TRANSPORT_CONFIG_KEYS: readonly string[] = [
  ...WEBHOOK_CLIENT_OPTION_KEYS,
  'receiver',
  'queue',
  'queueGroup',
  'deadLetterTransport',
  'maxPendingDeliveries',
  'maxInFlight',
];

const RECEIVER_KEYS = [
  'secrets',
  'publicKeys',
  'toleranceSeconds',
  'maxBodyBytes',
  'maxRememberedIds',
  'port',
  'host',
];

/** What webhooks can do, as the conformance suite reads it. */
export const WEBHOOK_CAPABILITIES: Readonly<TransportCapabilities> = Object.freeze({
  // Pending deliveries are in memory unless `queue` is set (see `info` of an instance).
  persistence: false,
  replay: false,
  consumerGroups: false,
  // Endpoints are delivered to in parallel and retried one by one: no order.
  ordering: false,
  // The bus retries handlers in process; a 5xx to the sender is only for close.
  redelivery: false,
  delayedRetry: false,
  brokerAttemptCount: false,
  nativeDlq: false,
  wildcards: true,
  headers: true,
  reconnect: false,
});

type Outcome = 'ack' | 'retry' | 'drop';

/** Of a close's time, what is kept for answering senders whose deliveries were not settled. */
const ANSWER_MARGIN_MS = 50;

function checkTransport(field: string, value: unknown): void {
  if (value === undefined) return;
  const methods = ['publish', 'subscribe', 'connect', 'publishToDlq', 'consumeDlq', 'close'];
  const record =
    typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  if (methods.some((name) => typeof record[name] !== 'function')) {
    throw configError(field, 'must be a Transport (a RedisTransport, a NatsTransport ...)');
  }
}

interface ReceivedDelivery {
  readonly delivery: Delivery;
  readonly settle: (outcome: Outcome) => void;
}

interface ReceivingSubscription {
  readonly pattern: CompiledPattern;
  readonly buffer: DeliveryBuffer<Delivery>;
  readonly entries: Map<Delivery, ReceivedDelivery>;
  readonly maxInFlight: number;
}

/**
 * Webhooks as a Transport.
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebhookTransport implements Transport {
  readonly info: TransportInfo;
  /** The delivering side: endpoints, stats, the dead-letter store and its replay. */
  readonly client: WebhookClient;
  /**
   * The receiving side as a Node `(req, res)` handler, to mount in your own server when
   * `receiver.port` is not set; undefined without `receiver`.
   */
  readonly receiver: WebhookReceiver | undefined;
  readonly #life: TransportLifecycle;
  readonly #queue: Transport | undefined;
  readonly #queueGroup: string;
  readonly #maxPending: number;
  readonly #maxInFlight: number;
  readonly #listen: { port: number; host: string } | undefined;
  readonly #dlq: Transport;
  readonly #subscriptions = new Set<ReceivingSubscription>();
  readonly #pending = new Set<Promise<void>>();
  readonly #room = new Set<() => void>();
  /** Requests of the own server not yet answered. */
  readonly #requests = new Set<Promise<void>>();
  #server: Server | undefined;
  #receiverUrl: string | undefined;
  #queueSubscription: TransportSubscription | undefined;
  #queueLoop: Promise<void> | undefined;

  constructor(config: WebhookTransportConfig = {}) {
    rejectUnknownOptions(config, WEBHOOK_TRANSPORT_CONFIG_KEYS, 'WebhookTransport');
    const {
      receiver,
      queue,
      queueGroup,
      deadLetterTransport,
      maxPendingDeliveries,
      maxInFlight,
      ...clientOptions
    } = config;
    this.client = new WebhookClient(clientOptions);
    this.#maxPending = integerOption('maxPendingDeliveries', maxPendingDeliveries ?? 1000, 1);
    this.#maxInFlight = integerOption('maxInFlight', maxInFlight ?? 256, 1);
    this.#queueGroup = stringOption('queueGroup', queueGroup ?? 'watchtower-webhook-delivery');
    checkTransport('queue', queue);
    checkTransport('deadLetterTransport', deadLetterTransport);
    this.#queue = queue;
    if (receiver !== undefined) {
      const r = objectOption('receiver', receiver, RECEIVER_KEYS);
      const { port, host, ...verifying } = r;
      if (port !== undefined) {
        this.#listen = {
          port: integerOption('receiver.port', port, 0, { max: 65535 }),
          host: stringOption('receiver.host', host ?? '127.0.0.1'),
        };
      } else if (host !== undefined) {
        throw configError('receiver.host', 'needs receiver.port (nothing listens without it)');
      }
      this.receiver = buildReceiver(verifying, 'receiver', (verified) =>
        this.#dispatch(verified.body),
      );
    } else {
      this.receiver = undefined;
    }
    this.#dlq = deadLetterTransport ?? queue ?? new MemoryTransport();
    const capabilities = {
      ...WEBHOOK_CAPABILITIES,
      // Pending deliveries live in the queue's broker when there is one.
      persistence: queue?.info.capabilities.persistence ?? false,
      nativeDlq: this.#dlq.info.capabilities.nativeDlq,
    };
    this.info = Object.freeze({ name: 'webhook', capabilities: Object.freeze(capabilities) });
    this.#life = new TransportLifecycle({
      name: 'the webhook transport',
      clock: clientOptions.clock ?? systemClock,
      closeTimeoutMs: clientOptions.closeTimeoutMs ?? 10_000,
      mapError: (error) => toWatchtowerError(error),
    });
  }

  /** Where the receiver listens, once connected with `receiver.port`. */
  get receiverUrl(): string | undefined {
    return this.#receiverUrl;
  }

  connect(): Promise<void> {
    return this.#life.connect(() => this.#open());
  }

  on<K extends keyof TransportErrorEvents>(
    name: K,
    listener: (...args: TransportErrorEvents[K]) => void,
  ): () => void {
    return this.#life.on(name, listener);
  }

  async #open(): Promise<void> {
    await this.#dlq.connect();
    if (this.#queue !== undefined) {
      if (this.#queue !== this.#dlq) await this.#queue.connect();
      this.#queue.on?.('error', (error) => this.#life.report(error));
      // The queue's connection is this transport's: the bus holds publishes while it is lost.
      this.#queue.on?.('connection', (change) => {
        if (change.state === 'lost') this.#life.connectionLost(change.error);
        else if (change.state === 'reconnect-failed') this.#life.reconnectFailed(change.error);
        else this.#life.connectionRestored();
      });
      this.#queueSubscription = await this.#queue.subscribe('>', {
        group: this.#queueGroup,
        maxInFlight: this.#maxPending,
      });
      // Nobody awaits the loop but close(): a failure of the queue is reported, never unhandled.
      this.#queueLoop = this.#consumeQueue(this.#queueSubscription).catch((error: unknown) => {
        this.#life.report(toWatchtowerError(error, ErrorCode.CONNECTION));
      });
    }
    if (this.#listen !== undefined && this.receiver !== undefined) {
      const handler = this.receiver;
      const server = createServer((req, res) => {
        const answered = handler(req, res);
        this.#requests.add(answered);
        void answered.finally(() => this.#requests.delete(answered));
      });
      this.#server = server;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.#listen?.port, this.#listen?.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const { address, port } = server.address() as AddressInfo;
      this.#receiverUrl = `http://${address.includes(':') ? `[${address}]` : address}:${port}/`;
    }
  }

  /**
   * Accepts `event` for delivery to the endpoints whose patterns match: resolves when it is
   * queued (in memory, waiting for room beyond `maxPendingDeliveries` until `signal` aborts;
   * with `queue`, when that broker has it). Rejects `CLOSED` after `close()`.
   */
  async publish(event: Event, options?: PublishOptions): Promise<void> {
    checkPublishOptions(options);
    this.#life.assertOpen('publish');
    const signal = options?.signal;
    throwIfAborted(signal, 'publish');
    if (this.#queue !== undefined) {
      await this.#queue.publish(event, signal === undefined ? undefined : { signal });
      return;
    }
    // Now, before any wait: the bus's text of the event is at hand only during this call.
    const body = Buffer.from(encodeEvent(event));
    while (this.#pending.size >= this.#maxPending) {
      let wake!: () => void;
      const room = new Promise<void>((resolve) => (wake = resolve));
      this.#room.add(wake);
      try {
        await (signal === undefined ? room : raceAbort(room, signal, 'publish'));
      } finally {
        this.#room.delete(wake);
      }
      this.#life.assertOpen('publish');
    }
    // One reaction does both: the outcome, then the room it frees.
    const delivery: Promise<void> = this.client[deliverEncoded](event, body).then(
      () => this.#delivered(delivery),
      (error: unknown) => {
        // The dead letter could not be stored: tell someone, never drop it silently.
        this.#life.report(
          new WatchtowerError(
            ErrorCode.TRANSPORT,
            `the delivery of ${event.type} ${event.id} failed and its dead letter could not be stored`,
            { cause: error },
          ),
        );
        this.#delivered(delivery);
      },
    );
    this.#pending.add(delivery);
  }

  /** A pending delivery is done: it leaves the pending set and wakes one publish waiting for room. */
  #delivered(delivery: Promise<void>): void {
    this.#pending.delete(delivery);
    for (const wake of this.#room) {
      wake();
      break;
    }
  }

  /** Takes deliveries from the durable queue: acks each once delivered or dead-lettered. */
  async #consumeQueue(subscription: TransportSubscription): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    for await (const delivery of subscription) {
      const work = this.#deliverQueued(delivery);
      inFlight.add(work);
      void work.finally(() => inFlight.delete(work));
    }
    await Promise.allSettled([...inFlight]);
  }

  async #deliverQueued(delivery: Delivery): Promise<void> {
    try {
      if (delivery.kind === 'malformed') {
        await this.#dlq.publishToDlq(
          { raw: delivery.raw, origin: delivery.origin },
          deadLetterReason({
            failure: delivery.error,
            attempts: delivery.attempt,
            message: { raw: delivery.raw, origin: delivery.origin },
            clock: this.#life.clock,
          }),
        );
        await delivery.ack();
        return;
      }
      await this.client.deliver(delivery.event, { keepOnClose: true });
      await delivery.ack();
    } catch (error) {
      // Not delivered everywhere, nor dead-lettered: the queue delivers it again later.
      if (!this.#life.closed) this.#life.report(toWatchtowerError(error));
      await delivery.nack({ delayMs: 1000 }).catch(() => undefined);
    }
  }

  /**
   * Receives events POSTed to the receiver whose type matches `pattern`. Needs the `receiver`
   * option (`UNSUPPORTED` otherwise); `group` and `startFrom` other than `'new'` are refused.
   */
  async subscribe(
    pattern: string,
    options?: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    const { group, maxInFlight } = checkSubscribeOptions(options, {
      startFrom: ['new'],
      startFromHint: 'webhooks keep no history',
    });
    if (group !== undefined) {
      throw configError(
        'group',
        'webhooks have no consumer groups: every subscription gets every event',
      );
    }
    assertPattern(pattern);
    this.#life.assertOpen('subscribe');
    if (this.receiver === undefined) {
      throw new WatchtowerError(
        ErrorCode.UNSUPPORTED,
        'the webhook transport receives only with the `receiver` option',
      );
    }
    const entries = new Map<Delivery, ReceivedDelivery>();
    const buffer = new DeliveryBuffer<Delivery>();
    const sub: ReceivingSubscription = {
      pattern: compilePattern(pattern),
      buffer,
      entries,
      maxInFlight: maxInFlight ?? this.#maxInFlight,
    };
    this.#subscriptions.add(sub);
    const stop = async (): Promise<void> => {
      this.#subscriptions.delete(sub);
      // Never seen by a handler: the sender is told to come again.
      for (const delivery of buffer.drain()) entries.get(delivery)?.settle('retry');
      buffer.end();
    };
    return new SourceSubscription(
      pattern,
      { [Symbol.asyncIterator]: () => buffer, tryNext: () => buffer.tryNext(), stop },
      {
        clock: this.#life.clock,
        background: (work, operation) => this.#life.track(work, operation),
      },
    );
  }

  /** Turns one verified request into deliveries; answers when they are all settled. */
  async #dispatch(body: Uint8Array): Promise<DispatchOutcome> {
    if (this.#life.closed) return { status: 503, text: 'closing', handled: false };
    let event: Event | undefined;
    let malformed: SerializationError | undefined;
    try {
      event = decodeWebhookEvent(body);
    } catch (error) {
      if (!(error instanceof WebhookVerificationError)) throw error;
      malformed =
        error.cause instanceof SerializationError
          ? error.cause
          : new SerializationError(error.message, body);
    }
    const targets = [...this.#subscriptions].filter(
      (sub) => event === undefined || sub.pattern.matches(event.type),
    );
    // Bytes that are no event go to one subscription, whose bus dead-letters them once.
    const chosen = event === undefined ? targets.slice(0, 1) : targets;
    if (chosen.length === 0) {
      // Never acked silently: the sender dead-letters it, where it can be seen and replayed.
      return event === undefined
        ? { status: 400, text: 'not a Watchtower event', handled: false }
        : {
            status: 422,
            text: `no subscription for ${event.type}`,
            handled: false,
            unrouted: true,
          };
    }
    if (chosen.some((sub) => sub.buffer.size + sub.buffer.handedOut >= sub.maxInFlight)) {
      return { status: 503, text: 'busy', handled: false };
    }
    const outcomes = chosen.map(
      (sub) =>
        new Promise<Outcome>((resolve) => {
          const delivery = this.#delivery(sub, event, malformed, body, resolve);
          sub.entries.set(delivery, { delivery, settle: resolve });
          sub.buffer.push(delivery);
        }),
    );
    const settled = await Promise.all(outcomes);
    if (settled.every((o) => o === 'ack')) return { status: 204, handled: true };
    if (settled.includes('retry')) return { status: 503, text: 'try again', handled: false };
    return { status: 422, text: 'refused', handled: false };
  }

  #delivery(
    sub: ReceivingSubscription,
    event: Event | undefined,
    malformed: SerializationError | undefined,
    raw: Uint8Array,
    resolve: (outcome: Outcome) => void,
  ): Delivery {
    let done = false;
    const settle = (outcome: Outcome): Promise<void> => {
      if (!done) {
        done = true;
        sub.entries.delete(delivery);
        sub.buffer.settled(delivery);
        resolve(outcome);
      }
      return RESOLVED;
    };
    const base = {
      attempt: 1,
      origin: 'webhook',
      ack: () => settle('ack'),
      nack: (options?: NackOptions) =>
        rejection(() => checkNackOptions(options)) ??
        settle(options?.requeue === false ? 'drop' : 'retry'),
    };
    const delivery: Delivery =
      event !== undefined
        ? { kind: 'event', event, ...base }
        : {
            kind: 'malformed',
            raw,
            error: malformed ?? new SerializationError('not an event', raw),
            ...base,
          };
    return delivery;
  }

  /**
   * Healthy while open (and while the queue is healthy, with `queue`); `details` name the
   * endpoints disabled by a 410 or `enabled: false` and those whose circuit is open, and the
   * deliveries pending in memory. Never rejects.
   */
  async healthCheck(): Promise<HealthStatus> {
    if (this.#life.closed)
      return { healthy: false, state: 'closed', message: 'the webhook transport is closed' };
    if (this.#life.phase !== 'open')
      return { healthy: false, state: this.#life.phase, message: 'not connected' };
    const endpoints = Object.values(this.client.stats());
    const details: Record<string, unknown> = {
      pendingDeliveries: this.#pending.size,
      disabledEndpoints: endpoints.filter((s) => !s.enabled).map((s) => s.id),
      openCircuits: endpoints.filter((s) => s.circuit?.state === 'open').map((s) => s.id),
    };
    if (this.#queue === undefined) return { healthy: true, state: 'connected', details };
    const queue = await this.#queue.healthCheck();
    details['queue'] = queue;
    return queue.healthy
      ? { healthy: true, state: 'connected', details }
      : {
          healthy: false,
          state: queue.state,
          message: `the delivery queue: ${queue.message ?? queue.state}`,
          details,
        };
  }

  /** Stores a dead letter of the receiving side: in the `queue` transport's DLQ, else in memory. */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    this.#life.assertOpen('publish a dead letter');
    await this.#dlq.publishToDlq(message, reason);
  }

  /** Reads the dead letters of the receiving side (see `publishToDlq`). */
  consumeDlq(handler: DeadLetterHandler, options?: ConsumeDlqOptions): Promise<SubscriptionHandle> {
    if (this.#life.closed) return Promise.reject(this.#life.closedError('consume dead letters'));
    return this.#dlq.consumeDlq(handler, options);
  }

  /**
   * Stops accepting publishes and requests; waits up to `timeoutMs` for deliveries in progress
   * (in memory: what is cut off goes to the dead-letter store with `CLOSED`; with `queue`: it
   * stays queued, unacked, for another transport of the group) and for received deliveries to
   * be settled (the unsettled are answered 503, so their senders come again); closes the
   * receiver's server, the client and the queue. Idempotent.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      async (deadline) => {
        for (const wake of this.#room) wake();
        const server = this.#server;
        const serverClosed =
          server === undefined
            ? RESOLVED
            : new Promise<void>((resolve) => server.close(() => resolve()));
        if (this.#queueSubscription !== undefined)
          await deadline.within(this.#queueSubscription.unsubscribe());
        // Deliveries being sent and deliveries received settle side by side, in one deadline.
        const sending = deadline.within(Promise.allSettled([...this.#pending]));
        // Handlers get the time left but a little, which the 503 answers to their senders need.
        const received = [...this.#subscriptions].map((sub) => sub.buffer.whenIdle());
        const receiving = within(
          this.#life.clock,
          deadline.remaining() - Math.min(ANSWER_MARGIN_MS, deadline.remaining() / 2),
          Promise.allSettled(received),
        ).then(() => {
          this.#cutReceived();
          return deadline.within(Promise.allSettled([...this.#requests]));
        });
        await Promise.all([sending, receiving]);
        await this.client.close({ timeoutMs: deadline.remaining() });
        if (this.#queueLoop !== undefined) await deadline.within(this.#queueLoop);
        await Promise.allSettled(
          this.#owned().map((t) => t.close({ timeoutMs: deadline.remaining() })),
        );
        server?.closeAllConnections();
        await deadline.within(serverClosed);
      },
      () => {
        this.#cutReceived();
        // After this turn, so that the 503 answers just written go out first.
        const server = this.#server;
        setImmediate(() => server?.closeAllConnections());
        void this.client.close({ timeoutMs: 0 }).catch(() => undefined);
        for (const t of this.#owned()) void t.close({ timeoutMs: 0 }).catch(() => undefined);
      },
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The transports this one connects and closes: the dead-letter one and the queue. */
  #owned(): Transport[] {
    return [...new Set([this.#dlq, ...(this.#queue === undefined ? [] : [this.#queue])])];
  }

  /** Every received delivery still unsettled: answered 503, so the sender delivers it again. */
  #cutReceived(): void {
    for (const sub of this.#subscriptions) {
      for (const entry of [...sub.entries.values()]) entry.settle('retry');
      sub.buffer.end();
    }
    this.#subscriptions.clear();
  }
}
