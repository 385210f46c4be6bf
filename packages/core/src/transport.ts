/**
 * The Transport contract: one broker behind one interface, used by the `EventBus`. In short,
 * what every implementation owes (docs/TRANSPORTS.md says it in full, with the kit's pieces):
 *
 * - every option key is checked, and a bad value or an unknown key is a `CONFIG` error;
 * - a delivery's `attempt` comes from the broker where the broker counts deliveries;
 * - bytes that do not decode are yielded as malformed deliveries, never thrown;
 * - deliveries buffered but never handed out go back on unsubscribe, unsettled ones on close;
 * - a lost ack means redelivery, never loss;
 * - background failures go to `on('error')`, and stop after close;
 * - a lost and a restored connection go to `on('connection')`;
 * - an event whose type does not match where it arrived is yielded (the bus dead-letters it);
 * - the transport dead-letters on its own only what the broker will not deliver again;
 * - `close({ timeoutMs })` and `unsubscribe()` keep their time limits whatever the broker does;
 * - time only through the injected `Clock`.
 *
 * The bus owns the retry policy, handler timeouts and the dead-letter decision after retries;
 * a transport does none of these.
 */
import type { SerializationError, WatchtowerError } from './errors.js';
import type { Event } from './event.js';

/**
 * What a transport can do, as data. The conformance suite skips cases by these flags; a
 * transport never claims what it does not do.
 */
export interface TransportCapabilities {
  /** Accepted events survive a broker restart. */
  persistence: boolean;
  /** A subscriber that starts later can read events published before it subscribed. */
  replay: boolean;
  /** `group` gives competing consumers: each event to one member of the group. */
  consumerGroups: boolean;
  /** A single subscriber receives the events of one type in publish order. */
  ordering: boolean;
  /** `nack()` and deliveries never acked are delivered again. */
  redelivery: boolean;
  /** `nack({ delayMs })` is honoured by the broker itself (survives a consumer crash). */
  delayedRetry: boolean;
  /** Delivery attempt numbers come from the broker, so they survive consumer restarts. */
  brokerAttemptCount: boolean;
  /** Dead letters live in the broker (survive restarts), not in process memory. */
  nativeDlq: boolean;
  /** `*` and `>` patterns are delivered, including dotted types. */
  wildcards: boolean;
  /** Event headers travel with the event. */
  headers: boolean;
  /** After the broker restarts or the connection is cut, subscriptions resume on their own. */
  reconnect: boolean;
}

/** Name and capabilities of a transport. */
export interface TransportInfo {
  readonly name: string;
  /**
   * The messaging system, as telemetry names it (`messaging.system`): `nats` for both NATS
   * modes, whose `name`s differ.
   * @defaultValue `name`
   */
  readonly system?: string;
  readonly capabilities: Readonly<TransportCapabilities>;
  /**
   * False when the transport hands events over in process without core's codec
   * (`MemoryTransport` with `copy: 'reference'`): the bus then does not write an event's JSON
   * before admitting it (so a payload that is not JSON, a `BigInt`, is accepted there).
   * @defaultValue true: every event is encoded with core's codec, once per publish
   */
  readonly encodes?: boolean;
}

/** Connection state as reported by {@link Transport.healthCheck}. */
export interface HealthStatus {
  healthy: boolean;
  /** e.g. `connected`, `reconnecting`, `closed`. */
  state: string;
  /** Round-trip time of the health probe, where one was made. */
  latencyMs?: number;
  /** What went wrong, when not healthy. */
  message?: string;
  /** Transport-specific details (server version, stream counts ...). */
  details?: Record<string, unknown>;
}

/** Options of a single publish. */
export interface PublishOptions {
  signal?: AbortSignal;
}

/** Where a new subscription (or group) starts reading, on transports with `replay`. */
export type StartPosition =
  'new' | 'earliest' | { readonly sequence: number } | { readonly time: Date };

/** Options of {@link Transport.subscribe}. */
export interface TransportSubscribeOptions {
  /**
   * Competing consumers: each event goes to one member of the group; different groups (and
   * subscriptions without a group) each get every event.
   */
  group?: string;
  /**
   * How many deliveries may be handed out and not yet acked or nacked.
   * @defaultValue transport-specific
   */
  maxInFlight?: number;
  /**
   * How many handlers the consumer runs at once (the bus passes its subscription's
   * `concurrency`). A hint for sizing what the broker sends ahead (RabbitMQ's prefetch); the
   * consumer, not the transport, keeps to it.
   */
  concurrency?: number;
  /**
   * Where a new subscription or group starts, on transports with `replay`.
   * @defaultValue `'new'`
   */
  startFrom?: StartPosition;
}

/** Options of {@link Delivery.nack}. */
export interface NackOptions {
  /**
   * Deliver the event again (`true`) or drop it (`false`).
   * @defaultValue true
   */
  requeue?: boolean;
  /** Wait this long before the event is delivered again. */
  delayMs?: number;
}

interface DeliveryBase {
  /** 1 on first delivery; taken from the broker where the broker counts. */
  readonly attempt: number;
  /** Where it came from (subject, stream, routing key), for dead-letter records. */
  readonly origin: string;
  /**
   * Confirms the delivery so the broker forgets it. May resolve once the ack is queued for
   * the connection's next write (acks are batched); an ack that never reaches the broker means
   * the event is delivered again, never that it is lost.
   */
  ack(): Promise<void>;
  /** Rejects the delivery: it comes again (after `delayMs`) unless `requeue` is false. */
  nack(options?: NackOptions): Promise<void>;
}

/** A decoded event delivered by a transport. */
export interface EventDelivery extends DeliveryBase {
  readonly kind: 'event';
  readonly event: Event;
}

/**
 * Bytes that arrived but are not an event. The consumer sends them to the dead-letter queue
 * and acks them; they never stop a subscription.
 */
export interface MalformedDelivery extends DeliveryBase {
  readonly kind: 'malformed';
  readonly raw: Uint8Array;
  readonly error: SerializationError;
}

/** What a {@link TransportSubscription} yields. */
export type Delivery = EventDelivery | MalformedDelivery;

/**
 * A live subscription: iterate it for deliveries. Iteration ends after `unsubscribe()` or
 * when the transport closes.
 */
export interface TransportSubscription extends AsyncIterable<Delivery> {
  readonly pattern: string;
  unsubscribe(): Promise<void>;
  /**
   * Optional: a delivery that is already buffered, taken without waiting, or undefined. Lets
   * a consumer drain a burst without a promise per delivery; iteration sees the same items.
   */
  tryNext?(): Delivery | undefined;
  /**
   * Optional: sets (or, with undefined, clears) a {@link DeliveryReceiver}. While one is set
   * and the consumer waits in `next()` with nothing buffered, an arriving delivery is offered
   * to it first, synchronously, from the transport's own callback; one it takes is handed out
   * as if `next()` had returned it, and `next()` goes on waiting. It saves a promise and a
   * turn of the microtask queue per delivery to a consumer that keeps up.
   */
  receive?(receiver: DeliveryReceiver | undefined): void;
}

/**
 * A consumer that takes deliveries as they arrive (see {@link TransportSubscription.receive}).
 * The transport asks `ready()` first and calls `take()` only when it said true; `take()` must
 * not throw.
 */
export interface DeliveryReceiver {
  ready(): boolean;
  take(delivery: Delivery): void;
}

/** Why an event ended in the dead-letter queue. */
export interface DeadLetterReason {
  /** What went wrong, readable. */
  message: string;
  /** An `ErrorCode` or the thrown error's code. */
  code: string;
  /** Delivery attempts made. */
  attempts: number;
  /** RFC 3339 time of the last failure. */
  failedAt: string;
  /** Type of the event, or the origin of bytes that never decoded. */
  originalType: string;
  /** The subscription (pattern or group) that gave up on it. */
  subscription?: string;
  /** Set when the full record could not be stored and this reduced one was written instead. */
  reduced?: ReducedDeadLetter;
}

/**
 * What a reduced dead letter keeps of the original: it is stored as bytes (`raw`), the start
 * of the original record, never as an event to replay.
 */
export interface ReducedDeadLetter {
  /** Why the full record could not be stored (the broker's refusal). */
  why: string;
  /** Size of the full record's body in bytes. */
  originalBytes: number;
  /** Bytes of it kept in `raw`. */
  keptBytes: number;
  /** The event's id, where it was an event. */
  eventId?: string;
  /** The event's correlation id, where it had one. */
  correlationId?: string;
  /** Where the original arrived (subject, stream, queue): it may still be there. */
  origin: string;
}

/** Bytes that could not be decoded, bound for the dead-letter queue. */
export interface MalformedMessage {
  readonly raw: Uint8Array;
  /** Subject, stream or queue it arrived on. */
  readonly origin: string;
}

/** An entry of a dead-letter queue. Exactly one of `event` and `raw` is set. */
export interface DeadLetter {
  event?: Event;
  raw?: Uint8Array;
  reason: DeadLetterReason;
}

/** Receives dead letters from {@link Transport.consumeDlq}. A throw leaves the entry for later. */
export type DeadLetterHandler = (deadLetter: DeadLetter) => void | Promise<void>;

/** Options of {@link Transport.consumeDlq}. */
export interface ConsumeDlqOptions {
  /** Competing DLQ consumers share a group. */
  group?: string;
  /** Read dead letters written before this call too. @defaultValue true */
  fromStart?: boolean;
}

/** An active callback subscription. */
export interface SubscriptionHandle {
  readonly id: string;
  /** Stops delivery; resolves when in-flight handlers have finished. Idempotent. */
  unsubscribe(): Promise<void>;
}

/** Options of {@link Transport.close}. */
export interface CloseOptions {
  /**
   * How long to wait for in-flight work before closing the connection anyway.
   * @defaultValue 10000
   */
  timeoutMs?: number;
}

/**
 * Told how one publish ended, exactly once: `published()` when the broker has the event,
 * `failed(error)` with what `publish` would have rejected with. See {@link Transport.publishTo}.
 */
export interface PublishReceipt {
  published(): void;
  failed(error: unknown): void;
}

/**
 * One broker behind one contract. Implemented by every transport package; used by `EventBus`.
 */
export interface Transport {
  readonly info: TransportInfo;
  /** Connects; idempotent. Rejects with a `CONNECTION` error when the broker cannot be reached. */
  connect(): Promise<void>;
  /** Resolves when the broker has the event (confirm/ack) on persistent transports. */
  publish(event: Event, options?: PublishOptions): Promise<void>;
  /**
   * Optional: `publish(event)` that tells `receipt` how it ended instead of returning a
   * promise, for a transport whose publishes settle from broker callbacks (confirms). The bus
   * then makes no promise and no reaction of its own per publish. Same checks, outcome and
   * errors as `publish`; calls exactly one of the receipt's methods exactly once (possibly
   * before it returns) and does not throw.
   */
  publishTo?(event: Event, receipt: PublishReceipt): void;
  subscribe(pattern: string, options?: TransportSubscribeOptions): Promise<TransportSubscription>;
  /** Never rejects: failures are reported as `healthy: false`. */
  healthCheck(): Promise<HealthStatus>;
  /** Resolves when the dead letter is stored. */
  publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void>;
  consumeDlq(handler: DeadLetterHandler, options?: ConsumeDlqOptions): Promise<SubscriptionHandle>;
  /** Graceful and idempotent: drains, then closes connections. */
  close(options?: CloseOptions): Promise<void>;
  /**
   * Optional listeners; each call returns a function that removes the listener.
   *
   * - `error`: failures of background work that no caller can be told about (a blocking read,
   *   a reclaim, an ack that did not go out). The `EventBus` reports them on its own `error`
   *   listeners or logger.
   * - `connection`: the connection to the broker was lost, or is back after a reconnect (never
   *   fired for the first connect, nor by `close()`), or one reconnect attempt failed meanwhile.
   *   While it is lost the bus holds new publishes in its queue, waits before retrying and
   *   counts each failed attempt against its publish circuit breaker; when it is back the bus
   *   puts the breaker half-open, so trial calls decide at once instead of after
   *   `resetTimeoutMs`.
   */
  on?(name: 'error', listener: (error: WatchtowerError) => void): () => void;
  on?(name: 'connection', listener: (change: ConnectionChange) => void): () => void;
}

/** A change of a transport's connection, as reported to `on('connection')`. */
export type ConnectionChange =
  | {
      readonly state: 'lost';
      /** What the client reported, where it said anything. */
      readonly error?: WatchtowerError;
    }
  /**
   * One reconnect attempt failed while the connection is lost (reported for each attempt): the
   * bus counts it as a failure of its publish circuit breaker, so an outage that outlasts
   * `failureThreshold` attempts opens the circuit even while no publish reaches the transport.
   */
  | { readonly state: 'reconnect-failed'; readonly error: WatchtowerError }
  | { readonly state: 'restored' }
  /**
   * The transport stopped trying to reconnect (its reconnect attempts ran out): nothing is
   * held for it any more, and its next call connects afresh or fails with `CONNECTION`.
   */
  | { readonly state: 'given-up' };

/**
 * The option names of each call of the contract. Transports refuse any other key (a misspelt
 * `grup` must not silently mean "no group"), with the transport kit's option checks.
 */
export const TRANSPORT_OPTION_KEYS = {
  publish: keysOf<PublishOptions>({ signal: true }),
  subscribe: keysOf<TransportSubscribeOptions>({
    group: true,
    maxInFlight: true,
    concurrency: true,
    startFrom: true,
  }),
  consumeDlq: keysOf<ConsumeDlqOptions>({ group: true, fromStart: true }),
  close: keysOf<CloseOptions>({ timeoutMs: true }),
  nack: keysOf<NackOptions>({ requeue: true, delayMs: true }),
} as const;

/** The keys of `T`, listed as a record so that a field added to `T` and left out fails to compile. */
function keysOf<T>(fields: Record<keyof T, true>): readonly string[] {
  return Object.freeze(Object.keys(fields));
}
