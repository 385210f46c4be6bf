/**
 * The one way to build a {@link DeadLetterReason}, read one back from a stored record, and
 * keep bytes that never decoded in a text format. The EventBus and every transport write
 * reasons with {@link deadLetterReason}; every `consumeDlq` reads them with
 * {@link readDeadLetterReason}, so a reason survives any broker unchanged.
 */
import { Buffer } from 'node:buffer';
import type { Clock } from '../clock.js';
import { ErrorCode, describeError } from '../errors.js';
import type { Event } from '../event.js';
import type { DeadLetterReason, MalformedMessage, ReducedDeadLetter } from '../transport.js';

/** What a dead letter's reason is made of. */
export interface DeadLetterReasonInput {
  /** Why: a thrown value. Its message (and its `code`, else `HANDLER_FAILED`) are taken. */
  readonly failure: unknown;
  /** Delivery attempts made. */
  readonly attempts: number;
  /** The event, or the bytes that never decoded (their origin is the type). */
  readonly message: Event | MalformedMessage;
  /** The subscription (pattern or group) that gave up, where there is one. */
  readonly subscription?: string | undefined;
  /** `failedAt` is this clock's now. */
  readonly clock: Clock;
}

/** True for bytes bound for the DLQ, as opposed to a decoded event. */
export function isMalformedMessage(message: Event | MalformedMessage): message is MalformedMessage {
  return (message as Partial<MalformedMessage>).raw instanceof Uint8Array;
}

/** The type a dead letter is filed under: the event's, or the origin of undecodable bytes. */
export function originalTypeOf(message: Event | MalformedMessage): string {
  return isMalformedMessage(message) ? message.origin : message.type;
}

/** The code a dead letter records for `failure`: its own string `code`, else `HANDLER_FAILED`. */
export function failureCode(failure: unknown): string {
  const code = (failure as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && code.length > 0 ? code : ErrorCode.HANDLER_FAILED;
}

/** Builds the reason of a dead letter. */
export function deadLetterReason(input: DeadLetterReasonInput): DeadLetterReason {
  const reason: DeadLetterReason = {
    message: describeError(input.failure),
    code: failureCode(input.failure),
    attempts: input.attempts,
    failedAt: new Date(input.clock.now()).toISOString(),
    originalType: originalTypeOf(input.message),
  };
  if (input.subscription !== undefined) reason.subscription = input.subscription;
  return reason;
}

/**
 * A reason as stored (parsed JSON), or undefined when `value` is not one: records written by
 * Rust Watchtower carry none; build one with {@link fallbackReason} then.
 */
export function readDeadLetterReason(value: unknown): DeadLetterReason | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  const { message, code, attempts, failedAt, originalType, subscription } = r;
  if (
    typeof message !== 'string' ||
    typeof code !== 'string' ||
    typeof attempts !== 'number' ||
    typeof failedAt !== 'string' ||
    typeof originalType !== 'string'
  ) {
    return undefined;
  }
  const reason: DeadLetterReason = { message, code, attempts, failedAt, originalType };
  if (typeof subscription === 'string') reason.subscription = subscription;
  const reduced = readReduced(r['reduced']);
  if (reduced !== undefined) reason.reduced = reduced;
  return reason;
}

function readReduced(value: unknown): ReducedDeadLetter | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { why, originalBytes, keptBytes, origin, eventId, correlationId } = value as Record<
    string,
    unknown
  >;
  if (
    typeof why !== 'string' ||
    typeof originalBytes !== 'number' ||
    typeof keptBytes !== 'number' ||
    typeof origin !== 'string'
  ) {
    return undefined;
  }
  const reduced: ReducedDeadLetter = { why, originalBytes, keptBytes, origin };
  if (typeof eventId === 'string') reduced.eventId = eventId;
  if (typeof correlationId === 'string') reduced.correlationId = correlationId;
  return reduced;
}

/**
 * The reason of a record that has none of its own (written by Rust Watchtower, or damaged):
 * `attempts` 0 (not recorded), `failedAt` the record's own time.
 */
export function fallbackReason(
  message: string,
  originalType: string,
  failedAt: Date,
  code: string = ErrorCode.HANDLER_FAILED,
): DeadLetterReason {
  return { message, code, attempts: 0, failedAt: failedAt.toISOString(), originalType };
}

/** Bytes in a text field: as they are when they are UTF-8, else base64. */
export type RawBytesText =
  | { readonly encoding: 'utf8'; readonly text: string }
  | { readonly encoding: 'base64'; readonly text: string };

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** `raw` as text, stored once: UTF-8 text when it is valid UTF-8, else base64. */
export function rawBytesToText(raw: Uint8Array): RawBytesText {
  try {
    return { encoding: 'utf8', text: strictUtf8.decode(raw) };
  } catch {
    return {
      encoding: 'base64',
      text: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64'),
    };
  }
}

/** The bytes {@link rawBytesToText} wrote. */
export function rawBytesFromText(value: RawBytesText): Uint8Array {
  const buffer = Buffer.from(value.text, value.encoding);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
