/**
 * The in-process transport: a {@link MemoryBroker} (groups, their pending messages, the
 * dead-letter queue) and {@link MemoryTransport}, a client of it. It is the reference
 * implementation of the Transport contract, built from the transport kit like any other
 * transport, with nothing broker-specific in the way; it is also what tests and the quickstart
 * run on, so by default an event travels through core's codec as on a broker: encoded once on
 * publish, decoded for each delivery. Code tested here then meets what a broker would give it
 * (a payload's JSON form, an object of its own); `copy: 'reference'` opts out, knowingly.
 */
import { Buffer } from 'node:buffer';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { decodeEvent, encodeEvent } from './codec.js';
import { InMemoryDeadLetterQueue, type DeadLetterQueue } from './dead-letter-queue.js';
import {
  ErrorCode,
  SerializationError,
  configError,
  describeError,
  toWatchtowerError,
} from './errors.js';
import { assertEventType, type Event } from './event.js';
import { checkClock, checkInteger, checkOneOf, rejectUnknownOptions } from './options.js';
import { PatternIndex, assertPattern } from './pattern.js';
import {
  DeadLetterConsumer,
  type DeadLetterEntry,
  type DeadLetterSource,
} from './transport-kit/dead-letter-consumer.js';
import { isMalformedMessage } from './transport-kit/dead-letter-record.js';
import { DeliveryBuffer } from './transport-kit/delivery-buffer.js';
import { Fifo } from './transport-kit/fifo.js';
import { TransportLifecycle, type TransportErrorEvents } from './transport-kit/lifecycle.js';
import {
  checkConsumeDlqOptions,
  checkNackOptions,
  checkPublishOptions,
  checkSubscribeOptions,
  rejection,
} from './transport-kit/option-checks.js';
import { RESOLVED } from './transport-kit/resolved.js';
import { SourceSubscription, type DeliverySource } from './transport-kit/source-subscription.js';
import { throwIfAborted, type Deadline } from './transport-kit/timing.js';
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
  /**
   * How the events this transport publishes reach their subscribers.
   *
   * - `'codec'`: as on a broker. `publish()` encodes the event once with core's codec, however
   *   many groups it reaches, and rejects with `SERIALIZATION` when it cannot be written as
   *   JSON (a `BigInt`, a cycle); each delivery decodes its own copy. So a payload arrives in
   *   its JSON form (a `Date` as its ISO string, `undefined` fields gone), which is what
   *   schemas see on every transport; two subscribers never share an object, and a handler's
   *   change never reaches the publisher, another handler or a redelivery. Dead letters are
   *   stored as such a copy too.
   * - `'reference'`: in-process only, payloads shared by reference. Every subscriber gets the
   *   published object itself and nothing is encoded: faster, but a payload a broker would
   *   refuse or change passes here. Treat events as immutable.
   *
   * The publishing transport decides, also on a shared broker. Bytes given to `publishRaw`
   * are decoded for each delivery either way.
   * @defaultValue `'codec'`
   */
  copy?: 'codec' | 'reference';
}

/** Defaults of {@link MemoryTransportOptions}. */
export const DEFAULT_MEMORY_TRANSPORT_OPTIONS = {
  maxInFlight: 128,
  maxPending: 10_000,
  copy: 'codec',
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

/** With `copy: 'reference'` events are handed over as they are: the codec is not involved. */
const MEMORY_REFERENCE_INFO: TransportInfo = { ...MEMORY_TRANSPORT_INFO, encodes: false };

/**
 * A message waiting in a group: the published event itself (`copy: 'reference'`), or its wire
 * form (the codec's JSON, or bytes from `publishRaw`), which each delivery decodes afresh.
 */
interface Message {
  readonly event: Event | undefined;
  readonly wire: string | Uint8Array | undefined;
  readonly origin: string;
  readonly attempt: number;
}

/** What the codec makes of a wire form: the event, or why it is malformed (never throws). */
function decodeWire(wire: string | Uint8Array): Event | SerializationError {
  try {
    return decodeEvent(wire);
  } catch (error) {
    return error instanceof SerializationError
      ? error
      : new SerializationError(describeError(error), wireBytes(wire), { cause: error });
  }
}

function wireBytes(wire: string | Uint8Array): Uint8Array {
  return typeof wire === 'string' ? Buffer.from(wire, 'utf8') : wire;
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
    checkInteger('maxPending', maxPending, 1);
    if (options.clock !== undefined) checkClock('clock', options.clock);
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
 * Each delivery is its own decoded copy of what was published, as from a broker (see
 * {@link MemoryTransportOptions.copy} for the zero-copy alternative). Several transports can
 * share one {@link MemoryBroker}, like clients of one server.
 */
export class MemoryTransport implements Transport {
  readonly info: TransportInfo;
  readonly broker: MemoryBroker;
  readonly #maxInFlight: number;
  readonly #byReference: boolean;
  readonly #life: TransportLifecycle;
  readonly #members = new Set<MemoryMember>();
  readonly #dlqConsumers = new Set<DeadLetterConsumer>();
  #drained: (() => void) | undefined;

  constructor(options: MemoryTransportOptions = {}) {
    rejectUnknownOptions(
      options,
      ['broker', 'maxInFlight', 'deadLetterQueue', 'clock', 'maxPending', 'copy'],
      'MemoryTransport',
    );
    const maxInFlight = options.maxInFlight ?? DEFAULT_MEMORY_TRANSPORT_OPTIONS.maxInFlight;
    checkInteger('maxInFlight', maxInFlight, 1);
    const copy = options.copy ?? DEFAULT_MEMORY_TRANSPORT_OPTIONS.copy;
    checkOneOf('copy', copy, ['codec', 'reference']);
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
    this.#byReference = copy === 'reference';
    this.info = this.#byReference ? MEMORY_REFERENCE_INFO : MEMORY_TRANSPORT_INFO;
    const { deadLetterQueue, clock, maxPending } = options;
    this.broker =
      options.broker ??
      new MemoryBroker({
        ...(deadLetterQueue === undefined ? {} : { deadLetterQueue }),
        ...(clock === undefined ? {} : { clock }),
        ...(maxPending === undefined ? {} : { maxPending }),
      });
    this.#life = new TransportLifecycle({
      name: 'the memory transport',
      clock: this.broker.clock,
      closeTimeoutMs: 10_000,
      mapError: (error, operation) =>
        toWatchtowerError(error, ErrorCode.TRANSPORT, `${operation}: ${describeError(error)}`),
    });
  }

  /** The dead-letter queue of this transport's broker. */
  get deadLetterQueue(): DeadLetterQueue {
    return this.broker.deadLetterQueue;
  }

  /** Nothing to connect to; rejects with `CLOSED` after `close()`. */
  connect(): Promise<void> {
    return this.#life.connect(() => RESOLVED);
  }

  /**
   * Hands the event to every matching group; resolves at once unless a group is over
   * `maxPending`. Rejects with `SERIALIZATION` when the event cannot be encoded (unless
   * `copy` is `'reference'`), whether or not a group matches, as a broker transport does.
   */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    let message: Message;
    try {
      this.#life.assertOpen('publish');
      if (options !== undefined) {
        checkPublishOptions(options);
        // Handing the event over is immediate, so a signal can only stop it before it starts.
        throwIfAborted(options.signal, 'the publish');
      }
      assertEventType(event.type);
      // Encoded here, once: every group gets the same text, and each delivery decodes it.
      message = this.#byReference
        ? { event, wire: undefined, origin: event.type, attempt: 1 }
        : { event: undefined, wire: encodeEvent(event), origin: event.type, attempt: 1 };
    } catch (error) {
      return Promise.reject(error);
    }
    const congested = this.broker.route(event.type, message);
    return congested === undefined ? RESOLVED : waitForRoom(congested);
  }

  /**
   * Delivers bytes as if they had arrived on the wire under `type`: each delivery decodes
   * them, so valid Watchtower JSON arrives as an event, anything else as a malformed delivery.
   * For tests of bad input.
   */
  publishRaw(type: string, raw: Uint8Array): Promise<void> {
    try {
      this.#life.assertOpen('publish');
      assertEventType(type);
    } catch (error) {
      return Promise.reject(error);
    }
    const congested = this.broker.route(type, {
      event: undefined,
      wire: raw,
      origin: type,
      attempt: 1,
    });
    return congested === undefined ? RESOLVED : waitForRoom(congested);
  }

  /**
   * Joins the group `options.group` (or a private group of its own) on `pattern`. Only
   * `startFrom: 'new'`: the broker keeps no history.
   */
  subscribe(pattern: string, options?: TransportSubscribeOptions): Promise<TransportSubscription> {
    try {
      this.#life.assertOpen('subscribe');
      const checked = checkSubscribeOptions(options, {
        startFrom: ['new'],
        startFromHint: 'the memory transport keeps no history',
      });
      assertPattern(pattern);
      const group = this.broker.groupFor(pattern, checked.group);
      const member: MemoryMember = new MemoryMember(
        group,
        checked.maxInFlight ?? this.#maxInFlight,
        () => this.#settled(member),
      );
      this.#members.add(member);
      group.join(member);
      return Promise.resolve(new SourceSubscription(pattern, member, { clock: this.broker.clock }));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Failures no caller can be told about: a `consumeDlq` handler that threw (`HANDLER_FAILED`;
   * the letter stays in the queue). The `EventBus` reports them on its own listeners.
   */
  on<K extends keyof TransportErrorEvents>(
    name: K,
    listener: (...args: TransportErrorEvents[K]) => void,
  ): () => void {
    return this.#life.on(name, listener);
  }

  healthCheck(): Promise<HealthStatus> {
    return Promise.resolve(
      this.#life.closed
        ? { healthy: false, state: 'closed', message: 'the memory transport is closed' }
        : { healthy: true, state: 'connected', latencyMs: 0 },
    );
  }

  /**
   * Resolves when the dead letter is in the broker's queue. An event is stored as the codec
   * would give it back (unless `copy` is `'reference'`): rejects with `SERIALIZATION` when it
   * cannot be encoded, as a broker transport does.
   */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    this.#life.assertOpen('publish a dead letter');
    await this.deadLetterQueue.add(this.#deadLetter(message, reason));
  }

  #deadLetter(message: Event | MalformedMessage, reason: DeadLetterReason): DeadLetter {
    if (isMalformedMessage(message)) return { raw: message.raw, reason };
    if (this.#byReference) return { event: message, reason };
    const wire = encodeEvent(message);
    const copy = decodeWire(wire);
    // An event built by hand may encode but not decode; a broker's queue would hold its bytes.
    return copy instanceof SerializationError
      ? { raw: copy.raw ?? wireBytes(wire), reason }
      : { event: copy, reason };
  }

  /**
   * Calls `handler` for each dead letter, those already queued first (unless `fromStart` is
   * false). A letter is removed when the handler returns; when it throws, the letter stays in
   * the queue for a later consumer. Every consumer competes for the one queue, so `group` is
   * refused.
   */
  consumeDlq(handler: DeadLetterHandler, options?: ConsumeDlqOptions): Promise<SubscriptionHandle> {
    try {
      this.#life.assertOpen('consume dead letters');
      const { fromStart } = checkConsumeDlqOptions(handler, options, {
        groupUnsupported: 'the memory transport has one dead-letter queue; omit group',
      });
      const consumer: DeadLetterConsumer = new DeadLetterConsumer({
        id: `memory-dlq-${++dlqConsumerSeq}`,
        source: new MemoryDeadLetterSource(
          this.deadLetterQueue,
          this.broker.claimedDeadLetters,
          fromStart,
        ),
        handler,
        afterFailure: 'the letter stays in the queue for a later consumer',
        clock: this.broker.clock,
        report: (error) => this.#life.report(error),
        mapError: (error, operation) =>
          toWatchtowerError(error, ErrorCode.TRANSPORT, `${operation}: ${describeError(error)}`),
        onStop: () => this.#dlqConsumers.delete(consumer),
      });
      this.#dlqConsumers.add(consumer);
      return Promise.resolve(consumer.start());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Stops accepting publishes, waits up to `timeoutMs` for handed-out deliveries to be acked
   * or nacked, then ends the subscriptions; what is still unacked goes back to its group (as
   * a broker does when a client disconnects). Idempotent.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      (deadline) => this.#close(deadline),
      () => this.#disconnectAll(),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(deadline: Deadline): Promise<void> {
    // Draining: what is handed out may still be settled, but nothing new is handed out, or a
    // nack during close would come straight back and the drain would never finish.
    for (const member of this.#members) member.stopReceiving();
    if (this.#inFlight() > 0) {
      await deadline.within(new Promise<void>((resolve) => (this.#drained = resolve)));
      this.#drained = undefined;
    }
    this.#disconnectAll();
    await Promise.allSettled([...this.#dlqConsumers].map((consumer) => consumer.unsubscribe()));
  }

  #disconnectAll(): void {
    for (const member of this.#members) member.disconnect();
    this.#members.clear();
  }

  #inFlight(): number {
    let total = 0;
    for (const member of this.#members) total += member.inFlight;
    return total;
  }

  #settled(member: MemoryMember): void {
    if (member.left && member.inFlight === 0) this.#members.delete(member);
    if (this.#drained !== undefined && this.#inFlight() === 0) this.#drained();
  }
}

let dlqConsumerSeq = 0;

function waitForRoom(groups: MemoryGroup[]): Promise<void> {
  return Promise.all(groups.map((group) => group.whenRoom())).then(() => undefined);
}

/** What a group reads from its broker. */
interface GroupLimits {
  clock(): Clock;
  maxPending(): number;
  dropped(): void;
}

/**
 * The unit that receives events for one pattern: a named consumer group, or the private group
 * of a subscription without one. Each event goes to one member, round robin among members
 * with room.
 */
class MemoryGroup {
  readonly #ready = new Fifo<Message>();
  readonly #members: MemoryMember[] = [];
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
      const member = this.#members[0] as MemoryMember;
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
      let chosen: MemoryMember | undefined;
      for (let i = 0; i < members.length; i++) {
        const candidate = members[(this.#next + i) % members.length] as MemoryMember;
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

  join(member: MemoryMember): void {
    this.#members.push(member);
    this.dispatch();
  }

  /** A member left; what it held and never handed out goes back to the group. */
  leave(member: MemoryMember, unseen: readonly Message[]): void {
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

/**
 * One subscription's membership of its group: the group hands it messages while it has room,
 * and it holds them as deliveries in a buffer that the subscription iterates.
 */
class MemoryMember implements DeliverySource {
  readonly #buffer = new DeliveryBuffer<MemoryDelivery>();
  #left = false;
  #receiving = true;

  constructor(
    private readonly group: MemoryGroup,
    private readonly maxInFlight: number,
    private readonly onSettled: () => void,
  ) {}

  /** Deliveries held: buffered or handed out, not yet settled. */
  get inFlight(): number {
    return this.#buffer.size + this.#buffer.handedOut;
  }

  get left(): boolean {
    return this.#left;
  }

  hasRoom(): boolean {
    return this.#receiving && !this.#left && this.inFlight < this.maxInFlight;
  }

  /** The transport is closing: keep what was handed out, take nothing new. */
  stopReceiving(): void {
    this.#receiving = false;
  }

  deliver(message: Message): void {
    this.#buffer.push(new MemoryDelivery(message, this));
  }

  /** Leaves the group; deliveries already handed out can still be acked or nacked. */
  stop(): Promise<void> {
    if (this.#left) return RESOLVED;
    this.#left = true;
    // Buffered deliveries were never seen by the consumer: they go back unchanged.
    const unseen = this.#buffer.drain();
    for (const delivery of unseen) delivery.revoke();
    this.#buffer.end();
    this.group.leave(
      this,
      unseen.map((delivery) => delivery.message),
    );
    this.onSettled();
    return RESOLVED;
  }

  /** The client went away: unacked deliveries are redelivered, as after a lost connection. */
  disconnect(): void {
    void this.stop();
    for (const delivery of this.#buffer.takeUnsettled()) void delivery.nack();
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return this.#buffer;
  }

  tryNext(): Delivery | undefined {
    return this.#buffer.tryNext();
  }

  /** @internal called by a delivery when it is acked or nacked. */
  settle(delivery: MemoryDelivery, requeue: Message | undefined, delayMs: number): void {
    this.#buffer.settled(delivery);
    if (requeue !== undefined) this.group.requeue(requeue, delayMs);
    if (!this.#left) this.group.dispatch();
    this.onSettled();
  }
}

/**
 * One handed-out message, decoded for this delivery alone when it travels as its wire form.
 * Settling it twice is a no-op.
 */
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
    private readonly member: MemoryMember,
  ) {
    const wire = message.wire;
    const decoded = wire === undefined ? (message.event as Event) : decodeWire(wire);
    if (decoded instanceof SerializationError) {
      this.kind = 'malformed';
      this.event = undefined as unknown as Event;
      this.raw = decoded.raw ?? wireBytes(wire as string | Uint8Array);
      this.error = decoded;
    } else {
      this.kind = 'event';
      this.event = decoded;
      this.raw = undefined as unknown as Uint8Array;
      this.error = undefined as unknown as SerializationError;
    }
    this.attempt = message.attempt;
    this.origin = message.origin;
  }

  ack(): Promise<void> {
    if (!this.#settled) {
      this.#settled = true;
      this.member.settle(this, undefined, 0);
    }
    return RESOLVED;
  }

  nack(options?: NackOptions): Promise<void> {
    if (options !== undefined) {
      const refused = rejection(() => checkNackOptions(options));
      if (refused !== undefined) return refused;
    }
    if (!this.#settled) {
      this.#settled = true;
      const again =
        options?.requeue === false
          ? undefined
          : { ...this.message, attempt: this.message.attempt + 1 };
      this.member.settle(this, again, options?.delayMs ?? 0);
    }
    return RESOLVED;
  }

  /** Taken back before the consumer saw it; later settling is ignored. */
  revoke(): void {
    this.#settled = true;
  }
}

/**
 * The dead letters of an in-memory queue as a {@link DeadLetterSource}: those queued at the
 * start (with `fromStart`), then each one added. A letter is claimed while a handler has it,
 * so competing consumers never handle the same one; it is removed on ack and released (left in
 * the queue for a later consumer) when the handler throws.
 */
class MemoryDeadLetterSource implements DeadLetterSource {
  readonly #letters = new DeliveryBuffer<DeadLetter>({ track: false });
  readonly #removeListener: () => void;

  constructor(
    private readonly queue: DeadLetterQueue,
    private readonly claimed: WeakSet<DeadLetter>,
    fromStart: boolean,
  ) {
    if (fromStart) for (const letter of queue.list()) this.#letters.push(letter);
    this.#removeListener = queue.on('added', (letter) => void this.#letters.push(letter));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<DeadLetterEntry> {
    for await (const letter of this.#letters) {
      if (this.claimed.has(letter)) continue;
      this.claimed.add(letter);
      yield {
        letter,
        attempt: 1,
        origin: 'the memory dead-letter queue',
        // It stays claimed: another consumer may still hold it in its own list.
        ack: () => void this.queue.remove(letter),
        retryLater: () => void this.claimed.delete(letter),
      };
    }
  }

  stop(): Promise<void> {
    this.#removeListener();
    this.#letters.end();
    return RESOLVED;
  }
}
