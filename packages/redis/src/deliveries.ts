import { Buffer } from 'node:buffer';
import {
  ErrorCode,
  SerializationError,
  decodeEvent,
  type CompiledPattern,
  type DeadLetter,
  type DeadLetterReason,
  type Event,
  type EventDelivery,
  type MalformedDelivery,
  type NackOptions,
} from '@watchtower/core';
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
    private readonly handle: EntryHandle,
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
    private readonly handle: EntryHandle,
  ) {}

  ack(): Promise<void> {
    return this.handle.ack();
  }

  nack(options?: NackOptions): Promise<void> {
    return this.handle.nack(options);
  }
}

/**
 * Builds the delivery of a stream entry: the event, a malformed delivery for bytes that do not
 * decode, or `undefined` (ack it unseen) for an event whose type the pattern does not match.
 */
export function toDelivery(
  pattern: CompiledPattern,
  entry: ConsumedEntry,
  handle: EntryHandle,
): RedisEventDelivery | RedisMalformedDelivery | undefined {
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
  return pattern.matches(event.type)
    ? new RedisEventDelivery(event, entry.attempt, entry.key, handle)
    : undefined;
}

/** An entry of the DLQ stream, with what settles it. */
export interface DlqItem {
  readonly letter: DeadLetter;
  readonly handle: EntryHandle;
}

function text(value: Buffer | undefined): string | undefined {
  return value === undefined ? undefined : value.toString('utf8');
}

function isReason(value: unknown): value is DeadLetterReason {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  return (
    typeof r['message'] === 'string' &&
    typeof r['code'] === 'string' &&
    typeof r['attempts'] === 'number' &&
    typeof r['failedAt'] === 'string' &&
    typeof r['originalType'] === 'string'
  );
}

/** The time encoded in a stream id, as RFC 3339. */
function idTime(id: string): string {
  const ms = Number(id.slice(0, id.indexOf('-')));
  return new Date(Number.isFinite(ms) ? ms : 0).toISOString();
}

/**
 * Reads a dead letter from a DLQ stream entry. Entries written by Watchtower carry the full
 * reason as JSON in `reason`; entries written by Rust Watchtower have only `error` and
 * `original_type`, so the reason is rebuilt from those (`attempts` 0: not recorded; `failedAt`:
 * the time of the entry id).
 */
export function toDeadLetter(entry: ConsumedEntry): DeadLetter {
  const eventBytes = fieldValue(entry.fields);
  const errorText = text(fieldValue(entry.fields, 'error'));
  const originalType = text(fieldValue(entry.fields, 'original_type'));
  let reason: DeadLetterReason | undefined;
  const reasonJson = text(fieldValue(entry.fields, 'reason'));
  if (reasonJson !== undefined) {
    try {
      const parsed: unknown = JSON.parse(reasonJson);
      if (isReason(parsed)) reason = parsed;
    } catch {
      // Not ours or damaged: fall back to the Rust fields.
    }
  }
  reason ??= {
    message: errorText ?? '',
    code: ErrorCode.HANDLER_FAILED,
    attempts: 0,
    failedAt: idTime(entry.id),
    originalType: originalType ?? '',
  };
  if (eventBytes === undefined) return { raw: describeFields(entry.fields), reason };
  try {
    return { event: decodeEvent(eventBytes), reason };
  } catch {
    return { raw: Buffer.from(eventBytes), reason };
  }
}
