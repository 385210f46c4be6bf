/**
 * Where a subscription's messages come from: a core NATS subscription ({@link CoreSource}) or a
 * JetStream pull consumer ({@link PullSource}). Both take messages in the client's callback and
 * push them, mapped, into the one `DeliveryBuffer` that the subscriber iterates: one hand-off
 * per message instead of the client's async iterator plus a generator on top of it, the hot
 * path of every delivery.
 *
 * Separate from the transport because this is where the driver's subscription APIs are met.
 * Nothing here may block the client's callback or wait for the server without a time limit;
 * failures go to the callbacks given, nothing here reports or dead-letters by itself.
 */
import {
  JetStreamApiCodes,
  JetStreamApiError,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type ConsumerUpdateConfig,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { ConnectionError, type Clock, type TimerHandle } from '@watchtower/core';
import {
  Backoff,
  DeliveryBuffer,
  Pause,
  repeat,
  unrefTimer,
  within,
} from '@watchtower/core/transport-kit';
import { mapNatsError } from './map-error.js';

/**
 * What the transport keeps of a subscription's source: iterate it, stop it, and at close hand
 * back what it handed out and nobody settled.
 */
export interface MessageSource<T> extends AsyncIterable<T> {
  /** An item already received, taken without waiting, or undefined. */
  tryNext(): T | undefined;
  /**
   * Stops delivery and ends iteration; idempotent. What was received but not yet taken is not
   * handed out (a JetStream source gives it back to the server at once).
   */
  stop(): Promise<void>;
  /** Handed out, not settled: removed and returned, for close to hand back. */
  takeUnsettled(): T[];
  /** Resolves once nothing handed out is left unsettled. */
  whenIdle(): Promise<void>;
}

/** Settings of a {@link CoreSource}. */
export interface CoreSourceOptions<T> {
  readonly subject: string;
  /** The queue group, if any. */
  readonly queue: string | undefined;
  /** Turns a message into what the iterator yields. */
  readonly map: (msg: Msg) => T;
  /**
   * Messages held in the client, received and not yet taken. Core NATS delivers at most once
   * and does not wait for a slow subscriber; beyond this, arriving messages are dropped (as
   * the server drops them for a slow consumer) instead of growing the process without bound.
   */
  readonly pending: number;
  /** Told how many messages were dropped: at once for the first, then at most once a second. */
  readonly onDropped: (dropped: number, limit: number) => void;
  readonly clock: Clock;
  /** How long `stop()` waits for the server to confirm the unsubscribe. */
  readonly stopTimeoutMs: number;
}

/** A core NATS subscription (optionally in a queue group). The client resubscribes after reconnects. */
export class CoreSource<T> implements MessageSource<T> {
  readonly #queue = new DeliveryBuffer<T>({ track: false, onReturn: () => void this.stop() });
  readonly #nc: NatsConnection;
  readonly #sub: Subscription;
  readonly #drops: DropCounter;
  readonly #options: CoreSourceOptions<T>;
  #stopping: Promise<void> | undefined;

  constructor(nc: NatsConnection, options: CoreSourceOptions<T>) {
    this.#nc = nc;
    this.#options = options;
    const { subject, queue, map, pending } = options;
    const items = this.#queue;
    const drops = new DropCounter(options.clock, (dropped) => options.onDropped(dropped, pending));
    this.#drops = drops;
    this.#sub = nc.subscribe(subject, {
      ...(queue === undefined ? {} : { queue }),
      callback: (error, msg) => {
        if (error !== null) {
          items.fail(mapNatsError(error, `subscription to ${subject}`));
          return;
        }
        // A message handed to a waiting reader is not held: size stays 0 then.
        if (items.size >= pending) drops.count();
        else items.push(map(msg));
      },
    });
    // The server refused the subscription, or the connection closed for good (reconnect
    // attempts ran out) without stop(): iteration fails, so the consumer learns it is over.
    // After stop() iteration has ended already, and this changes nothing.
    void this.#sub.closed.then(
      (error) =>
        items.fail(
          error instanceof Error
            ? mapNatsError(error, `subscription to ${subject}`)
            : connectionLost(subject),
        ),
      (error: unknown) => items.fail(mapNatsError(error, `subscription to ${subject}`)),
    );
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.#queue;
  }

  tryNext(): T | undefined {
    return this.#queue.tryNext();
  }

  /** Core NATS deliveries are never settled: nothing to hand back. */
  takeUnsettled(): T[] {
    return [];
  }

  whenIdle(): Promise<void> {
    return this.#queue.whenIdle();
  }

  /**
   * Unsubscribes; resolves once the server has taken the unsubscribe in, so nothing published
   * after that is routed here (a queue group's other members get it), or after `stopTimeoutMs`
   * when the server does not answer. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    // At most once: what was received and not yet taken is dropped.
    this.#queue.end();
    this.#queue.drain();
    this.#drops.stop();
    try {
      this.#sub.unsubscribe();
    } catch {
      // The connection is already closed, and with it the subscription.
    }
    if (this.#nc.isClosed()) return;
    // The server answers the flush after it has handled the UNSUB written before it. A server
    // that does not answer leaves the flush pending, also after the connection is closed.
    const flushed = this.#nc.flush().catch(() => {
      // Closed or lost meanwhile: the server has dropped the subscription with the connection.
    });
    await within(this.#options.clock, this.#options.stopTimeoutMs, flushed);
  }
}

/**
 * Counts dropped messages and tells `report` about them: the first of a burst at once (on a
 * timer, not inside the client's callback), then at most once a second while drops go on.
 */
class DropCounter {
  #dropped = 0;
  #lastReport = Number.NEGATIVE_INFINITY;
  #timer: TimerHandle | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly report: (dropped: number) => void,
  ) {}

  count(): void {
    this.#dropped++;
    if (this.#timer !== undefined) return;
    const wait = Math.max(0, this.#lastReport + 1000 - this.clock.now());
    this.#timer = this.clock.setTimeout(() => this.#flush(), wait);
    unrefTimer(this.#timer);
  }

  /** Reports what is still untold and stops the timer. */
  stop(): void {
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    this.#flush();
  }

  #flush(): void {
    this.#timer = undefined;
    if (this.#dropped === 0) return;
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#lastReport = this.clock.now();
    this.report(dropped);
  }
}

/** What a {@link PullSource} yields: something made of a pulled message. */
export interface Pulled {
  readonly msg: JsMsg;
}

/** What a {@link PullSource} needs to (re)create its consumer. */
export interface PullSourceOptions<T> {
  readonly jsm: JetStreamManager;
  readonly js: JetStreamClient;
  readonly stream: string;
  /** Consumer config; `durable_name` is its name. */
  readonly config: Partial<ConsumerConfig> & { durable_name: string };
  /**
   * A group consumer may already exist (another member made it): use it as it is. Otherwise
   * the consumer is created with `config`.
   */
  readonly shared: boolean;
  /** Delete the consumer on `stop()` (a subscription without a group). */
  readonly deleteOnStop: boolean;
  /** Messages pulled per request. */
  readonly batch: number;
  /**
   * Keep what was handed out until it is settled, for `takeUnsettled()` at close. Off where
   * the owner settles each item before it takes the next (`consumeDlq`).
   */
  readonly track: boolean;
  readonly clock: Clock;
  /** Recreates the stream when it is gone (a broker that lost its storage). */
  readonly ensureStream: () => Promise<void>;
  /** False once the connection is closed for good: then the source ends instead of retrying. */
  readonly alive: () => boolean;
  /** Turns a message into what the iterator yields. */
  readonly map: (msg: JsMsg) => T;
  /** Gives back to the server an item that was mapped but never taken. */
  readonly release: (item: T) => void;
  /**
   * A background step failed (recreating the consumer or its stream); the source tries again
   * after a pause. `operation` says what failed.
   */
  readonly reportError: (error: unknown, operation: string) => void;
}

/**
 * A JetStream pull consumer read with `consume()`. The client pulls again after a reconnect
 * by itself; on top of that, when the consumer or its stream disappears (deleted, or a broker
 * restarted without its storage) this source recreates them and goes on, so a subscription
 * outlives broker restarts. The consumer's `max_ack_pending` bounds what waits in the buffer.
 */
export class PullSource<T extends Pulled> implements MessageSource<T> {
  readonly #queue: DeliveryBuffer<T>;
  readonly #pause: Pause;
  /** Between attempts to recreate the consumer. */
  readonly #backoff = new Backoff({ baseMs: 200, maxMs: 5000 });
  /** The consumer's ack wait, from the server. */
  #ackWaitMs = 0;
  #stopKeepAlive: (() => void) | undefined;
  #messages: ConsumerMessages | undefined;
  #stopping: Promise<void> | undefined;
  #running: Promise<void> | undefined;

  constructor(private readonly options: PullSourceOptions<T>) {
    this.#queue = new DeliveryBuffer<T>({
      track: options.track,
      onReturn: () => void this.stop(),
    });
    this.#pause = new Pause(options.clock);
  }

  /** Creates (or finds) the consumer and starts pulling. Rejects with the driver's error. */
  async open(): Promise<void> {
    const messages = await this.#start();
    this.#running = this.#supervise(messages);
    if (this.#queue.ended) return;
    // A message waiting in the client buffer behind slow handlers would otherwise reach its
    // ack wait and be delivered again (a duplicate, and an attempt the handler never saw).
    const every = Math.max(10, Math.floor(this.#ackWaitMs / 3));
    this.#stopKeepAlive = repeat(
      this.options.clock,
      every,
      () => {
        for (const item of this.#queue.buffered()) item.msg.working();
      },
      () => {
        // The connection is gone; the ack wait brings the messages back.
      },
    );
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.#queue;
  }

  tryNext(): T | undefined {
    return this.#queue.tryNext();
  }

  /** The owner settled `item`: it is no longer handed back at close. */
  settled(item: T): void {
    this.#queue.settled(item);
  }

  takeUnsettled(): T[] {
    return this.#queue.takeUnsettled();
  }

  whenIdle(): Promise<void> {
    return this.#queue.whenIdle();
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    // The ended buffer is what stops the pull loop and the callback.
    this.#queue.end();
    this.#stopKeepAlive?.();
    this.#pause.wake();
    this.#messages?.stop();
    // Pulled but never handed out: give it back now rather than after the ack wait, so
    // another member of the group gets it at once.
    for (const item of this.#queue.drain()) this.#release(item);
    await this.#running;
    if (this.options.deleteOnStop) {
      try {
        await this.options.jsm.consumers.delete(
          this.options.stream,
          this.options.config.durable_name,
        );
      } catch {
        // Gone already, or the connection is; the server drops it after its inactive threshold.
      }
    }
  }

  #release(item: T): void {
    try {
      this.options.release(item);
    } catch {
      // The connection is gone; the ack wait brings it back.
    }
  }

  /** Restarts the pull loop whenever it ends while the source is still wanted. */
  async #supervise(first: ConsumerMessages): Promise<void> {
    let messages: ConsumerMessages | undefined = first;
    const queue = this.#queue;
    while (!queue.ended) {
      if (messages !== undefined) {
        await messages.closed().catch(() => undefined);
        messages = undefined;
        this.#messages = undefined;
      }
      if (queue.ended) break;
      if (!this.options.alive()) {
        // Closed for good without stop() (reconnect attempts ran out): say so.
        queue.fail(connectionLost(this.options.config.filter_subject ?? this.options.stream));
        break;
      }
      try {
        messages = await this.#start();
        this.#backoff.reset();
      } catch (error) {
        // Failed because stop() or the end of the connection came meanwhile: nothing to tell.
        if (queue.ended || !this.options.alive()) continue;
        const { stream, config } = this.options;
        this.options.reportError(
          error,
          `recreate consumer ${config.durable_name} on stream ${stream}`,
        );
        await this.#pause.sleep(this.#backoff.next());
      }
    }
  }

  async #start(): Promise<ConsumerMessages> {
    const info = await this.#ensureConsumer();
    // Nanoseconds; the server fills in its default (30 s) when a consumer sets none.
    this.#ackWaitMs = (info.config.ack_wait ?? 30_000_000_000) / 1_000_000;
    const consumer = this.options.js.consumers.getConsumerFromInfo(info);
    const { map } = this.options;
    const queue = this.#queue;
    const messages = await consumer.consume({
      max_messages: this.options.batch,
      expires: PULL_EXPIRES_MS,
      callback: (msg) => {
        if (!queue.ended) {
          queue.push(map(msg));
          return;
        }
        try {
          msg.nak();
        } catch {
          // The connection is gone; the ack wait brings it back.
        }
      },
    });
    this.#messages = messages;
    if (queue.ended) messages.stop();
    void this.#watch(messages);
    return messages;
  }

  /** Ends the current pull loop when the server says the consumer or stream is gone. */
  async #watch(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const status of messages.status()) {
        if (
          status.type === 'consumer_not_found' ||
          status.type === 'consumer_deleted' ||
          status.type === 'stream_not_found'
        ) {
          messages.stop();
          return;
        }
      }
    } catch {
      // The status stream ends with the messages; nothing to report.
    }
  }

  async #ensureConsumer(): Promise<ConsumerInfo> {
    const { jsm, stream, config, shared } = this.options;
    try {
      return await this.#findOrAdd(jsm, stream, config, shared);
    } catch (error) {
      if (!isApiError(error, JetStreamApiCodes.StreamNotFound)) throw error;
      await this.options.ensureStream();
      return this.#findOrAdd(jsm, stream, config, shared);
    }
  }

  async #findOrAdd(
    jsm: JetStreamManager,
    stream: string,
    config: Partial<ConsumerConfig> & { durable_name: string },
    shared: boolean,
  ): Promise<ConsumerInfo> {
    if (!shared) return jsm.consumers.add(stream, config);
    let info: ConsumerInfo;
    try {
      info = await jsm.consumers.info(stream, config.durable_name);
    } catch (error) {
      if (!isApiError(error, JetStreamApiCodes.ConsumerNotFound)) throw error;
      try {
        return await jsm.consumers.add(stream, config);
      } catch (addError) {
        // Another member of the group created it first.
        if (!(addError instanceof JetStreamApiError)) throw addError;
        info = await jsm.consumers.info(stream, config.durable_name);
      }
    }
    // The consumer outlives its members: options changed since it was made (a longer ack
    // wait, a max_deliver that fits the retry policy) must reach it, or they are ignored.
    const changes: Partial<ConsumerUpdateConfig> = {};
    for (const key of UPDATABLE) {
      const wanted = config[key];
      if (wanted !== undefined && info.config[key] !== wanted) changes[key] = wanted;
    }
    if (Object.keys(changes).length === 0) return info;
    return jsm.consumers.update(stream, config.durable_name, changes);
  }
}

/**
 * How long each pull request lasts (the client's default is 30 s). The client also waits this
 * long between its checks that the consumer exists after a reconnect, so on a cluster that is
 * still electing a leader a subscription took up to 30 s more to read again; with 5 s, an idle
 * consumer sends one pull request per 5 s and gets heartbeats every 2.5 s.
 */
const PULL_EXPIRES_MS = 5_000;

// Consumer settings the config owns that the server lets an existing consumer change.
const UPDATABLE = ['ack_wait', 'max_deliver', 'max_ack_pending'] as const;

/** True for a JetStream API error with the given error code. */
export function isApiError(error: unknown, code: number): boolean {
  return error instanceof JetStreamApiError && error.code === code;
}

function connectionLost(subject: string): ConnectionError {
  return new ConnectionError(
    `subscription to ${subject}: the NATS connection was closed (reconnect attempts ran out)`,
  );
}
