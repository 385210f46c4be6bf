/**
 * What a subscription and `consumeDlq` hand out for an AMQP message: the event (or the bytes
 * that did not decode) with its attempt number, and a dead letter read back from the DLQ; and
 * the AMQP message a dead letter is written as. The record is Rust Watchtower's: the body is
 * the event's JSON (or the undecodable bytes as they came), `x-error` the reason's message,
 * `x-original-routing-key` the type; `x-watchtower-reason` adds the whole reason as JSON.
 */
import {
  SerializationError,
  decodeEvent,
  encodeEvent,
  type DeadLetter,
  type DeadLetterReason,
  type Event,
  type EventDelivery,
  type MalformedDelivery,
  type MalformedMessage,
  type NackOptions,
} from '@watchtower/core';
import {
  checkNackOptions,
  fallbackReason,
  isMalformedMessage,
  readDeadLetterReason,
  type DeadLetterEntry,
} from '@watchtower/core/transport-kit';
import type { ConsumeMessage, Options } from 'amqplib';
import { originOf, type QueueConsumer, type Received } from './queue-consumer.js';
import { ERROR_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REASON_HEADER } from './topology.js';

type Settler = Pick<QueueConsumer<AmqpDelivery>, 'ack' | 'retry'>;

/** Sets the attempt, origin, ack and nack of both kinds of delivery. */
abstract class DeliveryBase {
  readonly attempt: number;
  readonly origin: string;
  readonly received: Received;
  readonly #consumer: Settler;

  constructor(consumer: Settler, received: Received) {
    this.#consumer = consumer;
    this.received = received;
    this.attempt = received.attempt;
    this.origin = originOf(received.message);
  }

  ack(): Promise<void> {
    return this.#consumer.ack(this as unknown as AmqpDelivery);
  }

  /**
   * `requeue` (default): sent again with the next attempt number, after `delayMs` through a
   * delay queue; `requeue: false`: dropped (acked).
   */
  nack(options?: NackOptions): Promise<void> {
    try {
      checkNackOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    const self = this as unknown as AmqpDelivery;
    if (options?.requeue === false) return this.#consumer.ack(self);
    return this.#consumer.retry(self, options?.delayMs ?? 0);
  }
}

/** A decoded event from a subscription's queue. */
export class AmqpEventDelivery extends DeliveryBase implements EventDelivery {
  readonly kind = 'event' as const;
  constructor(
    consumer: Settler,
    received: Received,
    readonly event: Event,
  ) {
    super(consumer, received);
  }
}

/** Bytes from a subscription's queue that are not an event. */
export class AmqpMalformedDelivery extends DeliveryBase implements MalformedDelivery {
  readonly kind = 'malformed' as const;
  readonly raw: Uint8Array;
  constructor(
    consumer: Settler,
    received: Received,
    readonly error: SerializationError,
  ) {
    super(consumer, received);
    this.raw = received.message.content;
  }
}

export type AmqpDelivery = AmqpEventDelivery | AmqpMalformedDelivery;

/** True when `record` has an own enumerable key. */
export function hasKeys(record: Readonly<Record<string, unknown>>): boolean {
  for (const key in record) if (Object.hasOwn(record, key)) return true;
  return false;
}

/** The string-valued AMQP headers, as event headers for a body that carries none. */
function stringHeaders(message: ConsumeMessage): Record<string, string> | undefined {
  const headers = message.properties.headers;
  if (headers === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (typeof value === 'string' && !key.startsWith('x-')) out[key] = value;
  }
  return out;
}

/**
 * Decodes `received`: its event, or the decode error (which carries the bytes). Never throws.
 * One object per delivery: no wrapper, and no headers callback for a message without headers
 * (amqplib gives every consumed message a headers object, most often an empty one).
 */
export function decodeReceived(received: Received): Event | SerializationError {
  const { message } = received;
  const headers = message.properties.headers;
  try {
    return decodeEvent(
      message.content,
      headers === undefined || !hasKeys(headers) ? undefined : () => stringHeaders(message),
    );
  } catch (error) {
    return error instanceof SerializationError
      ? error
      : new SerializationError('cannot decode event', message.content, { cause: error });
  }
}

/** The body and properties a dead letter is written with. */
export function deadLetterMessage(
  message: Event | MalformedMessage,
  reason: DeadLetterReason,
): { content: Buffer; options: Options.Publish } {
  const malformed = isMalformedMessage(message);
  const content = malformed
    ? Buffer.from(message.raw.buffer, message.raw.byteOffset, message.raw.byteLength)
    : Buffer.from(encodeEvent(message), 'utf8');
  const options: Options.Publish = {
    persistent: true,
    contentType: malformed ? 'application/octet-stream' : 'application/json',
    headers: {
      [ERROR_HEADER]: reason.message,
      [ORIGINAL_ROUTING_KEY_HEADER]: reason.originalType,
      [REASON_HEADER]: JSON.stringify(reason),
    },
  };
  if (!malformed) options.messageId = message.id;
  return { content, options };
}

/** What the broker says of a message it dead-lettered itself (TTL, overflow, delivery limit). */
function brokerDeath(
  message: ConsumeMessage,
): { reason: string; routingKey?: string; at?: Date } | undefined {
  const deaths: unknown = message.properties.headers?.['x-death'];
  if (!Array.isArray(deaths) || deaths.length === 0) return undefined;
  const first = deaths[0] as {
    reason?: unknown;
    queue?: unknown;
    'routing-keys'?: unknown;
    time?: { value?: unknown };
  };
  const keys = first['routing-keys'];
  const seconds = first.time?.value;
  const death: { reason: string; routingKey?: string; at?: Date } = {
    reason: `dead-lettered by the broker (${String(first.reason)}) from queue ${String(first.queue)}`,
  };
  if (Array.isArray(keys) && typeof keys[0] === 'string') death.routingKey = keys[0];
  if (typeof seconds === 'number') death.at = new Date(seconds * 1000);
  return death;
}

/** Reads a dead letter: the reason from its headers, Rust's or the broker's where ours is missing. */
export function readDeadLetter(received: Received, now: Date): DeadLetter {
  const { message } = received;
  const headers = message.properties.headers ?? {};
  let parsed: unknown;
  const reasonText: unknown = headers[REASON_HEADER];
  if (typeof reasonText === 'string') {
    try {
      parsed = JSON.parse(reasonText);
    } catch {
      parsed = undefined;
    }
  }
  const decoded = decodeReceived(received);
  let reason = readDeadLetterReason(parsed);
  if (reason === undefined) {
    const death = brokerDeath(message);
    const error: unknown = headers[ERROR_HEADER];
    const key: unknown = headers[ORIGINAL_ROUTING_KEY_HEADER];
    const originalType =
      typeof key === 'string'
        ? key
        : decoded instanceof SerializationError
          ? (death?.routingKey ?? message.fields.routingKey)
          : decoded.type;
    reason = fallbackReason(
      typeof error === 'string' ? error : (death?.reason ?? 'dead-lettered without a reason'),
      originalType,
      death?.at ??
        (typeof message.properties.timestamp === 'number'
          ? new Date(message.properties.timestamp * 1000)
          : now),
    );
  }
  return decoded instanceof SerializationError
    ? { raw: new Uint8Array(message.content), reason }
    : { event: decoded, reason };
}

/** One dead letter handed to the `consumeDlq` loop. */
export class AmqpDeadLetterEntry implements DeadLetterEntry {
  readonly attempt: number;
  readonly origin: string;
  constructor(
    readonly consumer: QueueConsumer<AmqpDeadLetterEntry>,
    readonly received: Received,
    readonly letter: DeadLetter,
  ) {
    this.attempt = received.attempt;
    this.origin = consumer.queue;
  }

  ack(): Promise<void> {
    return this.consumer.ack(this);
  }

  retryLater(delayMs: number): Promise<void> {
    return this.consumer.retry(this, delayMs);
  }
}
