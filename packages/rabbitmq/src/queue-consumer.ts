/**
 * One queue read by one consumer on a channel of its own (so its prefetch is its own, and a
 * channel error stops only it): a subscription's queue, or the dead-letter queue. It declares
 * and binds the queue, consumes with manual acks, buffers what arrives for its one reader, and
 * settles what the reader hands back: an ack, or a retry sent through a delay queue.
 *
 * Why a retry is a new message and not `nack(requeue)`: a requeued message comes back at
 * once, so a failing handler would loop as fast as the broker can deliver. Here a retry is
 * published (on the confirm channel, with the next attempt number in a header) to a delay
 * queue whose TTL dead-letters it back to this queue, and only then is the original acked:
 * a crash in between delivers it twice, never zero times.
 *
 * When the channel or the connection goes, what was buffered is dropped (the broker delivers
 * it again) and acks of deliveries from the old channel are no-ops; `open()` on the next
 * connection declares and consumes again. It never reconnects by itself.
 */
import { ConnectionError, type WatchtowerError } from '@watchtower/core';
import { DeliveryBuffer, RESOLVED } from '@watchtower/core/transport-kit';
import type { Channel, ChannelModel, ConsumeMessage, Options } from 'amqplib';
import { AckJoiner } from './ack-joiner.js';
import type { Publisher } from './publisher.js';
import { corkOf } from './write-cork.js';
import {
  ATTEMPT_HEADER,
  ROUTING_KEY_HEADER,
  delayQueueName,
  delayQueueOptions,
  delayStepMs,
  type Binding,
} from './topology.js';

/** A message as it arrived, with the channel it must be settled on. */
export interface Received {
  readonly message: ConsumeMessage;
  readonly channel: Channel;
  readonly attempt: number;
}

/** What a {@link QueueConsumer} needs from its transport. */
export interface QueueConsumerHost {
  readonly publisher: Publisher;
  /** The exchange bindings are made on. */
  readonly exchange: string;
  /** Failures nobody awaits (an ack that could not be written, a channel the broker closed). */
  report(error: WatchtowerError): void;
  /** The consumer's channel closed while the connection stayed up: open it again. */
  channelLost(consumer: ManagedConsumer): void;
}

/** What the transport does with every consumer, whatever it hands out. */
export interface ManagedConsumer {
  readonly queue: string;
  readonly stopping: boolean;
  readonly open: boolean;
  openOn(model: ChannelModel): Promise<void>;
  detach(): void;
  stop(): Promise<void>;
  handBackUnsettled(): void;
  abandon(): void;
  /** Ends the reader's iteration with `error` (the connection was given up). */
  fail(error: unknown): void;
}

/** Settings of a {@link QueueConsumer}. */
export interface QueueConsumerOptions<T extends { readonly received: Received }> {
  readonly queue: string;
  readonly queueOptions: Options.AssertQueue;
  /** Bindings to make on every open; none for the DLQ (bound with the topology). */
  readonly bindings: readonly Binding[];
  readonly prefetch: number;
  /** Durable delay queues (for a durable queue). */
  readonly durableDelays: boolean;
  /** Delete the queue when the consumer stops (an own queue). */
  readonly deleteOnStop: boolean;
  /**
   * What the reader gets for a message, or undefined to ack it unseen (a type the binding
   * matched and the pattern does not).
   */
  readonly toItem: (received: Received) => T | undefined;
  /** The reader stopped iterating early. */
  readonly onReturn?: () => void;
}

/** Headers the broker writes; a message sent again starts without them. */
const BROKER_HEADERS = [
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  'x-last-death-exchange',
  'x-last-death-queue',
  'x-last-death-reason',
  'x-delivery-count',
] as const;

/**
 * The attempt number of `message`: the attempt written when it was sent again (1 for a first
 * publish), plus the times the broker delivered this copy before: a quorum queue's
 * `x-delivery-count`, else 1 when it says `redelivered` (a classic queue counts no more).
 */
export function attemptOf(message: ConsumeMessage): number {
  const headers = message.properties.headers;
  const written: unknown = headers?.[ATTEMPT_HEADER];
  const base =
    typeof written === 'number' && Number.isInteger(written) && written >= 1 ? written : 1;
  const count: unknown = headers?.['x-delivery-count'];
  if (typeof count === 'number' && Number.isInteger(count) && count >= 0) return base + count;
  return base + (message.fields.redelivered ? 1 : 0);
}

/** The routing key `message` was first published with (a copy sent again keeps it in a header). */
export function originOf(message: ConsumeMessage): string {
  const kept: unknown = message.properties.headers?.[ROUTING_KEY_HEADER];
  return typeof kept === 'string' ? kept : message.fields.routingKey;
}

/** A queue, its consumer, and the deliveries it buffered and handed out. */
export class QueueConsumer<T extends { readonly received: Received }> implements ManagedConsumer {
  readonly queue: string;
  readonly buffer: DeliveryBuffer<T>;
  readonly #host: QueueConsumerHost;
  readonly #options: QueueConsumerOptions<T>;
  #channel: Channel | undefined;
  /** The acks and nacks of `#channel`: a turn's in-order acks go as one, in one socket write. */
  #acks: AckJoiner | undefined;
  #consumerTag: string | undefined;
  #stopping: Promise<void> | undefined;

  constructor(host: QueueConsumerHost, options: QueueConsumerOptions<T>) {
    this.#host = host;
    this.#options = options;
    this.queue = options.queue;
    this.buffer = new DeliveryBuffer<T>(
      options.onReturn === undefined ? {} : { onReturn: options.onReturn },
    );
  }

  get stopping(): boolean {
    return this.#stopping !== undefined;
  }

  /** True while consuming on a live channel. */
  get open(): boolean {
    return this.#channel !== undefined;
  }

  /**
   * Opens a channel on `model`, sets the prefetch, declares and binds the queue and consumes.
   * Rejects (and closes the channel) when one step fails.
   */
  async openOn(model: ChannelModel): Promise<void> {
    const channel = await model.createChannel();
    channel.on('error', () => {
      // The close that follows says it; the broker's reason reaches the caller of the step.
    });
    channel.on('close', () => this.#onChannelClose(channel));
    try {
      const { queue, queueOptions, bindings, prefetch } = this.#options;
      await channel.prefetch(prefetch);
      await channel.assertQueue(queue, queueOptions);
      for (const binding of bindings) {
        await channel.bindQueue(queue, this.#host.exchange, binding.routingKey, binding.args);
      }
      if (this.#channel !== undefined) {
        // Opened meanwhile by the reconnect (or a restore): that channel consumes.
        channel.close().catch(() => undefined);
        return;
      }
      this.#channel = channel;
      const cork = corkOf(model);
      this.#acks = new AckJoiner(channel, () => cork.hold());
      const { consumerTag } = await channel.consume(queue, (message) =>
        this.#onMessage(channel, message),
      );
      this.#consumerTag = consumerTag;
    } catch (error) {
      if (this.#channel === channel) this.#channel = undefined;
      channel.close().catch(() => undefined);
      throw error;
    }
    if (this.#stopping !== undefined) await this.#release(channel);
  }

  /** The connection went: forget the channel; what was buffered comes again from the broker. */
  detach(): void {
    this.#channel = undefined;
    this.#acks = undefined;
    this.#consumerTag = undefined;
    this.buffer.drain();
  }

  #onChannelClose(channel: Channel): void {
    if (this.#channel !== channel) return;
    this.#channel = undefined;
    this.#acks = undefined;
    this.#consumerTag = undefined;
    this.buffer.drain();
    if (this.#stopping === undefined) this.#host.channelLost(this);
  }

  #onMessage(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (the queue was deleted): start over on a new channel.
      if (this.#channel === channel) channel.close().catch(() => undefined);
      return;
    }
    const acks = this.#acks?.channel === channel ? this.#acks : undefined;
    acks?.delivered(message);
    const received: Received = { message, channel, attempt: attemptOf(message) };
    const item = this.#options.toItem(received);
    if (item === undefined) {
      if (acks === undefined) channel.ack(message);
      else acks.ack(message);
      return;
    }
    // After stop(): back to the queue for another consumer.
    if (this.buffer.push(item)) return;
    if (acks === undefined) channel.nack(message, false, true);
    else acks.nack(message, true);
  }

  /** Acks `item`'s message, once; a message of a channel that is gone is redelivered anyway. */
  ack(item: T): Promise<void> {
    // One settled promise every time: the bus then needs no reaction per ack.
    if (this.buffer.settled(item)) this.#ackRaw(item.received);
    return RESOLVED;
  }

  #ackRaw(received: Received): void {
    if (received.channel !== this.#channel) return;
    try {
      this.#acks?.ack(received.message);
    } catch {
      // The channel closed meanwhile: the broker delivers the message again.
    }
  }

  /**
   * Sends `item` again with the next attempt number: after `delayMs` through a delay queue, or
   * at once to the back of the queue; then acks the original. When the copy cannot be sent,
   * the original goes back to the queue (`nack(requeue)`) and this rejects.
   */
  async retry(item: T, delayMs: number): Promise<void> {
    if (!this.buffer.settled(item)) return;
    const { received } = item;
    try {
      let routingKey = this.queue;
      if (delayMs > 0) {
        const step = delayStepMs(delayMs);
        await this.#declareDelay(step);
        routingKey = delayQueueName(this.queue, step);
      }
      await this.#host.publisher.publish({
        exchange: '',
        routingKey,
        content: received.message.content,
        options: resendOptions(received),
        what: `retry ${originOf(received.message)} through ${routingKey}`,
      });
    } catch (error) {
      if (received.channel === this.#channel) {
        try {
          this.#acks?.nack(received.message, true);
        } catch {
          // Gone: redelivered anyway.
        }
      }
      throw error;
    }
    this.#ackRaw(received);
  }

  /**
   * Declares the delay queue before every retry through it: a declare is what counts as use
   * for its `x-expires` (a publish does not), so a queue in use never expires under a message
   * (it lives `step` + a minute past its last declare, longer than any message waits in it).
   */
  async #declareDelay(step: number): Promise<void> {
    const channel = this.#channel;
    if (channel === undefined) {
      throw new ConnectionError(`declare the delay queue of ${this.queue}: no channel`);
    }
    await channel.assertQueue(
      delayQueueName(this.queue, step),
      delayQueueOptions(this.queue, step, this.#options.durableDelays),
    );
  }

  /**
   * Stops consuming: cancels the consumer, hands back what the reader never took, waits for
   * the deliveries it took to be settled, deletes an own queue and closes the channel.
   * Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.buffer.end();
    const channel = this.#channel;
    if (channel === undefined) {
      this.buffer.drain();
      return;
    }
    await this.#release(channel);
  }

  async #release(channel: Channel): Promise<void> {
    try {
      await this.#releaseSteps(channel);
    } catch (error) {
      // The channel went meanwhile (the connection dropped): the broker hands back what it
      // held, and an exclusive queue goes with the connection; nothing is left to do.
      if (this.#channel === channel) throw error;
    }
  }

  async #releaseSteps(channel: Channel): Promise<void> {
    const tag = this.#consumerTag;
    if (tag !== undefined) await channel.cancel(tag);
    for (const item of this.buffer.drain()) this.#requeue(item.received);
    await this.buffer.whenIdle();
    // The last handlers' acks before the queue and the channel go.
    if (this.#acks?.channel === channel) this.#acks.flush();
    if (this.#options.deleteOnStop) await channel.deleteQueue(this.queue);
    this.#channel = undefined;
    this.#acks = undefined;
    await channel.close();
  }

  /** Sends `received` back to its queue, for another consumer; nothing if its channel is gone. */
  #requeue(received: Received): void {
    try {
      if (received.channel === this.#channel && this.#acks !== undefined) {
        this.#acks.nack(received.message, true);
      } else {
        received.channel.nack(received.message, false, true);
      }
    } catch {
      // The channel went: redelivered anyway.
    }
  }

  /**
   * Hands back what the reader took and never settled (the transport is closing): those
   * messages go back to the queue for another consumer.
   */
  handBackUnsettled(): void {
    const channel = this.#channel;
    for (const item of this.buffer.takeUnsettled()) {
      if (channel !== undefined && item.received.channel === channel) this.#requeue(item.received);
    }
  }

  fail(error: unknown): void {
    this.buffer.fail(error);
  }

  /** Closes the channel without waiting for anything (close's deadline passed). */
  abandon(): void {
    const channel = this.#channel;
    try {
      this.#acks?.flush();
    } catch {
      // Gone: redelivered anyway.
    }
    this.#channel = undefined;
    this.#acks = undefined;
    this.buffer.end();
    channel?.close().catch(() => undefined);
  }
}

/** The properties of a copy of `received` sent again, with the next attempt number. */
function resendOptions(received: Received): Options.Publish {
  const { properties } = received.message;
  const headers: Record<string, unknown> = { ...properties.headers };
  for (const key of BROKER_HEADERS) delete headers[key];
  headers[ATTEMPT_HEADER] = received.attempt + 1;
  headers[ROUTING_KEY_HEADER] = originOf(received.message);
  // Mandatory: a queue that is gone returns the copy, and the original goes back instead.
  const options: Options.Publish = { persistent: true, mandatory: true, headers };
  if (properties.messageId !== undefined) options.messageId = properties.messageId as string;
  if (properties.contentType !== undefined) options.contentType = properties.contentType as string;
  if (properties.timestamp !== undefined) options.timestamp = properties.timestamp as number;
  if (properties.type !== undefined) options.type = properties.type as string;
  return options;
}
