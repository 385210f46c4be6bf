/**
 * What a stream entry becomes: the delivery a subscription yields (an event, or a malformed
 * delivery for bytes that do not decode) and the dead letter `consumeDlq` hands its handler.
 * Kept apart from the consumer so that decoding is tested without a server; nothing here sends
 * a command, and nothing here throws for bad input.
 */
import { Buffer } from 'node:buffer';
import {
  SerializationError,
  decodeEvent,
  type DeadLetter,
  type DeadLetterReason,
  type Event,
  type EventDelivery,
  type MalformedDelivery,
  type NackOptions,
} from '@watchtower/core';
import {
  fallbackReason,
  readDeadLetterReason,
  type DeadLetterEntry,
} from '@watchtower/core/transport-kit';
import type { ConsumedEntry, EntryHandle } from './group-consumer.js';
import { describeFields, fieldValue } from './stream-reply.js';

/** A decoded event read from a stream. */
export class RedisEventDelivery implements EventDelivery {
  readonly kind = 'event' as const;

  constructor(
    readonly event: Event,
    readonly attempt: number,
    /** The stream key it was read from. */
    readonly origin: string,
    /** What settles the entry. */
    readonly handle: EntryHandle,
  ) {}

  ack(): Promise<void> {
    return this.handle.ack();
  }

  nack(options?: NackOptions): Promise<void> {
    return this.handle.nack(options);
  }
}

/** A stream entry that is not an event: no `event` field, or bytes the codec rejects. */
export class RedisMalformedDelivery implements MalformedDelivery {
  readonly kind = 'malformed' as const;

  constructor(
    readonly raw: Uint8Array,
    readonly error: SerializationError,
    readonly attempt: number,
    readonly origin: string,
    /** What settles the entry. */
    readonly handle: EntryHandle,
  ) {}

  ack(): Promise<void> {
    return this.handle.ack();
  }

  nack(options?: NackOptions): Promise<void> {
    return this.handle.nack(options);
  }
}

/**
 * Builds the delivery of a stream entry: the event, or a malformed delivery for bytes that do
 * not decode. An event whose type does not belong to its stream is delivered as it is: the bus
 * dead-letters it as misrouted (acking it unseen would hide a producer's mistake).
 */
export function toDelivery(
  entry: ConsumedEntry,
  handle: EntryHandle,
): RedisEventDelivery | RedisMalformedDelivery {
  const value = fieldValue(entry.fields);
  if (value === undefined) {
    const raw = describeFields(entry.fields);
    const error = new SerializationError(
      `stream entry ${entry.id} of ${entry.key} has no \`event\` field`,
      raw,
    );
    return new RedisMalformedDelivery(raw, error, entry.attempt, entry.key, handle);
  }
  let event: Event;
  try {
    event = decodeEvent(value);
  } catch (error) {
    const failure =
      error instanceof SerializationError
        ? error
        : new SerializationError(String(error), value, { cause: error });
    return new RedisMalformedDelivery(value, failure, entry.attempt, entry.key, handle);
  }
  return new RedisEventDelivery(event, entry.attempt, entry.key, handle);
}

/**
 * An entry of the DLQ stream for the kit's dead-letter consumer: acked (`XACK`) when its
 * handler returned; when it threw, left pending, so that a consumer of the group claims it
 * again once it has been idle for `claimMinIdleMs` (Redis times that, not the delay).
 */
export class RedisDeadLetterEntry implements DeadLetterEntry {
  readonly letter: DeadLetter;
  readonly attempt: number;
  readonly origin: string;

  constructor(
    entry: ConsumedEntry,
    /** What settles the entry. */
    readonly handle: EntryHandle,
  ) {
    this.letter = toDeadLetter(entry);
    this.attempt = entry.attempt;
    this.origin = entry.key;
  }

  ack(): Promise<void> {
    return this.handle.ack();
  }

  retryLater(): void {
    this.handle.leave();
  }
}

function text(value: Buffer | undefined): string | undefined {
  return value === undefined ? undefined : value.toString('utf8');
}

/** The time encoded in a stream id. */
function idTime(id: string): Date {
  const ms = Number(id.slice(0, id.indexOf('-')));
  return new Date(Number.isFinite(ms) ? ms : 0);
}

/**
 * Reads a dead letter from a DLQ stream entry. Entries written by Watchtower carry the full
 * reason as JSON in `reason`; entries written by Rust Watchtower have only `error` and
 * `original_type`, so the reason is rebuilt from those (`attempts` 0: not recorded; `failedAt`:
 * the time of the entry id). Bytes that are not an event stay as they are, as `raw`.
 */
export function toDeadLetter(entry: ConsumedEntry): DeadLetter {
  const eventBytes = fieldValue(entry.fields);
  let reason: DeadLetterReason | undefined;
  const reasonJson = text(fieldValue(entry.fields, 'reason'));
  if (reasonJson !== undefined) {
    try {
      reason = readDeadLetterReason(JSON.parse(reasonJson));
    } catch {
      // Not ours or damaged: fall back to the Rust fields.
    }
  }
  reason ??= fallbackReason(
    text(fieldValue(entry.fields, 'error')) ?? '',
    text(fieldValue(entry.fields, 'original_type')) ?? '',
    idTime(entry.id),
  );
  if (eventBytes === undefined) return { raw: describeFields(entry.fields), reason };
  try {
    return { event: decodeEvent(eventBytes), reason };
  } catch {
    return { raw: Buffer.from(eventBytes), reason };
  }
}
