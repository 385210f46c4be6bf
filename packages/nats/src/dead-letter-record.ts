import {
  ErrorCode,
  decodeEventFromValue,
  encodeEvent,
  type DeadLetter,
  type DeadLetterReason,
  type Event,
  type MalformedMessage,
} from '@watchtower/core';
import {
  fallbackReason,
  isMalformedMessage,
  rawBytesFromText,
  rawBytesToText,
  readDeadLetterReason,
} from '@watchtower/core/transport-kit';

/*
 * A dead letter on `dlq.{type}` is JSON, Rust-compatible:
 *
 *   {"event": <the event in the wire format>, "error": "<text>", "original_subject": "<subject>",
 *    "reason": {message, code, attempts, failedAt, originalType, subscription?}}
 *
 * Rust reads `event`, `error` and `original_subject` and ignores `reason`. Bytes that never
 * decoded are kept once: as the text of `event` when they are UTF-8, else as `raw_base64`
 * alone. Records of older writers that carry both (`event` as lossy text) read back exactly.
 */

/** The JSON body of a dead letter. */
export function encodeDeadLetter(
  message: Event | MalformedMessage,
  reason: DeadLetterReason,
  originalSubject: string,
): string {
  const tail = `,"error":${JSON.stringify(reason.message)},"original_subject":${JSON.stringify(
    originalSubject,
  )},"reason":${JSON.stringify(reason)}}`;
  if (!isMalformedMessage(message)) return `{"event":${encodeEvent(message)}${tail}`;
  const raw = rawBytesToText(message.raw);
  const field = raw.encoding === 'utf8' ? 'event' : 'raw_base64';
  return `{"${field}":${JSON.stringify(raw.text)}${tail}`;
}

/**
 * Reads a dead letter written by {@link encodeDeadLetter}, by earlier versions or by Rust
 * Watchtower (no `reason`). Never throws: a body that is not a dead-letter record is handed
 * over as `raw` with a reason saying so, so a consumer never stalls on it.
 *
 * @param typeFromSubject - the event type the DLQ subject names, used when the body has none.
 */
export function decodeDeadLetter(
  data: Uint8Array,
  typeFromSubject: string,
  receivedAt: Date,
): DeadLetter {
  const text = rawBytesToText(data);
  let body: unknown = NOT_JSON;
  if (text.encoding === 'utf8') {
    try {
      body = JSON.parse(text.text);
    } catch {
      // Left as NOT_JSON.
    }
  }
  if (body === NOT_JSON) {
    return notARecord(data, 'the dead letter is not JSON', typeFromSubject, receivedAt);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return notARecord(data, 'the dead letter is not a JSON object', typeFromSubject, receivedAt);
  }
  const record = body as Record<string, unknown>;
  const errorText = typeof record['error'] === 'string' ? record['error'] : 'unknown error';
  const reason =
    readDeadLetterReason(record['reason']) ??
    fallbackReason(errorText, typeFromSubject, receivedAt);

  const base64 = record['raw_base64'];
  if (typeof base64 === 'string') {
    return { raw: rawBytesFromText({ encoding: 'base64', text: base64 }), reason };
  }
  const event = record['event'];
  if (typeof event === 'string') {
    return { raw: rawBytesFromText({ encoding: 'utf8', text: event }), reason };
  }
  try {
    return { event: decodeEventFromValue(event), reason };
  } catch {
    // Not our wire format: keep the bytes rather than lose the letter.
    return { raw: data, reason };
  }
}

const NOT_JSON: unique symbol = Symbol('not JSON');

function notARecord(
  data: Uint8Array,
  why: string,
  typeFromSubject: string,
  receivedAt: Date,
): DeadLetter {
  return {
    raw: data,
    reason: fallbackReason(why, typeFromSubject, receivedAt, ErrorCode.SERIALIZATION),
  };
}
