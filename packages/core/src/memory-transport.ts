import { DeliveryBuffer } from './transport-kit/delivery-buffer.js';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { decodeEvent } from './codec.js';
import { InMemoryDeadLetterQueue, type DeadLetterQueue } from './dead-letter-queue.js';
import {
  ClosedError,
  ErrorCode,
  SerializationError,
  WatchtowerError,
  configError,
  describeError,
  toWatchtowerError,
} from './errors.js';
import { Emitter } from './emitter.js';
import { assertEventType, type Event } from './event.js';
import { Fifo } from './transport-kit/fifo.js';
import { PatternIndex, assertPattern } from './pattern.js';
import { checkOptionKeys, rejectUnknownOptions, rejectedForUnknownKeys } from './options.js';
import type {
  CloseOptions,
  ConsumeDlqOptions,
  DeadLetter,
  DeadLetterHandler,
  DeadLetterReason,
  Delivery,
  HealthStatus,
  MalformedMessage,
  NackOptions,
  PublishOptions,
  SubscriptionHandle,
  Transport,
  TransportInfo,
  TransportSubscribeOptions,
  TransportSubscription,
} from './transport.js';
import { TRANSPORT_OPTION_KEYS } from './transport.js';

/** Options of {@link MemoryBroker}. */
export interface MemoryBrokerOptions {
  /**
   * Where dead letters go.
   * @defaultValue a new `InMemoryDeadLetterQueue` (capacity 10 000)
   */
  deadLetterQueue?: DeadLetterQueue;
  /** Timers of delayed redelivery. @defaultValue `systemClock` */
  clock?: Clock;
  /**
   * Events a group may hold that no member has taken yet. Past it, `publish()` waits for the
   * group's members to catch up (so the bus's backpressure applies end to end); a named group
   * without members drops its oldest events instead, and counts them in `droppedEvents`.
   * A handler that publishes into its own group waits too when the group is full: keep such
   * chains below the bound, or give the broker a larger one.
   * @defaultValue 10000
   */
  maxPending?: number;
}

/** Options of {@link MemoryTransport}. */
export interface MemoryTransportOptions extends MemoryBrokerOptions {
  /**
   * The in-process broker to connect to. Transports given the same broker see each other's
   * events, like clients of one server. `deadLetterQueue` and `clock` apply only to a broker
   * the transport creates itself; pass them to the `MemoryBroker` otherwise.
   * @defaultValue a new private `MemoryBroker`
   */
  broker?: MemoryBroker;
  /**
   * Deliveries a subscription may hold without acking them; further events wait in the
   * subscription's group.
   * @defaultValue 128
   */
  maxInFlight?: number;
}

/** Defaults of {@link MemoryTransportOptions}. */
export const DEFAULT_MEMORY_TRANSPORT_OPTIONS = {
  maxInFlight: 128,
  maxPending: 10_000,
} as const;

const MEMORY_TRANSPORT_INFO: TransportInfo = {
  name: 'memory',
  capabilities: {
    persistence: false,
    replay: false,
    consumerGroups: true,
    ordering: true,
    redelivery: true,
    delayedRetry: true,
    brokerAttemptCount: true,
    nativeDlq: false,
    wildcards: true,
    headers: true,
    reconnect: false,
  },
};

/** A message waiting in a group: an event, or bytes that did not decode. */
interface Message {
  readonly event: Event | undefined;
  readonly raw: Uint8Array | undefined;
  readonly error: SerializationError | undefined;
  readonly origin: string;
  readonly attempt: number;
}

/**
 * An in-process broker: the groups, their pending events and the dead-letter queue. It holds
 * only what is not yet acknowledged. A named group outlives its members, so a member that
 * joins later receives what the group has not handled yet; the private group of a
 * subscription without a group goes away with it.
 */
export class MemoryBroker {
  /** The dead-letter queue of this broker. */
  readonly deadLetterQueue: DeadLetterQueue;
  readonly clock: Clock;
  readonly #index = new PatternIndex<MemoryGroup>();
  readonly #groups = new Map<string, MemoryGroup>();
  readonly #claimedDeadLetters = new WeakSet<DeadLetter>();
  #privateGroupSeq = 0;
  #dropped = 0;
  readonly #maxPending: number;

  constructor(options: MemoryBrokerOptions = {}) {
    rejectUnknownOptions(options, ['deadLetterQueue', 'clock', 'maxPending'], 'MemoryBroker');
    const maxPending = options.maxPending ?? DEFAULT_MEMORY_TRANSPORT_OPTIONS.maxPending;
    if (!Number.isInteger(maxPending) || maxPending < 1) {
      throw configError('maxPending', 'must be an integer >= 1');
    }
    this.#maxPending = maxPending;
    this.deadLetterQueue = options.deadLetterQueue ?? new InMemoryDeadLetterQueue();
    this.clock = options.clock ?? systemClock;
  }

  /** Events dropped by named groups that had no member and were full. */
  get droppedEvents(): number {
    return this.#dropped;
  }

  /**
   * Hands a message to every group whose pattern matches `type`. Returns the groups that are
   * now over `maxPending` (their members lag), or undefined.
   */
  route(type: string, message: Message): MemoryGroup[] | undefined {
    const groups = this.#index.match(type);
    let congested: MemoryGroup[] | undefined;
    for (let i = 0; i < groups.length; i++) {
      const group = groups[i] as MemoryGroup;
      if (group.enqueue(message)) (congested ??= []).push(group);
    }
    return congested;
  }

  /** @internal */
  groupFor(pattern: string, name: string | undefined): MemoryGroup {
    if (name === undefined) {
      const key = `\u0000private:${++this.#privateGroupSeq}`;
      const group: MemoryGroup = new MemoryGroup(key, pattern, undefined, this.#limits, () => {
        this.#groups.delete(key);
        this.#index.remove(pattern, group);
      });
      this.#groups.set(key, group);
      this.#index.add(pattern, group);
      return group;
    }
    const key = `${name}\u0000${pattern}`;
    let group = this.#groups.get(key);
    if (group === undefined) {
      group = new MemoryGroup(key, pattern, name, this.#limits, undefined);
      this.#groups.set(key, group);
      this.#index.add(pattern, group);
    }
    return group;
  }

  readonly #limits: GroupLimits = {
    clock: () => this.clock,
    maxPending: () => this.#maxPending,
    dropped: () => {
      this.#dropped++;
    },
  };

  /** @internal */
  get claimedDeadLetters(): WeakSet<DeadLetter> {
    return this.#claimedDeadLetters;
  }
}

/**
 * The embedded transport and the reference implementation of the contract: wildcards,
 * fan-out to independent subscribers, consumer groups, ack/nack with redelivery and attempt
 * counts, delayed nack, a bounded in-memory DLQ, close with drain.
 *
 * Events are handed to subscribers by reference, not copied: treat them as immutable.
 * Several transports can share one {@link MemoryBroker}, like clients of one server.
 */
export class MemoryTransport implements Transport {
  readonly info = MEMORY_TRANSPORT_INFO;
  readonly broker: MemoryBroker;
  readonly #maxInFlight: number;
  readonly #subscriptions = new Set<MemorySubscription>();
  readonly #dlqConsumers = new Set<DlqConsumer>();
  readonly #errors = new Emitter<{ error: [error: WatchtowerError] }>();
  #closed = false;
  #closing: Promise<void> | undefined;
  #drained: (() => void) | undefined;

  constructor(options: MemoryTransportOptions = {}) {
    rejectUnknownOptions(
      options,
      ['broker', 'maxInFlight', 'deadLetterQueue', 'clock', 'maxPending'],
      'MemoryTransport',
    );
    const maxInFlight = options.maxInFlight ?? DEFAULT_MEMORY_TRANSPORT_OPTIONS.maxInFlight;
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
      throw configError('maxInFlight', 'must be an integer >= 1');
    }
    if (
      options.broker !== undefined &&
      (options.deadLetterQueue !== undefined ||
        options.clock !== undefined ||
        options.maxPending !== undefined)
    ) {
      throw configError(
        'broker',
        'give deadLetterQueue, clock and maxPending to the MemoryBroker, not to the transport',
      );
    }
    this.#maxInFlight = maxInFlight;
    const { deadLetterQueue, clock, maxPending } = options;
    this.broker =
      options.broker ??
      new MemoryBroker({
        ...(deadLetterQueue === undefined ? {} : { deadLetterQueue }),
        ...(clock === undefined ? {} : { clock }),
        ...(maxPending === undefined ? {} : { maxPending }),
      });
  }

  /** The dead-letter queue of this transport's broker. */
  get deadLetterQueue(): DeadLetterQueue {
    return this.broker.deadLetterQueue;
  }

  /** Nothing to connect to; rejects with `CLOSED` after `close()`. */
  connect(): Promise<void> {
    return this.#closed ? rejectClosed() : Promise.resolve();
  }

  /** Hands the event to every matching group; resolves at once. */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    if (this.#closed) return rejectClosed();
    // Handing the event over is immediate, so a signal can only stop it before it starts.
    if (options?.signal?.aborted === true) return rejectAborted(options.signal);
    try {
      checkOptionKeys(options, TRANSPORT_OPTION_KEYS.publish, 'publish options');
      assertEventType(event.type);
    } catch (error) {
      return Promise.reject(error);
    }
    const congested = this.broker.route(event.type, {
      event,
      raw: undefined,
      error: undefined,
      origin: event.type,
      attempt: 1,
    });
    return congested === undefined ? RESOLVED : waitForRoom(congested);
  }

  /**
   * Delivers bytes as if they had arrived on the wire under `type`: valid Watchtower JSON
   * arrives as an event, anything else as a malformed delivery. For tests of bad input.
   */
  publishRaw(type: string, raw: Uint8Array): Promise<void> {
    if (this.#closed) return rejectClosed();
    try {
      assertEventType(type);
    } catch (error) {
      return Promise.reject(error);
    }
    let message: Message;
    try {
      message = {
        event: decodeEvent(raw),
        raw: undefined,
        error: undefined,
        origin: type,
        attempt: 1,
      };
    } catch (error) {
      const failure =
        error instanceof SerializationError
          ? error
          : new SerializationError(String(error), raw, { cause: error });
      message = { event: undefined, raw, error: failure, origin: type, attempt: 1 };
    }
    const congested = this.broker.route(type, message);
    return congested === undefined ? RESOLVED : waitForRoom(congested);
  }

  subscribe(
    pattern: string,
    options: TransportSubscribeOptions = {},
  ): Promise<TransportSubscription> {
    if (this.#closed) return rejectClosed();
    try {
      checkOptionKeys(options, TRANSPORT_OPTION_KEYS.subscribe, 'subscribe options');
      assertPattern(pattern);
      if (options.startFrom !== undefined && options.startFrom !== 'new') {
        throw configError(
          'startFrom',
          'the memory transport keeps no history; only "new" is supported',
        );
      }
      const maxInFlight = options.maxInFlight ?? this.#maxInFlight;
      if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
        throw configError('maxInFlight', 'must be an integer >= 1');
      }
      if (
        options.group !== undefined &&
        (typeof options.group !== 'string' || options.group.length === 0)
      ) {
        throw configError('group', 'must be a non-empty string');
      }
      const group = this.broker.groupFor(pattern, options.group);
      const subscription = new MemorySubscription(group, maxInFlight, (sub) => this.#settled(sub));
      this.#subscriptions.add(subscription);
      group.join(subscription);
      return Promise.resolve(subscription);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Failures no caller can be told about: a `consumeDlq` handler that threw (`HANDLER_FAILED`;
   * the letter stays in the queue). The `EventBus` reports them on its own listeners.
   */
  on(name: 'error', listener: (error: WatchtowerError) => void): () => void {
    return this.#errors.on(name, listener);
  }

  healthCheck(): Promise<HealthStatus> {
    return Promise.resolve(
      this.#closed
        ? { healthy: false, state: 'closed', message: 'memory transport is closed' }
        : { healthy: true, state: 'connected', latencyMs: 0 },
    );
  }

  /** Resolves when the dead letter is in the broker's queue. */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    if (this.#closed) return rejectClosed();
    const letter: DeadLetter =
      'raw' in message ? { raw: message.raw, reason } : { event: message, reason };
    await this.deadLetterQueue.add(letter);
  }

  /**
   * Calls `handler` for each dead letter, those already queued first (unless `fromStart` is
   * false). A letter is removed when the handler returns; when it throws, the letter stays in
   * the queue for a later consumer.
   */
  consumeDlq(
    handler: DeadLetterHandler,
    options: ConsumeDlqOptions = {},
  ): Promise<SubscriptionHandle> {
    if (this.#closed) return rejectClosed();
    const refused = rejectedForUnknownKeys(
      options,
      TRANSPORT_OPTION_KEYS.consumeDlq,
      'consumeDlq options',
    );
    if (refused !== undefined) return refused;
    if (options.group !== undefined) {
      // Consuming removes a letter from the broker's one queue: every consumer competes, so a
      // group that gets its own copy of every letter cannot be offered.
      return Promise.reject(
        configError('group', 'the memory transport has one dead-letter queue; omit group'),
      );
    }
    const consumer: DlqConsumer = new DlqConsumer(
      this.deadLetterQueue,
      this.broker.claimedDeadLetters,
      handler,
      () => this.#dlqConsumers.delete(consumer),
      (error) => this.#errors.emit('error', error),
    );
    this.#dlqConsumers.add(consumer);
    consumer.start(options.fromStart ?? true);
    return Promise.resolve(consumer);
  }

  /**
   * Stops accepting publishes, waits up to `timeoutMs` for handed-out deliveries to be acked
   * or nacked, then ends the subscriptions; what is still unacked goes back to its group (as
   * a broker does when a client disconnects). Idempotent.
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.#closing === undefined) {
      const refused = rejectedForUnknownKeys(options, TRANSPORT_OPTION_KEYS.close, 'close options');
      if (refused !== undefined) return refused;
    }
    this.#closing ??= this.#close(options.timeoutMs ?? 10_000);
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    // Draining: what is handed out may still be settled, but nothing new is handed out, or a
    // nack during close would come straight back and the drain would never finish.
    for (const subscription of this.#subscriptions) subscription.stopReceiving();
    if (this.#inFlight() > 0) {
      const clock = this.broker.clock;
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, timeoutMs);
        this.#drained = () => {
          clock.clearTimeout(timer);
          resolve();
        };
      });
      this.#drained = undefined;
    }
    for (const subscription of this.#subscriptions) subscription.disconnect();
    this.#subscriptions.clear();
    await Promise.allSettled([...this.#dlqConsumers].map((consumer) => consumer.unsubscribe()));
  }

  #inFlight(): number {
    let total = 0;
    for (const subscription of this.#subscriptions) total += subscription.inFlight;
    return total;
  }

  #settled(subscription: MemorySubscription): void {
    if (subscription.left && subscription.inFlight === 0) this.#subscriptions.delete(subscription);
    if (this.#drained !== undefined && this.#inFlight() === 0) this.#drained();
  }
}

/** One settled promise for every publish that needs no wait. */
const RESOLVED: Promise<void> = Promise.resolve();

function waitForRoom(groups: MemoryGroup[]): Promise<void> {
  return Promise.all(groups.map((group) => group.whenRoom())).then(() => undefined);
}

/** What a group reads from its broker. */
interface GroupLimits {
  clock(): Clock;
  maxPending(): number;
  dropped(): void;
}

function rejectAborted(signal: AbortSignal): Promise<never> {
  return Promise.reject(
    new WatchtowerError(ErrorCode.ABORTED, 'the publish was aborted before it started', {
      cause: signal.reason,
      retryable: false,
    }),
  );
}

function rejectClosed(): Promise<never> {
  return Promise.reject(new ClosedError('the memory transport is closed'));
}

/**
 * The unit that receives events for one pattern: a named consumer group, or the private group
 * of a subscription without one. Each event goes to one member, round robin among members
 * with room.
 */
class MemoryGroup {
  readonly #ready = new Fifo<Message>();
  readonly #members: MemorySubscription[] = [];
  readonly #timers = new Set<TimerHandle>();
  /** Publishers waiting for the members to catch up. */
  #roomWaiters: (() => void)[] = [];
  #next = 0;

  constructor(
    readonly key: string,
    readonly pattern: string,
    readonly name: string | undefined,
    private readonly limits: GroupLimits,
    private readonly onRemove: (() => void) | undefined,
  ) {}

  /**
   * Queues a message for the members. Returns true when the group now holds more than
   * `maxPending` untaken messages while it has members: the publisher should wait.
   */
  enqueue(message: Message): boolean {
    // Fast path: one member with room and nothing waiting ahead of this message.
    if (this.#ready.size === 0 && this.#members.length === 1) {
      const member = this.#members[0] as MemorySubscription;
      if (member.hasRoom()) {
        member.deliver(message);
        return false;
      }
    }
    this.#ready.push(message);
    this.dispatch();
    const maxPending = this.limits.maxPending();
    if (this.#ready.size <= maxPending) return false;
    if (this.#members.length > 0) return true;
    // Nobody is there to catch up: keep the newest, as a bounded queue with drop-head does.
    while (this.#ready.size > maxPending) {
      this.#ready.shift();
      this.limits.dropped();
    }
    return false;
  }

  /** Resolves once the group holds at most `maxPending` untaken messages, or has no members. */
  whenRoom(): Promise<void> {
    if (this.#hasRoom()) return Promise.resolve();
    return new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
  }

  #hasRoom(): boolean {
    return this.#members.length === 0 || this.#ready.size <= this.limits.maxPending();
  }

  #wakePublishers(): void {
    if (this.#roomWaiters.length === 0 || !this.#hasRoom()) return;
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  requeue(message: Message, delayMs: number): void {
    if (this.name === undefined && this.#members.length === 0) return;
    if (delayMs <= 0) {
      this.enqueue(message);
      return;
    }
    const timer = this.limits.clock().setTimeout(() => {
      this.#timers.delete(timer);
      this.enqueue(message);
    }, delayMs);
    this.#timers.add(timer);
  }

  dispatch(): void {
    const members = this.#members;
    while (this.#ready.size > 0 && members.length > 0) {
      let chosen: MemorySubscription | undefined;
      for (let i = 0; i < members.length; i++) {
        const candidate = members[(this.#next + i) % members.length] as MemorySubscription;
        if (candidate.hasRoom()) {
          chosen = candidate;
          this.#next = (this.#next + i + 1) % members.length;
          break;
        }
      }
      if (chosen === undefined) break;
      chosen.deliver(this.#ready.shift() as Message);
    }
    this.#wakePublishers();
  }

  join(member: MemorySubscription): void {
    this.#members.push(member);
    this.dispatch();
  }

  /** A member left; what it held and never handed out goes back to the group. */
  leave(member: MemorySubscription, unseen: readonly Message[]): void {
    const index = this.#members.indexOf(member);
    if (index >= 0) this.#members.splice(index, 1);
    if (this.name === undefined) {
      this.#remove();
      return;
    }
    this.#wakePublishers();
    if (unseen.length > 0) {
      // They were handed out before anything now waiting, so they go first: publish order holds.
      const waiting = this.#ready.drain();
      for (const message of unseen) this.#ready.push(message);
      for (const message of waiting) this.#ready.push(message);
    }
    this.dispatch();
  }

  #remove(): void {
    for (const wake of this.#roomWaiters.splice(0)) wake();
    for (const timer of this.#timers) this.limits.clock().clearTimeout(timer);
    this.#timers.clear();
    this.#ready.drain();
    this.onRemove?.();
  }
}

class MemorySubscription implements TransportSubscription {
  readonly pattern: string;
  readonly #queue = new DeliveryBuffer<MemoryDelivery>({ track: false });
  /** Handed out (buffered or yielded) and not yet settled. */
  readonly #outstanding = new Set<MemoryDelivery>();
  #left = false;
  #receiving = true;

  constructor(
    private readonly group: MemoryGroup,
    private readonly maxInFlight: number,
    private readonly onSettled: (subscription: MemorySubscription) => void,
  ) {
    this.pattern = group.pattern;
  }

  get inFlight(): number {
    return this.#outstanding.size;
  }

  get left(): boolean {
    return this.#left;
  }

  hasRoom(): boolean {
    return this.#receiving && !this.#left && this.#outstanding.size < this.maxInFlight;
  }

  /** The transport is closing: keep what was handed out, take nothing new. */
  stopReceiving(): void {
    this.#receiving = false;
  }

  deliver(message: Message): void {
    const delivery = new MemoryDelivery(message, this);
    this.#outstanding.add(delivery);
    this.#queue.push(delivery);
  }

  /** Stops delivery; deliveries already yielded can still be acked or nacked. */
  unsubscribe(): Promise<void> {
    if (this.#left) return Promise.resolve();
    this.#left = true;
    // Buffered deliveries were never seen by the consumer: they go back unchanged.
    const unseen = this.#queue.drain();
    for (const delivery of unseen) {
      delivery.revoke();
      this.#outstanding.delete(delivery);
    }
    this.#queue.end();
    this.group.leave(
      this,
      unseen.map((delivery) => delivery.message),
    );
    this.onSettled(this);
    return Promise.resolve();
  }

  /** The client went away: unacked deliveries are redelivered, as after a lost connection. */
  disconnect(): void {
    void this.unsubscribe();
    for (const delivery of [...this.#outstanding]) void delivery.nack();
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return this.#queue;
  }

  tryNext(): Delivery | undefined {
    return this.#queue.tryNext();
  }

  /** @internal called by a delivery when it is acked, nacked or revoked. */
  settle(delivery: MemoryDelivery, requeue: Message | undefined, delayMs: number): void {
    this.#outstanding.delete(delivery);
    if (requeue !== undefined) this.group.requeue(requeue, delayMs);
    if (!this.#left) this.group.dispatch();
    this.onSettled(this);
  }
}

/** One handed-out message. Settling it twice is a no-op. */
class MemoryDelivery {
  readonly kind: 'event' | 'malformed';
  readonly event: Event;
  readonly raw: Uint8Array;
  readonly error: SerializationError;
  readonly attempt: number;
  readonly origin: string;
  #settled = false;

  constructor(
    readonly message: Message,
    private readonly subscription: MemorySubscription,
  ) {
    this.kind = message.event === undefined ? 'malformed' : 'event';
    this.event = message.event as Event;
    this.raw = message.raw as Uint8Array;
    this.error = message.error as SerializationError;
    this.attempt = message.attempt;
    this.origin = message.origin;
  }

  ack(): Promise<void> {
    if (!this.#settled) {
      this.#settled = true;
      this.subscription.settle(this, undefined, 0);
    }
    return RESOLVED;
  }

  nack(options?: NackOptions): Promise<void> {
    const refused = rejectedForUnknownKeys(options, TRANSPORT_OPTION_KEYS.nack, 'nack options');
    if (refused !== undefined) return refused;
    if (!this.#settled) {
      this.#settled = true;
      const again =
        options?.requeue === false
          ? undefined
          : { ...this.message, attempt: this.message.attempt + 1 };
      this.subscription.settle(this, again, options?.delayMs ?? 0);
    }
    return RESOLVED;
  }

  /** Taken back before the consumer saw it; later settling is ignored. */
  revoke(): void {
    this.#settled = true;
  }
}

/**
 * Feeds dead letters of an in-memory queue to a handler, one at a time. A letter is claimed
 * while its handler runs, so competing consumers never handle the same one; it is removed on
 * success and released (left in the queue) when the handler throws.
 */
class DlqConsumer implements SubscriptionHandle {
  static #seq = 0;
  readonly id = `dlq-consumer-${++DlqConsumer.#seq}`;
  readonly #pending = new Fifo<DeadLetter>();
  #removeListener: (() => void) | undefined;
  #running: Promise<void> = Promise.resolve();
  #draining = false;
  #stopped = false;

  constructor(
    private readonly queue: DeadLetterQueue,
    private readonly claimed: WeakSet<DeadLetter>,
    private readonly handler: DeadLetterHandler,
    private readonly onStop: () => void,
    private readonly onError: (error: WatchtowerError) => void,
  ) {}

  start(fromStart: boolean): void {
    if (fromStart) for (const letter of this.queue.list()) this.#pending.push(letter);
    this.#removeListener = this.queue.on('added', (letter) => {
      this.#pending.push(letter);
      this.#schedule();
    });
    this.#schedule();
  }

  unsubscribe(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#removeListener?.();
      this.onStop();
    }
    return this.#running;
  }

  #schedule(): void {
    if (this.#draining || this.#stopped) return;
    this.#draining = true;
    this.#running = this.#drain();
  }

  async #drain(): Promise<void> {
    try {
      let letter: DeadLetter | undefined;
      while (!this.#stopped && (letter = this.#pending.shift()) !== undefined) {
        if (this.claimed.has(letter)) continue;
        this.claimed.add(letter);
        try {
          await this.handler(letter);
          // It stays claimed: another consumer may still hold it in its pending list.
          this.queue.remove(letter);
        } catch (error) {
          // Not handled: the letter stays in the queue for a later consumer.
          this.claimed.delete(letter);
          this.onError(
            toWatchtowerError(
              error,
              ErrorCode.HANDLER_FAILED,
              `a dead-letter handler threw: ${describeError(error)}`,
            ),
          );
        }
      }
    } finally {
      this.#draining = false;
    }
  }
}
