/**
 * The consume side of the `EventBus`: one `subscribe()` call as a {@link BusSubscription}
 * that reads its transport subscriptions, runs the handler under the concurrency limit and
 * timeout, and takes every delivery to exactly one end: acked after the handler succeeded,
 * handed back for a retry, or dead-lettered and then acked. It is separate from the publish
 * side because the two share nothing but the transport and the counters. It never acks a
 * delivery that was neither handled nor dead-lettered.
 */
import { sleep, type Clock, type TimerHandle } from './clock.js';
import {
  ClosedError,
  ErrorCode,
  TimeoutError,
  WatchtowerError,
  describeError,
  isWatchtowerError,
  toWatchtowerError,
  type ValidationError,
} from './errors.js';
import type { Event } from './event.js';
import type { CompiledPattern } from './pattern.js';
import { isRetryableError, type RetryPolicy } from './retry-policy.js';
import type { BusLog } from './logger.js';
import type { BusTelemetry, SubscriptionTelemetry } from './telemetry/bus-telemetry.js';
import { deadLetterReason, failureCode } from './transport-kit/dead-letter-record.js';
import { OrderedSlots } from './transport-kit/ordered-slots.js';
import { reduceDeadLetter } from './transport-kit/reduced-dead-letter.js';
import { repeat, type AbortScope } from './transport-kit/timing.js';
import type {
  DeadLetter,
  DeadLetterReason,
  Delivery,
  DeliveryReceiver,
  EventDelivery,
  StartPosition,
  SubscriptionHandle,
  Transport,
  TransportSubscription,
} from './transport.js';

/** `subscribe()` options with the bus's defaults applied and checked. */
export interface ResolvedSubscribeOptions {
  group: string | undefined;
  concurrency: number;
  timeoutMs: number;
  retry: RetryPolicy;
  maxInFlight: number | undefined;
  startFrom: StartPosition | undefined;
  name: string | undefined;
}

/** The counters of `EventBus.stats()`, kept by the bus and its subscriptions. */
export interface EventBusCounters {
  /** Publishes confirmed by the transport. */
  published: number;
  /** Publishes that rejected after admission (transport failure, circuit open, dropped). */
  publishFailed: number;
  /** Deliveries received from the transport. */
  received: number;
  /** Deliveries handled and acked. */
  handled: number;
  /** Handler failures (thrown, rejected or timed out). */
  handlerFailures: number;
  /** Failed deliveries handed back for another attempt. */
  retried: number;
  /** Events and malformed messages written to the dead-letter queue. */
  deadLettered: number;
  /** Payloads that failed their schema (publish and consume). */
  validationFailures: number;
  /** Deliveries whose bytes did not decode. */
  malformed: number;
  /**
   * Events whose type does not match the subscription they arrived on (a producer published
   * them where they do not belong): dead-lettered with code `MISROUTED`.
   */
  misrouted: number;
  /**
   * Dead letters stored in reduced form (reason, ids, size, the start of the body) because
   * the full record could never be stored (too large for the broker, say).
   */
  deadLettersReduced: number;
  /**
   * Dead-letter writes that failed for good: the delivery was handed back for a later try
   * (after a growing delay), or lost where the transport cannot deliver it again. Each is
   * also reported on the bus's `error` listeners.
   */
  deadLetterFailures: number;
}

/** What a handler learns about the delivery besides the event. */
export interface HandlerContext {
  /** 1 on first delivery. */
  readonly attempt: number;
  /** Aborts when the handler times out or the bus closes without waiting for it. */
  readonly signal: AbortSignal;
  /** The subscription's name. */
  readonly subscription: string;
}

/** Handles one event. Throwing (or rejecting) fails the delivery: it is retried, then dead-lettered. */
export type EventHandler<E extends Event = Event> = (event: E, context: HandlerContext) => unknown;

/** A consumed event after its schema: the (possibly transformed) event, or why it failed. */
export type ConsumedCheck = { event: Event } | { error: ValidationError };

/** What a subscription uses of its bus. */
export interface SubscriptionHost {
  readonly transport: Transport;
  readonly clock: Clock;
  /** Aborts when the bus closes: ends retry waits (a signal of its own per wait). */
  readonly closeScope: AbortScope;
  /** Retries writes that must not be given up easily (dead letters). */
  readonly writeRetry: RetryPolicy;
  readonly needsValidation: boolean;
  /** The bus's counters, incremented in place (a plain field store on the hot path). */
  readonly counters: EventBusCounters;
  reportError(error: unknown, context: { subscription?: string; eventId?: string }): void;
  /** The bus's logger: dead letters at warn, retries at debug. */
  readonly log: BusLog;
  emitDeadLetter(letter: DeadLetter): void;
  validateConsumed(event: Event): ConsumedCheck | Promise<ConsumedCheck>;
  /** Spans and metrics, when the bus has a provider. */
  readonly telemetry: BusTelemetry | undefined;
}

/**
 * One handler call: its context, and what the timeout sweep needs. A class with a prototype
 * getter, so the hot path allocates one small object per call and an AbortController only
 * when the handler reads `signal`.
 */
class Running implements HandlerContext {
  controller: AbortController | undefined = undefined;
  /** Ends the run as failed (the sweep found it past its deadline). */
  timedOut: ((failed: Failed) => void) | undefined = undefined;
  /** Set when the handler turns out to be asynchronous; the sweep times it out after it. */
  deadline = Number.POSITIVE_INFINITY;

  constructor(
    /** The delivery (or a retry's count): read only if asked, as brokers may parse it. */
    private readonly source: { readonly attempt: number },
    readonly subscription: string,
  ) {}

  get attempt(): number {
    return this.source.attempt;
  }

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }
}

/**
 * Deliveries beyond maxAttempts that an event may get before it is taken for one that
 * never settles. A consumer that stops hands back what it had fetched but not yet handed to a
 * handler, and a broker that counts every delivery (JetStream) counts those too: an event
 * caught that way in a couple of restarts still gets all its attempts.
 */
const UNSEEN_DELIVERIES = 2;

/** The handler finished without throwing. */
const DONE = Symbol('done');

/** No pattern of the subscription matches the event's type. */
const NO_PATTERN = -1;

/** The handler threw, rejected or timed out; `run` is the call's context (for telemetry). */
class Failed {
  constructor(
    readonly error: unknown,
    readonly run?: Running,
  ) {}
}

/** How a handler run ended: done, failed, or still running. */
type HandlerOutcome = typeof DONE | Failed | Pending;

/** A handler still running; `promise` settles with how it ended. Never rejects. */
class Pending {
  constructor(readonly promise: Promise<typeof DONE | Failed>) {}
}

let subscriptionSeq = 0;

/** One `subscribe()` call: a consume loop per pattern sharing one concurrency limit. */
export class BusSubscription implements SubscriptionHandle {
  readonly id = `sub-${++subscriptionSeq}`;
  readonly name: string;
  readonly #bus: SubscriptionHost;
  readonly #patterns: readonly CompiledPattern[];
  readonly #handler: EventHandler;
  readonly #options: ResolvedSubscribeOptions;
  readonly #redelivery: boolean;
  readonly #maxDeliveries: number;
  readonly #telemetry: SubscriptionTelemetry | undefined;
  /** Failures of events whose dead letter could not be written, by event id. */
  readonly #unwritten = new Map<string, unknown>();
  /** Asynchronous handler runs not finished (not a `Set`: see {@link OrderedSlots}). */
  readonly #running = new OrderedSlots<Running>();
  #transportSubs: TransportSubscription[] = [];
  #loops: Promise<void>[] = [];
  #active = 0;
  #slotWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];
  #stopSweep: (() => void) | undefined;
  #stopping: Promise<void> | undefined;
  #onStopped: (() => void) | undefined;

  constructor(
    bus: SubscriptionHost,
    patterns: readonly CompiledPattern[],
    handler: EventHandler,
    options: ResolvedSubscribeOptions,
  ) {
    this.#bus = bus;
    this.#patterns = patterns;
    this.#handler = handler;
    this.#options = options;
    this.#redelivery = bus.transport.info.capabilities.redelivery;
    // A handler gets maxAttempts deliveries; the broker counts them. More means that an
    // earlier one was never settled (the consumer stopped, or ran past the broker's ack wait).
    this.#maxDeliveries = this.#redelivery
      ? options.retry.maxAttempts + UNSEEN_DELIVERIES
      : Number.POSITIVE_INFINITY;
    this.name = options.name ?? options.group ?? patterns.map((p) => p.source).join(',');
    this.#telemetry = bus.telemetry?.forSubscription(patterns, options.group, this.name);
  }

  get active(): number {
    return this.#active;
  }

  start(transportSubs: TransportSubscription[], onStopped: () => void): void {
    this.#transportSubs = transportSubs;
    this.#onStopped = onStopped;
    this.#loops = transportSubs.map((sub, index) => this.#consume(sub, index));
    if (this.#options.timeoutMs > 0) {
      // One coarse sweep per subscription instead of a timer per delivery.
      const every = Math.max(5, Math.min(1000, Math.floor(this.#options.timeoutMs / 4)));
      this.#stopSweep = repeat(
        this.#bus.clock,
        every,
        () => this.#sweep(),
        (error) => this.#bus.reportError(error, { subscription: this.name }),
      );
    }
  }

  unsubscribe(): Promise<void> {
    return this.stop(Number.POSITIVE_INFINITY);
  }

  /** Stops pulling, then waits up to `timeoutMs` for running handlers. */
  stop(timeoutMs: number): Promise<void> {
    this.#stopping ??= this.#stop(timeoutMs);
    return this.#stopping;
  }

  async #stop(timeoutMs: number): Promise<void> {
    const results = await Promise.allSettled(this.#transportSubs.map((sub) => sub.unsubscribe()));
    // A loop holding a delivery while it waits for a slot hands it back now instead of
    // starting a handler after unsubscribe() was called.
    for (const waiter of this.#slotWaiters.splice(0)) waiter();
    if (this.#active > 0) {
      const clock = this.#bus.clock;
      let timer: TimerHandle | undefined;
      let timedOut = false;
      await new Promise<void>((resolve) => {
        this.#idleWaiters.push(resolve);
        if (Number.isFinite(timeoutMs)) {
          timer = clock.setTimeout(() => {
            timedOut = true;
            resolve();
          }, timeoutMs);
        }
      });
      if (timer !== undefined) clock.clearTimeout(timer);
      if (timedOut) {
        // Handlers still running past the deadline are told to stop; their deliveries are
        // settled by the transport's own close (requeued or redelivered).
        for (const running of this.#running.values())
          abortRunning(running, new ClosedError('the subscription stopped'));
      }
    }
    await Promise.allSettled(this.#loops);
    this.#stopSweep?.();
    this.#onStopped?.();
    const failed = results.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw toWatchtowerError(failed.reason);
  }

  async #consume(sub: TransportSubscription, index: number): Promise<void> {
    const iterator = sub[Symbol.asyncIterator]();
    // While the loop waits, what arrives with a slot free is handled at once, in the
    // transport's callback: no promise and no turn of the microtask queue per delivery.
    const receiver: DeliveryReceiver = {
      ready: () => this.#stopping === undefined && this.#active < this.#options.concurrency,
      take: (delivery) => {
        try {
          this.#start(delivery, index);
        } catch (error) {
          this.#bus.reportError(error, { subscription: this.name });
        }
      },
    };
    sub.receive?.(receiver);
    try {
      for (;;) {
        // Drain what is already buffered without a promise per delivery, then wait.
        let delivery = sub.tryNext?.();
        if (delivery === undefined) {
          const next = await iterator.next();
          if (next.done === true) break;
          delivery = next.value;
        }
        while (this.#stopping === undefined && this.#active >= this.#options.concurrency) {
          await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
        }
        if (this.#stopping !== undefined) {
          await this.#settleQuietly(delivery.nack(), delivery);
          continue;
        }
        this.#start(delivery, index);
      }
    } catch (error) {
      this.#bus.reportError(error, { subscription: this.name });
    } finally {
      sub.receive?.(undefined);
    }
  }

  /** Handles `delivery` in a slot of the concurrency limit, which it frees when done. */
  #start(delivery: Delivery, index: number): void {
    this.#active++;
    const pending = this.#process(delivery, index);
    if (pending === undefined) this.#release();
    else void pending.then(this.#release);
  }

  readonly #release = (): void => {
    this.#active--;
    const waiter = this.#slotWaiters.shift();
    if (waiter !== undefined) waiter();
    if (this.#active === 0 && this.#idleWaiters.length > 0) {
      for (const idle of this.#idleWaiters.splice(0)) idle();
    }
  };

  /**
   * Handles one delivery to its end (ack, retry or dead letter). Returns undefined when the
   * handler finished synchronously and only the ack is left in flight; the returned promise
   * never rejects.
   */
  #process(delivery: Delivery, index: number): Promise<void> | undefined {
    const bus = this.#bus;
    bus.counters.received++;
    this.#telemetry?.delivered(index);
    if (delivery.kind === 'malformed') {
      bus.counters.malformed++;
      return this.#guard(
        this.#deadLetter(
          delivery,
          { raw: delivery.raw, origin: delivery.origin },
          delivery.error,
          delivery.attempt,
        ),
        delivery,
      );
    }
    const owner = this.#ownerOf(delivery.event.type);
    if (owner !== index) {
      if (owner !== NO_PATTERN) {
        // An earlier pattern of this subscription has the event: handled once, there.
        this.#ackQuietly(delivery, false);
        return undefined;
      }
      bus.counters.misrouted++;
      return this.#guard(
        this.#deadLetter(delivery, delivery.event, this.#misrouted(delivery), delivery.attempt),
        delivery,
      );
    }
    const attempt = delivery.attempt;
    if (
      attempt > this.#maxDeliveries ||
      (this.#unwritten.size > 0 && this.#unwritten.has(delivery.event.id))
    ) {
      // Past its attempts (or its dead letter could not be written before): only the dead
      // letter is left to do.
      // Running it again would loop for good if it is what stops the consumer (a poison event).
      const id = delivery.event.id;
      const failure = this.#unwritten.get(id) ?? this.#unsettledTooOften(attempt);
      this.#unwritten.delete(id);
      return this.#guard(this.#deadLetter(delivery, delivery.event, failure, attempt), delivery);
    }
    if (!bus.needsValidation) return this.#handle(delivery, delivery.event);
    const checked = bus.validateConsumed(delivery.event);
    if (checked instanceof Promise) {
      return this.#guard(
        checked.then((settled) => this.#handleChecked(delivery, settled)),
        delivery,
      );
    }
    return this.#handleChecked(delivery, checked);
  }

  /** Keeps the failure of an event whose dead letter could not be written (at most 1000). */
  #rememberUnwritten(id: string, failure: unknown): void {
    this.#unwritten.delete(id);
    if (this.#unwritten.size >= 1000) {
      const oldest = this.#unwritten.keys().next();
      if (oldest.done !== true) this.#unwritten.delete(oldest.value);
    }
    this.#unwritten.set(id, failure);
  }

  #unsettledTooOften(attempt: number): WatchtowerError {
    return new WatchtowerError(
      ErrorCode.TIMEOUT,
      `delivered ${attempt} times, more than the ${this.#maxDeliveries} the retry policy allows ` +
        `(maxAttempts, and ${UNSEEN_DELIVERIES} a stopping consumer may have fetched without ` +
        'handing them out): an earlier delivery was never settled (the consumer stopped on it, ' +
        "or its handler outlived the broker's ack wait), so the handler does not run again",
    );
  }

  #handleChecked(delivery: EventDelivery, checked: ConsumedCheck): Promise<void> | undefined {
    if ('error' in checked) {
      return this.#guard(
        this.#deadLetter(delivery, delivery.event, checked.error, delivery.attempt),
        delivery,
      );
    }
    return this.#handle(delivery, checked.event);
  }

  /** Runs the handler; synchronous success acks without waiting (undefined). */
  #handle(delivery: EventDelivery, event: Event): Promise<void> | undefined {
    const outcome = this.#runHandler(event, delivery);
    if (outcome === DONE) {
      this.#ackQuietly(delivery, true);
      return undefined;
    }
    return this.#guard(this.#afterFailure(delivery, event, outcome), delivery);
  }

  /** Acks without waiting; counts the event as handled once the ack is through. */
  #ackQuietly(delivery: Delivery, handled: boolean): void {
    const acked = delivery.ack();
    // Transports that ack without waiting hand back one settled promise every time. Once it
    // is known to have resolved (a promise never changes its state), an ack returning it
    // needs no reaction and no microtask.
    if (acked === this.#resolvedAck) {
      if (handled) this.#bus.counters.handled++;
      return;
    }
    if (acked !== this.#lastAck) {
      this.#lastAck = acked;
      acked.then(handled ? this.#countHandled : undefined, this.#onAckFailed);
      return;
    }
    // The same promise twice: a shared one. Learn whether it resolved.
    acked.then(() => {
      this.#resolvedAck = acked;
      if (handled) this.#bus.counters.handled++;
    }, this.#onAckFailed);
  }

  /** The promise the last ack returned, and the last one seen to resolve. */
  #lastAck: Promise<void> | undefined;
  #resolvedAck: Promise<void> | undefined;

  readonly #countHandled = (): void => {
    this.#bus.counters.handled++;
  };
  readonly #onAckFailed = (error: unknown): void => {
    this.#bus.reportError(error, { subscription: this.name });
  };

  #guard(work: Promise<void>, delivery: Delivery): Promise<void> {
    return work.catch((error: unknown) => this.#reportFor(error, delivery));
  }

  #reportFor(error: unknown, delivery: Delivery): void {
    this.#bus.reportError(error, {
      subscription: this.name,
      ...(delivery.kind === 'event' ? { eventId: delivery.event.id } : {}),
    });
  }

  /**
   * The index of the first pattern that matches `type`, which handles the event (later
   * patterns of the same subscription ack their copy, so it is handled once), or
   * {@link NO_PATTERN} when none does: the event came where it does not belong.
   */
  #ownerOf(type: string): number {
    const patterns = this.#patterns;
    for (let i = 0; i < patterns.length; i++)
      if ((patterns[i] as CompiledPattern).matches(type)) return i;
    return NO_PATTERN;
  }

  #misrouted(delivery: EventDelivery): WatchtowerError {
    const patterns = this.#patterns.map((p) => `"${p.source}"`).join(', ');
    return new WatchtowerError(
      ErrorCode.MISROUTED,
      `event type "${delivery.event.type}" arrived on ${delivery.origin}, which the ` +
        `subscription's pattern ${patterns} does not match: its producer published it where ` +
        'it does not belong',
      { retryable: false },
    );
  }

  /**
   * Waits for a handler that returned a promise, and takes a failure through retry (nack with
   * delay, or in process on transports without redelivery) and then the dead-letter queue.
   */
  async #afterFailure(delivery: Delivery, event: Event, first: Failed | Pending): Promise<void> {
    const policy = this.#options.retry;
    let outcome: HandlerOutcome = first;
    for (let attempt = delivery.attempt; ; attempt++) {
      const ended = outcome instanceof Pending ? await outcome.promise : outcome;
      if (ended === DONE) {
        await delivery.ack();
        this.#bus.counters.handled++;
        return;
      }
      const failure = ended.error;
      this.#bus.counters.handlerFailures++;
      const retryable =
        !isWatchtowerError(failure, ErrorCode.NON_RETRYABLE) &&
        !isWatchtowerError(failure, ErrorCode.VALIDATION);
      if (
        !retryable ||
        !policy.canRetry(attempt - 1) ||
        (this.#stopping !== undefined && !this.#redelivery)
      ) {
        this.#telemetry?.failed(ended.run, failure, 'dead_letter');
        await this.#deadLetter(delivery, event, failure, attempt);
        return;
      }
      this.#bus.counters.retried++;
      this.#telemetry?.failed(ended.run, failure, 'retry');
      const delayMs = policy.delayFor(attempt);
      this.#bus.log.debug(
        {
          type: event.type,
          eventId: event.id,
          subscription: this.name,
          attempt,
          code: failureCode(failure),
          delayMs,
        },
        `attempt ${attempt} of ${event.type} ${event.id} failed; retrying in ${delayMs} ms: ${describeError(failure)}`,
      );
      // Transports without redelivery retry in process; the others hand the event back.
      if (this.#redelivery) {
        await delivery.nack({ delayMs });
        return;
      }
      try {
        await this.#bus.closeScope.run((signal) => sleep(this.#bus.clock, delayMs, signal));
      } catch {
        await this.#deadLetter(delivery, event, failure, attempt);
        return;
      }
      outcome = this.#runHandler(event, { attempt: attempt + 1 });
    }
  }

  /**
   * Runs the handler: `DONE` when it returned without a promise, `Failed` when it threw, or a
   * {@link Pending} that settles with either (a timeout is a failure).
   */
  #runHandler(event: Event, attempt: { readonly attempt: number }): HandlerOutcome {
    const running = new Running(attempt, this.name);
    let result: unknown;
    try {
      result =
        this.#telemetry === undefined
          ? this.#handler(event, running)
          : this.#telemetry.run(this.#handler, event, running);
    } catch (error) {
      return new Failed(error ?? new Error('handler threw undefined'), running);
    }
    if (!isPromiseLike(result)) return DONE;
    const timeoutMs = this.#options.timeoutMs;
    if (timeoutMs > 0) running.deadline = this.#bus.clock.now() + timeoutMs;
    this.#running.add(running);
    return new Pending(
      new Promise<typeof DONE | Failed>((resolve) => {
        running.timedOut = resolve;
        Promise.resolve(result).then(
          () => resolve(DONE),
          (error: unknown) =>
            resolve(new Failed(error ?? new Error('handler rejected with undefined'), running)),
        );
      }).finally(() => this.#running.delete(running)),
    );
  }

  #sweep(): void {
    const now = this.#bus.clock.now();
    const due: Running[] = [];
    for (const running of this.#running.values()) if (running.deadline <= now) due.push(running);
    for (const running of due) {
      this.#running.delete(running);
      const error = new TimeoutError(
        `handler of "${this.name}" did not finish within ${this.#options.timeoutMs} ms`,
        this.#options.timeoutMs,
      );
      abortRunning(running, error);
      running.timedOut?.(new Failed(error, running));
    }
  }

  /**
   * Writes the dead letter, then acks. A write that fails for a reason that may pass (the
   * broker is away) is retried with the bus's publish retry policy; one that can never succeed
   * as it is (too large, refused) is written again in reduced form (reason, ids, size, the
   * start of the body). When neither is stored the delivery is never acked unwritten: it is
   * handed back after the subscription's retry delay for its attempt number, which grows
   * with every try (exponential, with jitter), and reported on the bus's `error` listeners;
   * where the transport cannot deliver it again it is reported as lost.
   */
  async #deadLetter(
    delivery: Delivery,
    subject: Event | { raw: Uint8Array; origin: string },
    failure: unknown,
    attempts: number,
  ): Promise<void> {
    const bus = this.#bus;
    const reason = deadLetterReason({
      failure,
      attempts,
      message: subject,
      subscription: this.name,
      clock: bus.clock,
    });
    const eventId = 'raw' in subject ? undefined : subject.id;
    let stored: DeadLetter;
    try {
      stored = await this.#writeDeadLetter(subject, reason, delivery.origin);
    } catch (error) {
      bus.counters.deadLetterFailures++;
      if (eventId !== undefined) this.#rememberUnwritten(eventId, failure);
      const what =
        eventId === undefined
          ? `undecodable bytes from ${delivery.origin}`
          : `${(subject as Event).type} ${eventId}`;
      const delayMs = this.#options.retry.delayFor(Math.max(1, attempts));
      const fate = this.#redelivery
        ? `it is handed back and tried again in ${Math.round(delayMs)} ms`
        : `the ${bus.transport.info.name} transport cannot deliver it again, so it is lost`;
      bus.reportError(
        new WatchtowerError(
          toWatchtowerError(error).code,
          `the dead letter of ${what} could not be written (${describeError(error)}); ${fate}`,
          { cause: error },
        ),
        { subscription: this.name, ...(eventId === undefined ? {} : { eventId }) },
      );
      await this.#settleQuietly(delivery.nack({ delayMs }), delivery);
      return;
    }
    if (eventId !== undefined) this.#unwritten.delete(eventId);
    bus.counters.deadLettered++;
    this.#telemetry?.deadLettered('raw' in subject ? undefined : subject.type, reason.code);
    const type = 'raw' in subject ? subject.origin : subject.type;
    bus.log.warn(
      {
        type,
        ...(eventId === undefined ? {} : { eventId }),
        code: reason.code,
        attempts,
        subscription: this.name,
        ...(stored.reason.reduced === undefined ? {} : { reduced: true }),
      },
      `dead-lettered ${eventId === undefined ? `undecodable bytes from ${type}` : `${type} ${eventId}`} after ${attempts} attempt(s): ${reason.message}` +
        (stored.reason.reduced === undefined
          ? ''
          : ` (stored reduced: ${stored.reason.reduced.why})`),
    );
    bus.emitDeadLetter(stored);
    await delivery.ack();
  }

  /** Stores the dead letter, whole or else reduced; rejects when neither could be stored. */
  async #writeDeadLetter(
    subject: Event | { raw: Uint8Array; origin: string },
    reason: DeadLetterReason,
    origin: string,
  ): Promise<DeadLetter> {
    const bus = this.#bus;
    try {
      await bus.closeScope.run((signal) =>
        bus.writeRetry.execute(() => bus.transport.publishToDlq(subject, reason), { signal }),
      );
      return 'raw' in subject ? { raw: subject.raw, reason } : { event: subject, reason };
    } catch (error) {
      if (isRetryableError(error) || bus.closeScope.aborted) throw error;
      const reduced = reduceDeadLetter({ subject, reason, origin, refusal: error });
      await bus.transport.publishToDlq(reduced.message, reduced.reason);
      bus.counters.deadLettersReduced++;
      return { raw: reduced.message.raw, reason: reduced.reason };
    }
  }

  async #settleQuietly(settling: Promise<void>, delivery: Delivery): Promise<void> {
    try {
      await settling;
    } catch (error) {
      this.#bus.reportError(error, {
        subscription: this.name,
        ...(delivery.kind === 'event' ? { eventId: delivery.event.id } : {}),
      });
    }
  }
}

/**
 * Aborts a running handler's signal. The controller is made here when the handler has not
 * asked for its signal yet, so that a handler looking at it later still sees it aborted.
 */
function abortRunning(running: Running, reason: Error): void {
  running.controller ??= new AbortController();
  if (!running.controller.signal.aborted) running.controller.abort(reason);
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}
