import { Buffer } from 'node:buffer';
import {
  ErrorCode,
  decodeEventFromValue,
  encodeEvent,
  type DeadLetter,
  type DeadLetterReason,
  type Event,
  type MalformedMessage,
} from '@watchtower/core';

/*
 * A dead letter on `dlq.{type}` is JSON, Rust-compatible:
 *
 *   {"event": <the event in the wire format>, "error": "<text>", "original_subject": "<subject>",
 *    "reason": {message, code, attempts, failedAt, originalType, subscription?}}
 *
 * Rust reads `event`, `error` and `original_subject` and ignores `reason`. For bytes that never
 * decoded, `event` is their text; when they are not even UTF-8, `raw_base64` keeps them exact.
 */

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder('utf-8');

/** The JSON body of a dead letter. */
export function encodeDeadLetter(
  message: Event | MalformedMessage,
  reason: DeadLetterReason,
  originalSubject: string,
): string {
  const tail = `,"error":${JSON.stringify(reason.message)},"original_subject":${JSON.stringify(
    originalSubject,
  )},"reason":${JSON.stringify(reason)}}`;
  if (!isMalformed(message)) return `{"event":${encodeEvent(message)}${tail}`;
  let text: string;
  let rawBase64 = '';
  try {
    text = strictUtf8.decode(message.raw);
  } catch {
    text = lenientUtf8.decode(message.raw);
    rawBase64 = `,"raw_base64":${JSON.stringify(Buffer.from(message.raw).toString('base64'))}`;
  }
  return `{"event":${JSON.stringify(text)}${rawBase64}${tail}`;
}

/** True for bytes bound for the DLQ (as opposed to a decoded event). */
export function isMalformed(message: Event | MalformedMessage): message is MalformedMessage {
  return (message as Partial<MalformedMessage>).raw instanceof Uint8Array;
}

/**
 * Reads a dead letter written by {@link encodeDeadLetter} or by Rust Watchtower (no `reason`).
 * Never throws: a body that is not a dead-letter record is handed over as `raw` with a reason
 * saying so, so a consumer never stalls on it.
 *
 * @param typeFromSubject - the event type the DLQ subject names, used when the body has none.
 */
export function decodeDeadLetter(
  data: Uint8Array,
  typeFromSubject: string,
  receivedAt: Date,
): DeadLetter {
  let body: unknown;
  try {
    body = JSON.parse(strictUtf8.decode(data));
  } catch {
    return {
      raw: data,
      reason: fallbackReason(
        'the dead letter is not JSON',
        typeFromSubject,
        receivedAt,
        ErrorCode.SERIALIZATION,
      ),
    };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return {
      raw: data,
      reason: fallbackReason(
        'the dead letter is not a JSON object',
        typeFromSubject,
        receivedAt,
        ErrorCode.SERIALIZATION,
      ),
    };
  }
  const record = body as Record<string, unknown>;
  const errorText = typeof record['error'] === 'string' ? record['error'] : 'unknown error';
  const reason =
    readReason(record['reason']) ?? fallbackReason(errorText, typeFromSubject, receivedAt);

  const event = record['event'];
  if (typeof event === 'string') {
    const base64 = record['raw_base64'];
    const raw =
      typeof base64 === 'string' ? Buffer.from(base64, 'base64') : Buffer.from(event, 'utf8');
    return { raw: new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), reason };
  }
  try {
    return { event: decodeEventFromValue(event), reason };
  } catch {
    // Not our wire format: keep the bytes rather than lose the letter.
    return { raw: data, reason };
  }
}

function readReason(value: unknown): DeadLetterReason | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  if (
    typeof r['message'] !== 'string' ||
    typeof r['code'] !== 'string' ||
    typeof r['attempts'] !== 'number' ||
    typeof r['failedAt'] !== 'string' ||
    typeof r['originalType'] !== 'string'
  ) {
    return undefined;
  }
  const reason: DeadLetterReason = {
    message: r['message'],
    code: r['code'],
    attempts: r['attempts'],
    failedAt: r['failedAt'],
    originalType: r['originalType'],
  };
  if (typeof r['subscription'] === 'string') reason.subscription = r['subscription'];
  return reason;
}

function fallbackReason(
  message: string,
  originalType: string,
  at: Date,
  code: string = ErrorCode.HANDLER_FAILED,
): DeadLetterReason {
  return {
    message,
    code,
    attempts: 0,
    failedAt: at.toISOString(),
    originalType,
  };
}

/**
 * How long a dead letter whose `consumeDlq` handler threw waits before it comes again: a
 * second after the first failure, doubling up to a minute, so that a letter the handler can
 * never take is not redelivered every second forever.
 */
export function dlqRetryDelayMs(attempt: number): number {
  const failures = Math.max(1, Math.floor(attempt));
  return Math.min(60_000, 1000 * 2 ** Math.min(failures - 1, 6));
}
