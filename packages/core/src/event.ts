import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from './clock.js';
import { ValidationError } from './errors.js';
import { rejectUnknownOptions } from './options.js';

/**
 * An event: a plain, serialisable object. Create one with {@link createEvent}.
 *
 * On the wire it travels in the Rust Watchtower format (see `encodeEvent`).
 */
export interface Event<P = unknown, T extends string = string> {
  /** Unique id, UUID v4 by default. Brokers that deduplicate use it as the message id. */
  id: string;
  /** Dotted tokens of `[A-Za-z0-9_-]`, e.g. `user.created`. */
  type: T;
  /** RFC 3339 timestamp in UTC. */
  timestamp: string;
  source?: string;
  correlationId?: string;
  causationId?: string;
  /** traceparent, tracestate, idempotency keys and user headers. */
  headers: Record<string, string>;
  payload: P;
}

/** Optional fields for {@link createEvent}. */
export interface EventMetadataInput {
  /** @defaultValue a new UUID v4 */
  id?: string;
  /** @defaultValue now */
  timestamp?: string | Date;
  source?: string;
  correlationId?: string;
  causationId?: string;
  /** @defaultValue `{}` */
  headers?: Record<string, string>;
}

const EVENT_TYPE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/** True when `type` is a valid event type (dotted tokens of `[A-Za-z0-9_-]`, no wildcards). */
// Listed as a record so that a field added to EventMetadataInput and left out fails to compile.
const METADATA_KEYS = Object.keys({
  id: true,
  timestamp: true,
  source: true,
  correlationId: true,
  causationId: true,
  headers: true,
} satisfies Record<keyof EventMetadataInput, true>);

// Services publish a handful of types over and over: the last valid one skips the regex.
let lastValidType = '';

export function isValidEventType(type: unknown): type is string {
  if (type === lastValidType && type !== '') return true;
  if (typeof type !== 'string' || !EVENT_TYPE.test(type)) return false;
  lastValidType = type;
  return true;
}

/**
 * Throws a `VALIDATION` error unless `type` is one or more tokens of `[A-Za-z0-9_-]`
 * joined by dots.
 */
export function assertEventType(type: unknown): asserts type is string {
  if (isValidEventType(type)) return;
  throw new ValidationError(
    `invalid event type ${JSON.stringify(type)}: expected dotted tokens of [A-Za-z0-9_-], e.g. "user.created"`,
    [{ message: 'invalid event type', path: ['type'] }],
  );
}

/**
 * Builds an event with a fresh id and timestamp. Throws a `VALIDATION` error for an invalid
 * event type, before anything is sent anywhere.
 */
export function createEvent<P, T extends string>(
  type: T,
  payload: P,
  metadata?: EventMetadataInput,
): Event<P, T> {
  return createEventAt(type, payload, metadata, systemClock);
}

/**
 * {@link createEvent} with the timestamp taken from `clock` (the `EventBus` passes its own, so
 * that a fake clock reaches event timestamps too).
 */
export function createEventAt<P, T extends string>(
  type: T,
  payload: P,
  metadata: EventMetadataInput | undefined,
  clock: Clock,
): Event<P, T> {
  assertEventType(type);
  if (metadata !== undefined) rejectUnknownOptions(metadata, METADATA_KEYS, 'event metadata');
  const id = metadata?.id ?? randomUUID();
  if (typeof id !== 'string' || id.length === 0) {
    throw new ValidationError('invalid event id: expected a non-empty string (a UUID by default)', [
      { message: 'invalid id', path: ['id'] },
    ]);
  }
  const event: Event<P, T> = {
    id,
    type,
    timestamp: toTimestamp(metadata?.timestamp, clock),
    headers: metadata?.headers === undefined ? {} : { ...metadata.headers },
    payload,
  };
  if (metadata?.source !== undefined) event.source = metadata.source;
  if (metadata?.correlationId !== undefined) event.correlationId = metadata.correlationId;
  if (metadata?.causationId !== undefined) event.causationId = metadata.causationId;
  return event;
}

// Formatting a Date costs more than the rest of createEvent; events created within the same
// millisecond share the string.
let lastMs = -1;
let lastIso = '';

function nowIso(clock: Clock): string {
  const ms = clock.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

function toTimestamp(value: string | Date | undefined, clock: Clock): string {
  if (value === undefined) return nowIso(clock);
  if (typeof value === 'string') {
    if (Number.isNaN(Date.parse(value))) {
      throw new ValidationError(
        `invalid event timestamp ${JSON.stringify(value)}: expected RFC 3339`,
        [{ message: 'invalid timestamp', path: ['timestamp'] }],
      );
    }
    return value;
  }
  if (Number.isNaN(value.getTime())) {
    throw new ValidationError('invalid event timestamp: the Date is not valid', [
      { message: 'invalid date', path: ['timestamp'] },
    ]);
  }
  return value.toISOString();
}
