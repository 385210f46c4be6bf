/**
 * The reduced form of a dead letter whose full record can never be stored (larger than the
 * broker takes, refused by a policy): the reason, the ids, the size and the start of the body,
 * as bytes, and where the original arrived. Written instead of looping on a write that cannot
 * succeed; `reason.reduced` tells a reader what it is.
 */
import { encodeEventBytes } from '../codec.js';
import { describeError } from '../errors.js';
import type { Event } from '../event.js';
import type { DeadLetterReason, MalformedMessage, ReducedDeadLetter } from '../transport.js';
import { isMalformedMessage } from './dead-letter-record.js';

/** Bytes of the original body a reduced dead letter keeps. */
export const REDUCED_BODY_BYTES = 1024;

/** What {@link reduceDeadLetter} needs. */
export interface ReduceInput {
  /** The event or bytes whose full record was refused. */
  readonly subject: Event | MalformedMessage;
  /** Their full reason. */
  readonly reason: DeadLetterReason;
  /** Where the original arrived. */
  readonly origin: string;
  /** Why the full record was refused. */
  readonly refusal: unknown;
}

/** The reduced dead letter of `input.subject`: bytes filed under the original's origin. */
export function reduceDeadLetter(input: ReduceInput): {
  message: MalformedMessage;
  reason: DeadLetterReason;
} {
  const { subject, origin } = input;
  const body = isMalformedMessage(subject) ? subject.raw : encodeEventBytes(subject);
  const kept = body.subarray(0, utf8Boundary(body, REDUCED_BODY_BYTES));
  const reduced: ReducedDeadLetter = {
    why: describeError(input.refusal),
    originalBytes: body.byteLength,
    keptBytes: kept.byteLength,
    origin,
  };
  if (!isMalformedMessage(subject)) {
    reduced.eventId = subject.id;
    if (subject.correlationId !== undefined) reduced.correlationId = subject.correlationId;
  }
  return { message: { raw: kept, origin }, reason: { ...input.reason, reduced } };
}

/** The largest length <= `max` that does not cut a UTF-8 sequence of `bytes` in two. */
function utf8Boundary(bytes: Uint8Array, max: number): number {
  if (bytes.byteLength <= max) return bytes.byteLength;
  let end = max;
  // Continuation bytes are 10xxxxxx: step back to the start of the cut character.
  while (end > 0 && ((bytes[end] as number) & 0xc0) === 0x80) end--;
  return end;
}
