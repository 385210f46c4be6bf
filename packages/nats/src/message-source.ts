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
import {
  ConnectionError,
} from '@watchtower/core';
import {
  DeliveryBuffer,
  Fifo,
} from '@watchtower/core/transport-kit';
import { mapNatsError } from './map-error.js';

/*
 * Both sources take messages in the client's callback and push them, mapped, into one
 * AsyncQueue that the subscriber iterates. That is one hand-off per message instead of the
 * client's async iterator plus a generator on top of it: the hot path of every delivery.
 */

/**
 * Where messages come from: a core NATS subscription or a JetStream pull consumer. Iterated
 * once; `map` turns each message into what the iterator yields.
 */
export interface MessageSource<T> extends AsyncIterable<T> {
  /**
   * Stops delivery; idempotent. What was received but not yet taken is not handed out (a
   * JetStream source gives it back to the server at once).
   */
  stop(): Promise<void>;
  readonly stopped: boolean;
  /** An item already received, taken without waiting, or undefined. */
  tryNext(): T | undefined;
}

/** Limits of a {@link CoreSource}. */
export interface CoreSourceLimits {
  /**
   * Messages held in the client, received and not yet taken. Core NATS delivers at most once
   * and does not wait for a slow subscriber; beyond this, arriving messages are dropped (as
   * the server drops them for a slow consumer) instead of growing the process without bound.
   */
  readonly pending: number;
  /** Told how many messages were dropped: at once for the first, then at most once a second. */
  readonly onDropped: (dropped: number, limit: number) => void;
}

/** A core NATS subscription (optionally in a queue group). The client resubscribes after reconnects. */
export class CoreSource<T> implements MessageSource<T> {
  readonly #queue = new DeliveryBuffer<T>({ track: false });
  readonly #nc: NatsConnection;
  readonly #sub: Subscription;
  readonly #drops: DropCounter;
  #stopped = false;
  #stopping: Promise<void> | undefined;

  constructor(
    nc: NatsConnection,
    subject: string,
    queue: string | undefined,
    map: (msg: Msg) => T,
    limits: CoreSourceLimits,
  ) {
    this.#nc = nc;
    const items = this.#queue;
    const drops = new DropCounter((dropped) => limits.onDropped(dropped, limits.pending));
    this.#drops = drops;
    const limit = limits.pending;
    this.#sub = nc.subscribe(subject, {
      ...(queue === undefined ? {} : { queue }),
      callback: (error, msg) => {
        if (error !== null) {
          items.fail(mapNatsError(error, `subscription to ${subject}`));
          return;
        }
        // A message handed to a waiting reader is not held: size stays 0 then.
        if (items.size >= limit) drops.count();
        else items.push(map(msg));
      },
    });
    // The server refused the subscription, or the connection closed for good (reconnect
    // attempts ran out) without stop(): iteration fails, so the consumer learns it is over.
    void this.#sub.closed.then(
      (error) => {
        if (error instanceof Error) items.fail(mapNatsError(error, `subscription to ${subject}`));
        else if (this.#stopped) items.end();
        else items.fail(connectionLost(subject));
      },
      (error: unknown) => items.fail(mapNatsError(error, `subscription to ${subject}`)),
    );
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.#queue;
  }

  tryNext(): T | undefined {
    return this.#queue.tryNext();
  }

  /**
   * Unsubscribes; resolves once the server has taken the unsubscribe in, so nothing published
   * after that is routed here (a queue group's other members get it). Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    try {
      this.#sub.unsubscribe();
    } catch {
      // The connection is already closed, and with it the subscription.
    }
    // At most once: what was received and not yet taken is dropped.
    this.#queue.drain();
    this.#queue.end();
    this.#drops.stop();
    try {
      // The server answers the flush after it has handled the UNSUB written before it.
      if (!this.#nc.isClosed()) await this.#nc.flush();
    } catch {
      // Closed or lost meanwhile: the server has dropped the subscription with the connection.
    }
  }
}

/**
 * Counts dropped messages and tells `report` about them: the first of a burst at once (on a
 * timer, not inside the client's callback), then at most once a second while drops go on.
 */
class DropCounter {
  #dropped = 0;
  #lastReport = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly report: (dropped: number) => void) {}

  count(): void {
    this.#dropped++;
    if (this.#timer !== undefined) return;
    const wait = Math.max(0, this.#lastReport + 1000 - Date.now());
    this.#timer = setTimeout(() => this.#flush(), wait);
    this.#timer.unref();
  }

  /** Reports what is still untold and stops the timer. */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#flush();
  }

  #flush(): void {
    this.#timer = undefined;
    if (this.#dropped === 0) return;
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#lastReport = Date.now();
    this.report(dropped);
  }
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
 * outlives broker restarts. The consumer's `max_ack_pending` bounds what waits in the queue.
 */
export class PullSource<T> implements MessageSource<T> {
  readonly #queue = new DeliveryBuffer<T>({ track: false });
  /** The messages of the items waiting in `#queue`, in the same order. */
  readonly #buffered = new Fifo<JsMsg>();
  /** The consumer's ack wait, from the server. */
  #ackWaitMs = 0;
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  #messages: ConsumerMessages | undefined;
  #wake: (() => void) | undefined;
  #stopping: Promise<void> | undefined;
  #running: Promise<void> | undefined;

  constructor(private readonly options: PullSourceOptions<T>) {}

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Creates (or finds) the consumer and starts pulling. Rejects with the driver's error. */
  async open(): Promise<void> {
    const messages = await this.#start();
    this.#running = this.#supervise(messages);
    if (!this.#stopped) {
      // A message waiting in the client buffer behind slow handlers would otherwise reach its
      // ack wait and be delivered again (a duplicate, and an attempt the handler never saw).
      const every = Math.max(10, Math.floor(this.#ackWaitMs / 3));
      this.#keepAlive = setInterval(() => this.#extendBuffered(), every);
      this.#keepAlive.unref();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.#iterator;
  }

  readonly #iterator: AsyncIterableIterator<T> = {
    next: () => {
      // A buffered item is taken synchronously by next(): its message leaves the buffer.
      if (this.#queue.size > 0) this.#buffered.shift();
      return this.#queue.next();
    },
    return: () => this.#queue.return(),
    [Symbol.asyncIterator]() {
      return this;
    },
  };

  tryNext(): T | undefined {
    const item = this.#queue.tryNext();
    if (item !== undefined) this.#buffered.shift();
    return item;
  }

  /** Tells the server the buffered messages are still being worked on (resets their ack wait). */
  #extendBuffered(): void {
    if (this.#buffered.size === 0) return;
    for (const msg of this.#buffered.drain()) {
      try {
        msg.working();
      } catch {
        // The connection is gone; the ack wait brings it back.
      }
      this.#buffered.push(msg);
    }
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    if (this.#keepAlive !== undefined) clearInterval(this.#keepAlive);
    this.#wake?.();
    this.#messages?.stop();
    // Pulled but never handed out: give it back now rather than after the ack wait, so
    // another member of the group gets it at once.
    this.#buffered.drain();
    for (const item of this.#queue.drain()) this.#release(item);
    this.#queue.end();
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
    let failures = 0;
    while (!this.#stopped) {
      if (messages !== undefined) {
        await messages.closed().catch(() => undefined);
        messages = undefined;
        this.#messages = undefined;
      }
      if (this.#stopped) break;
      if (!this.options.alive()) {
        // Closed for good without stop() (reconnect attempts ran out): say so.
        this.#queue.fail(connectionLost(this.options.config.filter_subject ?? this.options.stream));
        break;
      }
      try {
        messages = await this.#start();
        failures = 0;
      } catch (error) {
        failures++;
        // Failed because stop() or the end of the connection came meanwhile: nothing to tell.
        if (!this.#stopped && this.options.alive()) {
          const { stream, config } = this.options;
          this.options.reportError(
            error,
            `recreate consumer ${config.durable_name} on stream ${stream}`,
          );
        }
        await this.#pause(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
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
    const buffered = this.#buffered;
    const messages = await consumer.consume({
      max_messages: this.options.batch,
      callback: (msg) => {
        if (this.#stopped) {
          try {
            msg.nak();
          } catch {
            // The connection is gone; the ack wait brings it back.
          }
          return;
        }
        const before = queue.size;
        queue.push(map(msg));
        // Handed straight to a waiting reader, or buffered (then watched for its ack wait).
        if (queue.size > before) buffered.push(msg);
      },
    });
    this.#messages = messages;
    if (this.#stopped) messages.stop();
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

  #pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    }).finally(() => {
      this.#wake = undefined;
    });
  }
}

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
